package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/cilium/ebpf"

	"github.com/rauta-lb/rauta/config"
	"github.com/rauta-lb/rauta/flowcache"
	"github.com/rauta-lb/rauta/xdp"
)

// flowsCommand prints the flow table of a running daemon from its pinned
// map, one line per direction, like `conntrack -L`: what bpftool shows as
// integers in network byte order, as addresses and names. It only reads.
func flowsCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rauta flows", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("bpffs", config.DefaultBPFFS, "directory the daemon pins its maps in (the config's bpffs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("flows: unexpected arguments %q", fs.Args())
	}
	path := filepath.Join(*dir, "flows")
	m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("flows: no flow table pinned at %s: is rauta running with bpffs %s in this mount namespace?", path, *dir)
	}
	if err != nil {
		return fmt.Errorf("flows: open %s: %w", path, err)
	}
	defer m.Close()
	entries, err := flowcache.New(m).Dump()
	if err != nil {
		return fmt.Errorf("flows: %w", err)
	}
	return writeFlows(stdout, entries)
}

// writeFlows prints entries sorted by source, then destination.
func writeFlows(w io.Writer, entries []flowcache.Entry) error {
	slices.SortFunc(entries, func(a, b flowcache.Entry) int {
		return cmp.Or(a.Source.Compare(b.Source), a.Destination.Compare(b.Destination), cmp.Compare(a.Protocol, b.Protocol))
	})
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTO\tSOURCE\tDESTINATION\tDIRECTION\tTRANSLATED\tSTATE\tHTTP\tSERVICE\tBACKEND\tIDLE")
	for _, e := range entries {
		translated := "-" // a slow-path flow: the kernel's socket, no translation
		if !e.Translated.Addr().IsUnspecified() {
			translated = e.Translated.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n",
			xdp.Name(xdp.ProtoNames[:], e.Protocol), e.Source, e.Destination,
			xdp.Name(xdp.DirectionNames[:], e.Direction), translated, xdp.Name(xdp.FlowStateNames[:], e.State),
			xdp.Name(xdp.SpliceNames[:], e.Splice), e.ServiceID, e.BackendID, e.Idle.Round(time.Second))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("flows: write: %w", err)
	}
	return nil
}
