"""Ingest end to end, with real processes: mixd, and producers linking libmixd
(mixd-test-producer). Accounting must be exact: every record a producer
committed is accepted by mixd or counted as dropped or rejected.

MIXD_TEST_THREADED
"""

import http.client
import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import time

import mixdtest as mt

SANITIZED = bool(os.environ.get("MIXD_SANITIZE"))
FIXTURES = os.environ.get("MIXD_FIXTURES") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
SEED_ARGS = ["--config", os.path.join(FIXTURES, "config", "mixer-seed.yaml"),
             "--configDefaultNamespace", "default"]
# The figure is 1,000,000 per producer; sanitizer builds run a tenth.
PER_PRODUCER = 100_000 if SANITIZED else 1_000_000


def producer_argv(build, m, *args):
    return [os.path.join(build, "mixd-test-producer"), "--address", m.address, *args]


def run_producers(build, m, n, *args):
    procs = [subprocess.Popen(producer_argv(build, m, *args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(n)]
    out = []
    for p in procs:
        so, se = p.communicate(timeout=mt._t(300))
        mt.check(p.returncode == 0, f"producer failed: {se.decode()}")
        out.append(json.loads(so))
    return out


def ingest(m):
    ms = m.metrics()
    return {
        "shm": mt.value(ms, "mixd_ingest_records_total", transport="shm"),
        "socket": mt.value(ms, "mixd_ingest_records_total", transport="socket"),
        "ring_full": mt.value(ms, "mixd_ingest_dropped_total", reason="ring_full"),
        "invalid": mt.value(ms, "mixd_ingest_dropped_total", reason="invalid"),
        "rejected": mt.total(ms, "mixd_ingest_rejected_total"),
        "corrupt": mt.value(ms, "mixd_ingest_rejected_total", reason="corrupt_ring"),
        "handshake": mt.value(ms, "mixd_ingest_rejected_total", reason="handshake"),
        "frame": mt.value(ms, "mixd_ingest_rejected_total", reason="frame"),
        "rings": mt.value(ms, "mixd_ingest_rings"),
        "producers": mt.value(ms, "mixd_producers"),
    }


def poll_until(pred, timeout, what):
    """Wait for @pred without a live mixd (wait_for checks mixd is alive)."""
    deadline = time.monotonic() + mt._t(timeout)
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def settle(m, pred, what, timeout=20):
    m.wait_for(lambda: pred(ingest(m)), timeout=timeout, what=what)
    return ingest(m)


def four_producers_over_shared_memory_are_counted_exactly(build, *api):
    with mt.Mixd(build) as m:
        res = run_producers(build, m, 4, "--count", str(PER_PRODUCER), *api)
        written = sum(r["written"] for r in res)
        dropped = sum(r["dropped_full"] for r in res)
        mt.check(written + dropped == 4 * PER_PRODUCER, f"{res}")
        mt.check(all(r["flushed"] for r in res), f"{res}")
        got = settle(m, lambda s: s["shm"] == written and s["ring_full"] == dropped,
                     f"{written} records and {dropped} drops")
        mt.check(got["rejected"] == 0 and got["invalid"] == 0, f"{got}")
        # Producers exited: their rings are drained and released.
        settle(m, lambda s: s["rings"] == 0 and s["producers"] == 0, "rings released")
        print(f"   shm: {written} accepted, {dropped} dropped (ring full)")


def four_template_producers_over_shared_memory_are_counted_exactly(build):
    """Templates over shared memory write layout records (values alone, the
    layout in the segment): every one accepted, none rejected."""
    four_producers_over_shared_memory_are_counted_exactly(build, "--template")


def four_producers_over_the_socket_are_counted_exactly(build):
    with mt.Mixd(build) as m:
        res = run_producers(build, m, 4, "--transport", "socket",
                            "--count", str(PER_PRODUCER))
        written = sum(r["written"] for r in res)
        mt.check(all(r["flushed"] for r in res), f"{res}")
        # On the socket mixd pushes back rather than drop: every record that
        # left a producer's ring is accepted; the producers count the rest.
        got = settle(m, lambda s: s["socket"] == written, f"{written} socket records")
        mt.check(got["shm"] == 0 and got["rejected"] == 0, f"{got}")
        mt.check(written + sum(r["dropped_full"] for r in res) == 4 * PER_PRODUCER)
        print(f"   socket: {got['socket']:.0f} accepted, "
              f"{sum(r['dropped_full'] for r in res)} dropped by producers")


def progress(path):
    """(started, committed) from a producer's --progress file."""
    try:
        with open(path, "rb") as f:
            data = f.read(16)
    except FileNotFoundError:
        return 0, 0
    return struct.unpack("<QQ", data) if len(data) == 16 else (0, 0)


def last_commit(path):
    """When the producer last committed (CLOCK_MONOTONIC, seconds): the
    clock Python's time.monotonic() reads too."""
    with open(path, "rb") as f:
        return struct.unpack("<QQQ", f.read(24))[2] / 1e9


def a_killed_producer_loses_nothing_it_committed(build):
    with mt.Mixd(build) as m:
        prog = os.path.join(m.tmp, "progress")
        p = subprocess.Popen(producer_argv(build, m, "--count", "100000000",
                                           "--rate", "200000", "--progress", prog),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)
        p.kill()
        p.wait()
        started, committed = progress(prog)
        mt.check(committed > 1000, f"the producer wrote only {committed}")
        got = settle(m, lambda s: s["rings"] == 0, "the dead producer's ring released")
        got = ingest(m)
        # At most one record was in flight when SIGKILL landed.
        mt.check(committed <= got["shm"] <= started,
                 f"committed {committed}, started {started}, mixd {got}")
        mt.check(got["rejected"] == 0, f"{got}")
        mt.check(m.get("/healthz")[0] == 200)


def records_written_while_mixd_is_down_are_counted_after_restart(build, *api):
    with mt.Mixd(build) as m:
        prog = os.path.join(m.tmp, "progress")
        # 2,000 records; mixd killed; 1,500 (fit the 1 MiB ring, which
        # holds about 3,000 of these) and later 20,000 more (overflow it)
        # written while it is down; restart; once drained, 2,000 more.
        p = subprocess.Popen(producer_argv(build, m, "--progress", prog,
                                           "--phases", "2000,1500,20000,2000",
                                           *api),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        settle(m, lambda s: s["shm"] == 2000, "phase 1 consumed")
        m.kill(signal.SIGKILL)
        t0 = time.monotonic()
        open(prog + ".go1", "w").close()
        poll_until(lambda: os.path.exists(prog + ".done2"), 30,
                   "phase 2 written while mixd is down")
        mt.check(progress(prog)[1] == 3500, f"phase 2 did not fit the ring: {progress(prog)}")
        open(prog + ".go2", "w").close()
        poll_until(lambda: os.path.exists(prog + ".done3"), 30,
                   "phase 3 written while mixd is down")
        down_for = time.monotonic() - t0
        m.restart()
        before_go3 = progress(prog)[1] - 2000
        settle(m, lambda s: s["shm"] == before_go3, "the ring drained after restart")
        open(prog + ".go3", "w").close()
        so, se = p.communicate(timeout=mt._t(60))
        mt.check(p.returncode == 0, se.decode())
        res = json.loads(so)
        mt.check(res["flushed"], f"{res}")
        # The restarted mixd sees everything written after phase 1: what
        # fit in the ring while it was down, the drops it could not, and
        # phase 4.
        want = res["written"] - 2000
        got = settle(m, lambda s: s["shm"] == want and
                     s["ring_full"] == res["dropped_full"],
                     f"{want} records and {res['dropped_full']} drops after restart")
        mt.check(res["dropped_full"] > 0, "phase 3 should have overflowed the ring")
        mt.check(want >= 1500 + 2000, f"{res}")
        # Producers never waited for mixd: no commit took long, though
        # mixd was away for a while.
        mt.check(res["max_commit_us"] < 100_000 * mt.TIMEOUT_FACTOR,
                 f"slowest commit {res['max_commit_us']} us with mixd down {down_for:.1f} s")
        mt.check(got["rejected"] == 0, f"{got}")
        print(f"   down {down_for:.1f} s; after restart: {got['shm']:.0f} records, "
              f"{got['ring_full']:.0f} drops; slowest commit {res['max_commit_us']} us")


def template_records_written_while_mixd_is_down_are_counted_after_restart(build):
    """The restarted mixd finds the layout in the segment it takes back."""
    records_written_while_mixd_is_down_are_counted_after_restart(build, "--template")


def a_producer_truncating_its_memfd_cannot_hurt_mixd(build):
    with mt.Mixd(build) as m:
        p = subprocess.run(producer_argv(build, m, "--count", "5000", "--evil",
                                         "truncate", "--evil-after", "1000"),
                           capture_output=True, timeout=mt._t(60))
        mt.check(p.returncode == 0, p.stderr.decode())
        mt.check(b"Operation not permitted" in p.stderr,
                 "the sealed memfd should refuse to shrink: " + p.stderr.decode())
        res = json.loads(p.stdout)
        settle(m, lambda s: s["shm"] == res["written"], f"{res['written']} records")
        mt.check(m.get("/healthz")[0] == 200)


def a_producer_scribbling_over_its_ring_is_contained(build):
    with mt.Mixd(build) as m:
        p = subprocess.run(producer_argv(build, m, "--count", "2000", "--evil",
                                         "scribble", "--flush-ms", "2000"),
                           capture_output=True, timeout=mt._t(60))
        mt.check(p.returncode == 0, p.stderr.decode())
        got = settle(m, lambda s: s["corrupt"] > 0, "the damage counted")
        # mixd keeps serving: an honest producer is counted exactly.
        before = got["shm"]
        res = run_producers(build, m, 1, "--count", "3000")[0]
        settle(m, lambda s: s["shm"] == before + res["written"], "honest producer counted")
        mt.check(m.get("/healthz")[0] == 200)


def garbage_on_the_socket_is_rejected_and_counted(build):
    with mt.Mixd(build) as m:
        s = socket.socket(socket.AF_UNIX)
        s.connect(m.sock)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        s.close()
        settle(m, lambda x: x["handshake"] == 1, "bad hello counted")
        # A stream producer whose second frame is garbage.
        s = socket.socket(socket.AF_UNIX)
        s.connect(m.sock)
        s.sendall(b"MIXDHELO" + struct.pack("<II", 1, 2))
        good = struct.pack("<HB", 53, 2) + struct.pack("<q", 200)  # response.code
        frame = struct.pack("<II", len(good), 0x3152584D) + good
        frame += b"\0" * (-len(frame) % 8)
        s.sendall(frame + b"\xff" * 64)
        time.sleep(0.2)
        s.close()
        got = settle(m, lambda x: x["frame"] == 1 and x["socket"] == 1,
                     "good frame accepted, bad frame rejected")
        mt.check(got["producers"] == 0, f"{got}")


def hellos_with_too_many_descriptors_leave_none_open(build):
    """A hello carrying more descriptors than mixd takes (its control
    buffer holds four) is refused, and every descriptor the kernel put
    into mixd is closed: a producer cannot run mixd out of files."""
    with mt.Mixd(build) as m:
        fds_of = lambda: len(os.listdir(f"/proc/{m.proc.pid}/fd"))
        before = fds_of()
        extra = [os.open("/dev/null", os.O_RDONLY) for _ in range(8)]
        hello = b"MIXDHELO" + struct.pack("<II", 1, 1)  # version 1, shm
        try:
            for _ in range(20):
                s = socket.socket(socket.AF_UNIX)
                s.connect(m.sock)
                s.sendmsg([hello], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                     struct.pack("<8i", *extra))])
                s.close()
        finally:
            for f in extra:
                os.close(f)
        settle(m, lambda x: x["handshake"] == 20, "20 refused hellos")
        time.sleep(0.2)
        mt.check(fds_of() <= before + 2, f"mixd holds {fds_of() - before} more files")
        mt.check(m.get("/healthz")[0] == 200)


def a_connection_that_never_says_hello_is_closed(build):
    """A connection that sends no hello holds one of mixd's descriptors
    for its 5-second deadline, not for ever; it counts as a failed
    handshake. One that says hello in time is unaffected."""
    with mt.Mixd(build) as m:
        fds_of = lambda: len(os.listdir(f"/proc/{m.proc.pid}/fd"))
        before = fds_of()
        mute = []
        for _ in range(10):
            s = socket.socket(socket.AF_UNIX)
            s.connect(m.sock)
            mute.append(s)
        poll_until(lambda: fds_of() >= before + 10, 5, "ten connections open")
        res = run_producers(build, m, 1, "--count", "100")[0]
        settle(m, lambda x: x["shm"] == res["written"], "a producer meanwhile")
        settle(m, lambda x: x["handshake"] == 10, "ten silent ones closed", timeout=15)
        poll_until(lambda: fds_of() <= before + 2, 5, "their descriptors closed")
        for s in mute:
            s.close()


def producers_beyond_the_limit_wait_their_turn(build):
    """--max-producers 1: while one connection is open mixd stops accepting
    (counted). Producers that come meanwhile, over shared memory and over
    the socket, and two silent connections behind them, wait in the
    backlog -- nothing they send is read and dropped -- and once the first
    connection is gone (a silent one, at its 5-second hello deadline) they
    are taken one at a time, never two open at once, and every record
    arrives."""
    with mt.Mixd(build, ["--max-producers", "1"]) as m:
        mt.check(mt.value(m.metrics(), "mixd_producers_limit") == 1, "the limit exported")
        reached = lambda: mt.value(m.metrics(), "mixd_producers_limit_reached_total")
        mute = socket.socket(socket.AF_UNIX)
        mute.connect(m.sock)
        settle(m, lambda x: x["producers"] == 1, "the slot taken")
        m.wait_for(lambda: reached() == 1, what="accepting paused")
        procs = [subprocess.Popen(producer_argv(build, m, *args), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
                 for args in (["--count", "1000"],
                              ["--transport", "socket", "--count", "3000",
                               "--rate", "2000"])]
        time.sleep(1)  # the producers connect first
        behind = []
        for _ in range(2):
            b = socket.socket(socket.AF_UNIX)
            b.connect(m.sock)
            behind.append(b)
        most = 0
        while any(p.poll() is None for p in procs):
            x = ingest(m)
            most = max(most, x["producers"])
            time.sleep(0.05)
        mt.check(most == 1, f"{most} producers open at once under a limit of 1")
        res = []
        for p in procs:
            so, se = p.communicate(timeout=mt._t(60))
            mt.check(p.returncode == 0, f"producer failed: {se.decode()}")
            res.append(json.loads(so))
        for r in res:
            mt.check(r["dropped"] == 0 and r["flushed"], str(r))
        got = settle(m, lambda x: x["shm"] == 1000 and x["socket"] == 3000,
                     "every record of both")
        mt.check(got["handshake"] == 1, "the silent connection timed out")
        mt.check(reached() >= 3, f"paused for each producer: {reached()}")
        mute.close()
        for b in behind:
            b.close()

def a_hello_trickled_a_byte_at_a_time_gets_no_more_time(build):
    """The hello deadline runs from the accept: a connection sending its
    hello a byte a second is closed after 5 s, not 5 s after its last
    byte."""
    with mt.Mixd(build) as m:
        s = socket.socket(socket.AF_UNIX)
        s.connect(m.sock)
        start = time.monotonic()
        hello = b"MIXDHELO" + struct.pack("<II", 1, 1)
        closed_after = None
        for b in hello:
            try:
                s.send(bytes([b]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - start
                break
            time.sleep(0.5)
        mt.check(closed_after is not None, "the trickle was never cut off")
        mt.check(4.5 < closed_after < 6.5, f"closed after {closed_after:.1f} s")
        settle(m, lambda x: x["handshake"] == 1, "counted as a failed handshake")
        s.close()


class UnderLimit(mt.Mixd):
    """mixd started under an open-files limit of soft:hard (prlimit execs
    it: the pid is mixd's)."""

    def __init__(self, build, nofile, extra_args=()):
        self.nofile = nofile
        super().__init__(build, extra_args)

    def argv(self):
        return ["prlimit", f"--nofile={self.nofile}", "--"] + super().argv()


def the_open_files_limit_is_raised_or_the_producer_limit_lowered(build):
    """A soft limit of 1,024 under a high hard one is raised to fit 4,096
    producers and mixd's own descriptors; a hard limit of 300 cannot be,
    so fewer producers are kept, and mixd says so."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard >= 4096 + 256:
        with UnderLimit(build, f"1024:{hard}") as m:
            with open(f"/proc/{m.proc.pid}/limits") as f:
                soft = next(int(l.split()[3]) for l in f
                            if l.startswith("Max open files"))
            mt.check(soft == 4096 + 256, f"soft limit {soft}")
            mt.check(mt.value(m.metrics(), "mixd_producers_limit") == 4096, "kept")
    else:
        print(f"  (the raise not tried: this machine's hard limit is {hard})")
    with UnderLimit(build, "300:300") as m:
        mt.check(mt.value(m.metrics(), "mixd_producers_limit") == 150, "lowered")
        mt.check("--max-producers 4096 lowered to 150" in m.stderr(), m.stderr_tail())


class ShmCount:
    """mixd's count of shared-memory records, read as cheaply as a scrape
    can be: one kept-alive connection, no gzip, one regular expression
    (about 0.4 ms against 1.4 ms for ingest()'s full parse), so that what a
    latency measured with it holds is mostly mixd's."""

    LINE = re.compile(rb'^mixd_ingest_records_total\{transport="shm"\} (\S+)$', re.M)

    def __init__(self, m):
        self.conn = http.client.HTTPConnection("127.0.0.1", m.monitoring_port,
                                               timeout=mt._t(10))

    def __call__(self):
        self.conn.request("GET", "/metrics")
        body = self.conn.getresponse().read()
        return int(float(self.LINE.search(body).group(1)))

    def close(self):
        self.conn.close()


def an_idle_mixd_picks_a_record_up_within_10_ms(build):
    """One producer, connected and idle, writes one record at a time; each
    time the shards have slept for 100 ms. Latency runs from the commit (the
    producer's clock, CLOCK_MONOTONIC like ours) to the end of the first
    scrape that shows the record: an upper bound, which includes up to two
    scrapes (the one that just missed the record, and the one that shows
    it)."""
    with mt.Mixd(build) as m:
        prog = os.path.join(m.tmp, "progress")
        n = 16
        p = subprocess.Popen(producer_argv(build, m, "--progress", prog,
                                           "--phases", ",".join(["1"] * n)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        shm = ShmCount(m)
        try:
            settle(m, lambda s: s["shm"] == 1, "the first record")
            lat = []
            for i in range(1, n):
                time.sleep(0.1)  # let the shards fall asleep
                t0 = time.monotonic()
                open(f"{prog}.go{i}", "w").close()
                while shm() < i + 1:
                    mt.check(time.monotonic() - t0 < mt._t(5), "record never picked up")
                    # not a busy loop: on a small machine, scraping without
                    # a pause keeps two CPUs busy (this loop and mixd's
                    # HTTP thread), and the shard waits for one to wake on
                    time.sleep(0.0005)
                lat.append(time.monotonic() - last_commit(prog))
            p.wait(timeout=mt._t(30))
        finally:
            shm.close()
            p.kill()
            p.wait()
        lat.sort()
        med = lat[len(lat) // 2]
        print(f"   pickup when idle: median {med * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
        # The requirement bounds every pickup, not the typical one: all 15
        # samples but the slowest must be within 10 ms. The one spared is
        # for the machine, not mixd: on a loaded CI runner any of the three
        # processes involved (the producer, mixd, this scraper) can be
        # descheduled for several milliseconds now and then, which no
        # daemon can prevent. A mixd that sleeps too long when idle is late
        # on many samples and still fails; the price is that a mixd late
        # once in 15 pickups passes.
        mt.check(lat[-2] < 0.010 * mt.TIMEOUT_FACTOR,
                 f"more than one pickup took over 10 ms: {lat}")


def samples(text, names):
    """The values of every sample of each family in @names in exposition
    @text, in order."""
    out = {n: [] for n in names}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            out[name].append(float(line.rsplit(" ", 1)[1]))
    return out


def records_announced_ahead_are_counted_exactly(build):
    """Template records for 9,000 label sets, each four times, into one
    shard running the user's config: its record memo passes 16 Ki entries,
    so from then on its polls announce each record one ahead and the
    shard keys it early (state_ahead()). Every label set's requests are
    counted exactly, in the counter and the histograms alike, and the
    memo serves repeats."""
    n_sets, count = 9_000, 36_000
    with mt.Mixd(build, SEED_ARGS, shards=1) as m:
        # one record, then the rest once mixd has the ring, at a pace it
        # keeps up with (new label sets take the whole config): none dropped
        prog = os.path.join(m.tmp, "progress")
        rate = "5000" if SANITIZED else "50000"
        p = subprocess.Popen(producer_argv(build, m, "--template", "--sets", str(n_sets),
                                           "--progress", prog, "--phases", f"1,{count - 1}",
                                           "--rate", rate, "--flush-ms", "60000"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            settle(m, lambda s: s["shm"] == 1, "the first record")
            open(f"{prog}.go1", "w").close()
            so, se = p.communicate(timeout=mt._t(120))
        finally:
            p.kill()
            p.wait()
        mt.check(p.returncode == 0, f"producer failed: {se.decode()}")
        out = json.loads(so)
        mt.check(out["written"] == count and out["dropped"] == 0, f"{out}")
        m.wait_for(lambda: mt.value(m.metrics(), "mixd_records_processed_total") == count,
                   timeout=60, what="every record processed")
        # protocol is ("http", "grpc", "tcp")[k % 3] of label set k = i % n_sets
        http = sum(1 for i in range(count) if (i % n_sets) % 3 != 2)
        names = ("istio_requests_total", "istio_request_duration_seconds_count",
                 "istio_request_bytes_count", "istio_response_bytes_count")
        status, _, body = mt.scrape(m.prometheus_port)
        mt.check(status == 200, f"status {status}")
        # each label set is its own series (destination_service is svc-<k>),
        # so a record keyed as another would show as a sample off by one
        per = count // n_sets
        for name, got in samples(body, names).items():
            mt.check(len(got) == http // per and set(got) == {per},
                     f"{name}: {len(got)} series, values {sorted(set(got))[:5]}")
        m.wait_for(lambda: mt.total(m.metrics(), "mixd_record_memo_total") > 0,
                   what="the memo's counts published")
        served = mt.value(m.metrics(), "mixd_record_memo_total", result="served")
        mt.check(served >= count // 2, f"the memo served {served} of {count}")
        print(f"   {count} records over {n_sets} label sets counted exactly; "
              f"memo served {served:.0f}")


def sigterm_drains_and_exits_zero(build):
    m = mt.Mixd(build)
    try:
        prog = os.path.join(m.tmp, "progress")
        p = subprocess.Popen(producer_argv(build, m, "--progress", prog,
                                           "--phases", "1000,1"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        poll_until(lambda: os.path.exists(prog + ".done1"), 30, "1000 records written")
        m.stop()  # SIGTERM, expects exit 0
        p.kill()
        p.wait()
        mt.check("draining" in m.stderr(), m.stderr_tail())
    finally:
        m.close()


if __name__ == "__main__":
    mt.main([
        four_producers_over_shared_memory_are_counted_exactly,
        four_template_producers_over_shared_memory_are_counted_exactly,
        four_producers_over_the_socket_are_counted_exactly,
        a_killed_producer_loses_nothing_it_committed,
        records_written_while_mixd_is_down_are_counted_after_restart,
        template_records_written_while_mixd_is_down_are_counted_after_restart,
        a_producer_truncating_its_memfd_cannot_hurt_mixd,
        a_producer_scribbling_over_its_ring_is_contained,
        garbage_on_the_socket_is_rejected_and_counted,
        hellos_with_too_many_descriptors_leave_none_open,
        a_connection_that_never_says_hello_is_closed,
        producers_beyond_the_limit_wait_their_turn,
        a_hello_trickled_a_byte_at_a_time_gets_no_more_time,
        the_open_files_limit_is_raised_or_the_producer_limit_lowered,
        an_idle_mixd_picks_a_record_up_within_10_ms,
        records_announced_ahead_are_counted_exactly,
        sigterm_drains_and_exits_zero,
    ])
