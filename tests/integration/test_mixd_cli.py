"""mixd's command line: a malformed address is a bad command line (exit 2,
before anything starts), the startup lines name the host each HTTP
server listens on, and --shards defaults to the CPUs mixd may use."""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import mixdtest as mt
from mixdtest import check

ANNOUNCE = re.compile(r"^mixd: (monitoring|prometheus) on http://(\S+):(\d+)$", re.M)


@contextlib.contextmanager
def config_file(text, name="mixer.yaml"):
    """A temporary directory holding @text as @name: yields the file's
    path, and removes the directory after."""
    tmp = tempfile.mkdtemp(prefix="mixd-cli.")
    try:
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(text)
        yield path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_config(build, path, *args):
    """mixd --check-config @path: (status, stdout and stderr as text)."""
    p = subprocess.run([os.path.join(build, "mixd"), "--check-config", path, *args],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=mt._t(120))
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def run_mixd(build, args):
    """Run mixd with @args, expecting it to exit on its own. Returns
    (status, stderr text)."""
    p = subprocess.run([os.path.join(build, "mixd")] + args, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=mt._t(30))
    return p.returncode, p.stderr.decode("utf-8", "replace")


def test_malformed_addresses_exit_2(build):
    """Checked while the options are read, as a bad number is: nothing is
    started, so nothing is half-started (a socket file, a bound port)."""
    with tempfile.TemporaryDirectory() as d:
        sock = f"unix://{d}/mixd.sock"
        here = ["--address", sock, "--monitoring-address", "127.0.0.1:0",
                "--prometheus-address", "127.0.0.1:0"]
        cases = [
            (["--address", "tcp://x"], "--address"),
            (["--address", "relative.sock"], "--address"),
            (["--address", "unix://" + "/x" * 80], "--address"),  # > sun_path
            (["--monitoring-address", "nonsense:abc"], "--monitoring-address"),
            (["--monitoringPort", "nonsense:abc"], "--monitoring-address"),
            (["--prometheus-address", "127.0.0.1:99999"], "--prometheus-address"),
            (["--prometheus-address", "::1:80"], "--prometheus-address"),
            (["--prometheus-address", "[::1]80"], "--prometheus-address"),
            (["--prometheus-address", "127.0.0.1:"], "--prometheus-address"),
            (["--marathon-address", "ftp://x"], "--marathon-address"),
            (["--marathon-address", "http://u:p@[bad"], "--marathon-address"),
        ]
        for args, flag in cases:
            rc, err = run_mixd(build, here + args)
            check(rc == 2, f"{args}: exit {rc}, want 2\n{err}")
            check(flag in err and "bad" in err, f"{args}: unclear message:\n{err}")
            check("producers on" not in err and "monitoring on" not in err,
                  f"{args}: mixd started before refusing:\n{err}")
            check(not os.path.exists(f"{d}/mixd.sock"), f"{args}: socket created")
        # an empty config path is named as such, not read as ""
        for args, want in [(["--config", ""], "--config: an empty path"),
                           (["--configStoreURL", "fs://"], "no path")]:
            rc, err = run_mixd(build, here + args)
            check(rc == 2 and want in err, f"{args}: exit {rc}\n{err}")


def announced(m):
    """{"monitoring": (host, port), "prometheus": (host, port)} from @m's
    startup lines."""
    return {k: (h, int(p)) for k, h, p in ANNOUNCE.findall(m.stderr())}


def test_the_startup_lines_name_the_host_bound(build):
    """A server bound to one address is announced with that address, and
    answers there; a wildcard bind is announced as 127.0.0.1, which
    answers as well."""
    with mt.Mixd(build, ["--monitoring-address", "127.0.0.2:0",
                         "--prometheus-address", ":0"]) as m:
        got = announced(m)
        check(got["monitoring"] == ("127.0.0.2", m.monitoring_port), f"{got}")
        check(got["prometheus"] == ("127.0.0.1", m.prometheus_port), f"{got}")
        status, _, body = mt.scrape(m.monitoring_port, "/healthz", host="127.0.0.2")
        check(status == 200, f"/healthz at 127.0.0.2 answered {status}: {body}")
        status, _, _ = mt.scrape(m.prometheus_port, host="127.0.0.1")
        check(status == 200, f"/metrics at 127.0.0.1 answered {status}")


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_an_ipv6_host_is_announced_in_brackets(build):
    if not ipv6_loopback():
        print("  (skipped: no IPv6 loopback here)")
        return
    with mt.Mixd(build, ["--monitoring-address", "[::1]:0"]) as m:
        got = announced(m)
        check(got["monitoring"] == ("[::1]", m.monitoring_port), f"{got}")
        status, _, _ = mt.scrape(m.monitoring_port, "/healthz", host="::1")
        check(status == 200, f"/healthz at [::1] answered {status}")


