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


# The header of a producer's ring, struct mixd_ring_hdr of <mixd/ring.h>:
# the identity line, the producer's line, the consumer's line.
RING_HDR = struct.Struct("<16sQQII24x" "QQQQ32x" "QQQQ32x")


def producer_rings(pid, want=1, timeout=10):
    """Descriptors of our own on the @want shared-memory rings of producer
    @pid (its "mixd-ring" memfds, opened through /proc). They outlive the
    producer's and mixd's, so ring_header() reads a ring whatever became
    of either."""
    deadline = time.monotonic() + mt._t(timeout)
    while True:
        fds = []
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{name}").startswith("/memfd:mixd-ring"):
                    fds.append(os.open(f"/proc/{pid}/fd/{name}", os.O_RDONLY))
            except FileNotFoundError:
                pass
        if len(fds) >= want:
            return fds
        for fd in fds:
            os.close(fd)
        if time.monotonic() > deadline:
            raise AssertionError(f"producer {pid} has {len(fds)} rings, not {want}")
        time.sleep(0.01)


def ring_header(fd):
    """The counters of the ring behind @fd (see producer_rings()): the
    producer's head, written, dropped; the consumer's tail, consumed (records
    taken off the ring, whose position mixd committed with tail) and
    dropped_seen."""
    f = RING_HDR.unpack(os.pread(fd, RING_HDR.size, 0))
    return {"capacity": f[1], "head": f[5], "written": f[6], "dropped": f[7],
            "tail": f[9], "consumed": f[10], "dropped_seen": f[11]}


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


