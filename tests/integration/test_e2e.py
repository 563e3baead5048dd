"""End to end with the user's config unchanged: records through mixd-report,
every sample of all six istio_* families checked against values computed
here, independently, from the config's semantics; a large scrape streamed
to curl, plain and gzipped; promtool; a real Prometheus server; gzip;
reload while records flow; expiry; series limit.

MIXD_TEST_THREADED (scrapes race the shards writing: run under TSan too)
"""

import fcntl
import gzip
import http.client
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import mixdtest as mt

FIXTURES = os.environ.get("MIXD_FIXTURES") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
SEED = os.path.join(FIXTURES, "config", "mixer-seed.yaml")
SEED_ARGS = ["--config", SEED, "--configDefaultNamespace", "default"]

DURATION_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
BYTES_BOUNDS = [10.0 ** i for i in range(9)]  # scale 1, factor 10, N=8

HTTP_LABELS = ["reporter", "source_app", "source_principal", "source_workload",
               "source_workload_namespace", "source_version", "destination_app",
               "destination_principal", "destination_workload",
               "destination_workload_namespace", "destination_version",
               "destination_service", "destination_service_name",
               "destination_service_namespace", "request_protocol", "response_code",
               "connection_security_policy"]
TCP_LABELS = [l for l in HTTP_LABELS if l not in ("request_protocol", "response_code")]


# ---- the expected values, from the config's semantics ----------------------

def go_seconds(ns):
    """Go's time.Duration.Seconds(): whole seconds plus the remainder."""
    return float(ns // 1_000_000_000) + float(ns % 1_000_000_000) / 1e9


def parse_ms(s):
    assert s.endswith("ms")
    return int(round(float(s[:-2]) * 1_000_000))


def expected_labels(r, tcp):
    """The seed's dimensions for record @r, after the mesos bindings, which
    (with no Marathon data) set workloads, labels and namespaces to their
    defaults and shadow what the proxy sent."""
    outbound = r.get("context.reporter.kind", "inbound") == "outbound"
    l = {
        "reporter": "source" if outbound else "destination",
        "source_app": "unknown", "source_version": "unknown",
        "source_workload": "unknown", "source_workload_namespace": "unknown",
        "destination_app": "unknown", "destination_version": "unknown",
        "destination_workload": "unknown", "destination_workload_namespace": "unknown",
        "source_principal": r.get("source.principal", "unknown"),
        "destination_principal": r.get("destination.principal", "unknown"),
        "destination_service_name": r.get("destination.service.name", "unknown"),
        "destination_service_namespace": r.get("destination.service.namespace", "unknown"),
        "connection_security_policy": "unknown" if outbound else
        ("mutual_tls" if r.get("connection.mtls", False) else "none"),
    }
    if tcp:
        l["destination_service"] = r.get("destination.service.name", "unknown")
    else:
        l["destination_service"] = r.get("destination.service.host", "unknown")
        l["request_protocol"] = r.get("api.protocol", r.get("context.protocol", "unknown"))
        l["response_code"] = str(r.get("response.code", 200))
    return frozenset(l.items())


class Expect:
    def __init__(self):
        self.samples = {}

    def add(self, name, labels, v):
        k = (name, labels)
        self.samples[k] = self.samples.get(k, 0) + v

    def hist(self, name, labels, bounds, v):
        for b in bounds:
            self.add(name + "_bucket", labels | {("le", fmt_le(b))}, 1 if v <= b else 0)
        self.add(name + "_bucket", labels | {("le", "+Inf")}, 1)
        self.add(name + "_sum", labels, v)
        self.add(name + "_count", labels, 1)

    def record(self, r):
        proto = r.get("context.protocol")
        if proto in ("http", "grpc"):
            l = expected_labels(r, tcp=False)
            self.add("istio_requests_total", l, 1)
            d = go_seconds(parse_ms(r["response.duration"])) if "response.duration" in r else 0.0
            self.hist("istio_request_duration_seconds", l, DURATION_BOUNDS, d)
            self.hist("istio_request_bytes", l, BYTES_BOUNDS, r.get("request.size", 0))
            self.hist("istio_response_bytes", l, BYTES_BOUNDS, r.get("response.size", 0))
        elif proto == "tcp":
            l = expected_labels(r, tcp=True)
            self.add("istio_tcp_sent_bytes_total", l, r.get("connection.sent.bytes", 0))
            self.add("istio_tcp_received_bytes_total", l, r.get("connection.received.bytes", 0))


def fmt_le(b):
    """client_golang's le: Go's strconv 'g' -1 formatting."""
    if b == int(b) and abs(b) < 1e21:
        i = int(b)
        s = str(i)
        if len(s) > 6:  # Go switches to exponent form past 21 digits for 'f',
            # but 'g' with shortest precision uses exponent when exp >= 21 or
            # the digit count is exceeded: 1e+06, 1e+07, 1e+08.
            digits = s.rstrip("0")
            exp = len(s) - 1
            mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
            return f"{mant}e+{exp:02d}"
        return s
    return repr(b)


def generate(seed=7):
    """Records covering every protocol, reporter present and absent, absent
    attributes that fall back to defaults, durations and sizes exactly on
    bucket bounds, above the last bound, and zero."""
    rnd = random.Random(seed)
    out = []
    durations = ["0ms"] + [f"{b * 1000:g}ms" for b in DURATION_BOUNDS] + ["10001ms", "3ms", "700ms"]
    sizes = [0] + [int(b) for b in BYTES_BOUNDS] + [int(1e8) + 1, 5, 12345]
    for proto, kind, i in itertools.product(["http", "grpc", "tcp", None],
                                            ["inbound", "outbound", None], range(24)):
        r = {}
        if proto:
            r["context.protocol"] = proto
        if kind:
            r["context.reporter.kind"] = kind
        if proto == "tcp":
            r["connection.sent.bytes"] = rnd.choice(sizes)
            r["connection.received.bytes"] = rnd.choice(sizes)
        else:
            if i % 5:
                r["response.duration"] = durations[i % len(durations)]
            if i % 3:
                r["request.size"] = sizes[i % len(sizes)]
            if i % 4:
                r["response.size"] = sizes[(i * 7) % len(sizes)]
            if i % 6:
                r["response.code"] = rnd.choice([200, 404, 503])
            if proto == "grpc" and i % 2:
                r["api.protocol"] = "grpc"
        if i % 2:
            r["connection.mtls"] = bool(i % 4 == 1)
        if i % 7 == 1:
            r["source.principal"] = "cluster.local/ns/default/sa/productpage"
        if i % 3 == 2:
            r["destination.service.host"] = "reviews.default.svc.cluster.local"
            r["destination.service.name"] = "reviews"
            r["destination.service.namespace"] = "default"
        # Sent but shadowed by the mesos bindings: must not show.
        if i % 8 == 3:
            r["source.labels"] = {"istio": "productpage", "version": "v1"}
            r["source.workload.name"] = "productpage-v1"
        out.append(r)
    return out


def istio_samples(m):
    ms = m.prom_metrics()
    return {k: v for k, v in ms.items() if k[0].startswith("istio_")}


def compare(got, want):
    problems = []
    for k, v in want.items():
        g = got.get(k)
        if g is None:
            problems.append(f"missing {k[0]}{dict(k[1])} (want {v})")
        elif abs(g - v) > 1e-9 * max(1.0, abs(v)):
            problems.append(f"{k[0]}{dict(k[1])}: got {g}, want {v}")
    for k in got:
        if k not in want:
            problems.append(f"unexpected {k[0]}{dict(k[1])} = {got[k]}")
    return problems


def send(build, m, records, transport="shm"):
    rc, out, err = mt.report(build, m.address, records, transport=transport)
    mt.check(rc == 0, f"mixd-report failed: {out} {err}")


# ---- tests -------------------------------------------------------------------

def exact_twice(build, args, memo):
    """Every sample of the six families exact after the generated records,
    then after the same records again: with the record memo on, every
    repeat may be served by it, and the samples must be exactly what the
    full path gives."""
    records = generate()
    want = Expect()
    for r in records:
        want.record(r)
    with mt.Mixd(build, args) as m:
        send(build, m, records)
        n_http = sum(1 for r in records if r.get("context.protocol") in ("http", "grpc"))
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == len(records),
                   what="all records processed")
        got = istio_samples(m)
        problems = compare(got, want.samples)
        mt.check(not problems, "\n".join(problems[:30]) + f"\n({len(problems)} problems)")
        mt.check(sum(v for k, v in got.items() if k[0] == "istio_requests_total") == n_http)
        fams = {k[0].rsplit("_bucket", 1)[0].rsplit("_sum", 1)[0].rsplit("_count", 1)[0]
                for k in got}
        mt.check(len({f for f in fams}) == 6, f"families: {fams}")
        for r in records:
            want.record(r)
        send(build, m, records)
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == 2 * len(records),
                   what="all records processed twice")
        if memo:
            m.wait_for(lambda: mt.total(m.metrics(), "mixd_record_memo_total") == 2 * len(records),
                       what="the memo's counts published")
        served = mt.value(m.metrics(), "mixd_record_memo_total", result="served")
        looked = mt.total(m.metrics(), "mixd_record_memo_total")
        if memo:
            mt.check(served >= len(records), f"memo served {served} of {2 * len(records)}")
        else:
            mt.check(looked == 0, f"--no-record-memo, yet the memo saw {looked} records")
        problems = compare(istio_samples(m), want.samples)
        mt.check(not problems, "\n".join(problems[:30]) + f"\n({len(problems)} problems)")
        print(f"   {len(records)} records twice, {len(want.samples)} samples, all exact; "
              f"memo served {served:.0f}")


