/*
 * logs.c -- the stdio handler: logentry instances as JSON lines, the shape
 * Mixer's stdio adapter wrote with outputAsJson (zap): level, time,
 * instance, then the variables in name order. Values are written as zap's
 * JSON encoder wrote them, byte for byte, so whatever parsed Mixer's log
 * parses ours: times in the adapter's formatDate layout, floats as
 * strconv 'f' -1, IP addresses as net.IP.String(), BYTES in base64 (zap's
 * AddBinary), zap's string escapes.
 *
 * An entry is written whole or not at all. Mixer built the instance before
 * its adapter saw it, and a field whose expression failed (an attribute
 * absent, no `|` default) failed the build: the dispatcher logged the
 * error and dropped the instance. That holds for every field the template
 * has, the monitored resource ones the adapter never wrote included.
 *
 * Every entry is written whatever its level and the handler's outputLevel:
 * Mixer's adapter called zapcore.Core.Write, which skips the level check
 * (only Core.Check applies it), so outputLevel filtered nothing there.
 *
 * A shard formats into its own buffer and writes whole lines: to a regular
 * file in one write (made under the file's lock, and at its end: an output
 * file is opened O_APPEND, a stdout redirected to one shares an offset
 * Linux moves atomically), elsewhere in writes of at most PIPE_BUF bytes
 * (atomic on a pipe). So lines from different shards never interleave,
 * but for a line longer than PIPE_BUF (4 KiB) on a pipe or socket, which
 * takes more than one write.
 *
 * ROTATED_FILE is rotated as Mixer's lumberjack did: before a write that
 * would take the file past maxMegabytesBeforeRotation, it is renamed
 * <name>-<UTC time, 2006-01-02T15-04-05.000><ext> and a new one started;
 * then the oldest backups beyond maxRotatedFiles, and those older than
 * maxDaysBeforeRotation days, are removed. (Mixer passed those two to
 * lumberjack the other way round -- backups kept by the count of days,
 * removed after the number of files in days -- which no one reading its
 * documentation meant; mixd does what the names say.) Its defaults are
 * Mixer's: a size of 100 Ti MB (so, unless set, never rotated), 1000
 * files, 30 days.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agg/agg_internal.h"

static int var_cmp(const void *a, const void *b)
{
	const struct cfg_named_expr *x = *(const struct cfg_named_expr *const *)a;
	const struct cfg_named_expr *y = *(const struct cfg_named_expr *const *)b;
	return strcmp(x->name, y->name);
}

/* Mixer's defaults (its adapter's DefaultConfig): a configuration that
 * sets none of the three. */
#define ROT_DEFAULT_MB (100ll * 1024 * 1024)
#define ROT_DEFAULT_FILES 1000
#define ROT_DEFAULT_DAYS 30

static struct log_rot *rot_new(const struct cfg_stdio *s, int fd)
{
	struct log_rot *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	int64_t mb = s->max_megabytes_before_rotation > 0
			     ? s->max_megabytes_before_rotation
			     : ROT_DEFAULT_MB;
	/* Past 2^44 MB a file is never that large: not rotated. */
	r->max_bytes = mb < (1ll << 44) ? (uint64_t)mb << 20 : 0;
	r->max_backups = s->max_rotated_files > 0 ? (uint64_t)s->max_rotated_files
						  : ROT_DEFAULT_FILES;
	int64_t days = s->max_days_before_rotation > 0
			       ? s->max_days_before_rotation
			       : ROT_DEFAULT_DAYS;
	r->max_age_s = days < (1ll << 40) ? days * 86400 : 0;
	r->path = s->output_path.s;
	r->fd = fd;
	struct stat st;
	r->size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	pthread_mutex_init(&r->lock, NULL);
	return r;
}

/* @path split as lumberjack did: the directory, the name without its
 * extension, the extension (from the last '.' of the name). */
struct rot_name {
	char dir[PATH_MAX];
	const char *base, *ext;
	size_t base_len;
};