def test_flags_this_run_has_no_use_for_are_said(build):
    """--policy-address under --role telemetry, --marathon-address with no
    configuration: accepted (a wrapper may always pass them) and said,
    not silently dropped."""
    with tempfile.TemporaryDirectory() as d:
        with mt.Mixd(build, ["--policy-address", f"unix://{d}/policy.sock",
                             "--marathon-address", "127.0.0.1:1"]) as m:
            err = m.stderr()
            check("notice: --policy-address unused" in err and
                  "notice: --marathon-address unused" in err, err)
            check(not os.path.exists(f"{d}/policy.sock"), "a policy socket was made")


def test_mixers_boolean_flags_take_a_value(build):
    """As Go's flag package allowed: --useAdapterCRDs, =false, =true;
    a value ParseBool refuses is a bad command line."""
    with tempfile.TemporaryDirectory() as d:
        here = ["--address", f"unix://{d}/mixd.sock", "--monitoring-address", "127.0.0.1:0",
                "--prometheus-address", "127.0.0.1:0", "--check-config", "/nonexistent"]
        for flag in ("--useAdapterCRDs", "--useAdapterCRDs=false", "--useTemplateCRDs=true",
                     "--singleThreaded=0", "--trace_log_spans=T", "--profile=False",
                     "--log_as_json=true"):
            rc, err = run_mixd(build, [flag] + here)
            check("ignoring --" in err and "unknown" not in err, f"{flag}: {err}")
        rc, err = run_mixd(build, ["--useAdapterCRDs=no"] + here)
        check(rc == 2 and "bad --useAdapterCRDs=no" in err, f"exit {rc}: {err}")


def shards_by_default(build, wrap, d):
    """The shard count mixd announces without --shards, started through
    the command @wrap (a list; "{}" where mixd's argv goes)."""
    argv = [os.path.join(build, "mixd"), "--address", f"unix://{d}/mixd.sock",
            "--monitoring-address", "127.0.0.1:0", "--prometheus-address", "127.0.0.1:0"]
    cmd = []
    for w in wrap:
        cmd += argv if w == "{}" else [w]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, text=True)
    try:
        for line in p.stderr:
            m = re.search(r"producers on \S+, (\d+) shards?$", line)
            if m:
                return int(m.group(1))
        return None
    finally:
        p.terminate()
        p.wait(timeout=mt._t(10))


def test_shards_default_to_the_cpus_mixd_may_use(build):
    """One shard per CPU of the affinity mask (taskset, cpusets), and no
    more than the cgroup's CPU quota (a container's --cpus, Marathon's
    cpus) rounded up."""
    ncpu = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as d:
        got = shards_by_default(build, ["{}"], d)
        check(got is not None and 1 <= got <= ncpu, f"{got} shards on {ncpu} CPUs")
        got = shards_by_default(build, ["taskset", "-c", "0", "{}"], d)
        check(got == 1, f"taskset -c 0: {got} shards")
        # A cgroup with half a CPU, where this machine lets us make one;
        # mixd runs in a cgroup below it, of no quota of its own.
        made = None
        for base, files in (("/sys/fs/cgroup/cpu", ("cpu.cfs_quota_us", "50000")),
                            ("/sys/fs/cgroup", ("cpu.max", "50000 100000"))):
            cg = os.path.join(base, f"mixdtest-{os.getpid()}")
            try:
                os.mkdir(cg)
            except OSError:
                continue
            try:
                with open(os.path.join(cg, files[0]), "w") as f:
                    f.write(files[1])
                made = cg
                break
            except OSError:
                os.rmdir(cg)
        if not made:
            print("  (cgroup quota case skipped: no writable cpu cgroup here)")
            return
        leaf = os.path.join(made, "leaf")
        try:
            os.mkdir(leaf)
            got = shards_by_default(
                build, ["sh", "-c", f"echo $$ > {leaf}/cgroup.procs && exec \"$@\"",
                        "sh", "{}"], d)
            check(got == 1, f"under a cgroup of half a CPU: {got} shards")
        finally:
            for cg in (leaf, made):
                for _ in range(50):
                    try:
                        os.rmdir(cg)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)


