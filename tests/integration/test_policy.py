"""The policy socket end to end: mixd --role both (and policy) loads Istio's
sample policies unchanged and answers checks sent by the real client
library, through mixd-report --check; quotas, the fail-open and
fail-closed policies when mixd is not there, malformed requests, reload,
the self-metrics, and the user's mesos instance run on checks against a
Marathon stand-in.

MIXD_TEST_THREADED (the policy thread, reloads and scrapes: under TSan too)
"""

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import mixdtest as mt
from mixdtest import check

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from marathon_standin import StandIn  # noqa: E402

FIXTURES = os.environ.get("MIXD_FIXTURES",
                          os.path.join(os.path.dirname(__file__), "..", "fixtures"))
SAMPLES = ["mixer-rule-deny-label.yaml", "mixer-rule-deny-ip.yaml",
           "mixer-rule-productpage-ratelimit.yaml"]


class PolicyMixd(mt.Mixd):
    """mixd with a policy socket beside its producer socket, on a config of
    Istio's samples copied into a directory of its own."""

    def __init__(self, build, role="both", samples=SAMPLES, extra=(), files=()):
        self.config_dir = tempfile.mkdtemp(prefix="mixd-policy.")
        for s in samples:
            shutil.copy(os.path.join(FIXTURES, "policy", s), self.config_dir)
        for f in files:  # more, from anywhere
            shutil.copy(f, self.config_dir)
        self.role = role
        super().__init__(build, start=False)
        self.wants_prometheus = role != "policy"
        self.policy_sock = os.path.join(self.tmp, "policy.sock")
        self.policy_address = "unix://" + self.policy_sock
        self.extra_args = ["--role", role, "--policy-address", self.policy_address,
                           "--config", self.config_dir] + list(extra)
        self.start()

    def close(self, ok=True):
        super().close(ok)
        shutil.rmtree(self.config_dir, ignore_errors=True)


def checks(build, address, lines, extra=()):
    """mixd-report --check: (rc, answers as dicts, stderr)."""
    rc, out, err = mt.report(build, address, lines, extra=["--check"] + list(extra))
    answers = [json.loads(l) for l in out.splitlines() if l.strip()]
    return rc, answers, err


def test_samples_through_the_client(build):
    with PolicyMixd(build) as m:
        lines = [
            # 1: reviews v3 -> ratings: the denier of the deny-label sample
            {"destination.labels": {"app": "ratings"},
             "source.labels": {"app": "reviews", "version": "v3"}},
            # 2: reviews v2: no rule matches, no opinion
            {"destination.labels": {"app": "ratings"},
             "source.labels": {"app": "reviews", "version": "v2"}},
            # 3, 4: through the ingress gateway, from inside and outside
            # 10.57.0.0/16 (the deny-ip sample's whitelist)
            {"source.labels": {"istio": "ingressgateway"}, "source.ip": "10.57.3.4"},
            {"source.labels": {"istio": "ingressgateway"}, "source.ip": "192.0.2.7"},
        ]
        rc, a, err = checks(build, m.policy_address, lines)
        check(rc == 0, f"mixd-report --check exited {rc}: {err}")
        check(len(a) == 4, f"{len(a)} answers to 4 checks: {a}")
        check([x["line"] for x in a] == [1, 2, 3, 4], f"answers out of order: {a}")
        check(all(x["answered"] for x in a), f"unanswered: {a}")
        check(a[0]["status"] == "PERMISSION_DENIED" and
              a[0]["message"] == "denyreviewsv3handler.handler.istio-system:Not allowed",
              f"deny by label: {a[0]}")
        check(a[0]["valid_duration_ns"] == 5e9 and a[0]["valid_use_count"] == 1000,
              f"the denier's validity: {a[0]}")
        check(a[1]["status"] == "OK" and a[1]["valid_duration_ns"] == 60e9 and
              a[1]["valid_use_count"] == 10000, f"no opinion: {a[1]}")
        check(a[2]["status"] == "OK" and a[2]["valid_duration_ns"] == 300e9,
              f"whitelisted address: {a[2]}")
        check(a[3]["status"] == "PERMISSION_DENIED" and
              a[3]["message"] == "whitelistip.handler.istio-system:192.0.2.7 is not "
              "whitelisted", f"address not whitelisted: {a[3]}")
        check("checked 4 records: 4 answered, 0 unanswered, rejected 0 lines" in err, err)

        # the productpage rate limit: 2 per 5 s, whoever asks
        pp = {"destination.service.name": "productpage"}
        rc, a, err = checks(build, m.policy_address, [pp] * 3,
                            extra=["--quota", "requestcountquota:1"])
        check(rc == 0, err)
        granted = [x["quotas"]["requestcountquota"]["granted"] for x in a]
        check(granted == [1, 1, 0], f"productpage grants {granted}, want [1, 1, 0]")
        check(a[0]["quotas"]["requestcountquota"]["valid_duration_ns"] == 5e9, f"{a[0]}")
        # a denied check asks no quota
        rc, a, err = checks(build, m.policy_address, [lines[0]],
                            extra=["--quota", "requestcountquota"])
        check(a[0]["status"] == "PERMISSION_DENIED" and "quotas" not in a[0], f"{a[0]}")

        metrics = m.metrics()
        check(mt.value(metrics, "mixd_policy_checks_total", code="OK") == 5 and
              mt.value(metrics, "mixd_policy_checks_total",
                       code="PERMISSION_DENIED") == 3,
              f"{ {k: v for k, v in metrics.items() if 'policy' in k[0]} }")
        # one key held (productpage's window); no request lost to a bound
        check(mt.value(metrics, "mixd_policy_quota_keys", -1) == 1 and
              mt.value(metrics, "mixd_policy_quota_lost_total", -1,
                       reason="keys_full") == 0 and
              mt.value(metrics, "mixd_policy_quota_lost_total", -1,
                       reason="dedup_full") == 0,
              f"{ {k: v for k, v in metrics.items() if 'quota' in k[0]} }")
        # telemetry is served as well in --role both
        check(m.prometheus_port and m.prometheus_port > 0, "no Prometheus port")

        # answers that cannot be written (stdout full) are an error, exit 2
        with open("/dev/full", "w") as full:
            p = subprocess.run([os.path.join(build, "mixd-report"), "--check",
                                "--address", m.policy_address],
                               input=(json.dumps(lines[1]) + "\n").encode(),
                               stdout=full, stderr=subprocess.PIPE, timeout=mt._t(30))
        check(p.returncode == 2 and b"writing the answers" in p.stderr,
              f"exit {p.returncode}: {p.stderr!r}")


