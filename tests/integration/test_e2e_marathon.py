"""End to end with Marathon: mixd on the user's config, its mesosenv handler
pointed (--marathon-address) at a Marathon stand-in; records carrying the
user's uid form and IPs come out of /metrics with the right workload, app
and version labels; /readyz follows the resolver; a Marathon outage keeps
the last snapshot.

MIXD_TEST_THREADED
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import mixdtest as mt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from marathon_standin import StandIn  # noqa: E402

FIXTURES = os.environ.get("MIXD_FIXTURES") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
SEED = os.path.join(FIXTURES, "config", "mixer-seed.yaml")

PP_TASK = "bookinfo_productpage-v1.instance-1f0c2a5e-0000-11e9-8d1a-0242ac110002._app.1"
RV_TASK = "bookinfo_reviews-v2.instance-c96bf99f-0000-11e9-8d1a-0242ac110002._app.1"


def app(app_id, labels, task_id, ip, host="10.0.1.7"):
    return {
        "id": app_id, "labels": labels, "instances": 1, "cpus": 0.1, "mem": 64,
        "networks": [{"mode": "container", "name": "dcos"}],
        "container": {"type": "MESOS", "portMappings": [
            {"containerPort": 9080, "name": "http", "protocol": "tcp"}]},
        "tasks": [{"id": task_id, "appId": app_id, "host": host, "state": "TASK_RUNNING",
                   "ipAddresses": [{"ipAddress": ip, "protocol": "IPv4"}],
                   "ports": [], "slaveId": "agent-1", "version": "2019-03-01T00:00:00Z"}],
    }


APPS = [
    app("/bookinfo/productpage-v1", {"istio": "productpage", "version": "v1"}, PP_TASK,
        "9.0.0.2"),
    app("/bookinfo/reviews-v2", {"istio": "reviews", "version": "v2"}, RV_TASK, "9.0.0.3"),
]


def uid(task):
    """The user's proxies send the task id without its last .suffix."""
    return "kubernetes://" + task.rsplit(".", 1)[0]


def requests_by_labels(m):
    return {k[1]: v for k, v in m.prom_metrics().items() if k[0] == "istio_requests_total"}


def records_resolve_to_marathon_workloads(build):
    si = StandIn(apps=[dict(a) for a in APPS], heartbeat=0.5)
    with mt.Mixd(build, ["--config", SEED, "--configDefaultNamespace", "default",
                         "--marathon-address", f"127.0.0.1:{si.port}"]) as m:
        m.wait_for(lambda: m.get("/readyz")[0] == 200, timeout=20, what="resolver synced")
        recs = [
            # By uid, the user's form.
            {"context.protocol": "http", "context.reporter.kind": "inbound",
             "source.uid": uid(PP_TASK), "destination.uid": uid(RV_TASK),
             "response.code": 200},
            # An empty uid falls back to the IP. (The user's mesos instance
            # passes no destination_ip, so only the source can go by IP.)
            {"context.protocol": "http", "context.reporter.kind": "outbound",
             "source.uid": "", "source.ip": "9.0.0.2",
             "destination.uid": uid(RV_TASK), "destination.port": 9080,
             "response.code": 200},
            # Unknown to Marathon: the bindings' defaults.
            {"context.protocol": "http", "source.uid": "kubernetes://nobody.instance-x._app",
             "response.code": 200},
        ]
        rc, out, err = mt.report(build, m.address, recs)
        mt.check(rc == 0, out + err)
        m.wait_for(lambda: sum(requests_by_labels(m).values()) == 3)
        got = requests_by_labels(m)
        want_pair = {"source_workload": "productpage-v1", "source_workload_namespace": "bookinfo",
                     "source_app": "productpage", "source_version": "v1",
                     "destination_workload": "reviews-v2",
                     "destination_workload_namespace": "bookinfo",
                     "destination_app": "reviews", "destination_version": "v2"}
        resolved = [dict(l) for l in got if all(dict(l).get(k) == v for k, v in want_pair.items())]
        mt.check(len(resolved) == 2, f"want 2 resolved series, got {[dict(l) for l in got]}")
        mt.check({d["reporter"] for d in resolved} == {"source", "destination"})
        unknown = [dict(l) for l in got if dict(l)["source_workload"] == "unknown"]
        mt.check(len(unknown) == 1 and unknown[0]["destination_workload"] == "unknown",
                 f"{unknown}")
        ms = m.metrics()
        mt.check(mt.value(ms, "mixd_marathon_apps") == 2, "apps gauge")
        mt.check(mt.value(ms, "mixd_marathon_tasks") == 2, "tasks gauge")
        mt.check(mt.value(ms, "mixd_marathon_synced") == 1)
        mt.check(mt.value(ms, "mixd_marathon_snapshots_total") >= 1, "snapshots")
        mt.check(0 < mt.value(ms, "mixd_marathon_snapshot_build_seconds") < 5, "build time")

        # Marathon goes away: the last snapshot stays in force, and the
        # failed sync is counted.
        failed = lambda: mt.value(m.metrics(), "mixd_marathon_sync_total", result="error")
        mt.check(failed() == 0, "a sync failed before the outage")
        si.command({"cmd": "down"})
        m.wait_for(lambda: failed() >= 1, timeout=10, what="the failed sync counted")
        rc, out, err = mt.report(build, m.address, recs[:1])
        mt.check(rc == 0, out + err)
        m.wait_for(lambda: sum(requests_by_labels(m).values()) == 4)
        resolved = [v for l, v in requests_by_labels(m).items()
                    if dict(l)["source_workload"] == "productpage-v1" and
                    dict(l)["reporter"] == "destination"]
        mt.check(resolved == [2.0], f"{resolved}")
        si.command({"cmd": "up"})


