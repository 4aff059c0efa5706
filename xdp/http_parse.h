/* Reads the request line and the Host header of the first segment of an HTTP
 * connection into a route key. Anything XDP must not route on raw bytes
 * returns a slow-path reason instead (DESIGN §5): the slow path normalises
 * and routes those, so a path trick can never reach a pool the normalised
 * path would not.
 *
 * The segment is copied into a per-CPU buffer and walked with bpf_loop, one
 * byte per call: the verifier checks the callback once, not once per byte. */
#ifndef RAUTA_HTTP_PARSE_H
#define RAUTA_HTTP_PARSE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"

/* Bytes of the first segment examined; the request line and Host must lie
 * within them. A power of two, for masking indexes. */
#define HTTP_SCAN 1024



enum http_parse_state {
	HP_METHOD,
	HP_TARGET,
	HP_PATH,
	HP_QUERY,
	HP_VERSION,
	HP_LINE_START,
	HP_HEADER_NAME,
	HP_SKIP_LINE,
	HP_HOST_SPACE,
	HP_HOST,
	HP_HOST_PORT,
	HP_HEADERS_END,
	HP_DONE,
};



/* The parser's state lives in the per-CPU map value, not on the stack:
 * values read from a map are unknown to the verifier, so it checks the
 * callback for any state once instead of tracking every combination. */
struct http_parse {
	__u32 len;
	__u32 state;
	__u32 pos; /* position within the current token */
	__u64 word; /* method or version bytes so far */
	__u32 method;
	__u32 path_len;
	__u32 host_len;
	__u32 reason;
	__u32 seg_len;  /* bytes of the current path segment */
	__u32 seg_dots; /* of which dots */
	__u32 prev;
};

struct http_scratch {
	__u8 buf[HTTP_SCAN];
	struct route_key key;
	struct http_parse p;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct http_scratch);
} http_scratch SEC(".maps");

struct http_parse_ctx {
	struct http_scratch *s;
};

static __always_inline __u32 method_bit(__u64 w)
{
	/* the method's bytes, first byte most significant */
	switch (w) {
	case 0x474554ULL: return HTTP_GET;
	case 0x48454144ULL: return HTTP_HEAD;
	case 0x504f5354ULL: return HTTP_POST;
	case 0x505554ULL: return HTTP_PUT;
	case 0x44454c455445ULL: return HTTP_DELETE;
	case 0x5041544348ULL: return HTTP_PATCH;
	case 0x4f5054494f4e53ULL: return HTTP_OPTIONS;
	case 0x5452414345ULL: return HTTP_TRACE;
	}
	return 0;
}

#define W_CONNECT 0x434f4e4e454354ULL
#define W_PRI 0x505249ULL
#define W_HTTP10 0x485454502f312e30ULL
#define W_HTTP11 0x485454502f312e31ULL

static __always_inline int slow(struct http_parse *p, __u32 reason)
{
	p->reason = reason;
	return 1;
}

/* A path segment of only one or two dots is a dot segment. */
static __always_inline int dot_segment(const struct http_parse *p)
{
	return p->seg_len > 0 && p->seg_len == p->seg_dots && p->seg_dots <= 2;
}