def test_role_policy_alone(build):
    with PolicyMixd(build, role="policy") as m:
        check(not os.path.exists(m.sock), "--role policy listens for producers")
        check("prometheus on" not in m.stderr(), "--role policy serves /metrics for Prometheus")
        rc, a, err = checks(build, m.policy_address,
                            [{"source.labels": {"istio": "ingressgateway"},
                              "source.ip": "10.58.0.1"}])
        check(rc == 0 and a[0]["status"] == "PERMISSION_DENIED", f"{rc} {a} {err}")
        names = {k[0] for k in m.metrics()}
        check("mixd_policy_checks_total" in names, "no mixd_policy_checks_total")
        check(not any(n.startswith(("mixd_ingest", "mixd_series", "mixd_producers"))
                      for n in names), f"telemetry families in role policy: {names}")


def test_fail_open_and_closed(build):
    tmp = tempfile.mkdtemp(prefix="mixd-nopolicy.")
    try:
        addr = "unix://" + os.path.join(tmp, "none.sock")
        rc, a, err = checks(build, addr, [{"request.path": "/"}],
                            extra=["--check-timeout", "200"])
        check(rc == 2, f"no mixd, exit {rc}: {err}")
        check(not a[0]["answered"] and a[0]["status"] == "OK" and
              "mixd did not answer" in a[0]["message"], f"fail open: {a}")
        check("0 answered, 1 unanswered" in err, err)
        rc, a, err = checks(build, addr, [{"request.path": "/"}],
                            extra=["--check-timeout", "200", "--fail-closed"])
        check(rc == 2 and not a[0]["answered"] and a[0]["status"] == "UNAVAILABLE",
              f"fail closed: {a}")
        # a mixd that accepts and never answers: the deadline decides
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = os.path.join(tmp, "mute.sock")
        srv.bind(path)
        srv.listen(4)
        start = time.monotonic()
        rc, a, err = checks(build, "unix://" + path, [{"request.path": "/"}],
                            extra=["--check-timeout", "300"])
        took = time.monotonic() - start
        srv.close()
        check(rc == 2 and not a[0]["answered"] and "timed out" in a[0]["message"],
              f"a mute mixd: {a}")
        check(0.3 <= took < mt._t(5), f"the 300 ms deadline took {took:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_malformed_requests(build):
    with PolicyMixd(build) as m:
        hello = b"MIXDHELO" + struct.pack("<II", 2, 3)  # v2, a check

        def frame(payload):
            pad = (-len(payload)) % 8
            return struct.pack("<II", len(payload), 0x314B584D) + payload + b"\0" * pad

        def answer(s):
            hdr = s.recv(8, socket.MSG_WAITALL)
            ln, mark = struct.unpack("<II", hdr)
            check(mark == 0x3141584D, f"answer mark {mark:#x}")
            body = s.recv(ln + (-ln) % 8, socket.MSG_WAITALL)
            rid, code = struct.unpack_from("<Qi", body)
            mlen = struct.unpack_from("<H", body, 24)[0]
            return rid, code, body[26:26 + mlen].decode()

        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(m.policy_sock)
        s.settimeout(mt._t(5))
        s.sendall(hello)
        # lengths that do not add up: INVALID_ARGUMENT, the stream goes on
        s.sendall(frame(struct.pack("<QH", 7, 300) + b"x"))
        rid, code, msg = answer(s)
        check(rid == 7 and code == 3 and msg == "malformed check request", (rid, code, msg))
        # attributes that do not decode (an unknown dictionary id)
        rec = struct.pack("<HB", 0x7FFF, 1) + struct.pack("<I", 1) + b"a"
        s.sendall(frame(struct.pack("<QHHI", 8, 0, 0, len(rec)) + rec))
        rid, code, msg = answer(s)
        check(rid == 8 and code == 3 and msg.startswith("malformed attributes"),
              (rid, code, msg))
        # a good one, pipelined behind two more
        good = frame(struct.pack("<QHHI", 9, 0, 0, 0))
        s.sendall(good + frame(struct.pack("<QHHI", 10, 0, 0, 0)))
        check(answer(s)[:2] == (9, 0) and answer(s)[:2] == (10, 0), "pipelined answers")
        # a frame that cannot be delimited: the connection is closed
        s.sendall(struct.pack("<II", 8, 0xDEADBEEF) + b"\0" * 8)
        check(s.recv(1) == b"", "a bad mark did not close the connection")
        s.close()
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_policy_connections_closed_total",
                                    reason="bad") == 1, what="closed_total{bad} == 1")
        check(mt.value(m.metrics(), "mixd_policy_malformed_total") == 2, "malformed count")
        # mixd serves on
        rc, a, err = checks(build, m.policy_address, [{"request.path": "/"}])
        check(rc == 0 and a[0]["status"] == "OK", f"{a} {err}")


