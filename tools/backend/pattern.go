package backend

import (
	"io"
	"sync"
)

// patternPeriod is prime so the pattern never lines up with power-of-two
// buffer, page or segment sizes: a chunk delivered at the wrong offset shows
// up as a content mismatch.
const patternPeriod = 65521

// patternBlock is one period of the pattern, computed once and never
// modified.
var patternBlock = sync.OnceValue(func() []byte {
	b := make([]byte, patternPeriod)
	// xorshift32 with a fixed seed: deterministic, yet no short cycles.
	x := uint32(0x52415554) // "RAUT"
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
})

// Pattern returns a reader of the first n bytes of the deterministic
// pattern that GET /bytes/N serves.
func Pattern(n int64) io.Reader {
	return &patternReader{remaining: max(n, 0)}
}

type patternReader struct {
	offset    int64
	remaining int64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.remaining == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.remaining {
		b = b[:p.remaining]
	}
	block := patternBlock()
	n := 0
	for n < len(b) {
		n += copy(b[n:], block[(p.offset+int64(n))%patternPeriod:])
	}
	p.offset += int64(n)
	p.remaining -= int64(n)
	return n, nil
}

// WriteTo hands out slices of the shared block directly, saving io.Copy a
// copy per chunk; io.Writer implementations must not modify them.
func (p *patternReader) WriteTo(w io.Writer) (int64, error) {
	block := patternBlock()
	var written int64
	for p.remaining > 0 {
		start := p.offset % patternPeriod
		chunk := block[start:min(patternPeriod, start+p.remaining)]
		n, err := w.Write(chunk)
		p.offset += int64(n)
		p.remaining -= int64(n)
		written += int64(n)
		if err != nil {
			return written, err
		}
		if n < len(chunk) {
			return written, io.ErrShortWrite
		}
	}
	return written, nil
}