def a_failing_input_or_binding_binds_nothing(build):
    """As Mixer: a mesos instance one of whose inputs fails to evaluate
    (no `|` default, the attribute absent) is not dispatched, and one
    binding that fails binds none of the instance's -- the attributes stay
    as the proxy sent them. (mixd asked the resolver without that input,
    and bound every binding that evaluated.)"""
    with open(SEED) as f:
        text = f.read()
    for old, new in (('destination_uid: destination.uid | ""',
                      "destination_uid: destination.uid"),
                     ('source.name: $out.source_pod_name | "unknown"',
                      "source.name: $out.source_pod_name")):
        mt.check(old in text, f"the seed changed: {old}")
        text = text.replace(old, new)
    tmp = tempfile.mkdtemp(prefix="mixd-failing-apa.")
    si = StandIn(apps=[dict(a) for a in APPS], heartbeat=0.5)
    try:
        path = os.path.join(tmp, "mixer.yaml")
        with open(path, "w") as f:
            f.write(text)
        with mt.Mixd(build, ["--config", path, "--configDefaultNamespace", "default",
                             "--marathon-address", f"127.0.0.1:{si.port}"]) as m:
            m.wait_for(lambda: m.get("/readyz")[0] == 200, timeout=20,
                       what="resolver synced")
            proxy = {"context.protocol": "http", "response.code": 200,
                     "destination.workload.name": "from-proxy"}
            recs = [
                # both found: every binding evaluates, all are bound
                dict(proxy, **{"source.uid": uid(PP_TASK),
                               "destination.uid": uid(RV_TASK)}),
                # source unknown: source.name's binding fails, none bound
                dict(proxy, **{"source.uid": "kubernetes://nobody.instance-x",
                               "destination.uid": uid(RV_TASK)}),
                # no destination.uid: the instance is not built
                dict(proxy, **{"source.uid": uid(PP_TASK)}),
            ]
            rc, out, err = mt.report(build, m.address, recs)
            mt.check(rc == 0, out + err)
            m.wait_for(lambda: sum(requests_by_labels(m).values()) == 3)
            by_dst = {}
            for labels, v in requests_by_labels(m).items():
                d = dict(labels)["destination_workload"]
                by_dst[d] = by_dst.get(d, 0) + v
            mt.check(by_dst == {"reviews-v2": 1, "from-proxy": 2}, f"{by_dst}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def without_marathon_mixd_serves_and_is_not_ready(build):
    with mt.Mixd(build, ["--config", SEED, "--configDefaultNamespace", "default",
                         "--marathon-address", "127.0.0.1:1"]) as m:
        mt.check(m.get("/healthz")[0] == 200)
        status, _, body = m.get("/readyz")
        mt.check(status == 503 and "not synced" in body, f"{status} {body}")
        rc, out, err = mt.report(build, m.address, [{"context.protocol": "http"}])
        mt.check(rc == 0, out + err)
        m.wait_for(lambda: sum(requests_by_labels(m).values()) == 1)
        l = dict(next(iter(requests_by_labels(m))))
        mt.check(l["source_workload"] == "unknown" and l["destination_app"] == "unknown")


def seed_for(port, password="Zmcc@001"):
    """The user's config, its mesosenv handler at the stand-in on @port."""
    with open(SEED) as f:
        text = f.read()
    old = "marathon_address: master.mesos:8080"
    mt.check(old in text and "Zmcc@001" in text, "the seed's mesosenv handler moved")
    return text.replace(old, f"marathon_address: 127.0.0.1:{port}").replace(
        "Zmcc@001", password)


def without_mesos(text):
    """@text without the mesosenv handler, the mesos instance and the rules
    that send to it: a mesh before it was wired to Marathon."""
    docs = text.split("\n---\n")
    keep = [d for d in docs if "kind: mesosenv" not in d and "kind: mesos\n" not in d
            and "handler.mesosenv" not in d]
    mt.check(len(docs) - len(keep) == 4, f"dropped {len(docs) - len(keep)} documents")
    return "\n---\n".join(keep)


def version_of(m, rec):
    """Send @rec; the destination_version of the series it counted in."""
    before = requests_by_labels(m)
    rc, out, err = mt.report(m.build, m.address, [rec])
    mt.check(rc == 0, out + err)
    m.wait_for(lambda: sum(requests_by_labels(m).values()) == sum(before.values()) + 1)
    after = requests_by_labels(m)
    grew = [dict(l) for l, v in after.items() if v > before.get(l, 0)]
    mt.check(len(grew) == 1, f"{grew}")
    return grew[0]["destination_version"]


def a_reload_moves_the_resolver_to_new_marathon_settings(build):
    """A reload that points the mesosenv handler at another Marathon with
    rotated credentials moves the running resolver there; one whose
    settings do not work leaves mixd unready (the snapshot in force still
    serving) until they do; a reload that first brings a mesosenv handler
    starts one."""
    old_m = StandIn(apps=[dict(a) for a in APPS], heartbeat=0.5)
    new_apps = [dict(a) for a in APPS]
    new_apps[1] = app("/bookinfo/reviews-v2", {"istio": "reviews", "version": "v9"},
                      RV_TASK, "9.0.0.3")
    new_m = StandIn(apps=new_apps, heartbeat=0.5)
    old_m.command({"cmd": "auth", "basic": "zmcc:Zmcc@001"})
    new_m.command({"cmd": "auth", "basic": "zmcc:rotated"})
    rec = {"context.protocol": "http", "context.reporter.kind": "inbound",
           "source.uid": uid(PP_TASK), "destination.uid": uid(RV_TASK),
           "response.code": 200}
    tmp = tempfile.mkdtemp(prefix="mixd-marathon-reload.")
    path = os.path.join(tmp, "mixer.yaml")

    def write(text):
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)

    gen = lambda m: mt.value(m.metrics(), "mixd_config_generation")
    try:
        write(seed_for(old_m.port))
        with mt.Mixd(build, ["--config", path, "--configDefaultNamespace", "default"]) as m:
            m.wait_for(lambda: m.get("/readyz")[0] == 200, timeout=20, what="synced")
            mt.check(version_of(m, rec) == "v2")
            write(seed_for(new_m.port, "rotated"))
            m.wait_for(lambda: gen(m) == 2, what="the reload")
            m.wait_for(lambda: "settings changed: following" in m.stderr(),
                       what="the resolver told of it")
            m.wait_for(lambda: version_of(m, rec) == "v9", timeout=20,
                       what="the new Marathon's answers")
            mt.check(new_m.command({"cmd": "stats"})["auth_failures"] == 0)
            # (the stand-in notices a closed stream at its next heartbeat)
            m.wait_for(lambda: old_m.command({"cmd": "stats"})["streams"] == 0,
                       what="the old Marathon's stream closed")
            mt.check(m.get("/readyz")[0] == 200)
            # Settings that do not work (a wrong password): not ready, and
            # not synced, until they do; the snapshot in force serves on.
            kept = lambda: m.stderr().count("keeping the last snapshot")
            before = kept()
            write(seed_for(new_m.port, "wrong"))
            m.wait_for(lambda: gen(m) == 3, what="the reload to bad settings")
            m.wait_for(lambda: m.get("/readyz")[0] == 503, what="not ready")
            m.wait_for(lambda: kept() > before, what="the log: snapshot kept")
            mt.check(mt.value(m.metrics(), "mixd_marathon_synced") == 0)
            mt.check(version_of(m, rec) == "v9", "the kept snapshot answers")
            write(seed_for(new_m.port, "rotated"))
            m.wait_for(lambda: gen(m) == 4, what="the reload back")
            m.wait_for(lambda: m.get("/readyz")[0] == 200, timeout=20,
                       what="ready again once the settings work")

        # No mesosenv at start: not waiting for Marathon, bindings default.
        write(without_mesos(seed_for(old_m.port)))
        with mt.Mixd(build, ["--config", path, "--configDefaultNamespace", "default"]) as m:
            mt.check(m.get("/readyz")[0] == 200, "ready without a resolver")
            mt.check(version_of(m, rec) == "unknown")
            # A reload brings one, whose Marathon refuses the password: a
            # resolver started, not synced, so not ready.
            write(seed_for(new_m.port))
            m.wait_for(lambda: gen(m) == 2, what="the reload")
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_marathon_sync_total",
                                        result="unauthorized") >= 1,
                       timeout=20, what="a resolver started by the reload")
            mt.check(m.get("/readyz")[0] == 503, "not ready: never synced")
            # A reload that drops the handler: ready again, the resolver
            # paused (it stops knocking).
            write(without_mesos(seed_for(new_m.port)) + "\n# no marathon\n")
            m.wait_for(lambda: gen(m) == 3, what="the second reload")
            m.wait_for(lambda: "paused" in m.stderr(), what="the resolver paused")
            mt.check(m.get("/readyz")[0] == 200, "ready without mesosenv")
            # its families gone with it: a paused resolver's "not synced"
            # is no alarm
            mt.check(not any(k[0].startswith("mixd_marathon_") for k in m.metrics()),
                     "mixd_marathon_* still shown without a mesosenv handler")
            knocks = new_m.command({"cmd": "stats"})["auth_failures"]
            time.sleep(1.0)
            mt.check(new_m.command({"cmd": "stats"})["auth_failures"] == knocks,
                     "a paused resolver still asks")
            # And one that brings it back, to a Marathon that answers.
            write(seed_for(old_m.port))
            m.wait_for(lambda: gen(m) == 4, what="the third reload")
            m.wait_for(lambda: mt.value(m.metrics(), "mixd_marathon_synced") == 1,
                       timeout=20, what="synced after the pause")
            m.wait_for(lambda: version_of(m, rec) == "v2", timeout=20,
                       what="records resolved")
            mt.check(m.get("/readyz")[0] == 200)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


