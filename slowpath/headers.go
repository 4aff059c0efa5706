package slowpath

import (
	"bytes"
	"iter"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// hopByHop are the headers that describe one connection, not the message
// (RFC 9110 §7.6.1, plus the historical Keep-Alive and Proxy-Connection).
// Transfer-Encoding is among them because fasthttp reframes both bodies:
// the length it writes comes from the stream it is given.
var hopByHop = [...]string{
	fasthttp.HeaderConnection, // first: stripHopByHopFields relies on it
	"Keep-Alive",
	fasthttp.HeaderProxyAuthenticate,
	fasthttp.HeaderProxyAuthorization,
	fasthttp.HeaderTE,
	fasthttp.HeaderTrailer,
	fasthttp.HeaderTransferEncoding,
	fasthttp.HeaderUpgrade,
	"Proxy-Connection",
}

// header is what stripping needs; both fasthttp header types have it.
type header interface {
	PeekAll(key string) [][]byte
	Del(key string)
	DelBytes(key []byte)
}

// stripHopByHop deletes the hop-by-hop headers and every header a
// Connection header names, looking for each name (fasthttp's handler,
// which has no raw header to look at).
func stripHopByHop(h header) {
	stripHopByHopFields(h, allHopByHop)
}

// hopByHopSet has bit i set for hopByHop[i].
type hopByHopSet uint16

const allHopByHop = hopByHopSet(1<<len(hopByHop) - 1)

// hopUpgrade is Upgrade's bit: without that field no request upgrades.
var hopUpgrade = func() hopByHopSet {
	for i, name := range hopByHop {
		if name == fasthttp.HeaderUpgrade {
			return 1 << i
		}
	}
	panic("Upgrade is not in hopByHop")
}()

// stripHopByHopFields is stripHopByHop for the hop-by-hop names in set
// (and those Connection names, when Connection is in it).
func stripHopByHopFields(h header, set hopByHopSet) {
	if set&1 != 0 { // hopByHop[0] is Connection
		// The tokens alias header memory: delete them all before any Set
		// can reuse that memory, and before Connection itself goes.
		for tok := range connectionTokens(h.PeekAll(fasthttp.HeaderConnection)) {
			if !protected(tok) {
				h.DelBytes(tok)
			}
		}
	}
	for i, name := range hopByHop {
		if set&(1<<i) != 0 {
			h.Del(name)
		}
	}
}

// hopByHopFields returns the hop-by-hop names a raw header (request or
// status line first) has fields of: only a Connection field can name
// others. The event loop strips what it finds instead of paying for nine
// deletions (each normalises its key and searches every field) on headers
// that have one of them or none.
func hopByHopFields(raw []byte) hopByHopSet {
	var set hopByHopSet
	for {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 || i+1 == len(raw) {
			return set
		}
		raw = raw[i+1:]
		switch raw[0] | 0x20 {
		case 'c', 'k', 'p', 't', 'u':
			for j, name := range hopByHop {
				if len(raw) > len(name) && hasPrefixFold(raw, name) {
					switch raw[len(name)] {
					case ':', ' ', '\t':
						set |= 1 << j
					}
				}
			}
		}
	}
}

// connectionTokens yields the non-empty, trimmed tokens of Connection
// header values (RFC 9110 §7.6.1: a comma-separated list).
func connectionTokens(values [][]byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for _, v := range values {
			for len(v) > 0 {
				var tok []byte
				if i := bytes.IndexByte(v, ','); i >= 0 {
					tok, v = v[:i], v[i+1:]
				} else {
					tok, v = v, nil
				}
				if tok = bytes.Trim(tok, " \t"); len(tok) > 0 && !yield(tok) {
					return
				}
			}
		}
	}
}

// protected are headers a Connection token may not remove: they frame the
// message or name its target, and losing them would desynchronise the
// body or misroute it. "close" and "keep-alive" name no header worth a Del.
func protected(tok []byte) bool {
	for _, p := range [...]string{"close", "keep-alive", fasthttp.HeaderContentLength, fasthttp.HeaderHost} {
		if len(tok) == len(p) && bytes.EqualFold(tok, []byte(p)) {
			return true
		}
	}
	return false
}

// setForwarded appends the client to X-Forwarded-For (after every value a
// previous proxy wrote, joined as one header) and sets X-Forwarded-Proto and
// X-Forwarded-Host, replacing what the client sent: those describe this hop.
func setForwarded(h *fasthttp.RequestHeader, client netip.Addr, proto string, host []byte) {
	var scratch [128]byte
	buf := scratch[:0]
	for _, v := range h.PeekAll(fasthttp.HeaderXForwardedFor) {
		if len(v) == 0 {
			continue
		}
		buf = append(buf, v...)
		buf = append(buf, ", "...)
	}
	buf = client.AppendTo(buf)
	// The names are canonical already: SetCanonical skips normalising.
	h.SetCanonical(xForwardedFor, buf)
	h.SetCanonical(xForwardedProto, []byte(proto))
	if len(host) > 0 {
		h.SetCanonical(xForwardedHost, host)
	} else {
		h.Del(fasthttp.HeaderXForwardedHost)
	}
}

var (
	xForwardedFor   = []byte(fasthttp.HeaderXForwardedFor)
	xForwardedProto = []byte(fasthttp.HeaderXForwardedProto)
	xForwardedHost  = []byte(fasthttp.HeaderXForwardedHost)
)