static void rot_split(const char *path, struct rot_name *n)
{
	const char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	if (slash)
		snprintf(n->dir, sizeof n->dir, "%.*s",
			 (int)(slash - path > 0 ? slash - path : 1), path);
	else
		snprintf(n->dir, sizeof n->dir, ".");
	const char *dot = strrchr(name, '.');
	n->base = name;
	n->ext = dot ? dot : name + strlen(name);
	n->base_len = (size_t)(n->ext - name);
}

/* The decimal number in @p's first @w digits. */
static int num(const char *p, int w)
{
	int v = 0;
	for (int i = 0; i < w; i++)
		v = v * 10 + (p[i] - '0');
	return v;
}

/* A backup file found, and the time its name says. */
struct backup {
	int64_t t;
	char *name;
};

/* The time (ms) in a backup's name @d, "<base>-2006-01-02T15-04-05.000
 * <ext>", or -1 if @d is not one of @n's backups. */
static int64_t backup_time(const struct rot_name *n, const char *d)
{
	static const char shape[] = "dddd-dd-ddTdd-dd-dd.ddd";
	if (strncmp(d, n->base, n->base_len) || d[n->base_len] != '-')
		return -1;
	const char *ts = d + n->base_len + 1;
	if (strlen(ts) != 23 + strlen(n->ext) || strcmp(ts + 23, n->ext))
		return -1;
	for (int i = 0; i < 23; i++)
		if (shape[i] == 'd' ? ts[i] < '0' || ts[i] > '9'
				    : ts[i] != shape[i])
			return -1;
	struct tm tm = {.tm_year = num(ts, 4) - 1900,
			.tm_mon = num(ts + 5, 2) - 1,
			.tm_mday = num(ts + 8, 2),
			.tm_hour = num(ts + 11, 2),
			.tm_min = num(ts + 14, 2),
			.tm_sec = num(ts + 17, 2)};
	return (int64_t)timegm(&tm) * 1000 + num(ts + 20, 3);
}

static int cmp_newest_first(const void *a, const void *b)
{
	const struct backup *x = a, *y = b;
	return x->t < y->t ? 1 : x->t > y->t ? -1 : 0;
}

/* Remove @n's backups beyond the newest max_backups, and those older than
 * max_age_s. */
static void rot_prune(const struct log_rot *r, const struct rot_name *n)
{
	DIR *d = opendir(n->dir);
	if (!d)
		return;
	struct backup *v = NULL;
	size_t nv = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		int64_t t = backup_time(n, e->d_name);
		if (t < 0)
			continue;
		if (nv == cap) {
			size_t nc = cap ? 2 * cap : 16;
			struct backup *g = realloc(v, nc * sizeof *g);
			if (!g)
				break;
			v = g;
			cap = nc;
		}
		if (!(v[nv].name = strdup(e->d_name)))
			break;
		v[nv++].t = t;
	}
	closedir(d);
	if (nv)
		qsort(v, nv, sizeof *v, cmp_newest_first);
	int64_t now_ms = (int64_t)time(NULL) * 1000;
	for (size_t i = 0; i < nv; i++) {
		if ((r->max_backups && i >= r->max_backups) ||
		    (r->max_age_s && now_ms - v[i].t > r->max_age_s * 1000)) {
			char p[PATH_MAX + 256];
			snprintf(p, sizeof p, "%s/%s", n->dir, v[i].name);
			unlink(p);
		}
		free(v[i].name);
	}
	free(v);
}

/*
 * Before @n more bytes go to @r's file: if they would take it past its
 * size, rotate it (one shard at a time; another may have done it while
 * this one waited). The new file is dup2()ed over the descriptor every
 * shard writes, so none needs telling; a write in flight lands whole in
 * the old file or the new. A file someone removed is not renamed, only
 * started again, as lumberjack did. On failure the file goes on growing
 * (losing entries to a failed rotation would be worse), the failure is
 * said once until a rotation succeeds, and tried again a second later,
 * not at every write.
 */