def every_sample_of_the_six_families_is_exact(build):
    exact_twice(build, SEED_ARGS, memo=True)


def every_sample_is_exact_without_the_record_memo(build):
    exact_twice(build, SEED_ARGS + ["--no-record-memo"], memo=False)


_LINE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def parse_fast(text):
    """parse_metrics() for bodies of 100,000 lines: a regex per line (the
    values here need no unescaping)."""
    out = {}
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        mt.check(m, f"bad line {line!r}")
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        key = (m.group(1), labels)
        mt.check(key not in out, f"series listed twice: {line!r}")
        out[key] = float(m.group(3))
    return out


def large_records(n_sets):
    """One record for each of @n_sets label sets: 2,000 make a 44 MB scrape."""
    return [{"context.protocol": "http",
             "destination.service.host": f"svc-{i // 4}.default.svc.cluster.local",
             "destination.service.name": f"svc-{i // 4}",
             "response.code": 200 + i % 4,
             "response.duration": f"{i % 300}ms",
             "request.size": (i * 37) % 5000, "response.size": (i * 91) % 50000}
            for i in range(n_sets)]


def a_large_scrape_is_streamed_whole_to_curl(build):
    """A view far larger than one rendered piece (256 KiB): curl gets every
    sample exactly, chunked, plain and gzipped alike (decoded by Python's
    gzip and by curl --compressed); the same data scrapes to the same bytes;
    mixd_scrape_duration_seconds covers the scrape."""
    n_sets = 2000
    records = large_records(n_sets)
    want = Expect()
    for r in records:
        want.record(r)
    with mt.Mixd(build, SEED_ARGS) as m:
        send(build, m, records)
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == n_sets,
                   what=f"{n_sets} records processed")
        mt.check(mt.value(m.metrics(), "mixd_scrape_duration_seconds") == 0,
                 "a scrape duration before any scrape")
        status, hdrs, plain, took = mt.curl(m.prometheus_port)
        mt.check(status == 200, f"status {status}")
        mt.check(hdrs.get("transfer-encoding") == "chunked", f"not streamed: {hdrs}")
        mt.check("content-encoding" not in hdrs, f"{hdrs}")
        mt.check(len(plain) > 4 * 256 * 1024, f"only {len(plain)} bytes")
        mt.check(plain.endswith(b"\n"))
        # The duration covers the scrape: more than nothing, and no more
        # than curl's time_total give or take the two clocks' readings
        # (a few ms apart under the sanitizers).
        d = mt.value(m.metrics(), "mixd_scrape_duration_seconds")
        mt.check(0 < d <= took * 1.1 + 0.02, f"scrape duration {d} s, curl took {took} s")

        status, hdrs, gz, _ = mt.curl(m.prometheus_port, gzip_ok=True)
        mt.check(status == 200 and hdrs.get("content-encoding") == "gzip", f"{hdrs}")
        mt.check(len(gz) < len(plain) / 10, f"gzip: {len(gz)} of {len(plain)} bytes")
        mt.check(gzip.decompress(gz) == plain, "gzipped and plain scrapes differ")
        _, zhdrs, decoded, _ = mt.curl(m.prometheus_port, compressed=True)
        mt.check(zhdrs.get("content-encoding") == "gzip", f"{zhdrs}")
        mt.check(decoded == plain, "curl --compressed: the body differs from the plain scrape")
        _, _, again, _ = mt.curl(m.prometheus_port)
        mt.check(again == plain, "two scrapes of the same data differ")

        got = {k: v for k, v in parse_fast(plain.decode()).items()
               if k[0].startswith("istio_")}
        problems = compare(got, want.samples)
        mt.check(not problems, "\n".join(problems[:30]) + f"\n({len(problems)} problems)")
        # in order of label values, as a person reads them
        keys = [tuple(v for _, v in _LABEL.findall(line.split("{", 1)[1]))
                for line in plain.decode().split("\n")
                if line.startswith("istio_requests_total{")]
        mt.check(len(keys) == n_sets and keys == sorted(keys, key=lambda t: [v.encode() for v in t]),
                 "istio_requests_total not in label order")
        lines = plain.count(b"\n")
        print(f"   {len(plain) / 1e6:.1f} MB, {lines} lines, "
              f"{len(got)} samples exact; gzip {len(gz) / 1e6:.2f} MB; curl took {took:.3f} s")


def promtool_finds_nothing(build):
    with mt.Mixd(build, SEED_ARGS) as m:
        # A label value that is not UTF-8 (Prometheus refuses the whole
        # scrape for one) is a failed dimension, counted, not exported.
        records = generate(seed=3)
        send(build, m, records)
        processed = lambda: mt.value(m.metrics(), "mixd_records_processed_total")
        errors = lambda: mt.total(m.metrics(), "mixd_instance_errors_total")
        m.wait_for(lambda: processed() == len(records))
        before = errors()
        # through libmixd (mixd-report refuses a line that is not UTF-8)
        p = subprocess.run([os.path.join(build, "mixd-test-producer"), "--address",
                            m.address, "--count", "1", "--evil", "bad-utf8"],
                           capture_output=True, timeout=mt._t(60))
        mt.check(p.returncode == 0, f"producer: {p.stderr.decode()}")
        m.wait_for(lambda: processed() == len(records) + 1)
        mt.check(errors() > before, "the bad label value was not counted")
        for port in (m.prometheus_port, m.monitoring_port):
            status, _, body = mt.scrape(port)
            p = subprocess.run(["promtool", "check", "metrics"], input=body.encode(),
                               capture_output=True, timeout=60)
            mt.check(p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(),
                     f"promtool on port {port}: {p.stdout.decode()} {p.stderr.decode()}")


def two_thousand_label_sets(build, m):
    """Records of 2,000 label sets into @m: a scrape of tens of MB, more
    than a socket's buffers hold."""
    records = [{"context.protocol": "http", "response.code": 200,
                "destination.service.host": f"svc{i}.default.svc.cluster.local",
                "response.duration": "3ms"} for i in range(2000)]
    send(build, m, records)
    m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == 2000)


def slow_scrapers_hold_at_most_four_views(build):
    """A scrape holds its view until its client has read the body; clients
    that never read cannot make mixd hold more than four, nor one address
    more than two of them."""
    with mt.Mixd(build, SEED_ARGS) as m:
        two_thousand_label_sets(build, m)
        stalled = []

        def stall(source):
            c = socket.socket()
            c.bind((source, 0))
            c.connect(("127.0.0.1", m.prometheus_port))
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: mixd\r\n\r\n")
            stalled.append(c)

        def status_from(source):
            c = socket.socket()
            c.settimeout(mt._t(10))
            c.bind((source, 0))
            c.connect(("127.0.0.1", m.prometheus_port))
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: mixd\r\n\r\n")
            head = c.recv(4096).decode("latin-1")
            c.close()
            return int(head.split()[1]), head

        try:
            for _ in range(2):  # tens of MB each: more than a socket holds
                stall("127.0.0.2")
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_scrapes_in_flight") == 2)
            status, head = status_from("127.0.0.2")
            mt.check(status == 503, f"a third scrape from one address got {status}")
            mt.check("Retry-After: 1\r\n" in head, head)
            mt.check(mt.value(m.metrics(), "mixd_scrapes_refused_total") == 1)
            for _ in range(2):
                stall("127.0.0.3")
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_scrapes_in_flight") == 4)
            status, _ = status_from("127.0.0.4")
            mt.check(status == 503, f"a fifth scrape got {status}")
            mt.check(mt.value(m.metrics(), "mixd_scrapes_refused_total") == 2)
            # HEAD takes no view, so no slot: answered, not refused
            c = http.client.HTTPConnection("127.0.0.1", m.prometheus_port, timeout=10)
            c.request("HEAD", "/metrics")
            r = c.getresponse()
            mt.check(r.status == 200 and r.read() == b"", f"HEAD got {r.status}")
            mt.check(r.getheader("Content-Type", "").startswith("text/plain"),
                     r.getheader("Content-Type"))
            c.close()
            mt.check(mt.value(m.metrics(), "mixd_scrapes_refused_total") == 2)
        finally:
            for c in stalled:
                c.close()
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_scrapes_in_flight") == 0,
                   what="the stalled scrapes' views freed")
        status, _, body = mt.scrape(m.prometheus_port)
        mt.check(status == 200 and "svc1999" in body, f"then {status}")


