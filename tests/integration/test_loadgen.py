"""mixd-loadgen against a running mixd: it keeps its rate, every record it
reports sent is counted by mixd and none is rejected, SIGINT stops it cleanly
with its counts, and the records look like a pair of Envoy proxies' reports.
Also --help and bad flags."""

import collections
import json
import os
import re
import signal
import subprocess
import time

import mixdtest as mt
from mixdtest import check

RECORDS = "mixd_ingest_records_total"
SUMMARY = re.compile(r"^mixd-loadgen: (?:done after )?([\d.]+) s: sent (\d+) records, "
                     r"dropped (\d+) \(\d+/s\)$", re.M)


def loadgen(build):
    path = os.path.join(os.path.abspath(build), "mixd-loadgen")
    check(os.access(path, os.X_OK), f"{path} does not exist: build mixd-loadgen first")
    return path


def run(build, *args, timeout=60):
    p = subprocess.run([loadgen(build), *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=mt._t(timeout))
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def final_summary(err):
    found = SUMMARY.findall(err)
    lines = [l for l in err.splitlines() if "records dropped: libmixd refused them" not in l]
    check(found and "done after" in lines[-1], f"no final summary in {err!r}")
    secs, sent, dropped = found[-1]
    return float(secs), int(sent), int(dropped)


def counted(m):
    return mt.total(m.metrics(), RECORDS)


def no_rejects(m):
    ms = m.metrics()
    rej = {k: v for k, v in ms.items() if k[0] == "mixd_ingest_rejected_total" and v}
    check(not rej, f"mixd rejected loadgen's records: {rej}")
    drops = mt.total(ms, "mixd_ingest_dropped_total")
    check(drops == 0, f"mixd counted {drops} dropped records")


def test_rate_and_sigint(build):
    """2000 records/s until SIGINT after ~2 s: about 4000 records, all
    counted by mixd, none rejected, exit 0 with the counts."""
    rate, secs = 2000, 2.0
    with mt.Mixd(build) as m:
        p = subprocess.Popen([loadgen(build), "--address", m.address, "--rate", str(rate)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(secs)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=mt._t(20))
        err = err.decode()
        check(p.returncode == 0, f"loadgen exited {p.returncode} on SIGINT: {err}")
        ran, sent, dropped = final_summary(err)
        check(dropped == 0, f"loadgen dropped {dropped}: {err}")
        expect = rate * secs
        check(0.7 * expect <= sent <= 1.3 * expect,
              f"sent {sent} records in ~{secs} s at {rate}/s (expected {expect:.0f} +-30%)")
        check(abs(sent / ran - rate) <= 0.1 * rate, f"{sent} records in {ran} s is not {rate}/s")
        # the flush before exit means mixd has taken them all
        m.wait_for(lambda: counted(m) >= sent, what=f"{RECORDS} >= {sent}")
        check(counted(m) == sent, f"mixd counted {counted(m)}, loadgen sent {sent}")
        no_rejects(m)


def test_duration_threads_socket(build):
    """--duration ends the run by itself; two threads over the socket
    transport share the rate."""
    with mt.Mixd(build) as m:
        rc, out, err = run(build, "--address", m.address, "--rate", "3000", "--duration", "1.5",
                           "--threads", "2", "--transport", "socket", "--workloads", "20")
        check(rc == 0, f"loadgen exited {rc}: {err}")
        ran, sent, dropped = final_summary(err)
        check(dropped == 0 and 0.7 * 4500 <= sent <= 1.3 * 4500, f"sent {sent}, dropped {dropped}")
        m.wait_for(lambda: mt.value(m.metrics(), RECORDS, transport="socket") >= sent,
                   what="socket records")
        check(mt.value(m.metrics(), RECORDS, transport="socket") == sent, "socket count")
        no_rejects(m)


def test_count_is_exact(build):
    """--count sends exactly that many (in decimal: 010 is ten), and a
    short --duration ends on time."""
    with mt.Mixd(build) as m:
        rc, out, err = run(build, "--address", m.address, "--rate", "5000", "--count", "1001")
        check(rc == 0, f"loadgen exited {rc}: {err}")
        check(final_summary(err)[1:] == (1001, 0), err)
        m.wait_for(lambda: counted(m) >= 1001, what="1001 records")
        check(counted(m) == 1001, f"mixd counted {counted(m)}")
        rc, out, err = run(build, "--address", m.address, "--rate", "5000", "--count", "010")
        check(rc == 0 and final_summary(err)[1:] == (10, 0), err)
        # not rounded up to the 100 ms the main thread sleeps at most
        rc, out, err = run(build, "--address", m.address, "--rate", "1000",
                           "--duration", "0.05")
        ran, sent, _ = final_summary(err)
        check(rc == 0 and 1 <= sent <= 75, f"{ran} s, {sent} sent")
        m.wait_for(lambda: counted(m) == 1011 + sent, what="every record")
        no_rejects(m)


def test_drops_exit_1(build):
    """A run that drops records (a small ring, far faster than mixd
    takes them) says so and exits 1: not every record was taken."""
    with mt.Mixd(build, shards=1) as m:
        rc, out, err = run(build, "--address", m.address, "--ring-bytes", "262144",
                           "--rate", "5000000", "--count", "400000")
        _, sent, dropped = final_summary(err)
        if dropped == 0:
            print("  (skipped: mixd kept up with 5 M/s here)")
            return
        check(rc == 1, f"exit {rc} with {dropped} dropped: {err}")
        check(f"{dropped} records dropped" in err, err)


def test_records_look_like_envoy_pairs(build):
    """--print: outbound/inbound pairs with the user's uid form, http, grpc
    and tcp, mixed codes, latencies with a spread; the same seed gives the
    same records."""
    rc, out, err = run(build, "--print", "--count", "4000", "--seed", "42")
    check(rc == 0, f"--print exited {rc}: {err}")
    recs = [json.loads(l) for l in out.splitlines()]
    check(len(recs) == 4000, f"{len(recs)} records")
    rc2, out2, _ = run(build, "--print", "--count", "4000", "--seed", "42")
    check(rc2 == 0 and out2 == out, "the same seed gave other records")
    _, out3, _ = run(build, "--print", "--count", "4000", "--seed", "43")
    check(out3 != out, "another seed gave the same records")

    uid = re.compile(r"^kubernetes://[a-z0-9-]+\.instance-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-"
                     r"[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    protos, codes, grpc = collections.Counter(), collections.Counter(), collections.Counter()
    durations = collections.defaultdict(list)
    for out_rec, in_rec in zip(recs[0::2], recs[1::2]):
        check(out_rec["context.reporter.kind"] == "outbound"
              and in_rec["context.reporter.kind"] == "inbound", "records are not in pairs")
        for k in ("source.uid", "destination.uid", "destination.service.host",
                  "context.protocol", "destination.port"):
            check(out_rec[k] == in_rec[k], f"the pair disagrees on {k}")
        check(out_rec["context.reporter.uid"] == out_rec["source.uid"]
              and in_rec["context.reporter.uid"] == in_rec["destination.uid"], "reporter uid")
        for r in (out_rec, in_rec):
            check(uid.match(r["source.uid"]) and uid.match(r["destination.uid"]),
                  f"uid form: {r['source.uid']} {r['destination.uid']}")
            for k in ("istio", "app", "version"):
                check(k in r["source.labels"] and k in r["destination.labels"], f"label {k}")
            check(r["destination.service.namespace"] == "default", "namespace")
            check(isinstance(r["connection.mtls"], bool), "connection.mtls")
        proto = out_rec["context.protocol"]
        protos[proto] += 1
        if proto == "tcp":
            check(in_rec["connection.sent.bytes"] > 0 and "connection.received.bytes" in in_rec,
                  "tcp bytes")
            check("response.code" not in in_rec, "tcp record with a response code")
            continue
        check(out_rec["api.protocol"] == proto, "api.protocol")
        for k in ("request.method", "request.path", "request.host", "request.size",
                  "response.size", "response.code"):
            check(k in in_rec, f"{proto} record without {k}")
        check(out_rec["response.code"] == in_rec["response.code"], "the pair disagrees on the code")
        codes[in_rec["response.code"]] += 1
        if proto == "grpc":
            grpc[in_rec["response.grpc_status"]] += 1
        d_in = int(in_rec["response.duration"][:-2])
        d_out = int(out_rec["response.duration"][:-2])
        check(d_out > d_in > 0, "the caller's latency does not include the callee's")
        durations[in_rec["destination.labels"]["app"]].append(d_in)
    check(set(protos) == {"http", "grpc", "tcp"}, f"protocols {protos}")
    check(codes[200] > 0.85 * sum(codes.values()), f"codes {codes}")
    check(all(codes[c] > 0 for c in (404, 500, 503)), f"codes {codes}")
    check(grpc["0"] > 0 and len(grpc) > 1, f"grpc statuses {grpc}")

    def median(v):
        return sorted(v)[len(v) // 2]
    check(median(durations["productpage"]) > 3 * median(durations["details"]),
          "latency medians are not per workload")
    pp = sorted(durations["productpage"])
    check(pp[int(len(pp) * 0.99)] > 2 * median(pp), "no latency tail")


def test_help_and_bad_flags(build):
    rc, out, err = run(build, "--version")
    check(rc == 0 and re.match(r"^mixd-loadgen \d+\.\d+\.\d+\n$", out), f"{rc} {out!r}")
    rc, out, err = run(build, "--help")
    check(rc == 0, f"--help exited {rc}")
    for word in ("Usage:", "--address", "--rate", "--duration", "--threads", "--transport",
                 "--seed", "--workloads", "--count", "--print", "--flush-timeout",
                 "SIGINT", "Exit status"):
        check(word in out, f"--help does not mention {word}")
    for bad in (["--rate", "0"], ["--rate", "x"], ["--threads", "0"], ["--transport", "tcp"],
                ["--workloads", "1"], ["--duration", "-1"], ["--bogus"], ["extra"],
                ["--print", "--threads", "2"], ["--rate"], ["--count", "08x"],
                ["--count", "0x10"], ["--seed", "0x1g"], ["--ring-bytes", "4096"], ["--ring-bytes", "300000"],
                ["--flush-timeout", "0"]):
        rc, out, err = run(build, *bad)
        check(rc == 2, f"{bad}: exit {rc}, expected 2")
        check("mixd-loadgen" in err and "--help" in err, f"{bad}: stderr {err!r}")


if __name__ == "__main__":
    mt.main([test_rate_and_sigint, test_duration_threads_socket, test_count_is_exact,
             test_drops_exit_1, test_records_look_like_envoy_pairs, test_help_and_bad_flags])