def test_hostile_expressions_are_errors_not_crashes_or_gigabytes(build):
    """A config a watched directory may receive: expressions nested 30,000
    deep in calls or map keys are an error (the parser's recursion used to
    overflow the stack), and 250,000 string literals in a 1 MB expression
    load in what their text takes (each used to reserve the rest of the
    text for the config's life: 1 GB)."""
    n = 30000
    for name, expr in (("calls", "toLower(" * n + "request.path" + ")" * n),
                       ("keys", "request.headers[" * n + '"k"' + "]" * n)):
        with config_file("kind: rule\nmetadata: {name: d, namespace: default}\n"
                         "spec:\n  match: '%s == \"x\"'\n" % expr) as path:
            status, out = check_config(build, path)
        check(status == 1, f"{name}: exit {status}: {out[-300:]}")
        check("nested too deeply" in out, out[-300:])
    with config_file("kind: metric\nmetadata: {name: m, namespace: default}\n"
                     "spec:\n  value: \"1\"\n  dimensions:\n    d: '%s'\n"
                     % "|".join(['"a"'] * 250000)) as path:
        p = subprocess.Popen([os.path.join(build, "mixd"), "--check-config", path],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        err = p.stderr.read().decode("utf-8", "replace")
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = 0  # reaped above
    check(os.waitstatus_to_exitcode(status) == 0, err[-300:])
    # ru_maxrss is in KiB; sanitizer builds take more, not gigabytes
    check(usage.ru_maxrss < 400 * 1024, f"{usage.ru_maxrss} KiB resident")


def test_check_config_time_is_linear_in_the_objects(build):
    """100,000 rules, each naming a handler and an instance: every name
    and reference is a table lookup. The loader used to scan every object
    for each (40,000 rules took 4.4 s, so these would take about 30 s, the
    control loop blocked for a reload all the while); now about a second."""
    text = ("kind: metric\nmetadata: {name: m, namespace: default}\n"
            "spec:\n  value: \"1\"\n  dimensions: {code: response.code | 0}\n"
            "---\nkind: prometheus\nmetadata: {name: h, namespace: default}\n"
            "spec:\n  metrics:\n  - {name: many_total, instance_name: m.metric.default,"
            " kind: COUNTER, label_names: [code]}\n")
    text += "".join("---\nkind: rule\nmetadata: {name: r%d, namespace: default}\n"
                    "spec:\n  actions:\n  - {handler: h.prometheus, instances: [m.metric]}\n"
                    % i for i in range(100000))
    with config_file(text) as path:
        start = time.monotonic()
        status, out = check_config(build, path, "--configDefaultNamespace", "default")
        took = time.monotonic() - start
    check(status == 0, out[-500:])
    check("rules: 100000" in out, out[:500])
    check(took < mt._t(20), f"--check-config of 100,000 rules took {took:.1f} s")


def test_an_unopenable_stdio_output_is_named_not_out_of_memory(build):
    """A stdio handler whose outputPath cannot be opened: mixd does not
    start and says why (it used to add "out of memory installing it")."""
    with config_file("kind: stdio\nmetadata: {name: h, namespace: default}\n"
                     "spec: {logStream: FILE, outputPath: /nonexistent/dir/access.log}\n"
                     "---\nkind: logentry\nmetadata: {name: acc, namespace: default}\n"
                     "spec: {severity: '\"Info\"', variables: {code: response.code | 0}}\n"
                     "---\nkind: rule\nmetadata: {name: r, namespace: default}\n"
                     "spec: {actions: [{handler: h.stdio, instances: [acc.logentry]}]}\n"
                     ) as path:
        status, err = run_mixd(build, ["--config", path, "--address",
                                       "unix://" + os.path.join(os.path.dirname(path), "s.sock"),
                                       "--monitoring-address", "127.0.0.1:0",
                                       "--prometheus-address", "127.0.0.1:0"])
    check(status == 1, f"exit {status}: {err}")
    check("cannot open /nonexistent/dir/access.log" in err, err)
    check("a stdio handler's output cannot be opened" in err, err)
    check("out of memory" not in err, err)

if __name__ == "__main__":
    mt.main([
        test_malformed_addresses_exit_2,
        test_the_startup_lines_name_the_host_bound,
        test_an_ipv6_host_is_announced_in_brackets,
        test_shards_default_to_the_cpus_mixd_may_use,
        test_flags_this_run_has_no_use_for_are_said,
        test_mixers_boolean_flags_take_a_value,
        test_hostile_expressions_are_errors_not_crashes_or_gigabytes,
        test_check_config_time_is_linear_in_the_objects,
        test_an_unopenable_stdio_output_is_named_not_out_of_memory,
    ])
