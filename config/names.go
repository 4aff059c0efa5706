package config

import (
	"net/netip"
	"strings"
)

// The check functions return "" for a valid value, otherwise the reason it
// is not, phrased to follow the value in an error message.

// checkName validates a service or pool name. Names end up in metric labels,
// map dumps and rautactl output, so they are kept to one plain charset.
func checkName(s string) string {
	if s == "" {
		return "must not be empty"
	}
	for _, c := range []byte(s) {
		if !isLowerAlnum(c) && c != '-' && c != '_' {
			return "use only lowercase letters, digits, '-' and '_'"
		}
	}
	return ""
}

// checkInterfaceName applies the kernel's rules (dev_valid_name), so a bad
// name fails here, with a line number, rather than at attach time.
func checkInterfaceName(s string) string {
	const ifNameSize = 16 // IFNAMSIZ, including the NUL
	switch {
	case s == "":
		return "must not be empty"
	case len(s) >= ifNameSize:
		return "longer than 15 bytes"
	case s == "." || s == "..":
		return "reserved name"
	case strings.ContainsAny(s, "/: \t\n\r\x00"):
		return "must not contain '/', ':' or whitespace"
	}
	return ""
}

// normalizeHost lowercases a route host and strips a trailing dot, so that
// "API.example.com." and "api.example.com" are one route. A leading "*."
// matches any subdomain.
func normalizeHost(s string) (string, string) {
	host := strings.TrimSuffix(strings.ToLower(s), ".")
	name, wildcard := strings.CutPrefix(host, "*.")
	switch {
	case host == "":
		return "", "must not be empty; omit host to match any host"
	case strings.Contains(host, ":"):
		return "", "must not include a port (requests are matched on the host name only)"
	case strings.Contains(name, "*"):
		return "", "a wildcard must be the whole first label, as in *.example.com"
	case len(name) > 253:
		return "", "longer than 253 bytes"
	}
	for label := range strings.SplitSeq(name, ".") {
		if msg := checkHostLabel(label); msg != "" {
			return "", msg
		}
	}
	if wildcard {
		return "*." + name, ""
	}
	return name, ""
}

// checkHostLabel allows '_' beyond RFC 1123 because real Host headers carry
// it (service records, some internal names), and rejecting the route would
// not stop such requests from arriving.
func checkHostLabel(label string) string {
	switch {
	case label == "":
		return "empty label (two dots in a row, or a leading dot)"
	case len(label) > 63:
		return "label longer than 63 bytes"
	case label[0] == '-' || label[len(label)-1] == '-':
		return "labels must not start or end with '-'"
	}
	for _, c := range []byte(label) {
		if !isLowerAlnum(c) && c != '-' && c != '_' {
			return "only letters, digits, '-', '_' and '.' are allowed"
		}
	}
	return ""
}

// checkRoutePath accepts only paths in the form both data paths route on.
// XDP hands requests whose paths contain percent-escapes, dot segments,
// doubled slashes or backslashes to the slow path, which normalises them
// before routing (DESIGN §5), and a path ends at '?'. A route spelled in any
// of those forms could never match on the fast path, and might match
// differently on the slow one.
func checkRoutePath(s string) string {
	switch {
	case !strings.HasPrefix(s, "/"):
		return "must start with '/'"
	case strings.ContainsAny(s, "?#"):
		return "must not contain a query or fragment ('?', '#')"
	case strings.Contains(s, "%"):
		return "must not contain percent-escapes; write the decoded character"
	case strings.Contains(s, `\`):
		return "must not contain '\\'"
	case strings.Contains(s, "//"):
		return "must not contain '//'"
	case strings.Contains(s+"/", "/./") || strings.Contains(s+"/", "/../"):
		return "must not contain '.' or '..' segments"
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f {
			return "must contain only printable ASCII, no spaces"
		}
	}
	return ""
}

// checkUnicastIPv4 accepts addresses that can be a VIP or a backend.
func checkUnicastIPv4(a netip.Addr) string {
	switch {
	case a.Is6():
		return "IPv6 is not supported yet; use an IPv4 address"
	case a.IsUnspecified():
		return "unspecified address 0.0.0.0 is not allowed"
	case a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "must be a unicast address"
	}
	return ""
}

func isLowerAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
}