TWO_INSTANCES = """\
apiVersion: "config.istio.io/v1alpha2"
kind: mesosenv
metadata: {name: handler, namespace: default}
spec: {marathon_address: "127.0.0.1:PORT"}
---
apiVersion: "config.istio.io/v1alpha2"
kind: mesos
metadata: {name: first, namespace: default}
spec:
  source_uid: source.uid | ""
  attribute_bindings:
    source.workload.name: $out.source_workload_name | "none"
---
apiVersion: "config.istio.io/v1alpha2"
kind: mesos
metadata: {name: second, namespace: default}
spec:
  source_uid: '"kubernetes://nobody.instance-0._app"'
  attribute_bindings:
    destination.workload.name: $out.source_workload_name | "none"
---
apiVersion: "config.istio.io/v1alpha2"
kind: rule
metadata: {name: gen, namespace: default}
spec:
  actions:
  - handler: handler.mesosenv
    instances: [first.mesos, second.mesos]
---
apiVersion: "config.istio.io/v1alpha2"
kind: metric
metadata: {name: pairs, namespace: default}
spec:
  value: "1"
  dimensions:
    src: source.workload.name | "absent"
    dst: destination.workload.name | "absent"
---
apiVersion: "config.istio.io/v1alpha2"
kind: prometheus
metadata: {name: pairs, namespace: default}
spec:
  metrics:
  - name: pairs_total
    instance_name: pairs.metric.default
    kind: COUNTER
    label_names: [src, dst]
---
apiVersion: "config.istio.io/v1alpha2"
kind: rule
metadata: {name: pairs, namespace: default}
spec:
  actions:
  - handler: pairs.prometheus
    instances: [pairs.metric]
"""


