"""A label set reported through rings on two shards: its rows in both add
up to what mixd exports, so expiry and the series limit must look at both.

Each producer's ring is read by one shard, the one with the fewest rings
when it connects: a producer that stays connected (mixd-report --rate) on
shard 0 and a second producer on shard 1 put one label set in both.

MIXD_TEST_THREADED (a shard reads the other's tables: run under TSan too)"""

import os
import subprocess
import time

import mixdtest as mt

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
SEED = os.path.join(FIXTURES, "config", "mixer-seed.yaml")
SEED_ARGS = ["--config", SEED, "--configDefaultNamespace", "default"]

X = {"context.protocol": "http", "response.code": 200}
Y = {"context.protocol": "http", "response.code": 404}


def seed_with_expiry(expiry, check):
    with open(SEED) as f:
        text = f.read()
    marker = "kind: prometheus\nmetadata:\n  name: handler\n  namespace: default\nspec:\n"
    mt.check(marker in text)
    return text.replace(marker, marker + "  metricsExpirationPolicy:\n"
                        f"    metricsExpiryDuration: {expiry}\n"
                        f"    expiryCheckIntervalDuration: {check}\n")


class Trickle:
    """mixd-report sending @record @rate times a second, connected (one
    ring) until closed."""

    def __init__(self, build, m, record, rate):
        import json
        self.p = subprocess.Popen([os.path.join(build, "mixd-report"), "--address", m.address,
                                   "--repeat", "1000000", "--rate", str(rate)],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        self.p.stdin.write((json.dumps(record) + "\n").encode())
        self.p.stdin.close()
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") >= 1,
                   what="the trickle's first record")

    def close(self):
        self.p.terminate()
        self.p.wait(timeout=30)


def requests(m, code):
    return mt.total(m.prom_metrics(), "istio_requests_total", response_code=str(code))


def an_idle_shards_rows_stay_while_another_shard_updates_the_label_set(build):
    """Shard 1's row of X goes idle past the expiry while shard 0 keeps
    updating X: the exported count of X never goes down and nothing is
    counted expired; once every row is idle, X expires, counted once."""
    with mt.with_config(build, seed_with_expiry("1s", "100ms")) as m:
        t = Trickle(build, m, X, 10)
        try:
            mt.check(mt.value(m.metrics(), "mixd_ingest_rings") == 1)
            rc, out, err = mt.report(build, m.address, [X] * 100)
            mt.check(rc == 0, err)
            m.wait_for(lambda: requests(m, 200) >= 100)
            last = 0.0
            end = time.monotonic() + 3.0  # shard 1's row idle for 2 s and more
            while time.monotonic() < end:
                now = requests(m, 200)
                mt.check(now >= last, f"istio_requests_total went from {last} to {now}")
                last = now
                time.sleep(0.1)
            ms = m.metrics()
            mt.check(mt.value(ms, "mixd_series_expired_total", family="istio_requests_total") == 0)
            mt.check(mt.value(ms, "mixd_series", family="istio_requests_total") == 1)
        finally:
            t.close()
        processed = mt.value(m.metrics(), "mixd_records_processed_total")
        mt.check(last <= processed)
        # Gone from scrapes once idle past the expiry everywhere, then
        # removed from both shards: counted once, not once per shard.
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_series",
                                    family="istio_requests_total") == 0, timeout=10)
        mt.check(not any(k[0] == "istio_requests_total" for k in m.prom_metrics()))
        expired = lambda: mt.value(m.metrics(), "mixd_series_expired_total",
                                   family="istio_requests_total")
        m.wait_for(lambda: expired() >= 1, timeout=10)
        time.sleep(0.5)  # both shards' checks (every 100 ms) have run
        mt.check(expired() == 1, f"expired {expired()}")


def a_shard_at_its_limit_stores_a_label_set_another_shard_holds(build):
    """--series-limit 1: shard 0 holds X; shard 1 takes Y (its one new
    label set), then X, which is not new: X's series has every record of
    X. A label set no shard holds is still refused at the limit."""
    with mt.Mixd(build, SEED_ARGS + ["--series-limit", "1"], shards=2) as m:
        t = Trickle(build, m, X, 20)
        try:
            rc, out, err = mt.report(build, m.address, [Y] + [X] * 100)
            mt.check(rc == 0, err)
            m.wait_for(lambda: requests(m, 404) == 1)
        finally:
            t.close()
        m.wait_for(lambda: requests(m, 200) + 1 ==
                   mt.value(m.metrics(), "mixd_records_processed_total"),
                   what="every record of X in X's series")
        ms = m.metrics()
        mt.check(mt.value(ms, "mixd_series_overflow_total", family="istio_requests_total") == 0)
        # Now a label set neither shard has: refused, counted.
        rc, out, err = mt.report(build, m.address, [{"context.protocol": "http",
                                                     "response.code": 500}])
        mt.check(rc == 0, err)
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_series_overflow_total",
                                    family="istio_requests_total") == 1)
        mt.check(requests(m, 500) == 0)


if __name__ == "__main__":
    mt.main([
        an_idle_shards_rows_stay_while_another_shard_updates_the_label_set,
        a_shard_at_its_limit_stores_a_label_set_another_shard_holds,
    ])
