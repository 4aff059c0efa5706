package backend

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"
)

// goldenPatternDigest pins the pattern: clients built from other versions
// of this package compare against it, so it must never change silently.
const goldenPatternDigest = "c7d10df56c9d5d1a2e220fe5a446bcb5d2fb705b86dc07f4f88c1bbd59dcc9ed"

func TestPatternIsPinned(t *testing.T) {
	h := sha256.New()
	if _, err := io.Copy(h, Pattern(1<<20)); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != goldenPatternDigest {
		t.Errorf("SHA-256 of Pattern(1 MiB) = %s, want %s", got, goldenPatternDigest)
	}
}

func TestPatternReadMatchesWriteTo(t *testing.T) {
	const n = 3*patternPeriod + 12345
	var viaWriteTo bytes.Buffer
	written, err := Pattern(n).(io.WriterTo).WriteTo(&viaWriteTo)
	if err != nil || written != n {
		t.Fatalf("WriteTo = %d, %v; want %d", written, err, n)
	}
	// Odd buffer sizes make reads straddle the period boundary.
	for _, bufSize := range []int{1, 7, 4096, patternPeriod + 3, 2 * n} {
		got, err := readWithBuffer(Pattern(n), bufSize)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, viaWriteTo.Bytes()) {
			t.Errorf("reads of %d bytes differ from WriteTo", bufSize)
		}
	}
}

func readWithBuffer(r io.Reader, size int) ([]byte, error) {
	var out []byte
	buf := make([]byte, size)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func TestPatternShape(t *testing.T) {
	b, err := io.ReadAll(Pattern(2*patternPeriod + 10))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[:patternPeriod], b[patternPeriod:2*patternPeriod]) {
		t.Error("pattern does not repeat with patternPeriod")
	}
	// A shift by any small amount must be visible.
	for shift := 1; shift <= 4096; shift++ {
		if bytes.Equal(b[:1024], b[shift:shift+1024]) {
			t.Fatalf("pattern repeats after %d bytes", shift)
		}
	}
	if got, _ := io.ReadAll(Pattern(-5)); len(got) != 0 {
		t.Errorf("Pattern(-5) gave %d bytes", len(got))
	}
}

func BenchmarkPatternWriteTo(b *testing.B) {
	const n = 64 << 20
	b.SetBytes(n)
	for b.Loop() {
		if _, err := io.Copy(io.Discard, Pattern(n)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPatternRead(b *testing.B) {
	const n = 64 << 20
	buf := make([]byte, 32<<10)
	b.SetBytes(n)
	for b.Loop() {
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{Pattern(n)}, buf); err != nil {
			b.Fatal(err)
		}
	}
}
