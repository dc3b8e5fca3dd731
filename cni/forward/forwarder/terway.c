// terway: the CNI plugin binary the container runtime executes. It hands
// the invocation, its CNI_* environment and its stdin unread, to the terway
// agent over the agent's unix socket, prints the agent's answer and exits
// with the status the agent gives (package cni/forward has the protocol and
// the reasons). It parses nothing of the config but its top-level "socket"
// and "cniVersion" keys: every check of the CNI protocol is the agent's.
//
// Built static and without a C library (package cni/forward's CFlags), so
// that an exec maps no libraries and runs no libc start-up.

// No C library: glibc's start-up runs CPUID dozens of times (to pick its
// string functions and learn the cache sizes), and under a hypervisor each
// CPUID is a trap to it. That was 0.5 ms of CPU per exec on a 2-core VM,
// more than everything else this program does, paid by every pod's ADD and
// DEL. What the program needs of a libc is below: the system calls, the
// string functions, a byte formatter and the texts of the errors it can
// meet. Built with -nostdlib -ffreestanding (package cni/forward's CFlags).

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef long ssize_t;

// System call numbers and the constants used, per architecture: the
// kernel's, for the two GOARCHes the image is built for.
#if defined(__x86_64__)
enum { SYS_read = 0, SYS_write = 1, SYS_mmap = 9, SYS_munmap = 11, SYS_mremap = 25, SYS_socket = 41,
       SYS_connect = 42, SYS_sendto = 44, SYS_exit_group = 231, SYS_newfstatat = 262 };
static long syscall6(long n, long a, long b, long c, long d, long e, long f) {
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}
// The kernel enters with the stack at argc; start_c gets its address, on a
// stack aligned as a call expects.
__asm__(".text\n.global _start\n.type _start,@function\n_start:\n"
	"\txor %ebp, %ebp\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall start_c\n\thlt\n");
#elif defined(__aarch64__)
enum { SYS_read = 63, SYS_write = 64, SYS_mmap = 222, SYS_munmap = 215, SYS_mremap = 216, SYS_socket = 198,
       SYS_connect = 203, SYS_sendto = 206, SYS_exit_group = 94, SYS_newfstatat = 79 };
static long syscall6(long n, long a, long b, long c, long d, long e, long f) {
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;
	__asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
	return x0;
}
__asm__(".text\n.global _start\n.type _start,%function\n_start:\n"
	"\tmov x29, #0\n\tmov x30, #0\n\tmov x0, sp\n\tbl start_c\n\tbrk #0\n");
#else
#error "the terway forwarder knows the system calls of x86_64 and aarch64 only"
#endif

// The same values on both architectures.
enum { AF_UNIX = 1, SOCK_STREAM = 1, SOCK_CLOEXEC = 02000000, MSG_NOSIGNAL = 0x4000, AT_FDCWD = -100 };
enum { PROT_RW = 3, MAP_PRIVATE_ANON = 0x22, MREMAP_MAYMOVE = 1 };
enum { EINTR = 4 };

// errno is the last failed call's error, as libc keeps it.
static int errno;

