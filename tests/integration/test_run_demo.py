"""`make run` as CI sees it: tools/run-demo.sh starts mixd on deploy/'s config
with mixd-loadgen, says "mixd-demo: ready", istio_requests_total on the
prometheus port counts the generated traffic, and SIGINT stops everything:
the script exits 0 within 15 s and neither mixd nor mixd-loadgen is left
running.

The script runs in its own process group (as under a terminal) on ephemeral
ports, so several runs and the other tests never collide. Ports and child
pids are read from what the script prints; the children are also found by
the socket path, which is unique to one run of the script."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import mixdtest as mt
from mixdtest import check

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(REPO, "tools", "run-demo.sh")

READY = "mixd-demo: ready"
PROM_PORT = re.compile(r"curl -s localhost:(\d+)/metrics \| grep istio_requests_total")
MON_PORT = re.compile(r"curl -s localhost:(\d+)/metrics$", re.M)
PIDS = re.compile(r"^mixd-demo: (mixd|mixd-loadgen) \(pid (\d+)\)(?: on unix://([^\s,]+))?", re.M)


def alive(pid):
    """True if @pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the state follows the parenthesised command name
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def using_socket(sock):
    """Pids of processes whose command line names @sock (pgrep -f would
    also match the pgrep itself and this script's shell; /proc does not)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid() and sock in cmdline(d) and alive(d):
            out.append(int(d))
    return out


def _as_from_a_terminal():
    """A shell started from a terminal has SIGINT at its default. Under a
    CI runner (or `ctest &`) it may arrive ignored, and bash cannot trap a
    signal that was ignored when it started: reset it, so the test checks
    the script and not the way it was launched."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Demo:
    """tools/run-demo.sh in its own process group, output in a temp file."""

    def __init__(self, build):
        self.build = os.path.abspath(build)
        self.tmp = tempfile.mkdtemp(prefix="mixdtest-demo.")
        self.out_path = os.path.join(self.tmp, "run-demo.out")
        env = dict(os.environ,
                   MIXD_BUILD_DIR=self.build,
                   MIXD_MONITORING_ADDRESS="127.0.0.1:0",
                   MIXD_PROMETHEUS_ADDRESS="127.0.0.1:0",
                   # A port nothing listens on: the demo must serve without
                   # Marathon, and must not enrich from one that happens to
                   # run on this machine.
                   MIXD_MARATHON_ADDRESS="http://127.0.0.1:1",
                   MIXD_DEMO_RATE="500")
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(["bash", SCRIPT], cwd=REPO, env=env,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=_as_from_a_terminal)
        self.pgid = self.proc.pid
        self.sock = None
        self.pids = {}
        self.prom_port = self.mon_port = None

    def output(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def tail(self):
        return ("---- run-demo.sh output ----\n" + self.output()
                + "---- end of run-demo.sh output ----\n")

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + mt._t(timeout)
        while READY not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f"run-demo.sh exited with status {self.proc.returncode} "
                                     f"before it was ready\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {READY!r} within {mt._t(timeout):.0f} s\n{self.tail()}")
            time.sleep(0.05)
        text = self.output()
        m = PROM_PORT.search(text)
        check(m, f"run-demo.sh did not say where istio_requests_total is\n{self.tail()}")
        self.prom_port = int(m.group(1))
        m = MON_PORT.search(text)
        check(m, f"run-demo.sh did not say where the self-metrics are\n{self.tail()}")
        self.mon_port = int(m.group(1))
        for name, pid, sock in PIDS.findall(text):
            self.pids[name] = int(pid)
            if sock:
                self.sock = sock
        check(set(self.pids) == {"mixd", "mixd-loadgen"} and self.sock,
              f"run-demo.sh did not name both pids and the socket\n{self.tail()}")
        for name, pid in self.pids.items():
            check(alive(pid) and self.sock in cmdline(pid),
                  f"{name} (pid {pid}) is not running on {self.sock}: {cmdline(pid)!r}")

    def requests_total(self):
        status, _, body = mt.scrape(self.prom_port)
        check(status == 200, f"prometheus port answered {status}")
        return mt.total(mt.parse_metrics(body), "istio_requests_total")

    def stop(self, sig, to_group, timeout=15):
        """Send @sig to the script (or its whole group, as Ctrl-C in a
        terminal does); it must exit 0 within @timeout s. Returns the
        seconds it took."""
        t0 = time.monotonic()
        if to_group:
            os.killpg(self.pgid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=mt._t(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"run-demo.sh did not exit within {mt._t(timeout):.0f} s "
                                 f"of signal {sig}\n{self.tail()}") from None
        check(rc == 0, f"run-demo.sh exited with status {rc} on signal {sig}\n{self.tail()}")
        return time.monotonic() - t0

    def close(self):
        """Whatever happened: kill what is left of this run's process group
        (only ours: it is the group the script leads), remove the temp dir."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for pid in using_socket(self.sock) if self.sock else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Killed before its trap ran, the script leaves its directory.
        if self.sock and os.path.basename(os.path.dirname(self.sock)).startswith("mixd-demo."):
            shutil.rmtree(os.path.dirname(self.sock), ignore_errors=True)
        for name in ("run-demo.out",):
            try:
                os.unlink(os.path.join(self.tmp, name))
            except FileNotFoundError:
                pass
        os.rmdir(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def run_and_stop(build, sig, to_group):
    with Demo(build) as d:
        d.wait_ready()
        # Traffic reaches the user's metric within 30 s.
        deadline = time.monotonic() + mt._t(30)
        n = 0
        while True:
            check(d.proc.poll() is None,
                  f"run-demo.sh exited with status {d.proc.returncode}\n{d.tail()}")
            n = d.requests_total()
            if n > 0:
                break
            check(time.monotonic() < deadline,
                  f"istio_requests_total stayed 0 for {mt._t(30):.0f} s\n{d.tail()}")
            time.sleep(0.2)
        status, _, body = mt.scrape(d.mon_port, "/healthz")
        check(status == 200 and body == "ok\n", f"/healthz: {status} {body!r}")

        d.stop(sig, to_group)
        text = d.output()
        check("mixd-demo: stopped" in text, f"no 'mixd-demo: stopped'\n{d.tail()}")
        # Every process the script started is gone, found by pid and by the
        # socket path only this run uses; the script's private directory too.
        left = {name: pid for name, pid in d.pids.items() if alive(pid)}
        check(not left, f"still running after run-demo.sh exited: {left}")
        stray = using_socket(d.sock)
        check(not stray, f"processes on {d.sock} after run-demo.sh exited: "
              f"{[(p, cmdline(p)) for p in stray]}")
        check(not os.path.exists(os.path.dirname(d.sock)),
              f"run-demo.sh left {os.path.dirname(d.sock)} behind")


def test_sigint_to_script(build):
    """SIGINT to the script alone (kill -INT): it stops mixd-loadgen and
    mixd, removes its directory and exits 0."""
    run_and_stop(build, signal.SIGINT, to_group=False)


def test_ctrl_c_to_process_group(build):
    """SIGINT to the whole process group, as Ctrl-C in `make run`'s
    terminal delivers it: the same clean exit."""
    run_and_stop(build, signal.SIGINT, to_group=True)


def test_missing_build(build):
    """A build directory without mixd: a clear message and status 1, and
    nothing started."""
    empty = tempfile.mkdtemp(prefix="mixdtest-nobuild.")
    try:
        p = subprocess.run(["bash", SCRIPT], cwd=REPO, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=dict(os.environ, MIXD_BUILD_DIR=empty),
                           timeout=mt._t(15))
    finally:
        os.rmdir(empty)
    out = p.stdout.decode("utf-8", "replace")
    check(p.returncode == 1, f"status {p.returncode}: {out!r}")
    check(f"{empty}/mixd is missing" in out, f"unexpected message: {out!r}")


if __name__ == "__main__":
    mt.main([test_sigint_to_script, test_ctrl_c_to_process_group, test_missing_build])