static void log_rotate(struct log_rot *r, size_t n)
{
	if (!r->max_bytes ||
	    __atomic_load_n(&r->size, __ATOMIC_RELAXED) + n <= r->max_bytes)
		return;
	pthread_mutex_lock(&r->lock);
	uint64_t size = __atomic_load_n(&r->size, __ATOMIC_RELAXED);
	const int64_t now_s = (int64_t)(ingest_now_coarse() / 1000000000u);
	if (size + n > r->max_bytes && size > 0 && now_s >= r->retry_s) {
		struct rot_name nm;
		rot_split(r->path, &nm);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
		/* Two rotations in one millisecond: the second's name is a
		 * millisecond on, not the first's backup overwritten. */
		int rc = -1;
		for (int tries = 0; rc < 0 && tries < 1000; tries++, ms++) {
			time_t sec = (time_t)(ms / 1000);
			struct tm tm;
			gmtime_r(&sec, &tm);
			char bk[PATH_MAX + 64];
			snprintf(bk, sizeof bk,
				 "%s/%.*s-%04d-%02d-%02dT%02d-%02d-%02d.%03d%s",
				 nm.dir, (int)nm.base_len, nm.base,
				 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
				 tm.tm_hour, tm.tm_min, tm.tm_sec,
				 (int)(ms % 1000), nm.ext);
			rc = renameat2(AT_FDCWD, r->path, AT_FDCWD, bk,
				       RENAME_NOREPLACE);
			if (rc < 0 && errno != EEXIST)
				break;
		}
		if (rc < 0 && errno == ENOENT)
			rc = 0; /* removed: nothing to keep */
		int fd = -1;
		if (rc == 0 &&
		    (fd = open(r->path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND |
						O_CLOEXEC, 0644)) >= 0 &&
		    dup2(fd, r->fd) >= 0) {
			__atomic_store_n(&r->size, 0, __ATOMIC_RELAXED);
			rot_prune(r, &nm);
			r->failing = false;
		} else {
			if (!r->failing)
				fprintf(stderr,
					"mixd: stdio handler: cannot rotate %s: %s "
					"(it grows on; tried again each second)\n",
					r->path, strerror(errno));
			r->failing = true;
			r->retry_s = now_s + 1;
		}
		if (fd >= 0)
			close(fd);
	}
	pthread_mutex_unlock(&r->lock);
}

/*
 * The descriptor a plan log writes stdout or stderr (@fd) through, so that
 * no write waits: a pipe, FIFO or terminal is opened again through
 * /proc/self/fd and made O_NONBLOCK there, on mixd's own open file
 * description, not on the one it shares with whoever started it (or, when
 * it cannot be opened again, on that one, said on stderr); a socket
 * (journald's stream, say) is written with send(MSG_DONTWAIT) (*@send); a
 * regular file is written as it is (a write to one does not wait for a
 * reader). *@own: the descriptor is a new one, to be closed.
 */
static int nonblocking_std(int fd, bool *own, bool *send)
{
	static bool said; /* atomic */
	struct stat st;
	*own = *send = false;
	if (fstat(fd, &st) < 0)
		return fd; /* closed: its writes fail, counted */
	if (S_ISSOCK(st.st_mode)) {
		*send = true;
		return fd;
	}
	if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode))
		return fd;
	char path[32];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	int nfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (nfd >= 0) {
		*own = true;
		return nfd;
	}
	/* Not ours to open (a pipe another user made: a container runtime's,
	 * mixd not root): then the description it shares with whoever
	 * started it is made non-blocking, which they are told of. */
	int err = errno, fl = fcntl(fd, F_GETFL);
	bool nb = fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0;
	if (!__atomic_exchange_n(&said, true, __ATOMIC_RELAXED))
		fprintf(stderr,
			"mixd: stdio handler: cannot open %s again (%s)%s\n",
			fd == 1 ? "stdout" : "stderr", strerror(err),
			nb ? "; O_NONBLOCK set on the one mixd was started with"
			   : ": a reader that stops reading it will stop the "
			     "shards");
	return fd;
}