def settings_the_resolver_refuses_refuse_the_config(build):
    """mesosenv settings the resolver cannot take (a ca_file it cannot read,
    a password without a user) are errors of the config: --check-config
    says so, mixd does not start on them, and a reload to them is refused
    whole and counted, the resolver kept on the settings in force. They
    used to pass the check, and to be installed with the resolver left
    behind (or, at start, with none, yet /readyz ready)."""
    si = StandIn(apps=[dict(a) for a in APPS], heartbeat=0.5)
    si.command({"cmd": "auth", "basic": "zmcc:Zmcc@001"})
    tmp = tempfile.mkdtemp(prefix="mixd-marathon-refused.")
    path = os.path.join(tmp, "mixer.yaml")
    good = seed_for(si.port)
    no_ca = good.replace("  http_basic_auth_user: zmcc\n",
                         "  http_basic_auth_user: zmcc\n  ca_file: /nonexistent/ca.pem\n")
    no_user = good.replace("  http_basic_auth_user: zmcc\n", "")
    mt.check(no_ca != good and no_user != good, "the seed's mesosenv handler moved")

    def write(text):
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)

    try:
        for bad, why in ((no_ca, "cannot read ca_file /nonexistent/ca.pem"),
                         (no_user, "http_basic_auth_password without a user")):
            write(bad)
            p = subprocess.run([os.path.join(build, "mixd"), "--check-config", path,
                                "--configDefaultNamespace", "default"],
                               capture_output=True, timeout=mt._t(30))
            out = p.stdout.decode()
            mt.check(p.returncode == 1, out)
            mt.check(why in out and "handler.mesosenv.default" in out, out)
            m = mt.Mixd(build, ["--config", path, "--configDefaultNamespace", "default"],
                        start=False)
            with m:
                try:
                    m.start()
                    mt.check(False, "mixd started on refused mesosenv settings")
                except mt.MixdError:
                    pass
                mt.check(why in m.stderr() and "not starting" in m.stderr(), m.stderr_tail())
        write(good)
        gen = lambda m: mt.value(m.metrics(), "mixd_config_generation")
        fails = lambda m: mt.value(m.metrics(), "mixd_config_reload_failures_total")
        with mt.Mixd(build, ["--config", path, "--configDefaultNamespace", "default"]) as m:
            m.wait_for(lambda: m.get("/readyz")[0] == 200, timeout=20, what="synced")
            write(no_ca)
            m.wait_for(lambda: fails(m) == 1, what="the reload refused")
            mt.check(gen(m) == 1, f"generation {gen(m)}")
            mt.check("keeping the configuration in force" in m.stderr(), m.stderr_tail())
            mt.check(m.get("/readyz")[0] == 200, "the resolver in force went on")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def a_second_mesos_instance_sees_only_its_own_answers(build):
    """Two mesos instances on one record: the second finds nothing, so its
    binding takes its default -- not the first instance's answer."""
    si = StandIn(apps=[dict(a) for a in APPS], heartbeat=0.5)
    with mt.with_config(build, TWO_INSTANCES.replace("PORT", str(si.port))) as m:
        m.wait_for(lambda: m.get("/readyz")[0] == 200, timeout=20, what="synced")
        rc, out, err = mt.report(build, m.address, [{"source.uid": uid(PP_TASK)}])
        mt.check(rc == 0, out + err)
        m.wait_for(lambda: mt.series(m, "istio_pairs_total"))
        got = mt.series(m, "istio_pairs_total")
        mt.check(got == [{"src": "productpage-v1", "dst": "none"}], f"{got}")


