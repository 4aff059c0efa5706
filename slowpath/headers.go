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
	fasthttp.HeaderConnection,
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
// Connection header names. It deletes names that are absent too: a Del
// costs about what a Peek does, and the common case has none to find.
func stripHopByHop(h header) {
	// The tokens alias header memory: delete them all before any Set can
	// reuse that memory, and before Connection itself goes.
	for tok := range connectionTokens(h.PeekAll(fasthttp.HeaderConnection)) {
		if !protected(tok) {
			h.DelBytes(tok)
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// mayHaveHopByHop reports whether a raw header (request or status line
// first) has a field stripHopByHop would delete: only a Connection field
// can name others. The event loop checks the bytes it parsed instead of
// paying for nine deletions (each normalises its key and searches every
// field) on the common header that has none.
func mayHaveHopByHop(raw []byte) bool {
	for {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 || i+1 == len(raw) {
			return false
		}
		raw = raw[i+1:]
		switch raw[0] | 0x20 {
		case 'c', 'k', 'p', 't', 'u':
			for _, name := range hopByHop {
				if len(raw) > len(name) && hasPrefixFold(raw, name) {
					switch raw[len(name)] {
					case ':', ' ', '\t':
						return true
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
	h.SetBytesV(fasthttp.HeaderXForwardedFor, buf)
	h.Set(fasthttp.HeaderXForwardedProto, proto)
	if len(host) > 0 {
		h.SetBytesV(fasthttp.HeaderXForwardedHost, host)
	} else {
		h.Del(fasthttp.HeaderXForwardedHost)
	}
}