def a_scrape_past_its_timeout_is_cut(build):
    """A client that reads, but too slowly to finish within the scrape
    timeout it gave (X-Prometheus-Scrape-Timeout-Seconds), is cut off
    then: its slot is free again for Prometheus."""
    with mt.Mixd(build, SEED_ARGS) as m:
        two_thousand_label_sets(build, m)
        c = socket.create_connection(("127.0.0.1", m.prometheus_port))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: mixd\r\n"
                  b"X-Prometheus-Scrape-Timeout-Seconds: 1\r\n\r\n")
        t0, got, ended = time.monotonic(), 0, False
        try:
            while time.monotonic() - t0 < mt._t(20):
                try:
                    b = c.recv(16384)
                except ConnectionResetError:
                    b = b""
                if not b:
                    ended = True
                    break
                got += len(b)
                time.sleep(0.05)  # about 300 KB/s: far too slow for tens of MB
        finally:
            c.close()
        took = time.monotonic() - t0
        mt.check(ended, "never cut")
        mt.check(1 <= took < mt._t(10), f"cut after {took:.1f} s, {got} bytes")
        mt.check(got < 20_000_000, f"{got} bytes: the whole body?")
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_scrapes_in_flight") == 0)
        mt.check(mt.value(m.metrics(), "mixd_scrapes_cut_total") == 1)
        status, _, body = mt.scrape(m.prometheus_port)
        mt.check(status == 200 and "svc1999" in body, f"then {status}")


def one_address_holding_connections_leaves_room_for_others(build):
    """Slow clients from two addresses (headers never finished: slowloris)
    hold at most 16 of a port's 256 connections each: a health check and a
    scrape from another address are still answered at once. (Each address
    could hold half of 64: two filled the port.)"""
    with mt.Mixd(build, SEED_ARGS) as m:
        held = []
        try:
            for i in range(80):  # 40 from each: more than 64 in all
                c = socket.socket()
                c.settimeout(2)
                c.bind((f"127.0.0.{2 + i % 2}", 0))
                try:
                    c.connect(("127.0.0.1", m.monitoring_port))
                    c.sendall(b"GET /healthz HTTP/1.1\r\n")  # and no more
                except OSError:
                    pass  # refused past the limit: also fine
                held.append(c)
            time.sleep(0.5)
            c = http.client.HTTPConnection("127.0.0.1", m.monitoring_port, timeout=3)
            c.request("GET", "/healthz")
            r = c.getresponse()
            mt.check(r.status == 200, f"/healthz got {r.status}")
            c.close()
            status, _, _ = mt.scrape(m.prometheus_port)
            mt.check(status == 200, f"a scrape got {status}")
        finally:
            for c in held:
                c.close()


def dropped_connections_do_not_flood_stderr(build):
    """libmicrohttpd says something for each connection a client drops:
    2,000 of them write a few lines to mixd's stderr, not 2,000 (one a
    second at most per server, the next saying how many were not)."""
    with mt.Mixd(build, SEED_ARGS) as m:
        before = len(m.stderr().splitlines())
        t0 = time.monotonic()
        for _ in range(2000):
            # from an address of their own: libmicrohttpd 0.9.75 keeps a
            # connection closed inside its request line until it has been
            # idle 30 s, so these hold 127.0.0.2's 16 connections
            c = socket.socket()
            c.bind(("127.0.0.2", 0))
            c.connect(("127.0.0.1", m.prometheus_port))
            c.sendall(b"G")
            c.close()
        took = time.monotonic() - t0
        time.sleep(1.1)
        c = socket.socket()  # one more refused, in a second of its own
        c.bind(("127.0.0.2", 0))
        c.connect(("127.0.0.1", m.prometheus_port))
        c.close()
        time.sleep(0.3)
        # libmicrohttpd's lines (the resolver says its own meanwhile)
        said = [line for line in m.stderr().splitlines()[before:]
                if " http: " in line]
        mt.check(len(said) <= took + 3, f"{len(said)} lines in {took:.1f} s:\n" +
                 "\n".join(said[:20]))
        mt.check(any("more messages" in line for line in said) or len(said) < 2,
                 "\n".join(said[:20]))
        status, _, _ = mt.scrape(m.prometheus_port)
        mt.check(status == 200, f"a scrape got {status}")


def scrapes_keep_their_connection_alive(build):
    """Prometheus keeps one connection per target across scrapes: two
    requests go over one connection, the first answered without closing
    it."""
    with mt.Mixd(build, SEED_ARGS) as m:
        send(build, m, generate(seed=5))
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") > 0)
        for port in (m.prometheus_port, m.monitoring_port):
            c = socket.create_connection(("127.0.0.1", port), timeout=mt._t(10))
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: mixd\r\n\r\n"
                      b"GET /metrics HTTP/1.1\r\nHost: mixd\r\n"
                      b"Connection: close\r\n\r\n")
            data = b""
            while True:
                got = c.recv(1 << 16)
                if not got:
                    break
                data += got
            c.close()
            answers = data.count(b"HTTP/1.1 200 OK\r\n")
            mt.check(answers == 2, f"port {port}: {answers} answers on one connection")


def gzip_when_the_scraper_asks(build):
    with mt.Mixd(build, SEED_ARGS) as m:
        send(build, m, generate(seed=5))
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") > 0)
        c = http.client.HTTPConnection("127.0.0.1", m.prometheus_port, timeout=10)
        c.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        r = c.getresponse()
        body = r.read()
        mt.check(r.getheader("Content-Encoding") == "gzip", "not gzipped")
        plain = gzip.decompress(body)
        c.request("GET", "/metrics")
        r = c.getresponse()
        mt.check(r.getheader("Content-Encoding") is None)
        mt.check(r.read() == plain, "gzipped and plain bodies differ")


def scrapes_during_writes_are_never_torn(build):
    """Histograms stay consistent while shards write: cumulative buckets
    monotonic, +Inf equal to _count, in every scrape."""
    records = generate(seed=11)
    with mt.Mixd(build, SEED_ARGS) as m:
        stop = threading.Event()

        def writer():
            while not stop.is_set():
                send(build, m, records)

        t = threading.Thread(target=writer)
        t.start()
        scrapes = 0
        try:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                ms = m.prom_metrics()
                scrapes += 1
                buckets = {}
                for (name, labels), v in ms.items():
                    if name.endswith("_bucket"):
                        d = dict(labels)
                        le = d.pop("le")
                        buckets.setdefault((name[:-7], frozenset(d.items())), []).append(
                            (float(le), v))
                for (base, labels), bs in buckets.items():
                    bs.sort()
                    vals = [v for _, v in bs]
                    mt.check(vals == sorted(vals), f"{base} not monotonic: {bs}")
                    count = ms[(base + "_count", labels)]
                    mt.check(bs[-1][1] == count, f"{base}: +Inf {bs[-1][1]} != count {count}")
        finally:
            stop.set()
            t.join()
        print(f"   {scrapes} consistent scrapes while writing")


def reload_while_records_flow_loses_and_doubles_nothing(build):
    tmp = tempfile.mkdtemp(prefix="mixd-reload.")
    cfgdir = os.path.join(tmp, "config")
    os.mkdir(cfgdir)
    shutil.copy(SEED, os.path.join(cfgdir, "mixer.yaml"))
    try:
        with mt.Mixd(build, ["--configStoreURL", "fs://" + cfgdir,
                             "--configDefaultNamespace", "default"]) as m:
            rec = {"context.protocol": "http", "response.code": 200, "response.duration": "3ms"}
            n = 0
            procs = []
            for i in range(6):
                procs.append(subprocess.Popen(
                    [os.path.join(build, "mixd-report"), "--address", m.address,
                     "--repeat", "20000"], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE))
                procs[-1].stdin.write((json.dumps(rec) + "\n").encode())
                procs[-1].stdin.close()
                n += 20000
                # Reload by signal and by touching the files, while the
                # records flow.
                if i % 2:
                    m.proc.send_signal(signal.SIGHUP)
                else:
                    os.utime(os.path.join(cfgdir, "mixer.yaml"))
                time.sleep(0.15)
            for p in procs:
                p.wait(timeout=mt._t(120))
                mt.check(p.returncode == 0, p.stderr.read().decode())
                p.stdout.close()
                p.stderr.close()
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == n,
                       timeout=30, what=f"{n} records processed")
            total = sum(v for k, v in m.prom_metrics().items() if k[0] == "istio_requests_total")
            mt.check(total == n, f"istio_requests_total {total} != {n}")
            gen = mt.value(m.metrics(), "mixd_config_generation")
            mt.check(gen >= 3, f"only {gen} generations: reloads did not happen")
            # A broken config is refused; the old one stays in force.
            with open(os.path.join(cfgdir, "mixer.yaml"), "a") as f:
                f.write("---\nkind: rule\nmetadata: {name: bad, namespace: default}\n"
                        "spec: {match: no.such.attribute == 1}\n")
            m.proc.send_signal(signal.SIGHUP)
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_config_reload_failures_total") >= 1)
            send(build, m, [rec])
            m.wait_for(lambda: sum(v for k, v in m.prom_metrics().items()
                                   if k[0] == "istio_requests_total") == n + 1)
            mt.check("keeping the configuration in force" in m.stderr(), m.stderr_tail())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def edit_refuse_fix(m, seed, change):
    """Through @change (text -> replaced on disk): an edit is loaded, a
    broken config refused, a fixed one loaded. Returns the generation
    before them."""
    gen = lambda: mt.value(m.metrics(), "mixd_config_generation")
    fails = lambda: mt.value(m.metrics(), "mixd_config_reload_failures_total")
    g0 = gen()
    change(seed + "\n# edited\n")
    m.wait_for(lambda: gen() == g0 + 1, what="a reload after the change")
    change(seed + "---\nkind: rule\nmetadata: {name: bad, namespace: default}\n"
           "spec: {match: no.such.attribute == 1}\n")
    m.wait_for(lambda: fails() >= 1, what="the broken file refused")
    change(seed + "\n# fixed\n")
    m.wait_for(lambda: gen() == g0 + 2, what="a reload after the refused one")
    return g0