// sys makes a system call; a failure sets errno and returns -1.
static long sys(long n, long a, long b, long c, long d, long e, long f) {
	long r = syscall6(n, a, b, c, d, e, f);
	if (r < 0 && r > -4096) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

static ssize_t read(int fd, void *p, size_t n) { return sys(SYS_read, fd, (long)p, (long)n, 0, 0, 0); }
static ssize_t write(int fd, const void *p, size_t n) { return sys(SYS_write, fd, (long)p, (long)n, 0, 0, 0); }
static ssize_t send(int fd, const void *p, size_t n, int flags) {
	return sys(SYS_sendto, fd, (long)p, (long)n, flags, 0, 0);
}
static int socket(int domain, int type, int proto) { return (int)sys(SYS_socket, domain, type, proto, 0, 0, 0); }

__attribute__((noreturn)) static void exit(int code) {
	for (;;)
		syscall6(SYS_exit_group, code, 0, 0, 0, 0, 0);
}

// The compiler may call these four for struct copies and initialisers.
void *memcpy(void *dst, const void *src, size_t n) {
	unsigned char *d = dst;
	const unsigned char *s = src;
	while (n--)
		*d++ = *s++;
	return dst;
}
void *memmove(void *dst, const void *src, size_t n) {
	unsigned char *d = dst;
	const unsigned char *s = src;
	if (d < s)
		return memcpy(dst, src, n);
	while (n--)
		d[n] = s[n];
	return dst;
}
void *memset(void *dst, int c, size_t n) {
	unsigned char *d = dst;
	while (n--)
		*d++ = (unsigned char)c;
	return dst;
}
int memcmp(const void *a, const void *b, size_t n) {
	const unsigned char *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

static size_t strlen(const char *s) {
	const char *p = s;
	while (*p)
		p++;
	return (size_t)(p - s);
}
static int strncmp(const char *a, const char *b, size_t n) {
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (unsigned char)*a - (unsigned char)*b;
		if (!*a)
			break;
	}
	return 0;
}
static int strcmp(const char *a, const char *b) { return strncmp(a, b, (size_t)-1); }
static int lower(int c) { return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c; }
static int strncasecmp(const char *a, const char *b, size_t n) {
	for (; n; n--, a++, b++) {
		int x = lower((unsigned char)*a), y = lower((unsigned char)*b);
		if (x != y)
			return x - y;
		if (!x)
			break;
	}
	return 0;
}
static const char *strchr(const char *s, int c) {
	for (;; s++) {
		if (*s == (char)c)
			return s;
		if (!*s)
			return NULL;
	}
}
static char *strstr(char *s, const char *sub) {
	size_t n = strlen(sub);
	for (; *s; s++)
		if (strncmp(s, sub, n) == 0)
			return s;
	return NULL;
}
static char *strcpy(char *dst, const char *src) { return memcpy(dst, src, strlen(src) + 1); }

// strtol reads a decimal number as strtol(s, NULL, 10) does: leading white
// space, a sign, digits; 0 without digits, clamped at the long's bounds.
static long strtol(const char *s, void *unused, int base) {
	(void)unused, (void)base;
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v')
		s++;
	int neg = *s == '-';
	if (*s == '-' || *s == '+')
		s++;
	unsigned long v = 0, max = neg ? (unsigned long)LONG_MAX + 1 : (unsigned long)LONG_MAX;
	for (; *s >= '0' && *s <= '9'; s++)
		v = v > (max - (unsigned long)(*s - '0')) / 10 ? max : v * 10 + (unsigned long)(*s - '0');
	return neg ? (long)(0 - v) : (long)v;
}

// Memory comes from the kernel directly: the program makes a few buffers,
// grows two of them, and exits. A block's mapped size is in the 16 bytes
// before it.
enum { BLOCK_HEAD = 16 };
static void *realloc(void *old, size_t size) {
	size_t mapped = (size + BLOCK_HEAD + 4095) & ~(size_t)4095;
	long p;
	if (old) {
		char *head = (char *)old - BLOCK_HEAD;
		p = sys(SYS_mremap, (long)head, (long)*(size_t *)head, (long)mapped, MREMAP_MAYMOVE, 0, 0);
	} else {
		p = sys(SYS_mmap, 0, (long)mapped, PROT_RW, MAP_PRIVATE_ANON, -1, 0);
	}
	if (p == -1)
		return NULL;
	*(size_t *)p = mapped;
	return (char *)p + BLOCK_HEAD;
}
static void free(void *p) {
	if (p) {
		char *head = (char *)p - BLOCK_HEAD;
		sys(SYS_munmap, (long)head, (long)*(size_t *)head, 0, 0, 0, 0);
	}
}

// vsnprintf formats as libc does, for the conversions this file uses: %s
// (with a precision), %d, %u, %x, each with a width, the flag 0 and the
// size l, ll or z, and %%. It returns the length the whole text needs.
__attribute__((format(printf, 3, 0))) static int vsnprintf(char *out, size_t size, const char *f, va_list ap) {
	size_t n = 0;
#define OUT(ch) (n + 1 < size ? (void)(out[n] = (ch)) : (void)0, n++)
	for (; *f; f++) {
		if (*f != '%') {
			OUT(*f);
			continue;
		}
		if (!*++f)
			break; // a lone % at the end
		int zero = 0, width = 0, prec = -1, size_ = 0;
		if (*f == '0')
			zero = 1, f++;
		for (; *f >= '0' && *f <= '9'; f++)
			width = width * 10 + (*f - '0');
		if (*f == '.')
			for (prec = 0, f++; *f >= '0' && *f <= '9'; f++)
				prec = prec * 10 + (*f - '0');
		for (; *f == 'l' || *f == 'z'; f++)
			size_++;
		char digits[24];
		const char *text = digits;
		int len = 0, neg = 0;
		switch (*f) {
		case 's':
			text = va_arg(ap, const char *);
			for (len = 0; (prec < 0 || len < prec) && text[len]; len++)
				;
			zero = 0;
			break;
		case 'd':
		case 'u':
		case 'x': {
			unsigned long long v;
			if (*f == 'd') {
				long long s = size_ >= 2 ? va_arg(ap, long long) : size_ ? va_arg(ap, long) : va_arg(ap, int);
				neg = s < 0;
				v = neg ? 0 - (unsigned long long)s : (unsigned long long)s;
			} else {
				v = size_ >= 2 ? va_arg(ap, unsigned long long) : size_ ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
			}
			unsigned base = *f == 'x' ? 16 : 10;
			char *d = digits + sizeof digits;
			do
				*--d = "0123456789abcdef"[v % base];
			while (v /= base);
			text = d, len = (int)(digits + sizeof digits - d);
			break;
		}
		case '%':
			text = "%", len = 1;
			break;
		default: // not used in this file
			text = "%?", len = 2;
		}
		if (neg && zero)
			OUT('-');
		for (int pad = width - len - neg; pad > 0; pad--)
			OUT(zero ? '0' : ' ');
		if (neg && !zero)
			OUT('-');
		for (int i = 0; i < len; i++)
			OUT(text[i]);
	}
	if (size)
		out[n < size ? n : size - 1] = 0;
#undef OUT
	return (int)n;
}
__attribute__((format(printf, 3, 4))) static int snprintf(char *out, size_t size, const char *f, ...) {
	va_list ap;
	va_start(ap, f);
	int n = vsnprintf(out, size, f, ap);
	va_end(ap);
	return n;
}

// strerror has the texts of the errors the calls here can meet, in the
// words of the C library (and Go's) texts for them.
static const char *strerror(int err) {
	static const struct {
		int err;
		const char *text;
	} texts[] = {
	    {1, "Operation not permitted"},
	    {2, "No such file or directory"},
	    {4, "Interrupted system call"},
	    {5, "Input/output error"},
	    {6, "No such device or address"},
	    {9, "Bad file descriptor"},
	    {11, "Resource temporarily unavailable"},
	    {12, "Cannot allocate memory"},
	    {13, "Permission denied"},
	    {14, "Bad address"},
	    {20, "Not a directory"},
	    {21, "Is a directory"},
	    {22, "Invalid argument"},
	    {23, "Too many open files in system"},
	    {24, "Too many open files"},
	    {27, "File too large"},
	    {28, "No space left on device"},
	    {30, "Read-only file system"},
	    {32, "Broken pipe"},
	    {36, "File name too long"},
	    {38, "Function not implemented"},
	    {40, "Too many levels of symbolic links"},
	    {88, "Socket operation on non-socket"},
	    {91, "Protocol wrong type for socket"},
	    {93, "Protocol not supported"},
	    {97, "Address family not supported by protocol"},
	    {98, "Address already in use"},
	    {103, "Software caused connection abort"},
	    {104, "Connection reset by peer"},
	    {105, "No buffer space available"},
	    {107, "Transport endpoint is not connected"},
	    {110, "Connection timed out"},
	    {111, "Connection refused"},
	    {116, "Stale file handle"},
	    {122, "Disk quota exceeded"},
	};
	for (size_t i = 0; i < sizeof texts / sizeof *texts; i++)
		if (texts[i].err == err)
			return texts[i].text;
	static char unknown[32];
	snprintf(unknown, sizeof unknown, "Unknown error %d", err);
	return unknown;
}

static char **environ;

// getenv returns the first entry of the name, as libc's does.
static const char *getenv(const char *name) {
	size_t n = strlen(name);
	for (char **e = environ; *e; e++)
		if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
			return *e + n + 1;
	return NULL;
}

struct sockaddr_un {
	uint16_t sun_family;
	char sun_path[108];
};
static int connect(int fd, const struct sockaddr_un *addr, size_t size) {
	return (int)sys(SYS_connect, fd, (long)addr, (long)size, 0, 0, 0);
}

// netnsID is the device and inode of /proc/self/ns/net, as stat gives
// them (the first two fields of the kernel's stat on both architectures).
static int netnsID(unsigned long long *dev, unsigned long long *ino) {
	unsigned long long st[32]; // larger than either architecture's struct stat
	if (sys(SYS_newfstatat, AT_FDCWD, (long)"/proc/self/ns/net", (long)st, 0, 0, 0) < 0)
		return -1;
	*dev = st[0], *ino = st[1];
	return 0;
}

int main(void);

__attribute__((noreturn, used)) void start_c(long *sp) {
	long argc = sp[0];
	environ = (char **)(sp + 1 + argc + 1);
	exit(main());
}

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
		static const char msg[] = "terway: out of memory\n";
		write(2, msg, sizeof msg - 1);
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
			}
			return p + 1;
		}
		if ((unsigned char)*p < 0x20)
			break;
		if (*p == '\\') {
			if (++p == end)
				break;
			if (*p == '"' || *p == '\\' || *p == '/') {
				if (out)
					put(&v, p, 1);
			} else {
				plain = 0;
			}
			continue;
		}
		if (out)
			put(&v, p, 1);
	}
	free(v.p);
	return NULL;
}

