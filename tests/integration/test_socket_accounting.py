"""Same accounting on the socket as on shared memory: what a socket
producer drops (its ring full) or refuses (an invalid record) reaches
mixd's mixd_ingest_dropped_total, as a shared ring's header brings a
shared-memory producer's. The producer tells it in counts frames.

MIXD_TEST_THREADED"""

import json
import os
import signal
import subprocess
import time

import mixdtest as mt


def dropped(m, reason):
    return mt.value(m.metrics(), "mixd_ingest_dropped_total", reason=reason)


def a_socket_producers_drops_are_counted_by_mixd(build):
    """mixd stopped (SIGSTOP) while a socket producer writes 300,000
    records: its ring and the socket buffer fill and the rest is dropped.
    Once mixd runs again, everything written arrives and mixd counts
    exactly the producer's drops."""
    with mt.Mixd(build, shards=1) as m:
        m.proc.send_signal(signal.SIGSTOP)
        try:
            p = subprocess.Popen([os.path.join(build, "mixd-test-producer"),
                                  "--address", m.address, "--transport", "socket",
                                  "--count", "300000", "--flush-ms", "30000"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(1.0 * mt.TIMEOUT_FACTOR)  # it writes, fills, drops
        finally:
            m.proc.send_signal(signal.SIGCONT)
        out, err = p.communicate(timeout=60 * mt.TIMEOUT_FACTOR)
        mt.check(p.returncode == 0, err.decode())
        st = json.loads(out)
        mt.check(st["flushed"], f"{st}")
        mt.check(st["dropped_full"] > 0, f"nothing was dropped: {st}")
        mt.check(st["written"] + st["dropped_full"] == 300000, f"{st}")
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_ingest_records_total",
                                    transport="socket") == st["written"])
        m.wait_for(lambda: dropped(m, "ring_full") == st["dropped_full"],
                   what=f"ring_full == {st['dropped_full']}")
        mt.check(dropped(m, "invalid") == 0)


def a_socket_producers_refused_records_are_counted_by_mixd(build):
    """A record over MIXD_RECORD_MAX, refused by the client library at
    commit: mixd-report names the line; mixd counts it as invalid."""
    with mt.Mixd(build, shards=1) as m:
        rc, out, err = mt.report(build, m.address,
                                 [{"request.path": "x" * 70000}, {"response.code": 200}],
                                 transport="socket")
        mt.check(":1:" in err, err)
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_ingest_records_total",
                                    transport="socket") == 1)
        m.wait_for(lambda: dropped(m, "invalid") == 1, what="invalid == 1")
        mt.check(dropped(m, "ring_full") == 0)


def a_flush_does_not_wait_for_drops_to_be_told_to_no_one(build):
    """With mixd not there, a flush promises committed records only: a
    refused record, nothing committed, returns at once (the drop is told
    when a connection comes, if one does)."""
    start = time.monotonic()
    rc, out, err = mt.report(build, "unix:///nonexistent/mixd.sock",
                             [{"request.path": "x" * 70000}], transport="socket",
                             extra=["--flush-timeout", "5000"])
    took = time.monotonic() - start
    mt.check(rc == 1 and "rejected 1 lines" in out + err, f"{rc} {out} {err}")
    mt.check(took < 2.5, f"took {took:.1f} s")


if __name__ == "__main__":
    mt.main([
        a_socket_producers_drops_are_counted_by_mixd,
        a_socket_producers_refused_records_are_counted_by_mixd,
        a_flush_does_not_wait_for_drops_to_be_told_to_no_one,
    ])
