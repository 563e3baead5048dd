"""mixdtest -- helpers for mixd's integration tests (Python 3.11, stdlib only).

An integration test starts the real daemon and talks to it the way a producer
(mixd-report, libmixd) and Prometheus (an HTTP scrape) do:

    import mixdtest as mt

    def test_counts(build):
        with mt.Mixd(build) as m:
            rc, out, err = mt.report(build, m.address, [{"response.code": 200}])
            assert rc == 0, err
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_ingest_records_total",
                                        transport="shm") == 1)

    if __name__ == "__main__":
        mt.main([test_counts])

Metrics are returned as {(name, frozenset(labels.items())): float}; value()
and total() read them. Timeouts are multiplied by TIMEOUT_FACTOR when
MIXD_SANITIZE is set (sanitizer builds are several times slower).
"""

import argparse
import contextlib
import gzip
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

__all__ = ["Mixd", "MixdError", "report", "parse_metrics", "value", "total",
           "scrape", "curl", "main", "check", "TIMEOUT_FACTOR"]

TIMEOUT_FACTOR = 4.0 if os.environ.get("MIXD_SANITIZE") in ("address", "thread") else 1.0

_PORT_LINE = re.compile(r"mixd: (monitoring|prometheus) on http://(\S+):(\d+)\s*$")


class MixdError(AssertionError):
    """mixd misbehaved (did not start, died, exited non-zero). The message
    carries the tail of its stderr."""


def _t(seconds):
    return seconds * TIMEOUT_FACTOR


# ---- the Prometheus text format -------------------------------------------

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _parse_labels(line, i, lineno):
    """Parse `{a="b",...}` starting at line[i] == '{'. Returns (dict, next i)."""
    labels = {}
    i += 1
    while True:
        while i < len(line) and line[i] in " \t":
            i += 1
        if i < len(line) and line[i] == "}":
            return labels, i + 1
        m = _LABEL_NAME.match(line, i)
        if not m:
            raise ValueError(f"line {lineno}: bad label name at column {i + 1}: {line!r}")
        name = m.group(0)
        i = m.end()
        while i < len(line) and line[i] in " \t":
            i += 1
        if line[i:i + 2] != '="':
            raise ValueError(f"line {lineno}: expected =\" after label {name}: {line!r}")
        i += 2
        val = []
        while True:
            if i >= len(line):
                raise ValueError(f"line {lineno}: unterminated label value: {line!r}")
            c = line[i]
            if c == "\\":
                nxt = line[i + 1:i + 2]
                if nxt == "n":
                    val.append("\n")
                elif nxt in ("\\", '"'):
                    val.append(nxt)
                else:
                    raise ValueError(f"line {lineno}: bad escape \\{nxt} in label {name}")
                i += 2
                continue
            if c == '"':
                i += 1
                break
            val.append(c)
            i += 1
        if name in labels:
            raise ValueError(f"line {lineno}: label {name} twice: {line!r}")
        labels[name] = "".join(val)
        while i < len(line) and line[i] in " \t":
            i += 1
        if i < len(line) and line[i] == ",":
            i += 1
            continue
        if i < len(line) and line[i] == "}":
            return labels, i + 1
        raise ValueError(f"line {lineno}: expected , or }} in labels: {line!r}")


def _parse_value(text, lineno):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"line {lineno}: bad sample value {text!r}") from None


def parse_metrics(text, types=None):
    """Parse the text exposition format 0.0.4 into
    {(name, frozenset(labels.items())): value}. Strict: a malformed line or a
    series listed twice raises ValueError. If @types is a dict, it is filled
    with {family: type} from the # TYPE lines."""
    out = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE" and types is not None:
                types[parts[2]] = parts[3].strip()
            continue
        m = _NAME.match(line)
        if not m:
            raise ValueError(f"line {lineno}: bad metric name: {line!r}")
        name = m.group(0)
        i = m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = _parse_labels(line, i, lineno)
        rest = line[i:].split()
        if len(rest) not in (1, 2):  # value, optional timestamp
            raise ValueError(f"line {lineno}: expected a value: {line!r}")
        key = (name, frozenset(labels.items()))
        if key in out:
            raise ValueError(f"line {lineno}: series listed twice: {line!r}")
        out[key] = _parse_value(rest[0], lineno)
    return out


