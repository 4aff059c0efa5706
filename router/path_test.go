package router_test

import (
	"errors"
	"testing"

	"github.com/rauta-lb/rauta/router"
)

func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{"/", "/", nil},
		{"/a/b", "/a/b", nil},
		{"/a/b/", "/a/b/", nil},
		{"/api/../secret/x", "/secret/x", nil},
		{"/api/%2e%2e/secret/x", "/secret/x", nil},
		{"/api/%2E%2E/secret/x", "/secret/x", nil},
		{"/api/.%2e/secret/x", "/secret/x", nil},
		{"/api/%252e%252e/x", "/api/%252e%252e/x", nil}, // decoded once only
		{"/a/./b", "/a/b", nil},
		{"/a/.", "/a/", nil},
		{"/a/b/..", "/a/", nil},
		{"/a/..", "/", nil},
		{"/.", "/", nil},
		{"/a/...", "/a/...", nil},
		{"/a/.b/..c", "/a/.b/..c", nil},
		{"//a///b//", "/a/b/", nil},
		{"//", "/", nil},
		{"/a//../b", "/b", nil},
		{"/%41%7a%30%2D%2e%5F%7E", "/Az0-._~", nil},
		{"/%2f%3a%c3%a9", "/%2F%3A%C3%A9", nil},
		{"/a%2Fb/../c", "/c", nil}, // %2F is no separator
		{"/caf\xc3\xa9", "/caf%C3%A9", nil},
		{"/a{b}|c^\"<>`[]#x", "/a{b}|c^\"<>`[]#x", nil},
		{"/a/../b?x=/../%2e&y=%zz", "/b?x=/../%2e&y=%zz", nil},
		{"/?", "/?", nil},
		{"/a?b?c", "/a?b?c", nil},
		{"/a?q=\\", "/a?q=\\", nil},
		{"/..", "", router.ErrAboveRoot},
		{"/a/../..", "", router.ErrAboveRoot},
		{"/%2e%2e/x", "", router.ErrAboveRoot},
		{"/a/../../b", "", router.ErrAboveRoot},
		{"", "", router.ErrNotOriginForm},
		{"*", "", router.ErrNotOriginForm},
		{"http://example.com/a", "", router.ErrNotOriginForm},
		{"example.com:443", "", router.ErrNotOriginForm},
		{"a/b", "", router.ErrNotOriginForm},
		{"/a%", "", router.ErrBadEscape},
		{"/a%4", "", router.ErrBadEscape},
		{"/a%zz", "", router.ErrBadEscape},
		{"/a%g0", "", router.ErrBadEscape},
		{"/a\\..\\b", "", router.ErrBadPathByte},
		{"/a b", "", router.ErrBadPathByte},
		{"/a\x00", "", router.ErrBadPathByte},
		{"/a\x7f", "", router.ErrBadPathByte},
		{"/a\tb", "", router.ErrBadPathByte},
		{"/a?b\r\n", "", router.ErrBadPathByte},
	} {
		got, err := router.NormalizePath(tc.in)
		if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Errorf("NormalizePath(%q) = %q, %v; want error %v", tc.in, got, err, tc.err)
			continue
		}
		if got != tc.want {
			t.Errorf("NormalizePath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