def task_cpu(pid):
    """{tid: nanoseconds on a CPU} of process @pid's threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return out


def task_state(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def stop_mid_batch(m, ring, shm, tries=300):
    """Stop mixd (SIGSTOP) at a moment its busiest thread -- the shard
    consuming @ring -- is running its own code, not sleeping in a system
    call, with records published beyond the ring's committed tail: in
    the middle of a batch it took off the ring and has not committed yet,
    but for the few instructions of a pass spent elsewhere. Returns the
    last count of shm records mixd published before it stopped (@shm reads
    it: ShmCount), mixd stopped; fails after @tries attempts."""
    before = task_cpu(m.proc.pid)
    time.sleep(0.1)  # the shard's CPU time grows; the others' hardly do
    cpu = task_cpu(m.proc.pid)
    used = {t: cpu[t] - before.get(t, 0) for t in cpu}
    shard = max(used, key=used.get)
    seen = {}
    for _ in range(tries):
        published = shm()
        m.kill(signal.SIGSTOP, wait=False)
        deadline = time.monotonic() + mt._t(5)
        while task_state(m.proc.pid, shard) not in "tT":
            mt.check(time.monotonic() < deadline, "mixd did not stop")
            time.sleep(0.0001)
        with open(f"/proc/{m.proc.pid}/task/{shard}/syscall") as f:
            call = f.read().split()[0]  # -1: stopped in its own code
        h = ring_header(ring)
        if call == "-1" and h["head"] > h["tail"]:
            return published
        seen[call, h["head"] > h["tail"]] = seen.get((call, h["head"] > h["tail"]), 0) + 1
        m.kill(signal.SIGCONT, wait=False)
        time.sleep(0.002)
    raise AssertionError(f"mixd was never caught in the middle of a batch: thread "
                         f"{shard} of CPU ns {used} found (system call, records "
                         f"beyond tail) {seen}")


def mixd_killed_mid_batch_resumes_from_its_committed_position(build):
    """mixd SIGKILLed in the middle of a batch, while producers write: one
    as fast as it can (its shard is busy, and caught busy: stop_mid_batch()),
    one at 8,000 records a second (its shard is mostly idle, its ring has
    room for what it writes while mixd is down). A shard commits a ring's
    position after processing what it took, at most 1,024 records a pass
    (segment.c), so delivery is at least once: the restarted mixd takes the
    segments back and resumes at the committed positions. Exactly
    checkable, from each segment's consumer line as the dead mixd left it
    (consumed: the records before its committed tail; dropped_seen): the
    restarted mixd counts exactly written - consumed records (the batch
    the dead one had not committed, again; what was written while it was
    down and fitted; what came after) and dropped - dropped_seen drops
    (what did not fit). What the dead mixd published ran at most one batch
    a ring ahead of what it committed, and no producer waited for mixd."""
    fast = 30_000 if SANITIZED else 300_000
    # The user's config makes records costly enough (each a label set of
    # its own) for the fast producer to keep its shard busy: caught in the
    # middle of a batch at most attempts, not one in ten or fewer.
    with mt.Mixd(build, SEED_ARGS) as m:
        progs = [os.path.join(m.tmp, f"progress{i}") for i in range(2)]
        procs = [subprocess.Popen(producer_argv(build, m, "--progress", prog, *args),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for prog, args in zip(progs, (
                     ["--count", str(fast * 10)],  # at full speed: a second or so
                     ["--count", "16000", "--rate", "8000"]))]
        rings = []
        shm = ShmCount(m)
        try:
            settle(m, lambda s: s["rings"] == 2 and s["shm"] > 0, "both rings taken")
            rings = [producer_rings(p.pid)[0] for p in procs]
            published = stop_mid_batch(m, rings[0], shm)
            stopped = time.monotonic()
            at_kill = [progress(prog)[1] for prog in progs]  # mixd is stopped
            m.kill(signal.SIGKILL)
            dead = [ring_header(r) for r in rings]  # nothing moves these now
            time.sleep(0.25)  # the producers write on, into their rings
            at_restart = [progress(prog)[1] for prog in progs]
            mt.check(procs[1].poll() is None and at_restart[1] > at_kill[1],
                     f"nothing was written while mixd was down: {at_kill} {at_restart}")
            m.start()
            down_for = time.monotonic() - stopped
            res = []
            for p in procs:
                so, se = p.communicate(timeout=mt._t(60))
                mt.check(p.returncode == 0, se.decode())
                res.append(json.loads(so))
        finally:
            shm.close()
            for p in procs:
                p.kill()
                p.wait()
        after = [ring_header(r) for r in rings]
        for r in rings:
            os.close(r)
        for r, a in zip(res, after):
            mt.check(r["flushed"] and a["written"] == r["written"] and a["tail"] == a["head"],
                     f"{r} {a}")
        # Where the dead mixd stood: records beyond the committed tail of
        # the ring whose batch it was in the middle of; nothing committed
        # that was not written.
        mt.check(dead[0]["tail"] < dead[0]["head"], f"{dead[0]}")
        for d, w in zip(dead, at_kill):
            mt.check(0 < d["consumed"] <= w, f"{d}, {w} written")
        want = sum(r["written"] - d["consumed"] for r, d in zip(res, dead))
        want_drops = sum(r["dropped_full"] - d["dropped_seen"] for r, d in zip(res, dead))
        try:
            got = settle(m, lambda s: s["shm"] == want and s["ring_full"] == want_drops,
                         f"{want} records and {want_drops} drops after restart")
        except AssertionError as e:
            raise AssertionError(f"{e}; mixd counts {ingest(m)}; the dead mixd left "
                                 f"{dead}; the producers wrote {res}") from None
        mt.check(got["rejected"] == 0 and got["invalid"] == 0, f"{got}")
        committed = sum(d["consumed"] for d in dead)
        mt.check(published <= committed + 2 * 1024,
                 f"mixd published {published} records, committed {committed}")
        # A producer that waited for room in its ring (the fast one's was full
        # from the kill on) would have waited until the restarted mixd took
        # its ring: longer than mixd was away. (A bound tighter than that would
        # also catch the fast producer's thread descheduled, on a loaded
        # machine.)
        slowest = max(r["max_commit_us"] for r in res)
        mt.check(slowest < down_for * 1e6,
                 f"slowest commit {slowest} us, mixd away {down_for * 1e3:.0f} ms")
        settle(m, lambda s: s["rings"] == 0, "the rings drained and released")
        print(f"   killed mid-batch: {committed} committed, {published} published, "
              f"{sum(at_kill)} written; {at_restart[1] - at_kill[1]} of the slow "
              f"producer's written while down; after restart {want} records, "
              f"{want_drops} drops; slowest commit {slowest} us, "
              f"mixd away {down_for * 1e3:.0f} ms")


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

def producers_beyond_the_ring_memory_limit_wait_their_turn(build):
    """--max-ring-memory 2 (MiB) and producers with 1 MiB rings: the first
    ring (1 MiB and its header) is mapped, the second would go beyond and
    is refused (counted, said once on stderr). Its producer keeps its
    records in its ring and retries; once the first producer leaves and its
    ring is drained and released, the second gets in and every record of
    both arrives."""
    with mt.Mixd(build, ["--max-ring-memory", "2"]) as m:
        ms = m.metrics()
        mt.check(mt.value(ms, "mixd_ingest_ring_bytes_limit") == 2 << 20,
                 "the limit exported")
        refused = lambda: mt.value(m.metrics(), "mixd_ingest_rejected_total",
                                   reason="ring_memory")
        # A ring is its thread's, released when the thread ends: the
        # first producer's writes for 4 s (longer under the sanitizers).
        rate = str(1000 / mt._t(4))
        first = subprocess.Popen(producer_argv(build, m, "--count", "1000",
                                               "--rate", rate),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        settle(m, lambda x: x["shm"] > 0, "the first producer's records")
        mapped = mt.value(m.metrics(), "mixd_ingest_ring_bytes")
        mt.check(1 << 20 < mapped < (1 << 20) + (64 << 10),
                 f"one 1 MiB ring and its header mapped: {mapped}")
        second = subprocess.Popen(producer_argv(build, m, "--count", "1000"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        m.wait_for(lambda: refused() >= 1, what="the second ring refused")
        mt.check(first.poll() is None, "the first producer ended too soon")
        mt.check(ingest(m)["shm"] <= 1000, "records of the refused ring read")
        res = []
        for p in (first, second):
            so, se = p.communicate(timeout=mt._t(60))
            mt.check(p.returncode == 0, f"producer failed: {se.decode()}")
            res.append(json.loads(so))
        for r in res:
            mt.check(r["dropped"] == 0 and r["flushed"], str(r))
        got = settle(m, lambda x: x["shm"] == 2000, "every record of both")
        mt.check(got["handshake"] == 0, f"refusals are not bad hellos: {got}")
        said = m.stderr().count("--max-ring-memory allows")
        mt.check(said == 1, f"said {said} times for one episode: {m.stderr_tail()}")


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
    producers (a connection and the descriptor its hello may carry each)
    and mixd's own descriptors; a hard limit of 300 cannot be, so fewer
    producers are kept, and mixd says so."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard >= 2 * 4096 + 256:
        with UnderLimit(build, f"1024:{hard}") as m:
            with open(f"/proc/{m.proc.pid}/limits") as f:
                soft = next(int(l.split()[3]) for l in f
                            if l.startswith("Max open files"))
            mt.check(soft == 2 * 4096 + 256, f"soft limit {soft}")
            mt.check(mt.value(m.metrics(), "mixd_producers_limit") == 4096, "kept")
    else:
        print(f"  (the raise not tried: this machine's hard limit is {hard})")
    with UnderLimit(build, "300:300") as m:
        mt.check(mt.value(m.metrics(), "mixd_producers_limit") == 75, "lowered")
        mt.check("--max-producers 4096 lowered to 75" in m.stderr(), m.stderr_tail())


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
    producer's clock, CLOCK_MONOTONIC like ours) to the moment the ring's
    header shows mixd's tail past the record, read straight from the shared
    memory every half millisecond: neither a scrape nor mixd's HTTP thread
    (which would compete with the shard for this machine's two CPUs) is in
    what is measured. A scrape at the end checks the records were counted."""
    with mt.Mixd(build) as m:
        prog = os.path.join(m.tmp, "progress")
        n = 16
        p = subprocess.Popen(producer_argv(build, m, "--progress", prog,
                                           "--phases", ",".join(["1"] * n)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ring = None
        try:
            settle(m, lambda s: s["shm"] == 1, "the first record")
            ring = producer_rings(p.pid)[0]
            lat = []
            for i in range(1, n):
                time.sleep(0.1)  # let the shards fall asleep
                before = ring_header(ring)["head"]
                t0 = time.monotonic()
                open(f"{prog}.go{i}", "w").close()
                while True:
                    h = ring_header(ring)
                    if h["head"] > before and h["tail"] >= h["head"]:
                        break
                    mt.check(time.monotonic() - t0 < mt._t(5), "record never picked up")
                    time.sleep(0.0005)
                lat.append(time.monotonic() - last_commit(prog))
            p.wait(timeout=mt._t(30))
        finally:
            if ring is not None:
                os.close(ring)
            p.kill()
            p.wait()
        settle(m, lambda s: s["shm"] == n, "every record counted")
        lat.sort()
        med = lat[len(lat) // 2]
        print(f"   pickup when idle: median {med * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
        # The requirement bounds every pickup, not the typical one: all 15
        # samples but the slowest must be within 10 ms. The one spared is
        # for the machine, not mixd: on a loaded CI runner the shard (or the
        # producer) can be descheduled for several milliseconds now and
        # then, which no daemon can prevent. A mixd that sleeps too long
        # when idle is late on many samples and still fails; the price is
        # that a mixd late once in 15 pickups passes.
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
    """On SIGTERM mixd stops accepting, drains every ring and exits 0:
    records two producers commit just before SIGTERM, while the shards
    holding their rings sleep (--idle-sleep-max-us 1000000; an idle
    shard's sleeps double from 50 us, so it looks again about 0.82 and
    1.64 s after it went idle, and the batches come at about 1.1 s), are
    all taken before mixd exits: each ring's consumer line, read once
    mixd is gone, has its tail at the producer's head and counts every
    record written consumed, and each producer's flush completes.
    Should a shard happen to wake before SIGTERM lands and take a batch,
    the drain was not tested: try again, with a new mixd."""
    for attempt in range(3):
        if sigterm_drain_attempt(build):
            return
        print("   a shard took the records before SIGTERM; again")
    raise AssertionError("mixd took the records before SIGTERM three times: "
                         "the drain was never tested")


def sigterm_drain_attempt(build, batch=2000):
    m = mt.Mixd(build, ["--idle-sleep-max-us", "1000000"])
    procs, rings, ok = [], [], False
    try:
        progs = [os.path.join(m.tmp, f"progress{i}") for i in range(2)]
        procs = [subprocess.Popen(producer_argv(build, m, "--progress", prog,
                                                "--phases", f"1,{batch}",
                                                "--flush-ms", str(int(mt._t(10_000)))),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for prog in progs]
        settle(m, lambda s: s["shm"] == 2 and s["rings"] == 2, "both first records")
        rings = [producer_rings(p.pid)[0] for p in procs]
        time.sleep(1.1)  # the shards are asleep until about 1.64 s
        for prog in progs:
            open(prog + ".go1", "w").close()
        poll_until(lambda: all(os.path.exists(prog + ".done2") for prog in progs), 10,
                   "both batches written")
        pending = [h["written"] - h["consumed"] for h in map(ring_header, rings)]
        if not all(pending):
            ok = True
            return False
        m.stop()  # SIGTERM; exit status 0 within 10 s
        mt.check("draining" in m.stderr(), m.stderr_tail())
        for r, n in zip(rings, pending):
            h = ring_header(r)
            mt.check(h["tail"] == h["head"] and h["consumed"] == h["written"] == 1 + batch,
                     f"mixd exited with records in a ring ({n} were pending "
                     f"at SIGTERM): {h}")
        for p in procs:
            so, se = p.communicate(timeout=mt._t(30))
            mt.check(p.returncode == 0, se.decode())
            res = json.loads(so)
            mt.check(res["flushed"] and res["written"] == 1 + batch and res["dropped"] == 0,
                     f"{res}")
        print(f"   {pending} records pending in the rings at SIGTERM, all drained")
        ok = True
        return True
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for r in rings:
            os.close(r)
        m.close(ok=ok)


def a_ring_written_on_forever_holds_neither_its_slot_nor_mixd(build):
    """A producer's ring is followed one ring's worth past the moment its
    connection closes, or past SIGTERM, and no further: whoever keeps
    writing into it (the producer's memfd is anyone's who holds it) cannot
    keep the ring, or mixd, alive. The writer keeps the 1 MiB ring full of
    8-byte frames, so one ring's worth is 131,072 records; a ring given up
    with records in it is counted a corrupt ring."""
    lap = (1 << 20) // 8
    for mode in ("forever-closed", "forever"):
        m = mt.Mixd(build)
        p, fds, ok = None, [], False
        try:
            p = subprocess.Popen(producer_argv(build, m, "--count", "10",
                                               "--evil", mode),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if mode == "forever-closed":
                # The producer goes once mixd has taken two ring's worth
                # of its child's writing, which goes on. From when mixd
                # has seen the connection close (its slot free), a ring's
                # worth and the pass under way.
                settle(m, lambda s: s["shm"] >= 2 * lap, "mixd following the writer",
                       timeout=40)
                at_close = settle(m, lambda s: s["producers"] == 0,
                                  "the connection closed")["shm"]
                got = settle(m, lambda s: s["rings"] == 0,
                             "the ring given up while written on", timeout=5)
                mt.check(got["shm"] - at_close <= 2 * lap and got["corrupt"] <= 1,
                         f"{got}, {at_close} records when the connection closed")
                print(f"   closed: the ring given up {got['shm'] - at_close:.0f} "
                      f"records after its connection closed, corrupt_ring "
                      f"{got['corrupt']:.0f}")
            else:
                fds = producer_rings(p.pid)
                settle(m, lambda s: s["shm"] > 4 * lap, "mixd following the writer")
                before = ring_header(fds[0])["consumed"]
                t0 = time.monotonic()
                m.stop()  # SIGTERM: exit 0 within 10 s, writer or no
                after = ring_header(fds[0])["consumed"]
                # Shards run at full speed (tens of millions of these
                # records a second) until the drain starts, a few ms after
                # the signal; then one ring's worth. Unbounded, it was
                # tens of millions.
                mt.check(after - before <= 8 * lap, f"{after - before} records "
                         f"taken after SIGTERM from a ring of {lap}")
                print(f"   open: mixd exited {time.monotonic() - t0:.2f} s after "
                      f"SIGTERM, {after - before} records later")
            ok = True
        finally:
            if p:
                p.kill()
                p.wait()
            # the forever-closed writer is the producer's child
            subprocess.run(["pkill", "-f", "--", f"{m.address} .*--evil {mode}"],
                           check=False)
            for fd in fds:
                os.close(fd)
            m.close(ok=ok)

def sigterm_ends_the_drain_while_socket_producers_still_send(build):
    """A socket producer that goes on sending after SIGTERM cannot keep
    mixd draining: the io thread goes on reading open connections, but a
    shard takes at most one queue's worth past the drain's start, and
    mixd exits 0 well within the 10 s stop() allows. One shard on the
    user's configuration without the record memo, so that the producers
    outrun it and its queue is never found empty (on two cores they do
    under ASan, where without the bound mixd outlived the 10 s; a release
    shard finds the queue empty now and then, and ends anyway)."""
    seed = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                        "fixtures", "config", "mixer-seed.yaml")
    m = mt.Mixd(build, ["--config", seed, "--configDefaultNamespace", "default",
                        "--no-record-memo"], shards=1)
    p, ok = None, False
    try:
        p = subprocess.Popen([os.path.join(build, "mixd-loadgen"), "--address",
                              m.address, "--transport", "socket", "--threads", "4",
                              "--rate", "50000000", "--duration", "60"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        settle(m, lambda s: s["socket"] > 20_000, "socket records flowing")
        time.sleep(1)  # the queue full: the producers outrun the shard
        t0 = time.monotonic()
        m.stop()  # SIGTERM: exit 0 within 10 s
        took = time.monotonic() - t0
        mt.check(p.poll() is None, "the producer stopped before mixd did")
        mt.check(took < mt._t(5), f"mixd took {took:.2f} s to exit")
        print(f"   mixd exited {took:.2f} s after SIGTERM, the producer still sending")
        ok = True
    finally:
        if p:
            p.kill()
            p.wait()
        m.close(ok=ok)


if __name__ == "__main__":
    mt.main([
        four_producers_over_shared_memory_are_counted_exactly,
        four_template_producers_over_shared_memory_are_counted_exactly,
        four_producers_over_the_socket_are_counted_exactly,
        a_killed_producer_loses_nothing_it_committed,
        records_written_while_mixd_is_down_are_counted_after_restart,
        template_records_written_while_mixd_is_down_are_counted_after_restart,
        mixd_killed_mid_batch_resumes_from_its_committed_position,
        a_producer_truncating_its_memfd_cannot_hurt_mixd,
        a_producer_scribbling_over_its_ring_is_contained,
        garbage_on_the_socket_is_rejected_and_counted,
        hellos_with_too_many_descriptors_leave_none_open,
        a_connection_that_never_says_hello_is_closed,
        producers_beyond_the_limit_wait_their_turn,
        producers_beyond_the_ring_memory_limit_wait_their_turn,
        a_hello_trickled_a_byte_at_a_time_gets_no_more_time,
        the_open_files_limit_is_raised_or_the_producer_limit_lowered,
        an_idle_mixd_picks_a_record_up_within_10_ms,
        records_announced_ahead_are_counted_exactly,
        sigterm_drains_and_exits_zero,
        a_ring_written_on_forever_holds_neither_its_slot_nor_mixd,
        sigterm_ends_the_drain_while_socket_producers_still_send,
    ])