/* Whether regular file @fd is empty or ends a line. A line cut short (an
 * output that filled up, a mixd killed) must be ended before the next
 * begins, once: by whoever opens the file next, or by the shard that cut
 * it if no one has yet. */
static bool file_ends_line(int fd)
{
	/* Read through a descriptor of its own: outputs are write-only. */
	char path[32], c;
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	int r = open(path, O_RDONLY | O_CLOEXEC);
	if (r < 0)
		return false; /* ended again, then: a line, not a join */
	struct stat st;
	bool ends = !fstat(r, &st) &&
		    (st.st_size == 0 ||
		     (pread(r, &c, 1, st.st_size - 1) == 1 && c == '\n'));
	close(r);
	return ends;
}

int plan_open_logs(struct agg_plan *p)
{
	for (size_t i = 0; i < p->nlogs; i++) {
		struct plan_log *l = &p->logs[i];
		const struct cfg_stdio *s = l->stdio;
		const struct cfg_expr_map *vm = &l->inst->logentry.variables;
		l->vars = calloc(vm->n + 1, sizeof *l->vars);
		if (!l->vars)
			return -1;
		for (size_t k = 0; k < vm->n; k++)
			l->vars[k] = &vm->v[k];
		l->nvars = vm->n;
		qsort(l->vars, l->nvars, sizeof l->vars[0], var_cmp);
		if (s->log_stream == CFG_STREAM_FILE ||
		    s->log_stream == CFG_STREAM_ROTATED_FILE) {
			/* Handlers shared by rules share one descriptor. */
			for (size_t j = 0; j < i && l->fd < 0; j++)
				if (p->logs[j].stdio == s)
					l->fd = p->logs[j].fd;
			if (l->fd >= 0) {
				for (size_t j = 0; j < i && !l->rot; j++)
					if (p->logs[j].stdio == s)
						l->rot = p->logs[j].rot;
				continue;
			}
			/* O_NONBLOCK: a FIFO's writes must not wait either. */
			l->fd = open(s->output_path.s, O_WRONLY | O_CREAT | O_APPEND |
							       O_NONBLOCK | O_CLOEXEC,
				     0644);
			if (l->fd < 0) {
				fprintf(stderr, "mixd: stdio handler: cannot open %s: %s%s\n",
					s->output_path.s, strerror(errno),
					errno == ENXIO ? " (a FIFO no one reads)"
						       : "");
				return -1;
			}
			l->own_fd = true;
			if (s->log_stream == CFG_STREAM_ROTATED_FILE &&
			    !(l->rot = rot_new(s, l->fd)))
				return -1;
		} else {
			int std = s->log_stream == CFG_STREAM_STDERR ? 2 : 1;
			/* One descriptor for each of the two in a plan. */
			for (size_t j = 0; j < i && l->fd < 0; j++)
				if (p->logs[j].std == std) {
					l->fd = p->logs[j].fd;
					l->send = p->logs[j].send;
				}
			l->std = std;
			if (l->fd < 0)
				l->fd = nonblocking_std(std, &l->own_fd, &l->send);
		}
	}
	p->nouts = 0;
	for (size_t i = 0; i < p->nlogs; i++) {
		struct plan_log *l = &p->logs[i];
		struct stat st;
		l->out = (unsigned)p->nouts;
		for (size_t j = 0; j < i; j++)
			if (p->logs[j].fd == l->fd) {
				l->out = p->logs[j].out;
				break;
			}
		if (l->out == p->nouts)
			p->nouts++;
		l->regular = fstat(l->fd, &st) == 0 && S_ISREG(st.st_mode);
		if (l->regular && l->own_fd && !file_ends_line(l->fd))
			(void)!write(l->fd, "\n", 1);
	}
	return 0;
}

/* @n lines of @b will not be written (@err: why): counted, and said on
 * stderr the first time in the process. */