def a_one_file_config_reloads_after_renames_and_a_failure(build):
    """Editors and deploy tools replace a file by renaming a new one onto
    it: a new inode each time. Reloads follow, a refused one included."""
    tmp = tempfile.mkdtemp(prefix="mixd-rename.")
    path = os.path.join(tmp, "mixer.yaml")
    with open(SEED) as f:
        seed = f.read()

    def replace(text):
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)

    replace(seed)
    try:
        with mt.Mixd(build, ["--config", path,
                             "--configDefaultNamespace", "default"]) as m:
            g0 = edit_refuse_fix(m, seed, replace)
            gen = lambda: mt.value(m.metrics(), "mixd_config_generation")
            # other files in the directory do not reload it
            with open(os.path.join(tmp, "unrelated.txt"), "w") as f:
                f.write("x")
            time.sleep(0.6)
            mt.check(gen() == g0 + 2, f"generation {gen()} after an unrelated file")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def a_configmap_style_file_reloads_when_its_link_is_swapped(build):
    """A Kubernetes ConfigMap mount: the file is a symlink through
    "..data", and an update swaps "..data" to a new directory."""
    tmp = tempfile.mkdtemp(prefix="mixd-cm.")
    with open(SEED) as f:
        seed = f.read()
    n = [0]

    def swap(text):
        n[0] += 1
        d = os.path.join(tmp, f"..data_{n[0]}")
        os.mkdir(d)
        with open(os.path.join(d, "mixer.yaml"), "w") as f:
            f.write(text)
        os.symlink(d, os.path.join(tmp, "..data_tmp"))
        os.replace(os.path.join(tmp, "..data_tmp"), os.path.join(tmp, "..data"))

    swap(seed)
    os.symlink("..data/mixer.yaml", os.path.join(tmp, "mixer.yaml"))
    try:
        with mt.Mixd(build, ["--config", os.path.join(tmp, "mixer.yaml"),
                             "--configDefaultNamespace", "default"]) as m:
            edit_refuse_fix(m, seed, swap)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def a_config_that_goes_missing_is_followed_back(build):
    """The config removed (a deploy tool's rm then cp): the reload fails and
    is counted, and once the file is back mixd loads it and keeps watching.
    Before, with nothing left to watch, it stopped following the file."""
    tmp = tempfile.mkdtemp(prefix="mixd-gone.")
    path = os.path.join(tmp, "conf", "mixer.yaml")
    os.mkdir(os.path.dirname(path))
    with open(SEED) as f:
        seed = f.read()
    with open(path, "w") as f:
        f.write(seed)
    try:
        with mt.Mixd(build, ["--config", path,
                             "--configDefaultNamespace", "default"]) as m:
            gen = lambda: mt.value(m.metrics(), "mixd_config_generation")
            fails = lambda: mt.value(m.metrics(), "mixd_config_reload_failures_total")
            g0 = gen()
            # the file, then its directory, gone
            os.unlink(path)
            m.wait_for(lambda: fails() >= 1, what="the missing file refused")
            os.rmdir(os.path.dirname(path))
            time.sleep(0.5)
            os.mkdir(os.path.dirname(path))
            with open(path, "w") as f:
                f.write(seed + "\n# back\n")
            m.wait_for(lambda: gen() == g0 + 1, what="the file back, loaded")
            with open(path, "a") as f:
                f.write("# edited\n")
            m.wait_for(lambda: gen() == g0 + 2, what="an edit after it came back")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def a_symlinked_config_directory_swapped_is_followed(build):
    """--config names a symlink to a directory, swapped to another by an
    atomic rename (as a release tool does): the new directory is loaded and
    then watched. Meanwhile a file written over and over beside the config
    does not put the reload off, and a SIGHUP after an edit reloads once."""
    tmp = tempfile.mkdtemp(prefix="mixd-swap.")
    with open(SEED) as f:
        seed = f.read()
    for v in ("v1", "v2"):
        os.mkdir(os.path.join(tmp, v))
        with open(os.path.join(tmp, v, "mixer.yaml"), "w") as f:
            f.write(seed + f"\n# {v}\n")
    cur = os.path.join(tmp, "cur")
    os.symlink("v1", cur)
    try:
        with mt.Mixd(build, ["--config", cur,
                             "--configDefaultNamespace", "default"]) as m:
            gen = lambda: mt.value(m.metrics(), "mixd_config_generation")
            g0 = gen()
            os.symlink("v2", cur + ".tmp")
            os.replace(cur + ".tmp", cur)
            m.wait_for(lambda: gen() == g0 + 1, what="the swapped directory loaded")
            stop = time.monotonic() + mt._t(3)
            noise = os.path.join(tmp, "v2", "notes.txt")
            with open(os.path.join(tmp, "v2", "mixer.yaml"), "a") as f:
                f.write("# edited\n")
            t0 = time.monotonic()
            while gen() != g0 + 2:
                mt.check(time.monotonic() < stop, "the edit was put off by the noise")
                with open(noise, "a") as f:  # every 50 ms, not a config file
                    f.write("x")
                time.sleep(0.05)
            print(f"   reload with noise beside it: {time.monotonic() - t0:.2f} s")
            with open(os.path.join(tmp, "v2", "mixer.yaml"), "a") as f:
                f.write("# and again\n")
            m.proc.send_signal(signal.SIGHUP)
            m.wait_for(lambda: gen() >= g0 + 3, what="the SIGHUP's reload")
            time.sleep(0.6)
            mt.check(gen() == g0 + 3, f"one edit and a SIGHUP made {gen() - g0 - 2} reloads")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def a_file_made_in_a_new_directory_during_a_reload_is_loaded(build):
    """A directory added to the config, and a file written into it while
    the reload it set off is still reading: the reload after it loads the
    file (here a broken one, refused and counted). The old watch did not
    cover the new directory and the new one was not made yet, so no event
    told of the file; now the files' times do. The test makes sure of the
    case it tests: the first reload must succeed (it listed sub/ before the
    file was there) and must not have ended before the file was written;
    otherwise it tries again with a longer read."""
    rules = 60000
    for attempt in range(4):
        tmp = tempfile.mkdtemp(prefix="mixd-newdir.")
        cfgdir = os.path.join(tmp, "conf")
        os.mkdir(cfgdir)
        shutil.copy(SEED, os.path.join(cfgdir, "a.yaml"))
        # a long read: sorted after sub/, so the new directory is listed early
        with open(os.path.join(cfgdir, "zz.yaml"), "w") as f:
            for i in range(rules):
                f.write("---\nkind: rule\nmetadata: {name: z%d, namespace: default}\n"
                        "spec: {match: context.protocol == \"x\"}\n" % i)
        try:
            with mt.Mixd(build, ["--config", cfgdir, "--configDefaultNamespace", "default"]) as m:
                gen = lambda: mt.value(m.metrics(), "mixd_config_generation")
                fails = lambda: mt.value(m.metrics(), "mixd_config_reload_failures_total")
                g0 = gen()
                os.mkdir(os.path.join(cfgdir, "sub"))
                # the reload starts 200 ms after the mkdir and reads for longer
                time.sleep(0.35)
                done_before = gen() > g0
                with open(os.path.join(cfgdir, "sub", "x.yaml"), "w") as f:
                    f.write("kind: rule\nmetadata: {name: bad, namespace: default}\n"
                            "spec: {match: no.such.attribute == 1}\n")
                m.wait_for(lambda: gen() > g0 or fails() >= 1, timeout=60,
                           what="the reload the mkdir set off")
                if done_before or gen() == g0:
                    # over before the write, or it read the file itself
                    print(f"   attempt {attempt + 1}: not the case; a longer read")
                    rules *= 3
                    continue
                m.wait_for(lambda: fails() >= 1, timeout=60,
                           what="the new directory's file read")
                return
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    mt.check(False, "no attempt wrote the file while the reload read")