def mixd_on(build, si):
    return mt.Mixd(build, ["--config", SEED, "--configDefaultNamespace", "default",
                           "--marathon-address", f"127.0.0.1:{si.port}"])


def marathon_log(m):
    return [l for l in m.stderr().splitlines() if l.startswith("mixd: marathon:")]


DISCONNECT_REASONS = ("eof", "silent", "error", "truncated", "unauthorized")


def a_deployment_event_beyond_the_event_bound_keeps_the_stream(build):
    """A deployment_info of 17 MiB (its plan's group trees, as at 10,000
    apps; beyond the 16 MiB bound on events mixd reads) is counted and asks
    for a resync: its data is never read, so it is not kept, and the
    stream is not dropped as truncated."""
    si = StandIn(apps=[dict(a) for a in APPS], heartbeat=0.5)
    with mixd_on(build, si) as m:
        m.wait_for(lambda: m.get("/readyz")[0] == 200, timeout=20, what="synced")
        ok = mt.value(m.metrics(), "mixd_marathon_sync_total", result="ok")
        big = ('{"plan":{"original":{"apps":[' +
               ",".join('{"id":"/a%d","cmd":"%s"}' % (i, "x" * 1700) for i in range(10000)) +
               ']}},"eventType":"deployment_info"}')
        mt.check(len(big) > 16 << 20, f"{len(big)} bytes")
        si.command({"cmd": "raw", "text": "event: deployment_info\r\ndata: " + big + "\r\n\r\n"})
        del big
        count = lambda: mt.value(m.metrics(), "mixd_marathon_events_total", type="deployment_info")
        m.wait_for(lambda: count() == 1, timeout=20, what="the event counted")
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_marathon_sync_total", result="ok") > ok,
                   what="the resync it asks for")
        ms = m.metrics()
        drops = {r: mt.value(ms, "mixd_marathon_stream_disconnects_total", reason=r)
                 for r in DISCONNECT_REASONS}
        mt.check(sum(drops.values()) == 0, f"stream dropped: {drops}")


