package slowpath

import (
	"strings"
	"testing"
)

func TestChunkedScannerFindsTheEnd(t *testing.T) {
	const next = "HTTP/1.1 200 OK\r\n" // the connection's next response
	for _, body := range []string{
		"0\r\n\r\n",
		"5\r\nhello\r\n0\r\n\r\n",
		"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n",
		"5\r\nhello\r\n0\r\nExpires: never\r\nX-Trailer: 1\r\n\r\n",
		"5\nhello\n0\n\n", // bare LF
		"00000005\r\nhello\r\n000\r\n\r\n",
		"5 \r\nhello\r\n0\r\n\r\n", // whitespace before the line end
	} {
		// Whole, and split at every byte: the scanner keeps its state.
		for split := 0; split <= len(body); split++ {
			var s chunkedScanner
			in := body + next
			n1, end, err := s.scan([]byte(in[:split]))
			if err != nil {
				t.Fatalf("%q split at %d: %v", body, split, err)
			}
			if end {
				if split != len(body) || n1 != split {
					t.Fatalf("%q split at %d: ended after %d bytes of the first part", body, split, n1)
				}
				continue
			}
			n2, end, err := s.scan([]byte(in[split:]))
			if err != nil || !end {
				t.Fatalf("%q split at %d: end %v err %v", body, split, end, err)
			}
			if n1+n2 != len(body) {
				t.Fatalf("%q split at %d: body of %d bytes, want %d", body, split, n1+n2, len(body))
			}
		}
	}
}

func TestChunkedScannerWaitsForMore(t *testing.T) {
	for _, partial := range []string{"", "5", "5\r\nhel", "5\r\nhello\r\n", "0\r\n", "0\r\nX: y\r\n", "0\r\n\r"} {
		var s chunkedScanner
		n, end, err := s.scan([]byte(partial))
		if end || err != nil || n != len(partial) {
			t.Errorf("%q: n %d end %v err %v, want all taken and no end", partial, n, end, err)
		}
	}
}

func TestChunkedScannerRefusesMalformed(t *testing.T) {
	for _, body := range []string{
		"\r\n",                 // no size
		"x\r\n",                // not hex
		"-1\r\n",               // sign
		"5\r\nhelloX\r\n",      // data longer than its size
		"5\r\nhello\rX",        // CR not followed by LF
		"1000000000000000\r\n", // 16 hex digits: past what a length holds
		"5;" + strings.Repeat("e", maxChunkLine+1),    // endless extension
		"0\r\n" + strings.Repeat("t", maxChunkLine+1), // endless trailer line
		"0\r\n\rX",
	} {
		var s chunkedScanner
		if _, _, err := s.scan([]byte(body)); err == nil {
			t.Errorf("%q: accepted", body)
		}
	}
}