def a_config_directory_named_with_a_dot_sees_new_files(build):
    """--config conf/. and --config . name the directory by "."; a new
    file in it is loaded (here a broken one: refused, counted). The
    directory was taken for its own holding directory, and the events for
    its files filtered out by the name "."."""
    tmp = tempfile.mkdtemp(prefix="mixd-dot.")
    try:
        cfgdir = os.path.join(tmp, "conf")
        os.mkdir(cfgdir)
        shutil.copy(SEED, os.path.join(cfgdir, "a.yaml"))
        bad = ("kind: rule\nmetadata: {name: bad, namespace: default}\n"
               "spec: {match: no.such.attribute == 1}\n")
        with mt.Mixd(build, ["--config", cfgdir + "/.",
                             "--configDefaultNamespace", "default"]) as m:
            with open(os.path.join(cfgdir, "b.yaml"), "w") as f:
                f.write(bad)
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_config_reload_failures_total") >= 1,
                       what="the new file in conf/. read")
        m = mt.Mixd(build, ["--config", ".", "--configDefaultNamespace", "default"],
                    start=False)
        with m:
            shutil.copy(SEED, os.path.join(m.tmp, "a.yaml"))
            m.start()
            with open(os.path.join(m.tmp, "b.yaml"), "w") as f:
                f.write(bad)
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_config_reload_failures_total") >= 1,
                       what="the new file in . read")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def series_expire_after_the_policy(build):
    tmp = tempfile.mkdtemp(prefix="mixd-expiry.")
    try:
        with open(SEED) as f:
            text = f.read()
        marker = "kind: prometheus\nmetadata:\n  name: handler\n  namespace: default\nspec:\n"
        mt.check(marker in text)
        text = text.replace(marker, marker + "  metricsExpirationPolicy:\n"
                            "    metricsExpiryDuration: 1s\n"
                            "    expiryCheckIntervalDuration: 200ms\n")
        path = os.path.join(tmp, "mixer.yaml")
        with open(path, "w") as f:
            f.write(text)
        with mt.Mixd(build, ["--config", path, "--configDefaultNamespace", "default"]) as m:
            send(build, m, [{"context.protocol": "http", "response.code": 200}])
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_series",
                                        family="istio_requests_total") == 1)
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_series_expired_total",
                                        family="istio_requests_total") == 1, timeout=10)
            mt.check(mt.value(m.metrics(), "mixd_series", family="istio_requests_total") == 0)
            mt.check(not any(k[0] == "istio_requests_total" for k in m.prom_metrics()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


LONG_LABELS = """\
apiVersion: "config.istio.io/v1alpha2"
kind: metric
metadata: {name: longlabels, namespace: default}
spec:
  value: request.size | 1
  dimensions:
    p1: request.path
    p2: request.path | "-"
    ua: request.useragent
---
apiVersion: "config.istio.io/v1alpha2"
kind: prometheus
metadata: {name: long, namespace: default}
spec:
  metrics:
  - name: long_total
    instance_name: longlabels.metric.default
    kind: COUNTER
    label_names: [p1, p2, ua]
---
apiVersion: "config.istio.io/v1alpha2"
kind: rule
metadata: {name: long, namespace: default}
spec:
  actions:
  - handler: long.prometheus
    instances: [longlabels.metric]
"""


def labels_that_fill_the_key_fail_the_next_one(build):
    """Two labels of a 32,766-byte path fill a label set's 64 KiB exactly;
    the third label must fail the instance (counted), not be written past
    the end of the key."""
    with mt.with_config(build, LONG_LABELS) as m:
        long_path = "/" + "p" * 32765
        send(build, m, [{"request.path": long_path, "request.useragent": "u" * 20000},
                        {"request.path": "/short", "request.useragent": "curl"}])
        errors = lambda: mt.value(m.metrics(), "mixd_instance_errors_total",
                                  instance="longlabels.metric.default")
        m.wait_for(lambda: errors() == 1, what="the long record's instance failed")
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_series",
                                    family="istio_long_total") == 1)
        got = mt.series(m, "istio_long_total")
        mt.check(got == [{"p1": "/short", "p2": "/short", "ua": "curl"}], f"{got}")


def the_series_limit_bounds_label_bytes_too(build):
    """--series-limit 4 allows 4 KiB of label values a table: one label
    set of two 1,500-byte paths fits, a second does not (counted, not
    stored), a short one still does."""
    with mt.with_config(build, LONG_LABELS, "--series-limit", "4", "--shards", "1") as m:
        records = [{"request.path": "/" + c * 1499, "request.useragent": "u"} for c in "abc"]
        records.append({"request.path": "/short", "request.useragent": "curl"})
        send(build, m, records)
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == 4)
        ms = m.metrics()
        mt.check(mt.value(ms, "mixd_series", family="istio_long_total") == 2)
        mt.check(mt.value(ms, "mixd_series_overflow_total", family="istio_long_total") == 2)
        got = sorted(d["p1"][:2] for d in mt.series(m, "istio_long_total"))
        mt.check(got == ["/a", "/s"], f"{got}")


NAN_HISTOGRAM = """\
apiVersion: "config.istio.io/v1alpha2"
kind: metric
metadata: {name: took, namespace: default}
spec:
  value: request.headers["x-took"] | "0"
  dimensions: {}
---
apiVersion: "config.istio.io/v1alpha2"
kind: prometheus
metadata: {name: took, namespace: default}
spec:
  metrics:
  - name: took
    instance_name: took.metric.default
    kind: DISTRIBUTION
    buckets:
      explicit_buckets: {bounds: [1, 2]}
---
apiVersion: "config.istio.io/v1alpha2"
kind: rule
metadata: {name: took, namespace: default}
spec:
  actions:
  - handler: took.prometheus
    instances: [took.metric]
"""


def a_nan_observation_counts_only_in_the_inf_bucket(build):
    """A value that parses to NaN (Mixer took string values through
    ParseFloat) is in no finite bucket, as Prometheus' clients have it;
    strings ParseFloat refuses fail the value."""
    with mt.with_config(build, NAN_HISTOGRAM) as m:
        # What Go's ParseFloat refuses fails the value, as in Mixer.
        send(build, m, [{"request.headers": {"x-took": v}}
                        for v in ("NaN", "1.5", " 5", "0x10", "nan(1)", "0x1p1")])
        m.wait_for(lambda: mt.value(m.prom_metrics(), "istio_took_count") == 3)
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_instance_errors_total",
                                    instance="took.metric.default") == 3)
        ms = m.prom_metrics()
        got = {le: mt.value(ms, "istio_took_bucket", le=le) for le in ("1", "2", "+Inf")}
        mt.check(got == {"1": 0, "2": 2, "+Inf": 3}, f"{got}")


LABEL_FORMS = """\
apiVersion: "config.istio.io/v1alpha2"
kind: metric
metadata: {name: forms, namespace: default}
spec:
  value: "1"
  dimensions:
    ip: source.ip
    at: request.time
    tiny: 0.00001
---
apiVersion: "config.istio.io/v1alpha2"
kind: prometheus
metadata: {name: forms, namespace: default}
spec:
  metrics:
  - name: forms_total
    instance_name: forms.metric.default
    kind: COUNTER
    label_names: [ip, at, tiny]
---
apiVersion: "config.istio.io/v1alpha2"
kind: rule
metadata: {name: forms, namespace: default}
spec:
  actions:
  - handler: forms.prometheus
    instances: [forms.metric]
"""


def label_values_are_written_as_mixers_adapter_wrote_them(build):
    """adapter.Stringify: an IPv4-mapped address in dots, an IPv4-compatible
    one in hex groups as Go's net.IP prints it (inet_ntop would write
    ::1.2.3.4), a timestamp with six fractional digits, a double without an
    exponent."""
    with mt.with_config(build, LABEL_FORMS) as m:
        send(build, m, [{"source.ip": "::ffff:10.0.0.1",
                         "request.time": "2019-06-01T12:30:00.5+02:00"},
                        {"source.ip": "::1.2.3.4",
                         "request.time": "2019-06-01T12:30:00.5+02:00"}])
        m.wait_for(lambda: len(mt.series(m, "istio_forms_total")) == 2, what="the series")
        got = sorted(mt.series(m, "istio_forms_total"), key=lambda d: d["ip"])
        at = "2019-06-01T10:30:00.500000Z"
        mt.check(got == [{"ip": "10.0.0.1", "at": at, "tiny": "0.00001"},
                         {"ip": "::102:304", "at": at, "tiny": "0.00001"}], f"{got}")


