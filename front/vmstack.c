/*
 * vmstack's native front end. Every vmstack verb is implemented once, in TypeScript; this program
 * only saves the Node.js start-up (80-150 ms here) for the quick domain verbs a script calls in a
 * loop (`list`, `pause`, `domid` ...): when vmstackd is running, it hands the argument vector to
 * vmstackd (the "cli" request of docs/lifecycle.md), which runs the very same command code and
 * sends back its exit status, stdout and stderr. Everything else, and every case where vmstackd
 * is not there or declines, is an exec of the Node.js CLI, so behaviour never differs.
 *
 * Wire: one JSON line `{"op":"cli","argv":[...],"cwd":"/..."}`; the answer is one JSON line
 * `{"ok":true,"result":{"code":C,"stdout":N,"stderr":M}}` followed by N bytes of stdout and M bytes
 * of stderr. Any other answer (an older vmstackd, an error) falls back to the Node.js CLI, which is
 * safe because nothing has been printed yet and a declined request ran nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Must match FAST_VERBS in src/cli/fast-path.ts (vmstackd refuses any other verb). */
static const char *const fast_verbs[] = {
	"list", "pause", "unpause", "destroy", "reboot", "shutdown", "rename",
	"domid", "domname", "uptime", "sysrq", "trigger", "dmesg",
	/* Hotplug verbs that name no host file (attach and cd-insert take paths: Node.js CLI). */
	"block-list", "block-detach", "network-list", "network-detach", "cd-eject", "mem-set", "vcpu-set",
	/* Their FILE is resolved against the cwd this program sends. */
	"save", "restore",
	NULL,
};

static int is_fast(const char *verb)
{
	for (const char *const *v = fast_verbs; *v; v++)
		if (strcmp(*v, verb) == 0)
			return 1;
	return 0;
}

/* The Node.js CLI beside this binary: <root>/dist/front/vmstack -> <root>/dist/src/bin/vmstack.js. */
static void exec_node(char **argv)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0) {
		perror("vmstack: /proc/self/exe");
		exit(125);
	}
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	char script[PATH_MAX + 32];
	snprintf(script, sizeof script, "%s/../src/bin/vmstack.js", self);
	int argc = 0;
	while (argv[argc])
		argc++;
	char **nargv = calloc((size_t)argc + 2, sizeof *nargv);
	if (!nargv)
		exit(125);
	const char *node = getenv("VMSTACK_NODE");
	nargv[0] = (char *)(node && *node ? node : "node");
	nargv[1] = script;
	for (int i = 1; i < argc; i++)
		nargv[i + 1] = argv[i];
	execvp(nargv[0], nargv);
	fprintf(stderr, "vmstack: cannot run %s: %s\n", nargv[0], strerror(errno));
	exit(125);
}

/* As daemonPaths() in src/vmm/manager-paths.ts. */
static int socket_path(char *out, size_t size)
{
	const char *run = getenv("VMSTACK_RUN_DIR");
	int n;
	if (run && *run)
		n = snprintf(out, size, "%s/vmstackd.sock", run);
	else if (getuid() == 0)
		n = snprintf(out, size, "/run/vmstack/vmstackd.sock");
	else if (getenv("XDG_RUNTIME_DIR") && *getenv("XDG_RUNTIME_DIR"))
		n = snprintf(out, size, "%s/vmstack/vmstackd.sock", getenv("XDG_RUNTIME_DIR"));
	else {
		const char *tmp = getenv("TMPDIR");
		n = snprintf(out, size, "%s/vmstack-%u/vmstackd.sock", tmp && *tmp ? tmp : "/tmp", (unsigned)getuid());
	}
	return n > 0 && (size_t)n < size ? 0 : -1;
}

struct buf {
	char *p;
	size_t len, cap;
};

static int put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