def test_hostile_clients(build):
    with PolicyMixd(build) as m:
        hello = b"MIXDHELO" + struct.pack("<II", 2, 3)  # v2, a check
        # a connection that never says hello is closed after 2 s
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.connect(m.policy_sock)
        silent.settimeout(mt._t(6))
        start = time.monotonic()
        check(silent.recv(1) == b"", "a silent connection was not closed")
        took = time.monotonic() - start
        check(1.5 <= took <= mt._t(4), f"closed after {took:.2f} s, want 2")
        silent.close()
        # each of several, accepted at different times, around a client
        # that said hello, at its own 2 s; the client that said hello stays
        def connect():
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(m.policy_sock)
            c.settimeout(mt._t(6))
            return c, time.monotonic()
        first = connect()
        time.sleep(0.5)
        polite = connect()
        polite[0].sendall(hello)
        time.sleep(0.5)
        second = connect()
        for c, born in (first, second):
            check(c.recv(1) == b"", "a silent connection was not closed")
            took = time.monotonic() - born
            check(1.5 <= took <= mt._t(4), f"closed {took:.2f} s after its accept, want 2")
            if c is first[0]:  # the younger one is not taken with it
                r, _, _ = select.select([second[0]], [], [], 0)
                check(not r, "the younger silent connection went with the older")
            c.close()
        polite[0].sendall(struct.pack("<IIQHHI", 16, 0x314B584D, 7, 0, 0, 0))
        ans = polite[0].recv(65536)
        check(len(ans) >= 16 and struct.unpack_from("<Q", ans, 8)[0] == 7,
              f"the client that said hello was answered: {ans[:16]!r}")
        polite[0].close()
        # a client that sends its requests and shuts its side still gets
        # every answer
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(m.policy_sock)
        s.settimeout(mt._t(5))
        reqs = b"".join(struct.pack("<IIQHHI", 16, 0x314B584D, i, 0, 0, 0)
                        for i in range(100))
        s.sendall(hello + reqs)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        s.close()
        ids, off = [], 0
        while off < len(got):
            ln = struct.unpack_from("<I", got, off)[0]
            ids.append(struct.unpack_from("<Q", got, off + 8)[0])
            off += 8 + ln + (-ln) % 8
        check(ids == list(range(100)), f"answers after a half-close: {ids[:5]}... "
              f"({len(ids)} of 100)")
        # mixd serves on
        rc, a, err = checks(build, m.policy_address, [{"request.path": "/"}])
        check(rc == 0 and a[0]["status"] == "OK", f"{a} {err}")