static void count_lost(struct log_buf *b, uint64_t n, int err)
{
	static bool said; /* atomic */
	b->lost += n;
	if (n && !__atomic_exchange_n(&said, true, __ATOMIC_RELAXED))
		fprintf(stderr,
			"mixd: stdio handler: %s%s; lines it does not take are "
			"counted in mixd_log_lines_lost_total\n",
			err == EAGAIN ? "its output is not being read fast enough"
				      : "cannot write its output: ",
			err == EAGAIN ? "" : strerror(err));
}

/* The lines of @b from @off will not be written (@err: why): counted (a
 * line cut short by a failure with them) and dropped. */
static void lost(struct log_buf *b, size_t off, int err)
{
	uint64_t n = 0;
	for (const char *p = b->data + off, *e = b->data + b->len;
	     (p = memchr(p, '\n', (size_t)(e - p))); p++)
		n++;
	b->len = off;
	/* A line begun and not ended: the output's next byte ends it. */
	b->torn |= b->mid;
	count_lost(b, n, err);
}

/* Up to @n bytes of @p to @b's output, never waiting: the bytes taken, or
 * -1 (errno; EAGAIN: none taken yet). */
static ssize_t put_out(const struct log_buf *b, const char *p, size_t n)
{
	return b->send ? send(b->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL)
		       : write(b->fd, p, n);
}

/* End the line @b's output was left inside, unless it is a file someone
 * ended it in since; not waiting, and not tried again. */
static void end_torn(const struct log_buf *b)
{
	if (!b->regular || !file_ends_line(b->fd))
		(void)put_out(b, "\n", 1);
}

static uint64_t mono_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

uint64_t log_final_deadline(void)
{
	return mono_ns() + 500 * 1000000ull;
}

bool log_drain(struct log_buf *b, uint64_t deadline_ns)
{
	log_flush(b, 0);
	if (!b->len && !b->torn)
		return true;
	if (mono_ns() < deadline_ns)
		return false;
	log_flush(b, 1); /* past its time: what it does not take is lost */
	if (b->torn)
		end_torn(b);
	return true;
}

void log_flush(struct log_buf *b, uint64_t until_ns)
{
	size_t off = 0;
	b->blocked = false;
	while (off < b->len || b->torn) {
		if (b->torn && b->regular && file_ends_line(b->fd)) {
			b->torn = b->mid = false; /* ended since
						    * (plan_open_logs()) */
			continue;
		}
		/* Whole lines: to a file all at once (one write there is
		 * made under the file's lock, so it is never interleaved with
		 * another's); elsewhere at most PIPE_BUF at a time, atomic on
		 * a pipe, which takes all of such a write or, not waiting,
		 * none. A line cut short by lost output is ended first. */
		const char *p = b->torn ? "\n" : b->data + off;
		size_t n = b->torn ? 1 : b->len - off;
		if (n > PIPE_BUF && !b->regular) {
			n = PIPE_BUF;
			while (n > 0 && p[n - 1] != '\n')
				n--;
			if (n == 0)
				n = PIPE_BUF; /* one line longer than PIPE_BUF */
		}
		if (b->rot && !b->mid && !b->torn) {
			/* At a line's start: rotate before the lines this
			 * write begins (a line longer than PIPE_BUF goes in
			 * several), never inside one. */
			const char *nl = memchr(p + n - 1, '\n',
						b->len - (off + n - 1));
			log_rotate(b->rot, nl ? (size_t)(nl + 1 - p)
					      : b->len - off);
		}
		ssize_t w = put_out(b, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			uint64_t now = until_ns ? mono_ns() : 0;
			if (now < until_ns) {
				struct pollfd pf = {.fd = b->fd, .events = POLLOUT};
				(void)poll(&pf, 1,
					   (int)((until_ns - now) / 1000000 + 1));
				continue;
			}
			if (until_ns) {
				lost(b, off, EAGAIN);
				break;
			}
			/* Kept for the next pass, from the first byte not
			 * taken. */
			memmove(b->data, b->data + off, b->len - off);
			b->len -= off;
			b->blocked = true;
			return;
		}
		if (w <= 0) {
			lost(b, off, w < 0 ? errno : EIO);
			break;
		}
		if (b->rot)
			__atomic_add_fetch(&b->rot->size, (uint64_t)w,
					   __ATOMIC_RELAXED);
		b->mid = p[w - 1] != '\n';
		if (b->torn)
			b->torn = false;
		else
			off += (size_t)w;
	}
	b->len = 0;
}

