// terway: the CNI plugin binary the container runtime executes. It hands
// the invocation, its CNI_* environment and its stdin unread, to the terway
// agent over the agent's unix socket, prints the agent's answer and exits
// with the status the agent gives (package cni/forward has the protocol and
// the reasons). It parses nothing of the config but its top-level "socket"
// and "cniVersion" keys: every check of the CNI protocol is the agent's.
//
// Built static (make build), so that an exec maps no libraries.

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

// Kept equal to the Go side by forward's tests.
#define DEFAULT_SOCKET "/var/run/terway/terway.sock"
#define MAX_MESSAGE (4 << 20)   // wire.MaxMessageBytes
#define MAX_ANSWER (MAX_MESSAGE + (64 << 10))
#define VERSION_ANSWER "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
#define ABOUT                                                                                   \
	"CNI plugin terway: forwards ADD, DEL, CHECK, GC and STATUS to the terway agent (default " \
	"socket " DEFAULT_SOCKET ")\nCNI protocol versions supported: 0.4.0, 1.0.0, 1.1.0\n"

// buf is a growable byte buffer; a failed allocation ends the process.
struct buf {
	char *p;
	size_t len, cap;
};

static void need(struct buf *b, size_t more) {
	if (b->len + more <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + more)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		fputs("terway: out of memory\n", stderr);
		exit(1);
	}
	b->p = p;
	b->cap = cap;
}

static void put(struct buf *b, const void *p, size_t n) {
	need(b, n);
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

// putJSON writes s as a JSON string.
static void putJSON(struct buf *b, const char *s) {
	puts_(b, "\"");
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		char esc[8];
		if (*c == '"' || *c == '\\') {
			esc[0] = '\\', esc[1] = (char)*c, esc[2] = 0;
			puts_(b, esc);
		} else if (*c < 0x20) {
			snprintf(esc, sizeof esc, "\\u%04x", *c);
			puts_(b, esc);
		} else {
			put(b, c, 1);
		}
	}
	puts_(b, "\"");
}

// errText is strerror as Go spells errno texts: lower case first.
static const char *errText(int err) {
	static char text[128];
	snprintf(text, sizeof text, "%s", strerror(err));
	if (text[0] >= 'A' && text[0] <= 'Z')
		text[0] = (char)(text[0] - 'A' + 'a');
	return text;
}