def a_change_while_the_stream_attaches_is_not_lost(build):
    """The leader answers the event stream a second late, and a task starts
    meanwhile: its event reaches no stream. The sync that follows the
    connect waits for the stream's answer, so the snapshot has the task
    (else it would wait for the next refresh, minutes away)."""
    si = StandIn(apps=[dict(a) for a in APPS[:1]], heartbeat=0.5)
    si.command({"cmd": "attach_delay", "seconds": 1.0, "apps": [dict(a) for a in APPS]})
    with mixd_on(build, si) as m:
        m.wait_for(lambda: m.get("/readyz")[0] == 200, timeout=20, what="synced")
        rec = {"context.protocol": "http", "context.reporter.kind": "inbound",
               "source.uid": uid(PP_TASK), "destination.uid": uid(RV_TASK),
               "response.code": 200}
        mt.check(version_of(m, rec) == "v2", "the task started while attaching")
        mt.check(mt.value(m.metrics(), "mixd_marathon_tasks") == 2)


def a_refused_event_stream_is_counted_logged_once_and_paced(build):
    """An account that may read apps but not events (DC/OS): /v2/events
    answers 403. mixd syncs and is ready; the refusal is counted as
    unauthorized, logged once with its status however many syncs succeed,
    and the stream asked again with backoff, without a sync each time.
    When Marathon lets it in, the stream attaches and a sync follows."""
    si = StandIn(apps=[dict(a) for a in APPS], heartbeat=0.5)
    si.command({"cmd": "events_mode", "mode": "403"})
    with mixd_on(build, si) as m:
        m.wait_for(lambda: m.get("/readyz")[0] == 200, timeout=20, what="synced")
        refused = lambda: mt.value(m.metrics(), "mixd_marathon_stream_disconnects_total",
                                   reason="unauthorized")
        m.wait_for(lambda: refused() >= 3, timeout=20, what="refusals counted")
        tries = lambda: si.command({"cmd": "stats"})["requests"].get("/v2/events", 0)
        before = tries()
        time.sleep(2.0)
        # backoff from 250 ms, doubling: the 4th try ~1 s after the 3rd,
        # the 5th 2 s after that
        mt.check(tries() - before <= 2, f"{tries() - before} tries in 2 s")
        ms = m.metrics()
        mt.check(mt.value(ms, "mixd_marathon_sync_total", result="ok") == 1,
                 "a sync at every try of the stream")
        mt.check(mt.value(ms, "mixd_marathon_stream_disconnects_total", reason="error") == 0)
        lines = [l for l in marathon_log(m) if "event stream" in l]
        mt.check(len(lines) == 1 and "HTTP 403" in lines[0], f"{lines}")
        si.command({"cmd": "events_mode", "mode": "ok"})
        m.wait_for(lambda: any("attached again" in l for l in marathon_log(m)),
                   timeout=20, what="the stream attached")
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_marathon_sync_total", result="ok") == 2,
                   what="the sync after it")


