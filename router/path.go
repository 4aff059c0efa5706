package router

import (
	"errors"
	"fmt"
	"strings"
)

// Errors of NormalizePath. Each means the request is bad (400), not that it
// has no route.
var (
	// ErrNotOriginForm: the target does not start with '/' (absolute-form
	// "http://host/p", authority-form, asterisk-form "*", or empty). A proxy
	// that accepts absolute-form takes the path out of it first.
	ErrNotOriginForm = errors.New("request target is not origin-form")
	// ErrBadPathByte: a control character, space or backslash.
	ErrBadPathByte = errors.New("invalid byte in request target")
	// ErrBadEscape: '%' not followed by two hex digits.
	ErrBadEscape = errors.New("invalid percent-escape")
	// ErrAboveRoot: a ".." segment would climb above "/".
	ErrAboveRoot = errors.New("path climbs above the root")
)

// NormalizePath returns the path XDP would route a clean request to:
// RFC 3986 dot segments removed, percent-encoded unreserved characters
// decoded (other escapes kept, hex upper-cased), repeated slashes merged.
// The query is kept unchanged after '?'. A path that is not origin-form or
// escapes above the root is an error.
//
// The choices, and why:
//   - A path XDP routes on its raw bytes (no '%', '\', "//", dot segments,
//     only printable ASCII) comes back unchanged, so a request routes the
//     same whichever path it takes (https requests all take the slow one).
//   - Unreserved characters (ALPHA DIGIT - . _ ~) are decoded exactly once,
//     before dot segments are removed: "/%2e%2e/" is "/../", while
//     "%252e" stays as it is. Other escapes stay escaped: "%2F" is not a
//     segment separator, because a backend decoding it would see another
//     path than the one routed.
//   - Backslashes are refused: some backends treat '\' as '/', and
//     "/a\..\b" must not be routed as one path and served as another.
//     Control characters and spaces are refused everywhere, query included.
//   - Bytes above 0x7e in the path are percent-encoded (as browsers send
//     them), which keeps the result canonical; route paths are ASCII.
//   - Repeated slashes are merged before dot segments are removed, so
//     "/a//../b" is "/b", as nginx's merge_slashes has it.
//   - ".." above the root is an error (nginx answers 400) rather than being
//     clamped: a client sending it is probing, and clamping would make
//     "/../admin" quietly mean "/admin".
//   - '#' is an ordinary path byte, as XDP treats it; clients do not send
//     fragments.
func NormalizePath(raw string) (string, error) {
	if !strings.HasPrefix(raw, "/") {
		return "", fmt.Errorf("router: %q: %w", truncateForError(raw), ErrNotOriginForm)
	}
	path, query, hasQuery := strings.Cut(raw, "?")
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c == 0x7f || (c == '\\' && i < len(path)) {
			return "", fmt.Errorf("router: byte %#02x at %d: %w", c, i, ErrBadPathByte)
		}
	}
	if alreadyClean(path) {
		// The common case costs a scan and no allocation.
		return raw, nil
	}
	decoded, err := decodeUnreserved(path)
	if err != nil {
		return "", err
	}
	clean := decoded
	if !cleanSegments(decoded) {
		if clean, err = removeDotSegments(decoded); err != nil {
			return "", err
		}
	}
	if hasQuery {
		return clean + "?" + query, nil
	}
	return clean, nil
}

// alreadyClean reports whether normalising would leave path as it is: no
// escape, no byte above 0x7e, and cleanSegments.
func alreadyClean(path string) bool { return scanSegments(path, true) }

// cleanSegments reports whether removeDotSegments would leave path as it
// is: no empty, "." or ".." segment past the root.
func cleanSegments(path string) bool { return scanSegments(path, false) }

// scanSegments is both checks in one pass over path, bytes included when
// escapes is set.
func scanSegments(path string, escapes bool) bool {
	segStart := 1
	for i := 1; i <= len(path); i++ {
		if i < len(path) {
			if c := path[i]; escapes && (c == '%' || c > 0x7e) {
				return false
			} else if c != '/' {
				continue
			}
		}
		switch path[segStart:i] {
		case "":
			if i < len(path) { // "//"; a trailing '/' is kept as it is
				return false
			}
		case ".", "..":
			return false
		}
		segStart = i + 1
	}
	return true
}

// decodeUnreserved decodes escapes of unreserved characters, upper-cases
// the hex of the others and escapes bytes above 0x7e.
func decodeUnreserved(path string) (string, error) {
	var b strings.Builder
	b.Grow(len(path))
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '%':
			if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
				return "", fmt.Errorf("router: %q at %d: %w", path[i:min(i+3, len(path))], i, ErrBadEscape)
			}
			v := unhex(path[i+1])<<4 | unhex(path[i+2])
			if isUnreserved(v) {
				b.WriteByte(v)
			} else {
				writeEscape(&b, v)
			}
			i += 2
		case c > 0x7e:
			writeEscape(&b, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// removeDotSegments resolves "." and ".." and merges empty segments of an
// absolute path. A path ending in a separator, "." or ".." keeps a
// trailing slash ("/a/b/.." is "/a/"), as in RFC 3986 §5.2.4.
func removeDotSegments(path string) (string, error) {
	segs := strings.Split(path[1:], "/")
	out := make([]string, 0, len(segs))
	trailingSlash := false
	for _, s := range segs {
		trailingSlash = s == "" || s == "." || s == ".."
		switch s {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return "", fmt.Errorf("router: %q: %w", truncateForError(path), ErrAboveRoot)
			}
			out = out[:len(out)-1]
		default:
			out = append(out, s)
		}
	}
	clean := "/" + strings.Join(out, "/")
	if trailingSlash && len(out) > 0 {
		clean += "/"
	}
	return clean, nil
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func writeEscape(b *strings.Builder, c byte) {
	const hex = "0123456789ABCDEF"
	b.WriteByte('%')
	b.WriteByte(hex[c>>4])
	b.WriteByte(hex[c&0xf])
}

// truncateForError keeps error messages short for long hostile targets.
func truncateForError(s string) string {
	const limit = 64
	if len(s) > limit {
		return s[:limit] + "..."
	}
	return s
}