def the_series_limit_bounds_memory(build):
    with mt.Mixd(build, SEED_ARGS + ["--series-limit", "5"], shards=1) as m:
        records = [{"context.protocol": "http", "response.code": 200 + i} for i in range(20)]
        send(build, m, records)
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == 20)
        ms = m.metrics()
        mt.check(mt.value(ms, "mixd_series", family="istio_requests_total") == 5)
        mt.check(mt.value(ms, "mixd_series_overflow_total", family="istio_requests_total") == 15)


class Prometheus:
    """A real Prometheus server scraping mixd's Prometheus port every
    @interval seconds, which is also the scrape's timeout. Prometheus asks
    for gzip on every scrape (Debian 12's 2.42 always sends
    Accept-Encoding: gzip) and decodes with Go's compress/gzip."""

    def __init__(self, m, interval=1):
        self.tmp = tempfile.mkdtemp(prefix="mixd-prom.")
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(f"global:\n  scrape_interval: {interval}s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: mixd\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{m.prometheus_port}']\n")
        self.port = free_port()
        self.proc = subprocess.Popen(["prometheus", f"--config.file={cfg}",
                                      f"--storage.tsdb.path={self.tmp}/data",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def query(self, q):
        """The first result's value of instant query @q, or None."""
        u = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        try:
            with urllib.request.urlopen(u, timeout=5) as r:
                res = json.load(r)["data"]["result"]
        except OSError:
            return None
        return float(res[0]["value"][1]) if res else None


def a_real_prometheus_scrapes_mixd(build):
    records = generate(seed=13)
    want = Expect()
    for r in records:
        want.record(r)
    n_http = sum(1 for r in records if r.get("context.protocol") in ("http", "grpc"))
    durations = sorted(go_seconds(parse_ms(r["response.duration"])) if "response.duration" in r
                       else 0.0 for r in records if r.get("context.protocol") in ("http", "grpc"))
    with mt.Mixd(build, SEED_ARGS) as m:
        send(build, m, records)
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == len(records))
        with Prometheus(m) as prom:
            query = prom.query
            deadline = time.monotonic() + mt._t(60)
            total = None
            while time.monotonic() < deadline:
                total = query("sum(istio_requests_total)")
                if total is not None:
                    break
                time.sleep(0.5)
            mt.check(total == n_http, f"sum(istio_requests_total) = {total}, want {n_http}")
            q = query("histogram_quantile(0.5, sum by (le) (istio_request_duration_seconds_bucket))")
            median = durations[len(durations) // 2]
            lo = max([0.0] + [b for b in DURATION_BOUNDS if b < median])
            hi = min([b for b in DURATION_BOUNDS if b >= median] + [float("inf")])
            mt.check(q is not None and lo <= q <= hi,
                     f"p50 {q} outside the bucket ({lo}, {hi}] of the true median {median}")
            print(f"   Prometheus: sum {total:.0f}, p50 {q:.4f} s (true median {median} s)")


def a_real_prometheus_takes_a_large_gzipped_scrape(build):
    """A 44 MB scrape, streamed and gzipped as it is rendered: Prometheus
    (Go's compress/gzip) decodes it whole -- every sample line counted --
    and finds every request."""
    n_sets = 2000
    records = large_records(n_sets)
    with mt.Mixd(build, SEED_ARGS) as m:
        send(build, m, records)
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == n_sets,
                   what=f"{n_sets} records processed")
        _, _, plain, _ = mt.curl(m.prometheus_port)
        samples = sum(1 for line in plain.split(b"\n") if line and not line.startswith(b"#"))
        # a sanitized mixd renders 44 MB in seconds, not 0.1 s
        with Prometheus(m, interval=int(mt._t(2))) as prom:
            deadline = time.monotonic() + mt._t(90)
            got = total = None
            while time.monotonic() < deadline:
                got = prom.query('scrape_samples_scraped{job="mixd"}')
                total = prom.query("sum(istio_requests_total)")
                if got == samples and total is not None:
                    break
                time.sleep(0.5)
            mt.check(got == samples, f"Prometheus scraped {got} samples, want {samples}")
            mt.check(total == n_sets, f"sum(istio_requests_total) = {total}, want {n_sets}")
            up = prom.query('up{job="mixd"}')
            mt.check(up == 1, f"up = {up}")
            print(f"   Prometheus: {samples} samples of {len(plain) / 1e6:.1f} MB, "
                  f"sum {total:.0f}")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def check_config_prints_the_summary(build):
    p = subprocess.run([os.path.join(build, "mixd"), "--check-config", SEED,
                        "--configDefaultNamespace", "default"], capture_output=True, timeout=30)
    mt.check(p.returncode == 0, p.stderr.decode())
    with open(os.path.join(FIXTURES, "config", "mixer-seed.summary"), "rb") as f:
        mt.check(p.stdout == f.read(), p.stdout.decode())
    p = subprocess.run([os.path.join(build, "mixd"), "--check-config",
                        os.path.join(FIXTURES, "config", "broken")], capture_output=True,
                       timeout=30)
    mt.check(p.returncode != 0, "a broken config passed --check-config")


def mixers_command_line_starts_mixd(build):
    """The user's pod runs `mixs server --address ... --configStoreURL=k8s://
    ... --configDefaultNamespace=default --trace_zipkin_url=...`."""
    tmp = tempfile.mkdtemp(prefix="mixd-mixs.")
    try:
        cfgdir = os.path.join(tmp, "cfg")
        os.mkdir(cfgdir)
        shutil.copy(SEED, cfgdir)
        m = mt.Mixd(build, start=False)
        m.argv = lambda: [m.binary, "server", "--address", m.address,
                          f"--configStoreURL=fs://{cfgdir}", "--configDefaultNamespace=default",
                          "--trace_zipkin_url=http://zipkin.istio-system:9411/api/v1/spans",
                          "--monitoring-address", "127.0.0.1:0",
                          "--prometheus-address", "127.0.0.1:0"]
        m.start()
        try:
            mt.check("ignoring --trace_zipkin_url" in m.stderr(), m.stderr_tail())
            mt.check(mt.value(m.metrics(), "mixd_config_generation") == 1)
        finally:
            m.close()
        p = subprocess.run([os.path.join(build, "mixd"), "server",
                            "--configStoreURL=k8s://", "--address", "unix://" + tmp + "/s"],
                           capture_output=True, timeout=30)
        mt.check(p.returncode != 0 and b"kubectl get" in p.stderr, p.stderr.decode())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def the_stdio_handler_writes_logentries_as_json_lines(build):
    """As Mixer's stdio adapter wrote them; and, as Mixer, no entry at all
    for a record one of whose fields fails (here accesslog's timestamp,
    notes' variables: counted as instance errors), Go's zero time without
    a timestamp expression, JSON
    when the handler does not say (outputAsJson's default). (BYTES in
    base64: test_logs; mixd-report sends no BYTES attribute.)"""
    tmp = tempfile.mkdtemp(prefix="mixd-stdio.")
    try:
        out = os.path.join(tmp, "access.log")
        out2 = os.path.join(tmp, "notes.log")
        path = os.path.join(tmp, "log.yaml")
        with open(path, "w") as f:
            f.write(f"""apiVersion: config.istio.io/v1alpha2
kind: attributemanifest
metadata: {{name: notes, namespace: default}}
spec:
  attributes:
    test.note: {{valueType: STRING}}
---
apiVersion: config.istio.io/v1alpha2
kind: logentry
metadata: {{name: notes, namespace: default}}
spec:
  variables: {{note: test.note, path: request.path}}
---
apiVersion: config.istio.io/v1alpha2
kind: stdio
metadata: {{name: plain, namespace: default}}
spec: {{logStream: FILE, outputPath: {out2}}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: stdionotes, namespace: default}}
spec:
  match: context.protocol == "http"
  actions: [{{handler: plain.stdio, instances: [notes.logentry]}}]
---
apiVersion: config.istio.io/v1alpha2
kind: logentry
metadata: {{name: accesslog, namespace: default}}
spec:
  severity: '"Warning"'
  timestamp: request.time
  variables:
    responseCode: response.code | 0
    protocol: context.protocol | "unknown"
    latency: response.duration | "0ms"
    source: source.labels | emptyStringMap()
    sourceIp: source.ip | ip("0.0.0.0")
    path: request.path | ""
---
apiVersion: config.istio.io/v1alpha2
kind: stdio
metadata: {{name: handler, namespace: default}}
spec:
  outputAsJson: true
  logStream: FILE
  outputPath: {out}
  severityLevels: {{Warning: 1}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: stdiohttp, namespace: default}}
spec:
  match: context.protocol == "http"
  actions:
  - handler: handler.stdio
    instances: [accesslog.logentry]
""")
        p = subprocess.run([os.path.join(build, "mixd"), "--check-config", path,
                            "--configDefaultNamespace", "default"], capture_output=True,
                           timeout=30)
        mt.check(b"plain.stdio.default: stdio, json" in p.stdout, p.stdout.decode())
        with mt.Mixd(build, ["--config", path, "--configDefaultNamespace", "default"]) as m:
            recs = [{"context.protocol": "http", "response.code": 200 + i,
                     "response.duration": f"{i}ms", "request.time": "2019-03-01T10:00:00Z",
                     "source.labels": {"app": "x\"y"}, "source.ip": "::ffff:10.0.0.1",
                     "request.path": "/a\nb\tc\x01", "test.note": "n"} for i in range(50)]
            recs.append({"context.protocol": "tcp"})
            # no request.time: no accesslog entry; notes' has no timestamp
            recs += [{"context.protocol": "http", "request.path": "/nt", "test.note": "n"}] * 3
            # no test.note either: no entry from either
            recs += [{"context.protocol": "http", "request.path": "/nb"}] * 2
            send(build, m, recs)
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == 56)
            def lines(name=out):
                try:
                    with open(name) as f:
                        return [json.loads(l) for l in f]
                except (OSError, ValueError):
                    return []
            m.wait_for(lambda: len(lines()) >= 50 and len(lines(out2)) >= 53,
                       what="50 + 53 log lines")
            time.sleep(0.2)  # nothing more comes
            got = sorted(lines(), key=lambda d: d["responseCode"])
            mt.check(len(got) == 50, f"{len(got)} accesslog lines")
            notes = lines(out2)
            mt.check(len(notes) == 53, f"{len(notes)} notes lines")
            mt.check(all(d == {"level": "info", "time": "0001-01-01T00:00:00.000000Z",
                               "instance": "notes.logentry.default", "note": "n",
                               "path": d["path"]} for d in notes), f"{notes[:3]}")
            mt.check([d["path"] for d in notes].count("/nt") == 3, f"{notes}")
            # As Mixer's adapter wrote them: formatDate's six fraction
            # digits, an IPv4-mapped address as net.IP.String() prints it
            mt.check(got[0] == {"level": "warn", "time": "2019-03-01T10:00:00.000000Z",
                                "instance": "accesslog.logentry.default", "latency": "0s",
                                "path": "/a\nb\tc\x01", "protocol": "http",
                                "responseCode": 200, "source": {"app": "x\"y"},
                                "sourceIp": "10.0.0.1"}, f"{got[0]}")
            with open(out) as f:
                raw = f.read()
            # one entry a line, control characters escaped as zap did
            mt.check(raw.count("\n") == 50, raw[:300])
            mt.check(raw.count('"path":"/a\\nb\\tc\\u0001"') == 50, raw[:300])
            mt.check([d["responseCode"] for d in got] == list(range(200, 250)))
            mt.check(got[7]["latency"] == "7ms", f"{got[7]}")
            # Each entry not written is an instance error, as Mixer logged
            # "error creating instance": accesslog's 5 http records
            # without request.time, notes' 2 without test.note.
            ms = m.metrics()
            errs = {i: mt.value(ms, "mixd_instance_errors_total", instance=i)
                    for i in ("accesslog.logentry.default", "notes.logentry.default")}
            mt.check(errs == {"accesslog.logentry.default": 5,
                              "notes.logentry.default": 2}, f"{errs}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# A logentry of request.path, for a config's stdio handlers.
NOTES = """apiVersion: config.istio.io/v1alpha2
kind: logentry
metadata: {name: notes, namespace: default}
spec:
  variables: {path: request.path}
---
"""


def notes_config(tmp, stdio_spec, match):
    """A config in @tmp logging request.path of the records @match takes
    (None: all) to a stdio handler of spec @stdio_spec; its path."""
    path = os.path.join(tmp, "log.yaml")
    with open(path, "w") as f:
        f.write(NOTES + f"""apiVersion: config.istio.io/v1alpha2
kind: stdio
metadata: {{name: out, namespace: default}}
spec: {stdio_spec}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: notes, namespace: default}}
spec:
{f"  match: {match}" if match else ""}
  actions: [{{handler: out.stdio, instances: [notes.logentry]}}]
""")
    return path


def lines_an_output_refuses_are_counted(build):
    """A stdio handler whose output fails every write (/dev/full: ENOSPC)
    loses its lines, counted one by one in mixd_log_lines_lost_total and
    said once on stderr, and the shard goes on with the metrics."""
    tmp = tempfile.mkdtemp(prefix="mixd-full.")
    try:
        path = notes_config(tmp, "{logStream: FILE, outputPath: /dev/full}",
                            'context.protocol == "http"')
        with mt.Mixd(build, ["--config", path, "--configDefaultNamespace", "default"]) as m:
            ms = m.metrics()
            mt.check(mt.value(ms, "mixd_log_lines_lost_total") == 0, "lost before any")
            recs = [{"context.protocol": "http", "request.path": f"/{i}"} for i in range(40)]
            recs += [{"context.protocol": "tcp"}] * 5  # no rule: no line
            send(build, m, recs)
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_log_lines_lost_total") == 40,
                       what="40 lines lost")
            time.sleep(0.2)
            ms = m.metrics()
            mt.check(mt.value(ms, "mixd_log_lines_lost_total") == 40, "no more")
            mt.check(mt.value(ms, "mixd_records_processed_total") == 45, "all processed")
            err = m.stderr()
            mt.check(err.count("cannot write its output: No space left on device") == 1, err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def a_stdout_no_one_reads_holds_nothing_up(build):
    """A stdio handler on a stdout pipe whose reader stops reading: the
    shard goes on counting every record, the lines the pipe cannot take
    are dropped and counted, SIGTERM stops mixd at once, and when the pipe
    is read again every line in it is whole: lines read + lines counted
    lost = records processed. (It used to hold the shard, and the stop,
    for as long as the reader did.)"""
    tmp = tempfile.mkdtemp(prefix="mixd-stall.")
    try:
        path = notes_config(tmp, "{outputAsJson: true}", None)
        with mt.Mixd(build, ["--config", path, "--configDefaultNamespace", "default"],
                     shards=1, stdout=subprocess.PIPE) as m:
            n = 20000  # about 5 MB of lines: far more than a pipe holds
            send(build, m, [{"request.path": f"/{i:06}" + "x" * 200} for i in range(n)],
                 transport="socket")
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == n,
                       timeout=30, what=f"{n} records processed")
            lost = mt.value(m.metrics(), "mixd_log_lines_lost_total")
            mt.check(0 < lost < n, f"lost {lost}")
            mt.check("its output is not being read fast enough" in m.stderr(), m.stderr())
            out = []
            reader = threading.Thread(target=lambda: out.append(m.proc.stdout.read()))
            reader.start()
            t0 = time.monotonic()
            m.stop()
            took = time.monotonic() - t0
            reader.join(10)
            mt.check(not reader.is_alive(), "stdout still open after the stop")
            mt.check(took < 5, f"the stop took {took:.1f} s")
            text = out[0].decode()
            mt.check(text.endswith("\n"), repr(text[-200:]))
            lines = text.splitlines()
            paths = [json.loads(line)["path"] for line in lines]
            mt.check(len(set(paths)) == len(paths), "a line twice")
            mt.check(len(lines) + lost == n,
                     f"{len(lines)} lines read + {lost} lost != {n}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def a_reload_waits_for_no_stdout(build):
    """Reloads while a stdout pipe no one reads holds lines: the lines the
    old configuration left are written behind the shard's back (or given
    up after half a second, counted), so a reload holds no shard and
    producers lose nothing. (Each reload used to hold the shard half a
    second: at 40,000 records/s the rings filled and records were
    dropped.) Every line that comes out is whole and once; lines read +
    lines counted lost + records that make no entry = records processed."""
    tmp = tempfile.mkdtemp(prefix="mixd-reload-stall.")
    try:
        path = notes_config(tmp, "{outputAsJson: true}", None)
        with mt.Mixd(build, ["--config", path, "--configDefaultNamespace", "default"],
                     shards=1, stdout=subprocess.PIPE) as m:
            first = 5000  # the pipe and the shard's buffer full first
            send(build, m, [{"request.path": f"/{i:06}" + "x" * 200} for i in range(first)],
                 transport="socket")
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == first,
                       timeout=30, what=f"{first} records processed")
            gen0 = mt.value(m.metrics(), "mixd_config_generation")
            n = 120000
            lg = subprocess.Popen([os.path.join(build, "mixd-loadgen"), "--address",
                                   m.address, "-n", str(n), "-r", "40000"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            hups = 0
            while lg.poll() is None:
                time.sleep(0.3)
                m.proc.send_signal(signal.SIGHUP)
                hups += 1
            out = lg.stdout.read().decode()
            mt.check(lg.returncode == 0 and "dropped 0 " in out, out)
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == first + n,
                       timeout=30, what=f"{first + n} records processed")
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_config_generation") > gen0 + 2,
                       what="the reloads")
            time.sleep(1)  # past the last reload's half second
            ms = m.metrics()
            lost = mt.value(ms, "mixd_log_lines_lost_total")
            # the loadgen's records without a request.path make no entry
            failed = mt.total(ms, "mixd_instance_errors_total")
            got = []
            reader = threading.Thread(target=lambda: got.append(m.proc.stdout.read()))
            reader.start()
            m.stop()
            reader.join(10)
            mt.check(not reader.is_alive(), "stdout still open after the stop")
            lines = got[0].decode().splitlines()
            # ours are unique (the loadgen's repeat)
            paths = [p for p in (json.loads(line)["path"] for line in lines)
                     if p.endswith("x" * 200)]
            mt.check(len(set(paths)) == len(paths), "a line twice")
            mt.check(len(lines) + lost + failed == first + n,
                     f"{len(lines)} lines read + {lost} lost + {failed} without an entry"
                     f" != {first + n} ({hups} SIGHUPs)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def two_outputs_keep_their_own_lines(build):
    """Two stdio handlers, stdout (a pipe full for now) and a file, fed by
    turns: the lines for stdout wait in their own buffer while the file's
    are written, and all of them come out once stdout is read. (One
    buffer served both: each line for the file threw away those stdout had
    not taken yet.)"""
    tmp = tempfile.mkdtemp(prefix="mixd-two-outputs.")
    try:
        out = os.path.join(tmp, "b.log")
        path = os.path.join(tmp, "log.yaml")
        with open(path, "w") as f:
            f.write(NOTES + f"""apiVersion: config.istio.io/v1alpha2
kind: stdio
metadata: {{name: a, namespace: default}}
spec: {{outputAsJson: true}}
---
apiVersion: config.istio.io/v1alpha2
kind: stdio
metadata: {{name: b, namespace: default}}
spec: {{outputAsJson: true, logStream: FILE, outputPath: {out}}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: ra, namespace: default}}
spec:
  match: request.path.startsWith("/a")
  actions: [{{handler: a.stdio, instances: [notes.logentry]}}]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: rb, namespace: default}}
spec:
  match: request.path.startsWith("/b")
  actions: [{{handler: b.stdio, instances: [notes.logentry]}}]
""")
        with mt.Mixd(build, ["--config", path, "--configDefaultNamespace", "default"],
                     shards=1, stdout=subprocess.PIPE) as m:
            # a pipe of one page, so that what it holds is known
            fcntl.fcntl(m.proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
            pad = "x" * 200
            # some 13 KB of lines for stdout: the pipe full, the rest waiting
            first = [{"request.path": f"/a{i:05}{pad}"} for i in range(50)]
            send(build, m, first)
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == 50)
            turns = []  # 26 KB more for each: stdout's fit its buffer
            for i in range(100):
                turns.append({"request.path": f"/b{i:05}{pad}"})
                turns.append({"request.path": f"/a{50 + i:05}{pad}"})
            send(build, m, turns)
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == 250)
            mt.check(mt.value(m.metrics(), "mixd_log_lines_lost_total") == 0,
                     "lines lost: " + str(mt.value(m.metrics(), "mixd_log_lines_lost_total")))
            got = []
            reader = threading.Thread(target=lambda: got.append(m.proc.stdout.read()))
            reader.start()
            m.stop()
            reader.join(10)
            a = [json.loads(line)["path"] for line in got[0].decode().splitlines()]
            mt.check(a == [f"/a{i:05}{pad}" for i in range(150)], f"{len(a)} lines on stdout")
            with open(out) as f:
                b = [json.loads(line)["path"] for line in f]
            mt.check(b == [f"/b{i:05}{pad}" for i in range(100)], f"{len(b)} lines in the file")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class StdoutClosed(mt.Mixd):
    """mixd started with its stdout closed."""

    def argv(self):
        return ["sh", "-c", 'exec "$@" 1>&-', "mixd"] + super().argv()