def value(metrics, name, default=0.0, **labels):
    """The value of the series @name with exactly @labels, or @default."""
    return metrics.get((name, frozenset(labels.items())), default)


def total(metrics, name, **labels):
    """Sum of every series of @name whose labels include @labels."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= ls)


def scrape(port, path="/metrics", host="127.0.0.1", gzip_ok=True, timeout=None):
    """GET http://host:port/path. Returns (status, headers dict with lower-case
    names, body text). Asks for gzip like Prometheus does, and checks that a
    gzipped body says so."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout or _t(10))
    try:
        hdrs = {"Accept-Encoding": "gzip"} if gzip_ok else {}
        conn.request("GET", path, headers=hdrs)
        r = conn.getresponse()
        body = r.read()
        headers = {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()
    if headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return r.status, headers, body.decode("utf-8")


def read_headers(path):
    """The response headers curl -D wrote to @path, names in lower case."""
    headers = {}
    with open(path, "rb") as f:
        for line in f.read().decode("latin-1").split("\r\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
    return headers


def curl(port, path="/metrics", host="127.0.0.1", gzip_ok=False, timeout=None,
         compressed=False):
    """GET http://host:port/path with curl, as an outside client does.
    Returns (status, headers dict with lower-case names, body bytes as
    received -- still gzipped if the server gzipped it, unless @compressed
    has curl --compressed ask for gzip and decode the body itself -- and
    the seconds the transfer took). Fails if curl does (an incomplete
    chunked body is an error for curl)."""
    tmp = tempfile.mkdtemp(prefix="mixd-curl.")
    try:
        body_path = os.path.join(tmp, "body")
        hdr_path = os.path.join(tmp, "headers")
        argv = ["curl", "-sS", "-o", body_path, "-D", hdr_path,
                "-w", "%{http_code} %{time_total}",
                "--max-time", str(int(timeout or _t(60)))]
        if gzip_ok:
            argv += ["-H", "Accept-Encoding: gzip"]
        if compressed:
            argv += ["--compressed"]
        p = subprocess.run(argv + [f"http://{host}:{port}{path}"], capture_output=True,
                           timeout=(timeout or _t(60)) + 10)
        if p.returncode != 0:
            raise AssertionError(f"curl {path} failed ({p.returncode}): "
                                 f"{p.stderr.decode(errors='replace')}")
        status, seconds = p.stdout.decode().split()
        headers = read_headers(hdr_path)
        with open(body_path, "rb") as f:
            body = f.read()
        return int(status), headers, body, float(seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- the daemon -----------------------------------------------------------

class Mixd:
    """A mixd process on a private socket and ephemeral HTTP ports.

    Use as a context manager. Attributes: build, tmp (the temp dir), sock
    (socket path), address ("unix://" + sock), monitoring_port,
    prometheus_port, proc (subprocess.Popen), stderr_path.
    """

    def __init__(self, build_dir, extra_args=(), shards=2, start=True, stdout=None):
        self.build = os.path.abspath(build_dir)
        self.stdout_to = stdout  # None: with stderr; subprocess.PIPE: self.proc.stdout
        self.binary = os.path.join(self.build, "mixd")
        self.extra_args = list(extra_args)
        self.shards = shards
        self.tmp = tempfile.mkdtemp(prefix="mixdtest.")
        self.sock = os.path.join(self.tmp, "mixd.sock")
        self.address = "unix://" + self.sock
        self.proc = None
        self.starts = 0
        self.stderr_path = None
        self.monitoring_port = None
        self.prometheus_port = None
        # --role policy serves no Prometheus port: do not wait for one
        self.wants_prometheus = True
        if start:
            self.start()

    # -- lifecycle --

    def argv(self):
        return [self.binary, "--address", self.address,
                "--monitoring-address", "127.0.0.1:0",
                "--prometheus-address", "127.0.0.1:0",
                "--shards", str(self.shards)] + self.extra_args

    def start(self):
        """Start mixd and wait (10 s) for both ports to be announced."""
        if self.proc and self.proc.poll() is None:
            raise MixdError("mixd is already running")
        if not os.access(self.binary, os.X_OK):
            raise MixdError(f"{self.binary} does not exist: build mixd first")
        self.starts += 1
        self.stderr_path = os.path.join(self.tmp, f"stderr.{self.starts}.log")
        self.monitoring_port = self.prometheus_port = None
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=err if self.stdout_to is None
                                         else self.stdout_to,
                                         stderr=err, cwd=self.tmp)
        deadline = time.monotonic() + _t(10)
        while time.monotonic() < deadline:
            self._read_ports()
            if self.monitoring_port and (self.prometheus_port or
                                         not self.wants_prometheus):
                return self
            if self.proc.poll() is not None:
                raise MixdError(f"mixd exited with status {self.proc.returncode} "
                                f"during startup\n{self.stderr_tail()}")
            time.sleep(0.02)
        self._hard_kill()
        raise MixdError("mixd did not announce its monitoring and prometheus ports "
                        f"within {_t(10):.0f} s\n{self.stderr_tail()}")

    def _read_ports(self):
        for line in self.stderr().splitlines():
            m = _PORT_LINE.search(line)
            if m:
                port = int(m.group(3))
                if m.group(1) == "monitoring":
                    self.monitoring_port = port
                else:
                    self.prometheus_port = port

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def pid(self):
        return self.proc.pid

    def kill(self, sig=signal.SIGKILL, wait=True):
        """Send @sig. With @wait, wait for the exit (10 s) and return the
        status (negative signal number when killed by it)."""
        self.proc.send_signal(sig)
        if not wait:
            return None
        try:
            return self.proc.wait(timeout=_t(10))
        except subprocess.TimeoutExpired:
            self._hard_kill()
            raise MixdError(f"mixd did not exit within {_t(10):.0f} s of signal "
                            f"{sig}\n{self.stderr_tail()}") from None

    def stop(self):
        """SIGTERM; mixd must exit with status 0 within 10 s."""
        if not self.running():
            rc = self.proc.returncode if self.proc else None
            raise MixdError(f"mixd was not running at stop (status {rc})\n"
                            f"{self.stderr_tail()}")
        rc = self.kill(signal.SIGTERM)
        if rc != 0:
            raise MixdError(f"mixd exited with status {rc} on SIGTERM\n"
                            f"{self.stderr_tail()}")
        return rc

    def restart(self):
        """stop() then start() on the same socket and temp dir. The HTTP
        ports change."""
        if self.running():
            self.stop()
        return self.start()

    def _hard_kill(self):
        if self.running():
            self.proc.kill()
            try:
                self.proc.wait(timeout=_t(10))
            except subprocess.TimeoutExpired:
                pass

    def close(self, ok=True):
        """Stop (checking the exit status when @ok) and remove the temp dir
        (kept if MIXD_KEEP_TMP is set)."""
        try:
            if self.running():
                if ok:
                    self.stop()
                else:
                    self._hard_kill()
        finally:
            if not ok:
                sys.stderr.write(self.stderr_tail())
            if os.environ.get("MIXD_KEEP_TMP"):
                sys.stderr.write(f"mixdtest: kept {self.tmp}\n")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # on an exception, show mixd's stderr and do not mask the exception
        # with a second failure from stop()
        self.close(ok=exc_type is None)
        return False

    # -- output --

    def stderr(self):
        """mixd's stderr (and stdout) of the current run, as text."""
        if not self.stderr_path or not os.path.exists(self.stderr_path):
            return ""
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr_tail(self, lines=60):
        text = self.stderr().splitlines()[-lines:]
        return ("---- mixd stderr (" + (self.stderr_path or "?") + ") ----\n"
                + "\n".join(text) + "\n---- end of mixd stderr ----\n")

    # -- HTTP --

    def _check_alive(self):
        if not self.running():
            raise MixdError(f"mixd is not running (status {self.proc.returncode})\n"
                            f"{self.stderr_tail()}")

    def get(self, path, port=None, gzip_ok=True):
        """GET @path from the monitoring port (or @port): (status, headers, body)."""
        self._check_alive()
        return scrape(port or self.monitoring_port, path, gzip_ok=gzip_ok)

    def _metrics(self, port, types):
        self._check_alive()
        status, headers, body = scrape(port)
        if status != 200:
            raise MixdError(f"/metrics on port {port} answered {status}: {body[:500]}")
        return parse_metrics(body, types)

    def metrics(self, types=None):
        """Parsed /metrics of the monitoring port (mixd's self-metrics)."""
        return self._metrics(self.monitoring_port, types)

    def prom_metrics(self, types=None):
        """Parsed /metrics of the prometheus port (the user's metrics)."""
        return self._metrics(self.prometheus_port, types)

    def wait_for(self, predicate, timeout=10, what=None):
        """Poll @predicate (every 20 ms) until it returns a true value, which
        is returned. Fails after @timeout s (times TIMEOUT_FACTOR), or as soon
        as mixd dies. Exceptions from @predicate propagate."""
        deadline = time.monotonic() + _t(timeout)
        while True:
            self._check_alive()
            got = predicate()
            if got:
                return got
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {_t(timeout):.1f} s waiting for "
                                     f"{what or getattr(predicate, '__name__', 'condition')}"
                                     f" (last: {got!r})")
            time.sleep(0.02)


# ---- producers --------------------------------------------------------------

def report(build_dir, address, lines, transport="shm", extra=(), files=None, timeout=60):
    """Run mixd-report with @lines on its stdin: dicts become JSON lines,
    strings are sent as they are (for malformed input; a lone surrogate
    escape such as "\\udcff" is the byte 0xff, for invalid UTF-8). @files,
    if given, are passed as arguments instead. Returns (rc, stdout, stderr)."""
    binary = os.path.join(os.path.abspath(build_dir), "mixd-report")
    if not os.access(binary, os.X_OK):
        raise AssertionError(f"{binary} does not exist: build mixd-report first")
    text = "".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines)
    argv = [binary, "--address", address, "--transport", transport] + list(extra)
    if files:
        argv += list(files)
    p = subprocess.run(argv, input=text.encode("utf-8", "surrogateescape"),
                       stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=_t(timeout))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


