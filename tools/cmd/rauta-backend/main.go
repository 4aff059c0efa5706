// Command rauta-backend runs the test backend HTTP server (package
// tools/backend) for manual experiments and benchmarks, typically inside a
// testbed namespace:
//
//	ip netns exec rauta-...-b1 rauta-backend -listen 10.0.1.11:80 -name b1
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/rauta-lb/rauta/tools/backend"
)

func main() {
	if err := run(); err != nil {
		slog.Error("rauta-backend failed", "err", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", ":8080", "TCP address to listen on")
	name := flag.String("name", "", "name reported in X-Backend (default: the listen address)")
	flag.Parse()

	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if *name == "" {
		*name = l.Addr().String()
	}
	srv := backend.New(*name)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, func() {
		if err := srv.Close(); err != nil {
			slog.Warn("close", "err", err)
		}
	})

	slog.Info("serving", "name", *name, "addr", l.Addr().String())
	return srv.Serve(l)
}