def malformed_entries_in_a_good_answer_are_counted_and_logged_once(build):
    """An app of an unexpected shape inside a valid /v2/apps answer is
    skipped, counted at every sync that meets it, and logged once."""
    apps = [dict(a) for a in APPS] + [{"id": "relative", "tasks": []}]
    si = StandIn(apps=apps, heartbeat=0.5)
    with mixd_on(build, si) as m:
        m.wait_for(lambda: m.get("/readyz")[0] == 200, timeout=20, what="synced")
        skipped = lambda: mt.value(m.metrics(), "mixd_marathon_entries_skipped_total",
                                   default=-1)
        mt.check(skipped() == 1, f"{skipped()}")
        mt.check(mt.value(m.metrics(), "mixd_marathon_tasks") == 2)
        # another sync (a deployment asks for one) meets it again
        si.command({"cmd": "event", "type": "deployment_success", "data": {"id": "d1"}})
        m.wait_for(lambda: skipped() == 2, what="counted again")
        lines = [l for l in marathon_log(m) if "malformed" in l]
        mt.check(len(lines) == 1 and "skipped 1 malformed" in lines[0], f"{lines}")


if __name__ == "__main__":
    mt.main([
        records_resolve_to_marathon_workloads,
        a_failing_input_or_binding_binds_nothing,
        without_marathon_mixd_serves_and_is_not_ready,
        a_reload_moves_the_resolver_to_new_marathon_settings,
        settings_the_resolver_refuses_refuse_the_config,
        a_second_mesos_instance_sees_only_its_own_answers,
        a_deployment_event_beyond_the_event_bound_keeps_the_stream,
        a_change_while_the_stream_attaches_is_not_lost,
        a_refused_event_stream_is_counted_logged_once_and_paced,
        malformed_entries_in_a_good_answer_are_counted_and_logged_once,
    ])