// keyIs says whether the object key at key (its text between the quotes)
// is name in any case. A key with an escape never is: the two names read
// have none of the characters an escape stands for.
static int keyIs(const char *key, const char *keyEnd, const char *name) {
	size_t n = strlen(name);
	return (size_t)(keyEnd - key) == n && strncasecmp(key, name, n) == 0;
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
		const char *key = p + 1;
		if (!(p = scanString(p, end, NULL)))
			return CONF_OTHER;
		const char *keyEnd = p - 1;
		p = skipSpace(p, end);
		if (p == end || *p != ':')
			return CONF_OTHER;
		p = skipSpace(p + 1, end);
		// Matched as Go's encoding/json matches a struct's fields: any
		// case, the last one counting. A key with other escapes is not
		// read; the agent refuses a config whose socket is not the one
		// dialled (Terway-Socket).
		char **dst = NULL;
		if (keyIs(key, keyEnd, "socket"))
			dst = &confSocket;
		else if (keyIs(key, keyEnd, "cniVersion"))
			dst = &confVersion;
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
__attribute__((format(printf, 3, 4))) static int fail(unsigned code, const char *details, const char *format, ...) {
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
		write(2, ABOUT, strlen(ABOUT));
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
	if (fd < 0 || connect(fd, &addr, sizeof addr) < 0) {
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

	unsigned long long netnsDev, netnsIno;
	char netns[64] = "";
	if (netnsID(&netnsDev, &netnsIno) == 0)
		snprintf(netns, sizeof netns, "Terway-Caller-Netns: %llu:%llu\r\n", netnsDev, netnsIno);
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
