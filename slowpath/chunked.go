package slowpath

import "errors"

// chunkedScanner follows a chunked body (RFC 9112 §7.1) that the event loop
// passes through as it is, to find where it ends: the connection then
// carries the next response. It accepts bare LF line ends, as fasthttp does.
type chunkedScanner struct {
	state  chunkState
	size   int64 // data bytes left in the chunk, or the size being read
	digits int
	line   int // length of the extension or trailer line being read
}

type chunkState uint8

const (
	chunkSize chunkState = iota
	chunkExtension
	chunkData
	chunkDataCR
	chunkDataLF
	chunkTrailerStart
	chunkTrailerLine
	chunkTrailerEndLF
	chunkDone
)

const (
	maxChunkSizeDigits = 15 // below 2^60: no overflow
	maxChunkLine       = 4 << 10
)

var errBadChunk = errors.New("malformed chunked body")

// scan consumes p and returns how many of its bytes belong to the body and
// whether the body ended with them.
func (s *chunkedScanner) scan(p []byte) (n int, end bool, err error) {
	for n < len(p) {
		if s.state == chunkData {
			k := int(min(int64(len(p)-n), s.size))
			n += k
			if s.size -= int64(k); s.size == 0 {
				s.state = chunkDataCR
			}
			continue
		}
		b := p[n]
		n++
		switch s.state {
		case chunkSize:
			switch v := unhex(b); {
			case v >= 0:
				if s.digits++; s.digits > maxChunkSizeDigits {
					return n, false, errBadChunk
				}
				s.size = s.size<<4 | int64(v)
			case s.digits == 0:
				return n, false, errBadChunk
			case b == '\n':
				s.sizeDone()
			case b == ';' || b == ' ' || b == '\t' || b == '\r':
				s.state, s.line = chunkExtension, 0
			default:
				return n, false, errBadChunk
			}
		case chunkExtension:
			if b == '\n' {
				s.sizeDone()
			} else if s.line++; s.line > maxChunkLine {
				return n, false, errBadChunk
			}
		case chunkDataCR:
			switch b {
			case '\r':
				s.state = chunkDataLF
			case '\n':
				s.state, s.size, s.digits = chunkSize, 0, 0
			default:
				return n, false, errBadChunk
			}
		case chunkDataLF:
			if b != '\n' {
				return n, false, errBadChunk
			}
			s.state, s.size, s.digits = chunkSize, 0, 0
		case chunkTrailerStart:
			switch b {
			case '\r':
				s.state = chunkTrailerEndLF
			case '\n':
				s.state = chunkDone
				return n, true, nil
			default:
				s.state, s.line = chunkTrailerLine, 1
			}
		case chunkTrailerLine:
			if b == '\n' {
				s.state = chunkTrailerStart
			} else if s.line++; s.line > maxChunkLine {
				return n, false, errBadChunk
			}
		case chunkTrailerEndLF:
			if b != '\n' {
				return n, false, errBadChunk
			}
			s.state = chunkDone
			return n, true, nil
		case chunkDone:
			return n - 1, true, nil
		}
	}
	return n, s.state == chunkDone, nil
}

// sizeDone follows a chunk-size line: data, or the trailer after the last
// chunk.
func (s *chunkedScanner) sizeDone() {
	if s.size == 0 {
		s.state = chunkTrailerStart
	} else {
		s.state = chunkData
	}
}

func unhex(b byte) int {
	switch {
	case '0' <= b && b <= '9':
		return int(b - '0')
	case 'a' <= b && b <= 'f':
		return int(b-'a') + 10
	case 'A' <= b && b <= 'F':
		return int(b-'A') + 10
	}
	return -1
}