# ---- running tests ----------------------------------------------------------

@contextlib.contextmanager
def with_config(build, text, *args):
    """A running mixd on a config of @text (one file in a directory of its
    own, removed after), namespace default."""
    tmp = tempfile.mkdtemp(prefix="mixd-config.")
    try:
        path = os.path.join(tmp, "mixer.yaml")
        with open(path, "w") as f:
            f.write(text)
        with Mixd(build, ["--config", path, "--configDefaultNamespace", "default",
                          *args]) as m:
            yield m
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def series(m, family):
    """The label sets of @family on mixd @m's Prometheus port, as dicts."""
    return [dict(k[1]) for k in m.prom_metrics() if k[0] == family]


def check(cond, msg="check failed"):
    """assert that survives python -O."""
    if not cond:
        raise AssertionError(msg)


def main(tests, argv=None):
    """Run each test(build) in @tests; print "N passed, M failed" and exit 1
    if any failed. Takes --build BUILD_DIR (ctest passes it) and optional
    test names to run only those."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, help="CMake build directory")
    ap.add_argument("only", nargs="*", help="run only these tests")
    args = ap.parse_args(argv)
    passed = failed = 0
    for t in tests:
        if args.only and t.__name__ not in args.only:
            continue
        start = time.monotonic()
        try:
            t(args.build)
        except Exception:  # a test's failure, whatever raised it
            failed += 1
            print(f"FAIL {t.__name__} ({time.monotonic() - start:.2f} s)", flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
        else:
            passed += 1
            print(f"ok   {t.__name__} ({time.monotonic() - start:.2f} s)", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed or not passed else 0)
