/* Reads the request line and the header fields of a request that begins a
 * segment: the method, the path and Host into a route key, and what frames
 * the request on the connection (where its header ends, its Content-Length,
 * whether it asks for an upgrade). Anything XDP must not route on raw bytes,
 * or cannot frame, returns a slow-path reason instead (DESIGN §5): the slow
 * path normalises and routes those, so a path trick can never reach a pool
 * the normalised path would not, and a body is never taken for a request.
 *
 * The segment is copied into a per-CPU buffer and walked with bpf_loop, one
 * byte per call: the verifier checks the callback once, not once per byte. */
#ifndef RAUTA_HTTP_PARSE_H
#define RAUTA_HTTP_PARSE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"

/* Bytes of a segment examined; the whole header of a request must lie
 * within them (and within the segment). A power of two, for masking
 * indexes; above the largest Ethernet payload. */
#define HTTP_SCAN 2048

/* The largest Content-Length XDP frames. Bodies are tracked by the client
 * sequence number where they end, compared with signed 32-bit differences,
 * so a request (header and body) must stay well below 2^31 bytes. Larger
 * ones go to the slow path (first request) or are reset (later ones). */
#define HTTP_BODY_MAX (1ULL << 30)

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
	HP_HOST_OWS,   /* whitespace after the Host value */
	HP_CR,         /* a field value ended with CR: LF must follow */
	HP_CLEN_SPACE, /* before the Content-Length value */
	HP_CLEN,
	HP_CLEN_OWS,
};

/* Header fields the parser acts on, as bits of http_parse.names: the field
 * name read so far may still be these. */