struct out {
	char *p;
	size_t n, cap;
	bool full;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->n + n > o->cap) {
		o->full = true;
		return;
	}
	memcpy(o->p + o->n, s, n);
	o->n += n;
}

static void puts_(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

/* Length of the well-formed UTF-8 sequence at @p (@n bytes left), or 0:
 * Go's utf8.DecodeRuneInString rules (no overlong forms, no surrogates,
 * nothing above U+10FFFF). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

/*
 * A JSON string as zap's safeAddString wrote it: \" \\ \n \r \t, other
 * bytes below 0x20 as \u00XX, each byte of invalid UTF-8 as \ufffd; the
 * rest (DEL and well-formed sequences included) as it is. Runs of plain
 * bytes are copied whole. @go_json: as encoding/json wrote it (zap's
 * reflected values, without HTML escaping), the same but for U+2028 and
 * U+2029, escaped.
 */
static void put_json_text(struct out *o, const char *s, size_t n, bool go_json)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t done = 0, len;

	put(o, "\"", 1);
	for (size_t i = 0; i < n;) {
		unsigned char c = p[i];

		if (c < 0x80 && c >= 0x20 && c != '"' && c != '\\') {
			i++;
			continue;
		}
		if (c >= 0x80 && (len = utf8_len(p + i, n - i))) {
			/* U+2028, U+2029: E2 80 A8, E2 80 A9. */
			if (go_json && len == 3 && c == 0xe2 && p[i + 1] == 0x80 &&
			    (p[i + 2] | 1) == 0xa9) {
				put(o, s + done, i - done);
				put(o, p[i + 2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
				done = i += 3;
				continue;
			}
			i += len;
			continue;
		}
		put(o, s + done, i - done);
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			put(o, e, 2);
		} else if (c == '\n') {
			put(o, "\\n", 2);
		} else if (c == '\r') {
			put(o, "\\r", 2);
		} else if (c == '\t') {
			put(o, "\\t", 2);
		} else if (c < 0x20) {
			char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			put(o, e, 6);
		} else {
			put(o, "\\ufffd", 6);
		}
		done = ++i;
	}
	put(o, s + done, n - done);
	put(o, "\"", 1);
}

static void put_json_string(struct out *o, const char *s, size_t n)
{
	put_json_text(o, s, n, false);
}

/* @n bytes as a JSON string of standard base64, padded: zap.Any took a
 * []byte as zap.Binary, which the JSON encoder wrote with AddBinary. */
static void put_base64(struct out *o, const unsigned char *p, size_t n)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "abcdefghijklmnopqrstuvwxyz0123456789+/";
	char q[4];

	put(o, "\"", 1);
	for (; n >= 3; p += 3, n -= 3) {
		q[0] = b64[p[0] >> 2];
		q[1] = b64[(p[0] & 3) << 4 | p[1] >> 4];
		q[2] = b64[(p[1] & 15) << 2 | p[2] >> 6];
		q[3] = b64[p[2] & 63];
		put(o, q, 4);
	}
	if (n) {
		q[0] = b64[p[0] >> 2];
		q[1] = b64[(p[0] & 3) << 4 | (n == 2 ? p[1] >> 4 : 0)];
		q[2] = n == 2 ? b64[(p[1] & 15) << 2] : '=';
		q[3] = '=';
		put(o, q, 4);
	}
	put(o, "\"", 1);
}

struct map_pair {
	struct attr_value k, v;
	uint32_t at; /* its place in the record */
};