// writeAll writes n bytes to fd, a socket (sent without SIGPIPE: a dead
// agent is an error to report) or not.
static int writeAll(int fd, int isSocket, const char *p, size_t n) {
	while (n > 0) {
		ssize_t w = isSocket ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

// The config's top-level "socket" and "cniVersion", when its values for
// them are plain strings (found before any malformed part: the agent
// refuses the rest). socketBad says "socket" is there but not a string.
static char *confSocket, *confVersion;
static int socketBad;

static const char *skipSpace(const char *p, const char *end) {
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

// scanString reads a JSON string at p (its opening quote) and returns the
// position after it; *out gets its value when its only escapes are
// quote, backslash and slash, else NULL. NULL on a malformed string.
static const char *scanString(const char *p, const char *end, char **out) {
	struct buf v = {0};
	int plain = 1;
	for (p++; p < end; p++) {
		if (*p == '"') {
			if (out) {
				if (plain) {
					put(&v, "", 1);
					*out = v.p;
				} else {
					free(v.p);
					*out = NULL;
				}
			} else {
				free(v.p);
			}
			return p + 1;
		}
		if ((unsigned char)*p < 0x20)
			break;
		if (*p == '\\') {
			if (++p == end)
				break;
			if (*p == '"' || *p == '\\' || *p == '/')
				put(&v, p, 1);
			else
				plain = 0;
			continue;
		}
		put(&v, p, 1);
	}
	free(v.p);
	return NULL;
}

// skipValue returns the position after the JSON value at p, NULL if it is
// malformed (nested values are only balanced, not checked).
static const char *skipValue(const char *p, const char *end) {
	if (p >= end)
		return NULL;
	if (*p == '"')
		return scanString(p, end, NULL);
	if (*p != '{' && *p != '[') {
		while (p < end && !strchr(",}] \t\r\n", *p))
			p++;
		return p;
	}
	int depth = 0;
	while (p < end) {
		if (*p == '"') {
			if (!(p = scanString(p, end, NULL)))
				return NULL;
			continue;
		}
		if (*p == '{' || *p == '[')
			depth++;
		else if (*p == '}' || *p == ']') {
			if (--depth == 0)
				return p + 1;
		}
		p++;
	}
	return NULL;
}

// scanConf reads the config's "socket" and "cniVersion". It returns
// CONF_OBJECT when the config is a JSON object to its end (nested values
// only balanced, not checked), CONF_EMPTY for nothing but white space,
// CONF_OTHER otherwise.
enum { CONF_OBJECT, CONF_EMPTY, CONF_OTHER };

static int scanConf(const char *p, size_t n) {
	const char *end = p + n;
	p = skipSpace(p, end);
	if (p == end)
		return CONF_EMPTY;
	if (*p != '{')
		return CONF_OTHER;
	p = skipSpace(p + 1, end);
	while (p < end && *p == '"') {
		char *key = NULL;
		if (!(p = scanString(p, end, &key)))
			return CONF_OTHER;
		p = skipSpace(p, end);
		if (p == end || *p != ':') {
			free(key);
			return CONF_OTHER;
		}
		p = skipSpace(p + 1, end);
		// Matched as Go's encoding/json matches a struct's fields: any
		// case, the last one counting. A key with other escapes is not
		// read; the agent refuses a config whose socket is not the one
		// dialled (Terway-Socket).
		char **dst = NULL;
		if (key && strcasecmp(key, "socket") == 0)
			dst = &confSocket;
		else if (key && strcasecmp(key, "cniVersion") == 0)
			dst = &confVersion;
		free(key);
		if (dst == &confSocket && end - p >= 4 && strncmp(p, "null", 4) == 0) {
			free(confSocket); // null: absent, as in Go
			confSocket = NULL;
			socketBad = 0;
			p += 4;
		} else if (dst && p < end && *p == '"') {
			char *v = NULL;
			if (!(p = scanString(p, end, &v)))
				return CONF_OTHER;
			free(*dst); // a repeated key: the last one counts, as in Go
			*dst = v;
			if (dst == &confSocket)
				socketBad = !v; // escapes this scan does not decode
		} else {
			if (dst) {
				free(*dst);
				*dst = NULL;
				socketBad = socketBad || dst == &confSocket;
			}
			if (!(p = skipValue(p, end)))
				return CONF_OTHER;
		}
		p = skipSpace(p, end);
		if (p < end && *p == ',') {
			p = skipSpace(p + 1, end);
			continue;
		}
		break;
	}
	if (p == end || *p != '}')
		return CONF_OTHER;
	return skipSpace(p + 1, end) == end ? CONF_OBJECT : CONF_OTHER;
}

// fail prints a CNI error as the plugin prints one and returns 1.
static int fail(unsigned code, const char *details, const char *format, ...) {
	char msg[1024];
	va_list ap;
	va_start(ap, format);
	vsnprintf(msg, sizeof msg, format, ap);
	va_end(ap);
	struct buf out = {0};
	puts_(&out, "{\n");
	if (confVersion) {
		puts_(&out, "    \"cniVersion\": ");
		putJSON(&out, confVersion);
		puts_(&out, ",\n");
	}
	char num[32];
	snprintf(num, sizeof num, "    \"code\": %u,\n    \"msg\": ", code);
	puts_(&out, num);
	putJSON(&out, msg);
	if (details && *details) {
		puts_(&out, ",\n    \"details\": ");
		putJSON(&out, details);
	}
	puts_(&out, "\n}\n");
	writeAll(1, 0, out.p, out.len);
	return 1;
}

int main(void) {
	const char *cmd = getenv("CNI_COMMAND");
	if (!cmd || !*cmd) {
		fputs(ABOUT, stderr);
		return 0;
	}
	if (strcmp(cmd, "VERSION") == 0) {
		return writeAll(1, 0, VERSION_ANSWER, strlen(VERSION_ANSWER)) ? 1 : 0;
	}
	unsigned unreachableCode = strcmp(cmd, "STATUS") == 0 ? 50 : 11;

	// The body: CNI_* entries, an empty one, stdin (at most one byte over
	// the bound, for the agent to report).
	struct buf body = {0};
	for (char **e = environ; *e; e++) {
		if (strncmp(*e, "CNI_", 4) == 0)
			put(&body, *e, strlen(*e) + 1);
	}
	put(&body, "", 1);
	size_t stdinAt = body.len;
	for (;;) {
		need(&body, 65536);
		size_t room = body.cap - body.len;
		if (body.len - stdinAt + room > (size_t)MAX_MESSAGE + 1)
			room = (size_t)MAX_MESSAGE + 1 - (body.len - stdinAt);
		if (room == 0)
			break;
		ssize_t r = read(0, body.p + body.len, room);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fail(5, errText(errno), "terway %s: reading the network config from stdin failed", cmd);
		if (r == 0)
			break;
		body.len += (size_t)r;
	}
	int conf = scanConf(body.p + stdinAt, body.len - stdinAt);
	static const char *const commands[] = {"ADD", "DEL", "CHECK", "GC", "STATUS"};
	int known = 0;
	for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
		known = known || strcmp(cmd, commands[i]) == 0;
	if (!known)
		return fail(4, NULL, "terway: command (CNI_COMMAND) \"%.64s\" is not one of [ADD DEL CHECK GC STATUS] or VERSION", cmd);
	// The one field the forwarder uses, it checks (as the agent would).
	if (socketBad)
		return fail(6, NULL, "terway network config: field \"socket\" is not a string without escapes");
	if (confSocket && *confSocket && confSocket[0] != '/')
		return fail(7, NULL, "terway network config: field \"socket\" \"%.200s\" is not an absolute path", confSocket);
	const char *path = confSocket && *confSocket ? confSocket : DEFAULT_SOCKET;

	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof addr.sun_path)
		return fail(7, NULL, "terway network config: field \"socket\" %.200s is longer than %zu bytes", path,
			    sizeof addr.sun_path - 1);
	strcpy(addr.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		int err = errno;
		// The agent checks the config; unreachable, it cannot say what is
		// wrong with one the forwarder could not even read as an object.
		char why[300];
		snprintf(why, sizeof why, "the terway agent, which checks it, is unreachable at %s: connect: %s", path, errText(err));
		if (conf == CONF_EMPTY)
			return fail(6, why, "terway: no network config on stdin");
		if (conf == CONF_OTHER)
			return fail(6, why, "terway: network config on stdin is not a JSON object");
		return fail(unreachableCode, "is the terway agent (terwayd) running on this node? retry once it is up",
			    "terway agent unreachable at %s (%s): connect: %s", path, cmd, errText(err));
	}

	struct stat own;
	char netns[64] = "";
	if (stat("/proc/self/ns/net", &own) == 0)
		snprintf(netns, sizeof netns, "Terway-Caller-Netns: %llu:%llu\r\n", (unsigned long long)own.st_dev,
			 (unsigned long long)own.st_ino);
	char head[512];
	int hn = snprintf(head, sizeof head,
			  "POST /v1/cni/exec HTTP/1.1\r\nHost: terway\r\nContent-Type: application/vnd.terway.cni-exec\r\n"
			  "Content-Length: %zu\r\n%sTerway-Socket: %s\r\nConnection: close\r\n\r\n",
			  body.len, netns, path);
	if (writeAll(fd, 1, head, (size_t)hn) || writeAll(fd, 1, body.p, body.len))
		return fail(unreachableCode, "the agent closed the connection without answering; it may have restarted",
			    "terway agent at %s: %s: connection broken: sending the request: %s", path, cmd, errText(errno));

	// The answer, to its end (the agent closes the connection).
	struct buf ans = {0};
	for (;;) {
		need(&ans, 16384);
		ssize_t r = read(fd, ans.p + ans.len, ans.cap - ans.len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fail(unreachableCode, "the agent closed the connection without answering; it may have restarted",
				    "terway agent at %s: %s: connection broken: %s", path, cmd, errText(errno));
		if (r == 0)
			break;
		ans.len += (size_t)r;
		if (ans.len > MAX_ANSWER)
			return fail(999, "something other than a compatible terway agent answered on the socket",
				    "terway agent at %s: %s: protocol error: answer larger than %d bytes", path, cmd, MAX_ANSWER);
	}
	put(&ans, "", 1); // ends the head's text; not part of the body
	ans.len--;
	char *bodyAt = strstr(ans.p, "\r\n\r\n");
	if (ans.len == 0)
		return fail(unreachableCode, "the agent closed the connection without answering; it may have restarted",
			    "terway agent at %s: %s: connection broken: no answer", path, cmd);
	const char *protocolHint = "something other than a compatible terway agent answered on the socket";
	if (!bodyAt || strncmp(ans.p, "HTTP/1.1 200 ", 13) != 0)
		return fail(999, protocolHint, "terway agent at %s: %s: protocol error: answer begins %.40s", path, cmd, ans.p);
	*bodyAt = 0;
	bodyAt += 4;
	long exitStatus = -1, length = -1;
	for (char *line = strstr(ans.p, "\r\n"); line; line = strstr(line, "\r\n")) {
		line += 2;
		if (strncasecmp(line, "Terway-Exit:", 12) == 0)
			exitStatus = strtol(line + 12, NULL, 10);
		else if (strncasecmp(line, "Content-Length:", 15) == 0)
			length = strtol(line + 15, NULL, 10);
	}
	size_t got = ans.len - (size_t)(bodyAt - ans.p);
	if (length >= 0 && got < (size_t)length) // the agent went away mid-answer
		return fail(unreachableCode, "the agent closed the connection without answering; it may have restarted",
			    "terway agent at %s: %s: connection broken: answer of %zu bytes of %ld", path, cmd, got, length);
	if (exitStatus < 0 || exitStatus > 255 || length < 0 || (size_t)length != got)
		return fail(999, protocolHint, "terway agent at %s: %s: protocol error: exit status %ld, length %ld, body %zu bytes",
			    path, cmd, exitStatus, length, got);
	if (writeAll(1, 0, bodyAt, got))
		return fail(5, errText(errno), "terway %s: writing the answer to stdout failed", cmd);
	return (int)exitStatus;
}