static long http_parse_byte(__u64 index, void *ctx)
{
	struct http_scratch *s = ((struct http_parse_ctx *)ctx)->s;
	struct http_parse *p = &s->p;
	__u8 c, lc;

	if (index >= p->len)
		return slow(p, SLOW_INCOMPLETE);
	c = s->buf[index & (HTTP_SCAN - 1)];
	lc = (c >= 'A' && c <= 'Z') ? c + 32 : c;

	switch (p->state) {
	case HP_METHOD:
		if (c == ' ') {
			if (p->word == W_CONNECT)
				return slow(p, SLOW_CONNECT);
			if (p->word == W_PRI)
				return slow(p, SLOW_H2C);
			p->method = method_bit(p->word);
			if (!p->method)
				return slow(p, SLOW_NOT_HTTP);
			p->state = HP_TARGET;
			return 0;
		}
		if (c < 'A' || c > 'Z' || ++p->pos > 7)
			return slow(p, SLOW_NOT_HTTP);
		p->word = (p->word << 8) | c;
		return 0;
	case HP_TARGET:
		if (c != '/')
			return slow(p, SLOW_TARGET_FORM);
		s->key.path[0] = '/';
		p->path_len = 1;
		p->prev = '/'; /* so that a leading "//" is seen too */
		p->state = HP_PATH;
		return 0;
	case HP_PATH:
		if (c == ' ' || c == '?') {
			if (dot_segment(p))
				return slow(p, SLOW_UNSAFE_PATH);
			p->state = c == ' ' ? HP_VERSION : HP_QUERY;
			p->pos = 0;
			p->word = 0;
			return 0;
		}
		if (c <= 0x20 || c >= 0x7f || c == '%' || c == '\\')
			return slow(p, SLOW_UNSAFE_PATH);
		if (c == '/') {
			if (p->prev == '/' || dot_segment(p))
				return slow(p, SLOW_UNSAFE_PATH);
			p->seg_len = 0;
			p->seg_dots = 0;
		} else {
			p->seg_len++;
			if (c == '.')
				p->seg_dots++;
		}
		/* one byte is kept for the exact-route terminator */
		if (p->path_len >= ROUTE_PATH_MAX - 1)
			return slow(p, SLOW_LONG_PATH);
		s->key.path[p->path_len & (ROUTE_PATH_MAX - 1)] = c;
		p->path_len++;
		p->prev = c;
		return 0;
	case HP_QUERY:
		if (c == ' ') {
			p->state = HP_VERSION;
			p->pos = 0;
			p->word = 0;
		} else if (c < 0x20 || c >= 0x7f) {
			return slow(p, SLOW_NOT_HTTP);
		}
		return 0;
	case HP_VERSION:
		if (c == '\r')
			return 0;
		if (c == '\n') {
			if (p->pos != 8 || (p->word != W_HTTP10 && p->word != W_HTTP11))
				return slow(p, SLOW_NOT_HTTP);
			p->state = HP_LINE_START;
			return 0;
		}
		if (++p->pos > 8)
			return slow(p, SLOW_NOT_HTTP);
		p->word = (p->word << 8) | c;
		return 0;
	case HP_LINE_START:
		if (c == '\r') {
			p->state = HP_HEADERS_END;
			return 0;
		}
		if (c == '\n')
			return slow(p, SLOW_NO_HOST);
		p->pos = 0;
		p->state = HP_HEADER_NAME;
		/* fall through */
	case HP_HEADER_NAME: {
		static const char host[] = "host:";

		if (p->pos < 5 && lc == host[p->pos & 7]) {
			if (++p->pos == 5)
				p->state = HP_HOST_SPACE;
			return 0;
		}
		p->state = HP_SKIP_LINE;
		return 0;
	}
	case HP_SKIP_LINE:
		if (c == '\n')
			p->state = HP_LINE_START;
		return 0;
	case HP_HOST_SPACE:
		if (c == ' ' || c == '\t')
			return 0;
		p->state = HP_HOST;
		/* fall through */
	case HP_HOST:
		if (c == '\r' || c == ' ' || c == '\t') {
			p->state = HP_DONE;
			return 1;
		}
		if (c == ':') {
			p->state = HP_HOST_PORT;
			return 0;
		}
		if (!((lc >= 'a' && lc <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
			return slow(p, SLOW_BAD_HOST);
		if (p->host_len >= ROUTE_HOST_MAX)
			return slow(p, SLOW_BAD_HOST);
		s->key.host[p->host_len & (ROUTE_HOST_MAX - 1)] = lc;
		p->host_len++;
		return 0;
	case HP_HOST_PORT:
		if (c == '\r' || c == ' ' || c == '\t') {
			p->state = HP_DONE;
			return 1;
		}
		if (c < '0' || c > '9')
			return slow(p, SLOW_BAD_HOST);
		return 0;
	case HP_HEADERS_END:
		return slow(p, SLOW_NO_HOST);
	}
	return slow(p, SLOW_NOT_HTTP);
}

/* Parses the first len bytes at offset off of the frame. On success the
 * scratch route key holds the host (lowercased, port and a trailing dot
 * dropped) and the path with its terminator, *method the method's bit, and
 * the return value is SLOW_NONE. */
static __always_inline __u32 http_parse_request(struct xdp_md *ctx, __u32 off, __u32 len,
						struct http_scratch *s, __u32 *method)
{
	struct http_parse_ctx pc = {.s = s};
	struct http_parse *p = &s->p;

	if (len == 0)
		return SLOW_INCOMPLETE;
	if (len > HTTP_SCAN)
		len = HTTP_SCAN;
	/* 1..HTTP_SCAN in a form the verifier keeps */
	len = ((len - 1) & (HTTP_SCAN - 1)) + 1;
	if (bpf_xdp_load_bytes(ctx, off, s->buf, len))
		return SLOW_INCOMPLETE;
	/* A TLS record (ClientHello) starts with content type 22. */
	if (s->buf[0] == 0x16)
		return SLOW_TLS;
	__builtin_memset(&s->key, 0, sizeof(s->key));
	__builtin_memset(p, 0, sizeof(*p));
	p->len = len;
	bpf_loop(HTTP_SCAN, http_parse_byte, &pc, 0);
	if (p->reason)
		return p->reason;
	if (p->state != HP_DONE)
		return SLOW_INCOMPLETE;
	if (p->host_len == 0)
		return SLOW_NO_HOST;
	if (s->key.host[(p->host_len - 1) & (ROUTE_HOST_MAX - 1)] == '.')
		s->key.host[(p->host_len - 1) & (ROUTE_HOST_MAX - 1)] = 0;
	*method = p->method;
	/* path bytes plus the zero terminator */
	s->key.prefixlen = 32 + ROUTE_HOST_MAX * 8 + ((p->path_len & (ROUTE_PATH_MAX - 1)) + 1) * 8;
	return SLOW_NONE;
}

#endif