/* By key, Go's string order; a key given twice, in the record's order. */
static int pair_cmp(const void *a, const void *b)
{
	const struct map_pair *x = a, *y = b;
	int c = memcmp(x->k.s, y->k.s, x->k.len < y->k.len ? x->k.len : y->k.len);
	if (c)
		return c;
	if (x->k.len != y->k.len)
		return x->k.len < y->k.len ? -1 : 1;
	return (x->at > y->at) - (x->at < y->at);
}

/*
 * A string map as zap.Any wrote a Go map[string]string: through
 * encoding/json, so keys sorted (a key a record repeats is written once,
 * with the value a lookup finds, its first) and U+2028 and U+2029 escaped.
 */
static void put_map(struct out *o, const struct attr_value *m)
{
	struct map_pair small[64], *e = small;
	uint32_t n = attr_map_count(m);
	if (n > 64 && !(e = malloc(n * sizeof *e))) {
		o->full = true; /* no memory: not written, counted */
		return;
	}
	uint32_t got = 0;
	size_t off = 0;
	while (got < n && attr_map_next(m, &off, &e[got].k, &e[got].v)) {
		e[got].at = got;
		got++;
	}
	qsort(e, got, sizeof *e, pair_cmp);
	put(o, "{", 1);
	for (uint32_t i = 0; i < got; i++) {
		if (i && e[i].k.len == e[i - 1].k.len &&
		    !memcmp(e[i].k.s, e[i - 1].k.s, e[i].k.len))
			continue;
		if (i)
			put(o, ",", 1);
		put_json_text(o, e[i].k.s, e[i].k.len, true);
		put(o, ":", 1);
		put_json_text(o, e[i].v.s, e[i].v.len, true);
	}
	put(o, "}", 1);
	if (e != small)
		free(e);
}

static void put_value(struct out *o, const struct attr_value *v)
{
	char tmp[400]; /* attr_format_double: at most 330 */
	size_t n;
	switch (v->type) {
	case ATTR_INT64:
		n = (size_t)snprintf(tmp, sizeof tmp, "%lld", (long long)v->i);
		put(o, tmp, n);
		break;
	case ATTR_DOUBLE:
		/* zap: strconv 'f' -1; NaN and the infinities as strings,
		 * since JSON has no number for them */
		n = attr_format_double(v->d, tmp, sizeof tmp);
		if (isfinite(v->d))
			put(o, tmp, n);
		else
			put_json_string(o, tmp, n);
		break;
	case ATTR_BOOL:
		puts_(o, v->b ? "true" : "false");
		break;
	case ATTR_DURATION:
		put_json_string(o, tmp, attr_format_duration(v->i, tmp, sizeof tmp));
		break;
	case ATTR_TIMESTAMP:
		/* the adapter's formatDate: UTC, always six fraction digits */
		put_json_string(o, tmp,
				attr_format_timestamp_us(v->i, tmp, sizeof tmp));
		break;
	case ATTR_IP:
		put_json_string(o, tmp, attr_format_ip(v, tmp, sizeof tmp));
		break;
	case ATTR_STRING_MAP:
		put_map(o, v);
		break;
	case ATTR_BYTES:
		put_base64(o, (const unsigned char *)v->s, v->len);
		break;
	default: /* string-like */
		put_json_string(o, v->s, v->len);
		break;
	}
}

/* @sev: the severity as evaluated; "" when the instance has none, which
 * Mixer looked up like any other (a map may give "" a level). */
static const char *level_name(const struct cfg_stdio *s, const struct attr_value *sev)
{
	enum cfg_stdio_level l = CFG_LEVEL_INFO;
	if (attr_type_is_string(sev->type))
		for (size_t i = 0; i < s->n_severity_levels; i++)
			if (strlen(s->severity_levels[i].severity) == sev->len &&
			    memcmp(s->severity_levels[i].severity, sev->s, sev->len) == 0)
				l = s->severity_levels[i].level;
	return l == CFG_LEVEL_ERROR ? "error" : l == CFG_LEVEL_WARNING ? "warn" : "info";
}