/* A JSON string; bytes >= 0x80 pass through (vmstackd decodes the line as UTF-8). */
static int put_json_string(struct buf *b, const char *s)
{
	if (put(b, "\"", 1))
		return -1;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			if (put(b, esc, 2))
				return -1;
		} else if (c < 0x20) {
			snprintf(esc, sizeof esc, "\\u%04x", c);
			if (put(b, esc, 6))
				return -1;
		} else if (put(b, (const char *)&c, 1)) {
			return -1;
		}
	}
	return put(b, "\"", 1);
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The number after `"key":` in the response line, or -1. */
static long field(const char *line, const char *key)
{
	char pat[32];
	snprintf(pat, sizeof pat, "\"%s\":", key);
	const char *at = strstr(line, pat);
	if (!at)
		return -1;
	char *end;
	long v = strtol(at + strlen(pat), &end, 10);
	return end == at + strlen(pat) || v < 0 ? -1 : v;
}

/* Copies exactly `n` bytes from `fd` (after `pending` already read) to `out`. */
static int relay(int fd, int out, struct buf *pending, size_t *off, long n)
{
	while (n > 0) {
		if (*off < pending->len) {
			size_t take = pending->len - *off;
			if ((long)take > n)
				take = (size_t)n;
			if (write_all(out, pending->p + *off, take))
				return -1;
			*off += take;
			n -= (long)take;
			continue;
		}
		char chunk[65536];
		ssize_t r = read(fd, chunk, sizeof chunk < (size_t)n ? sizeof chunk : (size_t)n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		if (write_all(out, chunk, (size_t)r))
			return -1;
		n -= r;
	}
	return 0;
}

/* Returns the command's exit status, or -1 to fall back to the Node.js CLI. */
static int via_daemon(int argc, char **argv)
{
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	if (socket_path(path, sizeof path))
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	memcpy(addr.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		close(fd);
		return -1;
	}
	struct buf req = { 0 };
	int bad = put(&req, "{\"op\":\"cli\",\"argv\":[", 20);
	for (int i = 1; i < argc && !bad; i++)
		bad = (i > 1 && put(&req, ",", 1)) || put_json_string(&req, argv[i]);
	bad = bad || put(&req, "]", 1);
	/* Path arguments are relative to this directory, not vmstackd's. Without one: the Node.js CLI. */
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof cwd))
		bad = 1;
	bad = bad || put(&req, ",\"cwd\":", 7) || put_json_string(&req, cwd) || put(&req, "}\n", 2);
	if (bad || write_all(fd, req.p, req.len)) {
		close(fd);
		return -1;
	}
	free(req.p);
	/* The response line. */
	struct buf in = { 0 };
	char *nl = NULL;
	while (!nl) {
		char chunk[4096];
		ssize_t r = read(fd, chunk, sizeof chunk);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || put(&in, chunk, (size_t)r) || in.len > (1 << 20)) {
			close(fd);
			return -1;
		}
		nl = memchr(in.p, '\n', in.len);
	}
	*nl = '\0';
	long code = field(in.p, "code"), out = field(in.p, "stdout"), err = field(in.p, "stderr");
	if (strncmp(in.p, "{\"ok\":true,", 11) != 0 || code < 0 || code > 255 || out < 0 || err < 0) {
		close(fd);
		return -1;
	}
	/* From here on the command has run: its output is relayed, never retried. */
	size_t off = (size_t)(nl + 1 - in.p);
	if (relay(fd, 1, &in, &off, out) || relay(fd, 2, &in, &off, err)) {
		fprintf(stderr, "vmstack: the connection to vmstackd broke while relaying the output\n");
		return 125;
	}
	close(fd);
	return (int)code;
}

int main(int argc, char **argv)
{
	const char *off = getenv("VMSTACK_NO_FAST_PATH");
	if (argc >= 2 && is_fast(argv[1]) && !(off && *off && strcmp(off, "0") != 0)) {
		int code = via_daemon(argc, argv);
		if (code >= 0)
			return code;
	}
	exec_node(argv);
	return 125;
}