def a_closed_stdout_is_dev_null(build):
    """mixd started with stdout closed: a STDOUT stdio handler writes to
    /dev/null, not to whatever mixd opened first with the number 1 (its
    signalfd, whose writes failed: every line was counted lost, with
    "Invalid argument")."""
    tmp = tempfile.mkdtemp(prefix="mixd-closed.")
    try:
        path = notes_config(tmp, "{outputAsJson: true}", None)
        with StdoutClosed(build, ["--config", path, "--configDefaultNamespace", "default"],
                          shards=1) as m:
            n = 100
            send(build, m, [{"request.path": f"/{i}"} for i in range(n)])
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == n,
                       timeout=30, what=f"{n} records processed")
            m.stop()
            mt.check("stdio handler" not in m.stderr(), m.stderr())
            mt.check(m.proc.returncode == 0, f"exit {m.proc.returncode}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Nobody(mt.Mixd):
    """mixd run as nobody (its temp directory open to it)."""

    def argv(self):
        os.chmod(self.tmp, 0o777)
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                "--"] + super().argv()


def a_stdout_pipe_mixd_cannot_reopen_holds_nothing_up_either(build):
    """mixd not root, its stdout a pipe root made (as a container runtime
    does): /proc/self/fd/1 cannot be opened again (EACCES), so the
    descriptor it was started with is made non-blocking -- said on stderr
    -- and a reader that stops reading still holds no shard."""
    if os.geteuid() != 0:
        print("  (not tried: needs root, to run mixd as another user)")
        return
    tmp = tempfile.mkdtemp(prefix="mixd-nobody.")
    try:
        os.chmod(tmp, 0o755)
        path = notes_config(tmp, "{outputAsJson: true}", None)
        os.chmod(path, 0o644)
        with Nobody(build, ["--config", path, "--configDefaultNamespace", "default"],
                    shards=1, stdout=subprocess.PIPE) as m:
            n = 20000
            send(build, m, [{"request.path": f"/{i:06}" + "x" * 200} for i in range(n)],
                 transport="socket")
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == n,
                       timeout=30, what=f"{n} records processed")
            mt.check("cannot open stdout again (Permission denied); O_NONBLOCK set"
                     in m.stderr(), m.stderr())
            mt.check(mt.value(m.metrics(), "mixd_log_lines_lost_total") > 0, "none lost")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def the_stop_waits_once_for_all_shards_stdio_lines(build):
    """Four shards each holding lines a stdout pipe no one reads will not
    take: the stop gives them one half second together, not half a second
    each in turn (2 s here; minutes at 256 shards, past systemd's stop
    timeout)."""
    tmp = tempfile.mkdtemp(prefix="mixd-stop.")
    try:
        path = notes_config(tmp, "{outputAsJson: true}", None)
        with mt.Mixd(build, ["--config", path, "--configDefaultNamespace", "default"],
                     shards=4, stdout=subprocess.PIPE) as m:
            n = 8000
            p = subprocess.run([os.path.join(build, "mixd-loadgen"), "--address",
                                m.address, "-j", "4", "-n", str(n), "-r", "40000"],
                               capture_output=True, timeout=mt._t(60))
            mt.check(p.returncode == 0, p.stderr.decode())
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == n,
                       timeout=30, what=f"{n} records processed")
            t0 = time.monotonic()
            m.stop()
            took = time.monotonic() - t0
            mt.check(took < mt._t(1.5), f"the stop took {took:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    mt.main([
        every_sample_of_the_six_families_is_exact,
        every_sample_is_exact_without_the_record_memo,
        a_large_scrape_is_streamed_whole_to_curl,
        promtool_finds_nothing,
        slow_scrapers_hold_at_most_four_views,
        a_scrape_past_its_timeout_is_cut,
        one_address_holding_connections_leaves_room_for_others,
        dropped_connections_do_not_flood_stderr,
        scrapes_keep_their_connection_alive,
        gzip_when_the_scraper_asks,
        scrapes_during_writes_are_never_torn,
        reload_while_records_flow_loses_and_doubles_nothing,
        a_one_file_config_reloads_after_renames_and_a_failure,
        a_configmap_style_file_reloads_when_its_link_is_swapped,
        a_config_that_goes_missing_is_followed_back,
        a_symlinked_config_directory_swapped_is_followed,
        a_file_made_in_a_new_directory_during_a_reload_is_loaded,
        a_config_directory_named_with_a_dot_sees_new_files,
        series_expire_after_the_policy,
        labels_that_fill_the_key_fail_the_next_one,
        a_nan_observation_counts_only_in_the_inf_bucket,
        label_values_are_written_as_mixers_adapter_wrote_them,
        the_series_limit_bounds_memory,
        the_series_limit_bounds_label_bytes_too,
        a_real_prometheus_scrapes_mixd,
        a_real_prometheus_takes_a_large_gzipped_scrape,
        check_config_prints_the_summary,
        mixers_command_line_starts_mixd,
        the_stdio_handler_writes_logentries_as_json_lines,
        lines_an_output_refuses_are_counted,
        a_stdout_no_one_reads_holds_nothing_up,
        a_reload_waits_for_no_stdout,
        a_closed_stdout_is_dev_null,
        two_outputs_keep_their_own_lines,
        a_stdout_pipe_mixd_cannot_reopen_holds_nothing_up_either,
        the_stop_waits_once_for_all_shards_stdio_lines,
    ])
