package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/rauta-lb/rauta/tools/testbed"
)

// waitReady polls url from ns until it answers like the origin, the
// server exits or startupTimeout passes.
func (b *bench) waitReady(ctx context.Context, ns *testbed.Namespace, url string, p *process) error {
	deadline := time.Now().Add(startupTimeout)
	for {
		err := httpCheck(ctx, ns, url)
		if err == nil {
			b.log.Info("ready", "process", p.name, "url", url)
			return nil
		}
		if exitErr := p.exited(); exitErr != nil {
			return exitErr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering after %v: %w; its output: %s", p.name, startupTimeout, err, p.output())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// httpCheck makes one GET from ns and expects the origin's answer.
func httpCheck(ctx context.Context, ns *testbed.Namespace, url string) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	// The https modes serve the bench's self-signed certificate.
	client := &http.Client{Transport: &http.Transport{
		DialContext:       ns.DialContext,
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return fmt.Errorf("GET %s: read body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != originBody {
		return fmt.Errorf("GET %s: got %s %q, want 200 %q", url, resp.Status, body, originBody)
	}
	return nil
}

// checkRauta makes one request to the VIP and requires that XDP forwarded
// it: nothing listens on the VIP in the LB namespace, so a request that
// only works through the kernel would be refused anyway, but the counter
// makes the failure plain. The first request may meet a missing neighbour
// entry (XDP then passes it to the kernel, which refuses it), so it is
// retried for a few seconds.
func (b *bench) checkRauta(ctx context.Context, d *rautaDaemon, url string) error {
	deadline := time.Now().Add(startupTimeout)
	for {
		err := httpCheck(ctx, b.tb.Client, url)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c, _ := d.counters()
			return fmt.Errorf("check before measuring: %w (XDP counters: %v)", err, c)
		}
		b.log.Warn("check through XDP failed; retrying", "error", err)
		time.Sleep(200 * time.Millisecond)
	}
	c, err := d.counters()
	if err != nil {
		return err
	}
	var forwarded uint64
	for k, v := range c {
		if strings.HasPrefix(k, "forwarded_packets{") {
			forwarded += v
		}
	}
	if forwarded == 0 {
		return fmt.Errorf("check before measuring: %s answered but XDP forwarded no packet (counters: %v)", url, c)
	}
	return nil
}