enum http_field {
	HF_HOST = 1 << 0,
	HF_CONTENT_LENGTH = 1 << 1,
	HF_TRANSFER_ENCODING = 1 << 2,
	HF_UPGRADE = 1 << 3,
	HF_ALL = HF_HOST | HF_CONTENT_LENGTH | HF_TRANSFER_ENCODING | HF_UPGRADE,
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
	__u32 names;    /* enum http_field: what the field name may still be */
	__u32 hosts;    /* Host fields seen */
	__u32 has_clen; /* a Content-Length field was seen */
	__u32 upgrade;  /* an Upgrade field was seen */
	__u32 hdr_end;  /* bytes of request line and header, final CRLF included */
	__u64 clen;     /* Content-Length */
	__u32 at;       /* the next byte to read */
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

/* Whether byte lc (lowercased) at position pos can continue field name
 * name of len bytes; names are padded to 32 bytes so that any masked
 * position is inside them. */
static __always_inline int name_continues(const char *name, __u32 len, __u32 pos, __u8 lc)
{
	return pos < len && name[pos & 31] == lc;
}

/* One byte of a field name: whitespace or control bytes in it are refused
 * (RFC 9112 §5.1: no whitespace before the colon; a recipient that accepts
 * "Content-Length :" would frame the body differently), the colon ends it. */
static __always_inline int header_name_byte(struct http_scratch *s, struct http_parse *p, __u8 c,
					    __u8 lc)
{
	static const char host[32] = "host";
	static const char clen[32] = "content-length";
	static const char te[32] = "transfer-encoding";
	static const char upgrade[32] = "upgrade";
	__u32 pos = p->pos;

	if (c == ':') {
		if (pos == 4 && (p->names & HF_HOST)) {
			/* two Hosts: which one routes? (RFC 9112 §3.2: 400) */
			if (p->hosts++)
				return slow(p, SLOW_BAD_HOST);
			p->state = HP_HOST_SPACE;
		} else if (pos == 14 && (p->names & HF_CONTENT_LENGTH)) {
			/* even equal duplicates: one number is what XDP frames */
			if (p->has_clen)
				return slow(p, SLOW_BAD_LENGTH);
			p->has_clen = 1;
			p->state = HP_CLEN_SPACE;
		} else if (pos == 17 && (p->names & HF_TRANSFER_ENCODING)) {
			/* Any transfer coding (chunked must be the last one): the
			 * body ends where the chunks say, which XDP cannot follow
			 * segment by segment. */
			return slow(p, SLOW_CHUNKED);
		} else if (pos == 0) {
			return slow(p, SLOW_NOT_HTTP);
		} else {
			if (pos == 7 && (p->names & HF_UPGRADE))
				p->upgrade = 1;
			p->state = HP_SKIP_LINE;
		}
		return 0;
	}
	if (c <= ' ' || c >= 0x7f)
		return slow(p, SLOW_NOT_HTTP);
	if (!name_continues(host, 4, pos, lc))
		p->names &= ~HF_HOST;
	if (!name_continues(clen, 14, pos, lc))
		p->names &= ~HF_CONTENT_LENGTH;
	if (!name_continues(te, 17, pos, lc))
		p->names &= ~HF_TRANSFER_ENCODING;
	if (!name_continues(upgrade, 7, pos, lc))
		p->names &= ~HF_UPGRADE;
	if (pos < 32)
		p->pos = pos + 1;
	return 0;
}

/* A field value ended with byte c (CR, LF, or whitespace that may only be
 * followed by more whitespace and the line's end, in state ows). */
static __always_inline int field_value_end(struct http_parse *p, __u8 c, __u32 ows)
{
	if (c == '\r')
		p->state = HP_CR;
	else if (c == '\n')
		p->state = HP_LINE_START;
	else
		p->state = ows;
	return 0;
}

/* Each call of the callback reads one byte, except inside a header field
 * XDP does not read (most of a browser's header: User-Agent, Accept,
 * cookies), whose end one call finds in a batch of bytes: a bpf_loop call
 * per byte was most of a request's parse time. */
#define HTTP_SKIP_BATCH 32

static long http_parse_byte(__u64 call, void *ctx)
{
	struct http_scratch *s = ((struct http_parse_ctx *)ctx)->s;
	struct http_parse *p = &s->p;
	__u32 index = p->at;
	__u8 c, lc;

	if (index >= p->len)
		return slow(p, SLOW_INCOMPLETE);
	if (p->state == HP_SKIP_LINE) {
		for (int k = 0; k < HTTP_SKIP_BATCH; k++) {
			if (s->buf[index & (HTTP_SCAN - 1)] == '\n') {
				p->state = HP_LINE_START;
				p->at = index + 1;
				return 0;
			}
			if (++index >= p->len)
				return slow(p, SLOW_INCOMPLETE);
		}
		p->at = index;
		return 0;
	}
	p->at = index + 1;
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
		/* A bare LF ending the header, or a folded line (obsolete, and a
		 * way to hide a field from one parser but not another): the slow
		 * path's parser decides. */
		if (c == '\n' || c == ' ' || c == '\t')
			return slow(p, SLOW_NOT_HTTP);
		p->pos = 0;
		p->names = HF_ALL;
		p->state = HP_HEADER_NAME;
		/* fall through */
	case HP_HEADER_NAME:
		return header_name_byte(s, p, c, lc);
	case HP_CR:
		if (c != '\n')
			return slow(p, SLOW_NOT_HTTP);
		p->state = HP_LINE_START;
		return 0;
	case HP_HOST_SPACE:
		if (c == ' ' || c == '\t')
			return 0;
		p->state = HP_HOST;
		/* fall through */
	case HP_HOST:
		if (c == '\r' || c == '\n' || c == ' ' || c == '\t')
			return field_value_end(p, c, HP_HOST_OWS);
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
		if (c == '\r' || c == '\n' || c == ' ' || c == '\t')
			return field_value_end(p, c, HP_HOST_OWS);
		if (c < '0' || c > '9')
			return slow(p, SLOW_BAD_HOST);
		return 0;
	case HP_HOST_OWS:
		if (c == '\r' || c == '\n' || c == ' ' || c == '\t')
			return field_value_end(p, c, HP_HOST_OWS);
		return slow(p, SLOW_BAD_HOST);
	case HP_CLEN_SPACE:
		if (c == ' ' || c == '\t')
			return 0;
		if (c < '0' || c > '9')
			return slow(p, SLOW_BAD_LENGTH);
		p->state = HP_CLEN;
		/* fall through */
	case HP_CLEN:
		if (c >= '0' && c <= '9') {
			p->clen = p->clen * 10 + (c - '0');
			if (p->clen > HTTP_BODY_MAX)
				return slow(p, SLOW_BAD_LENGTH);
			return 0;
		}
		/* fall through: the digits ended */
	case HP_CLEN_OWS:
		if (c == '\r' || c == '\n' || c == ' ' || c == '\t')
			return field_value_end(p, c, HP_CLEN_OWS);
		/* a list ("5, 5"), a sign, anything but one decimal number */
		return slow(p, SLOW_BAD_LENGTH);
	case HP_HEADERS_END:
		if (c != '\n')
			return slow(p, SLOW_NOT_HTTP);
		p->hdr_end = index + 1;
		p->state = HP_DONE;
		return 1;
	}
	return slow(p, SLOW_NOT_HTTP);
}

/* Parses the request whose first byte is at offset off of the frame, in a
 * segment of len bytes; its whole header must lie within them. On success
 * the scratch route key holds the host (lowercased, port and a trailing dot
 * dropped) and the path with its terminator, *method the method's bit,
 * s->p.hdr_end the header's length, s->p.clen the Content-Length (0 without
 * one) and s->p.upgrade whether an Upgrade field was sent; the return value
 * is SLOW_NONE. */
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