/* Whether @e, if the instance has it, evaluates for this record. */
static bool evaluates(const struct agg_plan *p, const struct cfg_expr *e,
		      const struct attr_table *t, struct expr_scratch *sc,
		      struct attr_value *out)
{
	return e->id < 0 || expr_eval(p->prog, (uint32_t)e->id, t, sc, out) == 0;
}

/* Entry @l as a JSON line into @o; -1 if a variable failed (nothing of
 * it is kept). */
static int format_entry(const struct agg_plan *p, const struct plan_log *l,
			const struct attr_table *t, struct expr_scratch *sc,
			const struct attr_value *sev, const struct attr_value *ts,
			struct out *o)
{
	const struct cfg_logentry_inst *le = &l->inst->logentry;
	struct attr_value v;
	puts_(o, "{\"level\":\"");
	puts_(o, level_name(l->stdio, sev));
	puts_(o, "\",\"time\":");
	if (le->timestamp.id >= 0)
		put_value(o, ts);
	else /* the instance's Timestamp stayed Go's zero time.Time */
		puts_(o, "\"0001-01-01T00:00:00.000000Z\"");
	puts_(o, ",\"instance\":");
	put_json_string(o, l->inst->meta.fqn, strlen(l->inst->meta.fqn));

	for (size_t i = 0; i < l->nvars; i++) {
		const struct cfg_named_expr *var = l->vars[i];
		/* Nothing is kept until the line is complete: a failed
		 * variable drops the entry, as it failed Mixer's instance. */
		if (expr_eval(p->prog, (uint32_t)var->expr.id, t, sc, &v))
			return -1;
		put(o, ",", 1);
		put_json_string(o, var->name, strlen(var->name));
		put(o, ":", 1);
		put_value(o, &v);
	}
	puts_(o, "}\n");
	return 0;
}

int log_entry(const struct agg_plan *p, const struct plan_log *l,
	      const struct attr_table *t, struct expr_scratch *sc,
	      struct log_buf *b)
{
	const struct cfg_logentry_inst *le = &l->inst->logentry;
	const struct cfg_expr_map *mrd = &le->monitored_resource_dimensions;
	struct attr_value sev = {.type = ATTR_STRING, .s = ""}, ts, v;

	/* The fields other than the variables first: a failure among them
	 * means no entry, before anything is formatted. */
	if (!evaluates(p, &le->severity, t, sc, &sev) ||
	    !evaluates(p, &le->timestamp, t, sc, &ts) ||
	    !evaluates(p, &le->monitored_resource_type, t, sc, &v))
		return -1;
	for (size_t i = 0; i < mrd->n; i++)
		if (!evaluates(p, &mrd->v[i].expr, t, sc, &v))
			return -1;
	if (le->timestamp.id >= 0 && ts.type != ATTR_TIMESTAMP)
		return -1; /* type-checked at compile time; never print
			    * another type as the entry's time */

	if (b->fd != l->fd) {
		/* A buffer's first line (a shard keeps one per output,
		 * plan_log.out); a buffer given to another output would lose
		 * what the last one has not taken yet. */
		if (b->len)
			log_flush(b, 0);
		if (b->len)
			lost(b, 0, EAGAIN);
		if (b->torn)
			end_torn(b);
		b->torn = b->mid = false;
		b->fd = l->fd;
		b->send = l->send;
		b->regular = l->regular;
		b->rot = l->rot;
	} else if (b->len > sizeof b->data / 2 && !b->blocked) {
		log_flush(b, 0);
	}
	/* A line that does not fit after what the buffer holds goes to an
	 * empty one; only one longer than the whole buffer is not written,
	 * and one an output too slow to empty the buffer has no room for is
	 * lost. */
	for (;;) {
		struct out o = {b->data + b->len, 0, sizeof b->data - b->len,
				false};
		if (format_entry(p, l, t, sc, &sev, &ts, &o))
			return -1;
		if (!o.full) {
			b->len += o.n;
			return 0;
		}
		if (!b->len)
			return -1;
		if (b->blocked) { /* tried again at the shard's next pass */
			count_lost(b, 1, EAGAIN);
			return 0;
		}
		log_flush(b, 0);
	}
}