def test_reload_changes_the_policy(build):
    with PolicyMixd(build, samples=["mixer-rule-deny-label.yaml"]) as m:
        denied = {"destination.labels": {"app": "ratings"},
                  "source.labels": {"app": "reviews", "version": "v3"}}
        rc, a, err = checks(build, m.policy_address, [denied])
        check(a[0]["status"] == "PERMISSION_DENIED", f"{a}")
        os.remove(os.path.join(m.config_dir, "mixer-rule-deny-label.yaml"))
        shutil.copy(os.path.join(FIXTURES, "policy", "mixer-rule-deny-ip.yaml"),
                    m.config_dir)
        m.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + mt._t(10)
        while time.monotonic() < deadline:
            rc, a, err = checks(build, m.policy_address, [denied])
            if a and a[0]["status"] == "OK":
                break
            time.sleep(0.05)
        check(a[0]["status"] == "OK", f"the denier outlived its config: {a}")


class ListProvider:
    """A list provider on 127.0.0.1: serves .body with .status until
    stopped; counts the fetches."""

    def __init__(self):
        import http.server
        import threading
        provider = self
        self.body = b""
        self.status = 200
        self.fetches = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                provider.fetches += 1
                self.send_response(provider.status)
                self.send_header("Content-Length", str(len(provider.body)))
                self.end_headers()
                self.wfile.write(provider.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


PROVIDED = """\
kind: handler
metadata: {{name: versions, namespace: istio-system}}
spec:
  compiledAdapter: listchecker
  params:
    providerUrl: http://127.0.0.1:{port}/list
    refreshInterval: 1s
    ttl: 2s
    overrides: [v9]
---
kind: instance
metadata: {{name: version, namespace: istio-system}}
spec:
  compiledTemplate: listentry
  params:
    value: source.labels["version"]
---
kind: rule
metadata: {{name: versions, namespace: istio-system}}
spec: {{actions: [{{handler: versions, instances: [version]}}]}}
"""


def test_list_provider(build):
    p = ListProvider()
    try:
        p.body = b"v1\nv2\n"
        with PolicyMixd(build, samples=[]) as m:
            with open(os.path.join(m.config_dir, "lists.yaml"), "w") as f:
                f.write(PROVIDED.format(port=p.port))
            m.proc.send_signal(signal.SIGHUP)

            def status(version):
                rc, a, err = checks(build, m.policy_address,
                                    [{"source.labels": {"version": version}}])
                return a[0]["status"], a[0]["message"]

            def until(version, want, secs):
                deadline = time.monotonic() + mt._t(secs)
                got = status(version)
                while got[0] != want and time.monotonic() < deadline:
                    time.sleep(0.05)
                    got = status(version)
                check(got[0] == want, f"{version}: {got}, want {want}")
                return got

            until("v3", "PERMISSION_DENIED", 10)  # the config is in force
            until("v1", "OK", 10)  # and the provider's list fetched
            check(status("v9")[0] == "OK", "the overrides joined the list")
            check(status("v3")[0] == "PERMISSION_DENIED", "v3 is not listed")
            # the provider's list changes: the next refresh has it
            p.body = b"v3\n"
            until("v3", "OK", 5)
            check(status("v1")[0] == "PERMISSION_DENIED", "v1 left the list")
            # the provider fails: the last good list serves until ttl...
            p.status = 500
            fetches = p.fetches
            deadline = time.monotonic() + mt._t(5)
            while p.fetches == fetches and time.monotonic() < deadline:
                time.sleep(0.05)
            check(status("v3")[0] == "OK", "the last good list was dropped before its ttl")
            # ...then checks fail INTERNAL with the fetch's error
            code, msg = until("v3", "INTERNAL", 6)
            check("versions.handler.istio-system:could not fetch list from "
                  f"http://127.0.0.1:{p.port}/list: HTTP status 500" == msg, msg)
            check("purging the list" in m.stderr(), m.stderr_tail())
            # and answer again once it is back
            p.status = 200
            until("v3", "OK", 5)
            # a provider that never answers: a check never waits for it
            start = time.monotonic()
            status("v3")
            check(time.monotonic() - start < mt._t(2), "a check waited")
    finally:
        p.stop()


SEED = os.path.join(FIXTURES, "config", "mixer-seed.yaml")
RATINGS_TASK = "bookinfo_ratings-v1.instance-5e6f7a8b-0000-11e9-8d1a-0242ac110002._app.1"
REVIEWS_TASK = "bookinfo_reviews-v3.instance-9c0d1e2f-0000-11e9-8d1a-0242ac110002._app.1"


def marathon_app(app_id, labels, task_id, ip):
    return {
        "id": app_id, "labels": labels, "instances": 1,
        "networks": [{"mode": "container", "name": "dcos"}],
        "tasks": [{"id": task_id, "appId": app_id, "host": "10.0.1.7",
                   "state": "TASK_RUNNING",
                   "ipAddresses": [{"ipAddress": ip, "protocol": "IPv4"}]}],
    }


def bookinfo_apps(ratings_app):
    return [marathon_app("/bookinfo/ratings-v1", {"app": ratings_app, "version": "v1"},
                         RATINGS_TASK, "9.0.0.4"),
            marathon_app("/bookinfo/reviews-v3", {"app": "reviews", "version": "v3"},
                         REVIEWS_TASK, "9.0.0.3")]


def marathon_uid(task):
    """The user's proxies send the task id without its last .suffix."""
    return "kubernetes://" + task.rsplit(".", 1)[0]


def test_deny_by_marathon_labels(build):
    """--role policy on the user's config (its mesos instance and mesosenv
    handler) and the deny-by-label sample: a check that carries only uids
    is denied because Marathon labels its apps so, as Mixer preprocessed a
    check; it follows Marathon's changes; /readyz waits for the resolver."""
    si = StandIn(apps=bookinfo_apps("ratings"), heartbeat=0.5)
    try:
        with PolicyMixd(build, role="policy", samples=["mixer-rule-deny-label.yaml"],
                        files=[SEED],
                        extra=["--configDefaultNamespace", "default",
                               "--marathon-address", f"127.0.0.1:{si.port}"]) as m:
            m.wait_for(lambda: m.get("/readyz")[0] == 200, timeout=20,
                       what="the resolver synced (/readyz)")
            check(mt.value(m.metrics(), "mixd_marathon_synced") == 1, "not synced")
            v3_to_ratings = {"source.uid": marathon_uid(REVIEWS_TASK),
                             "destination.uid": marathon_uid(RATINGS_TASK)}
            to_nobody = {"source.uid": marathon_uid(REVIEWS_TASK),
                         "destination.uid": "kubernetes://nobody.instance-x._app"}
            rc, a, err = checks(build, m.policy_address, [v3_to_ratings, to_nobody])
            check(rc == 0 and len(a) == 2, f"{rc} {a} {err}")
            check(a[0]["status"] == "PERMISSION_DENIED" and
                  a[0]["message"] == "denyreviewsv3handler.handler.default:Not allowed",
                  f"Marathon's labels did not deny: {a[0]}")
            check(a[1]["status"] == "OK", f"an unknown destination was denied: {a[1]}")
            # Marathon relabels ratings (a deployment): the next snapshot
            # no longer denies
            si.command({"cmd": "set", "apps": bookinfo_apps("ratings-next")})
            si.command({"cmd": "event", "type": "deployment_success",
                        "data": {"id": "d1"}})
            deadline = time.monotonic() + mt._t(10)
            while time.monotonic() < deadline:
                rc, a, err = checks(build, m.policy_address, [v3_to_ratings])
                if a and a[0]["status"] == "OK":
                    break
                time.sleep(0.05)
            check(a[0]["status"] == "OK", f"the old labels outlived the snapshot: {a}")
    finally:
        si.command({"cmd": "down"})


if __name__ == "__main__":
    mt.main([test_samples_through_the_client, test_role_policy_alone,
             test_fail_open_and_closed, test_malformed_requests,
             test_hostile_clients, test_reload_changes_the_policy,
             test_list_provider, test_deny_by_marathon_labels])
