"""mixd-report against a running mixd: records arrive and are counted, bad
lines are reported with their line numbers and skipped, exit codes, both
transports, --repeat, --help."""

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

import mixdtest as mt
from mixdtest import check

RECORDS = "mixd_ingest_records_total"
DROPPED = "mixd_ingest_dropped_total"
REJECTED = "mixd_ingest_rejected_total"

SUMMARY = re.compile(r"^mixd-report: sent (\d+) records, dropped (\d+), rejected (\d+) lines$",
                     re.M)


def good_line(i):
    """A proxy-like record using every type mixd-report converts."""
    return {
        "source.uid": f"kubernetes://web-{i % 3}.default",
        "source.ip": "10.0.0.1",
        "destination.ip": "fd00::2",
        "destination.port": 8080,
        "destination.service": "reviews.default.svc.cluster.local",
        "destination.labels": {"app": "reviews", "version": "v1"},
        "request.headers": {":path": "/x", "user-agent": "curl"},
        "request.time": "2019-05-01T10:00:00.123456789Z",
        "request.size": 120 + i,
        "response.code": 200 if i % 5 else 503,
        "response.duration": f"{i % 100}ms",
        "connection.mtls": i % 2 == 0,
        "context.protocol": "http",
        "custom.ratio": 0.5 + i,
        "custom.count": i,
        "custom.flag": True,
        "custom.map": {"k": "v"},
    }


def summary(out):
    m = SUMMARY.search(out)
    check(m, f"no summary line in {out!r}")
    return tuple(int(x) for x in m.groups())


def counted(m, transport):
    return mt.value(m.metrics(), RECORDS, transport=transport)


def send_and_count(build, m, lines, transport, extra=()):
    """Report @lines; expect every good one sent and counted by mixd exactly."""
    before = counted(m, transport)
    rc, out, err = mt.report(build, m.address, lines, transport=transport, extra=extra)
    return before, rc, out, err


def expect_counted(m, transport, n, before=0):
    m.wait_for(lambda: counted(m, transport) >= before + n,
               what=f'{RECORDS}{{transport="{transport}"}} >= {before + n}')
    got = counted(m, transport)
    check(got == before + n, f"mixd counted {got - before} {transport} records, sent {n}")
    metrics = m.metrics()
    check(mt.total(metrics, DROPPED) == 0, f"mixd dropped records: {metrics}")
    check(mt.total(metrics, REJECTED) == 0,
          f"mixd rejected records mixd-report built: "
          f"{ {k: v for k, v in metrics.items() if k[0] == REJECTED} }")


def test_help(build):
    rc, out, err = mt.report(build, "unix:///nonexistent", [], extra=["--version"])
    check(rc == 0 and re.match(r"^mixd-report \d+\.\d+\.\d+\n$", out), f"{rc} {out!r}")
    rc, out, err = mt.report(build, "unix:///nonexistent", [], extra=["--help"])
    check(rc == 0, f"--help exited {rc}: {err}")
    for word in ("Usage:", "--address", "--transport", "--ring-bytes", "--flush-timeout",
                 "--repeat", "--rate", "FILE:LINE", "Exit status"):
        check(word in out, f"--help does not mention {word}")


def test_usage_errors_exit_2(build):
    binary = os.path.join(build, "mixd-report")
    for argv in ([], ["--address", "x", "--transport", "tcp"],
                 ["--address", "x", "--ring-bytes", "1000"],
                 ["--address", "x", "--ring-bytes", "4096"],
                 ["--address", "x", "--ring-bytes", str(512 << 20)],
                 ["--address", "x", "--flush-timeout", "0"],
                 ["--address", "x", "--repeat", "0"],
                 ["--address", "x", "--no-such-flag"]):
        p = subprocess.run([binary] + argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=mt._t(30))
        check(p.returncode == 2, f"{argv}: exit {p.returncode}, want 2")
        check(p.stderr, f"{argv}: nothing on stderr")


def test_shm_records_are_counted(build):
    with mt.Mixd(build) as m:
        lines = [good_line(i) for i in range(200)]
        before, rc, out, err = send_and_count(build, m, lines, "shm")
        check(rc == 0, f"exit {rc}\nstdout: {out}\nstderr: {err}")
        check(summary(out) == (200, 0, 0), out)
        check("<stdin>:" not in err, f"lines reported bad: {err}")
        expect_counted(m, "shm", 200, before)


def test_socket_transport_is_counted_as_socket(build):
    with mt.Mixd(build) as m:
        lines = [good_line(i) for i in range(50)]
        before, rc, out, err = send_and_count(build, m, lines, "socket")
        check(rc == 0, f"exit {rc}\nstdout: {out}\nstderr: {err}")
        check(summary(out) == (50, 0, 0), out)
        expect_counted(m, "socket", 50, before)
        check(counted(m, "shm") == 0, "socket records counted as shm")


def test_bad_lines_are_reported_with_line_numbers_and_skipped(build):
    lines = [
        good_line(1),                           # 1
        "{not json",                         # 2
        "",                                  # 3: empty, silently skipped
        {"response.code": "200"},            # 4: string for INT64
        "[1, 2]",                            # 5: not an object
        {"response.duration": 15},           # 6: number for DURATION
        {"source.ip": "10.0.0.300"},         # 7: not an IP
        {"response.code": 1.5},              # 8: not integral
        {"request.headers": {"a": 1}},       # 9: map value not a string
        good_line(2),                        # 10
        "   ",                               # 11: blank, skipped
        {"request.time": "yesterday"},       # 12: not RFC 3339
        good_line(3),                        # 13
        '{"custom.big": 1e400}',             # 14: no double is that large
        '{"custom.n": 01}',                  # 15: not JSON's number syntax
        '{"custom.n": 1.}',                  # 16: nor this
        '{"response.code": -0}',             # 17: fine: JSON's and zero
    ]
    bad = [2, 4, 5, 6, 7, 8, 9, 12, 14, 15, 16]
    with mt.Mixd(build) as m:
        before, rc, out, err = send_and_count(build, m, lines, "shm")
        check(rc == 1, f"exit {rc}, want 1\nstdout: {out}\nstderr: {err}")
        check(summary(out) == (4, 0, len(bad)), out)
        reported = [int(x) for x in re.findall(r"^<stdin>:(\d+): \S", err, re.M)]
        check(reported == bad, f"reported lines {reported}, want {bad}\n{err}")
        check('"response.code"' in err and '"source.ip"' in err,
              f"reasons do not name the attribute:\n{err}")
        check("1e400 is out of a double's range" in err and "01 is not a JSON number" in err,
              err)
        expect_counted(m, "shm", 4, before)

        # the same through a FILE argument, named in the messages
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", dir=m.tmp,
                                         delete=False) as f:
            f.write('{"response.code": 200}\n\n{"response.code": true}\n')
        rc, out, err = mt.report(build, m.address, [], files=[f.name])
        check(rc == 1, f"exit {rc}: {err}")
        check(summary(out) == (1, 0, 1), out)
        check(f"{f.name}:3: " in err, f"want {f.name}:3 in {err}")
        expect_counted(m, "shm", 5, before)


def test_a_record_the_client_refuses_is_a_rejected_line(build):
    """A line whose record libmixd refuses at commit (larger than a record
    may be: -EMSGSIZE) is the line's fault: reported as FILE:LINE and
    counted as rejected, not as dropped, which means a full ring."""
    huge = {"request.path": "/" + "x" * 70000}  # > MIXD_RECORD_MAX (64 KiB)
    lines = [good_line(1), huge, good_line(2)]
    with mt.Mixd(build) as m:
        before, rc, out, err = send_and_count(build, m, lines, "shm")
        check(rc == 1, f"exit {rc}, want 1\nstdout: {out}\nstderr: {err}")
        check(summary(out) == (2, 0, 1), out)
        reported = [int(x) for x in re.findall(r"^<stdin>:(\d+): \S", err, re.M)]
        check(reported == [2], f"reported lines {reported}, want [2]\n{err}")
        check("too large" in err, f"the reason does not say why:\n{err}")
        # the client's count of the record it refused reaches mixd as
        # invalid, which is not a full ring either
        m.wait_for(lambda: counted(m, "shm") == before + 2 and
                   mt.value(m.metrics(), DROPPED, reason="invalid") == 1,
                   what="2 records and 1 invalid")
        check(mt.value(m.metrics(), DROPPED, reason="ring_full") == 0, "ring_full")


def test_a_string_with_a_nul_is_rejected_not_cut(build):
    """cJSON ends a string at an escaped NUL (\\u0000) and keeps no length,
    so the bytes after it would be lost without a word: such a line, in a
    value, a name or a map, is reported and skipped. A backslash written
    as \\\\ before u0000 is no NUL, and that line is sent."""
    lines = [
        good_line(1),                           # 1
        {"request.path": "a\0b"},               # 2: in a value
        {"custom.n\0ame": 1},                   # 3: in a name
        {"request.headers": {"k": "v\0"}},      # 4: in a map value
        {"request.path": "a\\u0000b"},          # 5: the text \u0000, sent
        '{"request.path": "\\u0000"}',          # 6: the escape alone
    ]
    bad = [2, 3, 4, 6]
    with mt.Mixd(build) as m:
        before, rc, out, err = send_and_count(build, m, lines, "shm")
        check(rc == 1, f"exit {rc}, want 1\nstdout: {out}\nstderr: {err}")
        check(summary(out) == (2, 0, len(bad)), out)
        reported = [int(x) for x in re.findall(r"^<stdin>:(\d+): \S", err, re.M)]
        check(reported == bad, f"reported lines {reported}, want {bad}\n{err}")
        check("\\u0000" in err, f"the reason does not name \\u0000:\n{err}")
        expect_counted(m, "shm", 2, before)


def test_repeat_sends_the_input_n_times(build):
    with mt.Mixd(build) as m:
        lines = [good_line(i) for i in range(10)] + ["bad"]
        before, rc, out, err = send_and_count(build, m, lines, "shm",
                                              extra=["--repeat", "5"])
        check(rc == 1, f"exit {rc}: {err}")
        # a bad line is reported and counted once, not once per pass
        check(summary(out) == (50, 0, 1), out)
        check(err.count("<stdin>:11:") == 1, err)
        expect_counted(m, "shm", 50, before)


def test_many_records_are_not_dropped(build):
    """More records than the smallest ring holds: the default waiting for
    mixd every few hundred records keeps a file from being dropped."""
    with mt.Mixd(build) as m:
        lines = [good_line(i) for i in range(2000)]
        before, rc, out, err = send_and_count(build, m, lines, "shm",
                                              extra=["--ring-bytes", str(256 * 1024),
                                                     "--repeat", "5"])
        check(rc == 0, f"exit {rc}\nstdout: {out}\nstderr: {err}")
        check(summary(out) == (10000, 0, 0), out)
        expect_counted(m, "shm", 10000, before)
        # large records: the default waits by bytes, not by records
        big = [{"context.protocol": "http", "request.path": "/" + "x" * 12000}] * 3000
        before, rc, out, err = send_and_count(build, m, big, "shm",
                                              extra=["--ring-bytes", str(256 * 1024)])
        check(rc == 0 and summary(out) == (3000, 0, 0), f"exit {rc}\n{out}\n{err}")
        expect_counted(m, "shm", 3000, before)


def test_no_mixd_flush_times_out_exit_2(build):
    """Records mixd never took are not "sent": the summary says 0 and the
    message how many were lost."""
    with tempfile.TemporaryDirectory() as d:
        rc, out, err = mt.report(build, f"unix://{d}/nobody.sock",
                                 [good_line(0), good_line(1)],
                                 extra=["--flush-timeout", "300"])
    check(rc == 2, f"exit {rc}, want 2\nstdout: {out}\nstderr: {err}")
    check("flush timed out" in err and "2 records never reached mixd" in err and
          "are lost" in err, err)
    check(summary(out) == (0, 0, 0), out)


def test_records_mixd_holds_are_not_lost(build):
    """A flush that times out because mixd is stopped (SIGSTOP) while it
    holds the ring: the records are mixd's, taken when it goes on, and not
    reported lost."""
    with mt.Mixd(build) as m:
        before = counted(m, "shm")
        os.kill(m.pid(), signal.SIGSTOP)
        try:
            rc, out, err = mt.report(build, m.address, [good_line(i) for i in range(5)],
                                     extra=["--flush-timeout", "300"])
        finally:
            os.kill(m.pid(), signal.SIGCONT)
        check(rc == 2 and "holds the records" in err and "lost" not in err,
              f"exit {rc}\nstdout: {out}\nstderr: {err}")
        check(summary(out) == (5, 0, 0), out)
        expect_counted(m, "shm", 5, before)


def test_integers_are_read_from_their_text(build):
    """An INT64 written with a fraction or an exponent is taken when its
    text is an integer, and refused when it is not, whatever the double
    it rounds to; map keys twice and invalid UTF-8 are bad lines."""
    lines = [
        '{"request.size": 9007199254740993.0}',        # 1: an integer past 2^53
        '{"request.size": 1.0000000000000001}',        # 2: not one (rounds to 1)
        '{"request.size": 12345678901234567e0}',       # 3: one
        '{"request.size": 2.50e1}',                    # 4: 25
        '{"request.size": -0.0e5}',                    # 5: 0
        '{"request.size": 1e19}',                      # 6: past int64
        '{"request.size": -9.223372036854775808e18}',  # 7: int64's least
        '{"request.size": 0.05e2}',                    # 8: 5
        '{"request.size": 5e-1}',                      # 9: not one
        '{"source.labels": {"app": "x", "app": "y"}}',  # 10: a key twice
        '{"source.labels": {"a": "x", "b": "y"}}',     # 11
        '{"context.protocol": "a\udcffb"}',           # 12: the byte 0xff
        '{"context.protocol": "caf\u00e9"}',          # 13: é, escaped
        '{"context.protocol": "café"}',                # 14: é, UTF-8
        '{"request.size": 1e9223372036854775807}',     # 15: past int64
        '{"request.size": 0.01e-9223372036854775808}', # 16: not one
    ]
    bad = [2, 6, 9, 10, 12, 15, 16]
    with mt.Mixd(build) as m:
        before, rc, out, err = send_and_count(build, m, lines, "shm")
        check(rc == 1, f"exit {rc}, want 1\nstdout: {out}\nstderr: {err}")
        reported = [int(x) for x in re.findall(r"^<stdin>:(\d+): \S", err, re.M)]
        check(reported == bad, f"reported lines {reported}, want {bad}\n{err}")
        check("expected an integer, got 1.0000000000000001" in err, err)
        check("integer out of the int64 range, got 1e9223372036854775807" in err and
              "expected an integer, got 0.01e-9223372036854775808" in err, err)
        check('key "app" appears twice' in err, err)
        check("invalid UTF-8 at column 24" in err, err)
        check(summary(out) == (len(lines) - len(bad), 0, len(bad)), out)
        expect_counted(m, "shm", len(lines) - len(bad), before)


def test_a_line_too_long_is_rejected_and_reading_goes_on(build):
    """A line over 1 MiB cannot be a record: it is reported, skipped
    without being held in memory whole, and the lines after it are sent."""
    with mt.Mixd(build) as m:
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", dir=m.tmp,
                                         delete=False) as f:
            f.write(json.dumps(good_line(0)) + "\n")
            f.write('{"request.path": "' + "x" * (3 << 20) + '"}\n')
            for i in range(1, 6):
                f.write(json.dumps(good_line(i)) + "\n")
            # 1 MiB and a byte, the last line, without its newline: the
            # limit is the same with one or without
            f.write(" " * ((1 << 20) + 1))
        before = counted(m, "shm")
        rc, out, err = mt.report(build, m.address, [], files=[f.name])
        check(rc == 1, f"exit {rc}, want 1\nstdout: {out}\nstderr: {err}")
        check(f"{f.name}:2: line longer than 1048576 bytes" in err and
              f"{f.name}:8: line longer than 1048576 bytes" in err, err)
        check(summary(out) == (6, 0, 2), out)
        expect_counted(m, "shm", 6, before)


def test_sigterm_stops_reading_and_reports(build):
    """SIGTERM (or SIGINT) mid-input: what was read is flushed to mixd and
    the summary printed, exit 2 since not all the input went."""
    with mt.Mixd(build) as m:
        binary = os.path.join(build, "mixd-report")
        before = counted(m, "shm")
        p = subprocess.Popen([binary, "--address", m.address, "--rate", "50"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        # less than a pipe holds, so that the write does not wait; the
        # pipe stays open: mixd-report may be waiting for more
        text = "".join(json.dumps(good_line(i)) + "\n" for i in range(100))
        check(len(text) < 60000, len(text))
        p.stdin.write(text.encode())
        p.stdin.flush()
        time.sleep(0.6)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=mt._t(30))
        out, err = out.decode(), err.decode()
        check(p.returncode == 2, f"exit {p.returncode}\nstdout: {out}\nstderr: {err}")
        check("stopped reading" in err, err)
        sent, dropped, rejected = summary(out)
        check(0 < sent < 100 and dropped == 0 and rejected == 0, out)
        expect_counted(m, "shm", sent, before)


def test_a_summary_that_cannot_be_written_exits_2(build):
    with mt.Mixd(build) as m:
        binary = os.path.join(build, "mixd-report")
        with open("/dev/full", "w") as full:
            p = subprocess.run([binary, "--address", m.address],
                               input=(json.dumps(good_line(0)) + "\n").encode(),
                               stdout=full, stderr=subprocess.PIPE, timeout=mt._t(30))
        check(p.returncode == 2, f"exit {p.returncode}: {p.stderr!r}")
        check(b"writing the summary" in p.stderr, p.stderr)


def test_restarted_mixd_gets_records_sent_while_down(build):
    """Records written while mixd is down are drained by the next mixd
    (DESIGN.md invariant 4); mixd-report's flush waits for that."""
    with mt.Mixd(build) as m:
        m.stop()
        binary = os.path.join(build, "mixd-report")
        p = subprocess.Popen([binary, "--address", m.address, "--flush-timeout",
                              str(int(mt._t(20) * 1000))],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        text = "".join(json.dumps(good_line(i)) + "\n" for i in range(20))
        result = {}
        t = threading.Thread(target=lambda: result.update(
            zip(("out", "err"), p.communicate(text.encode(), timeout=mt._t(60)))))
        t.start()
        m.start()
        t.join()
        out = result["out"].decode()
        err = result["err"].decode()
        check(p.returncode == 0, f"exit {p.returncode}\nstdout: {out}\nstderr: {err}")
        check(summary(out) == (20, 0, 0), out)
        expect_counted(m, "shm", 20)


if __name__ == "__main__":
    mt.main([
        test_help,
        test_usage_errors_exit_2,
        test_shm_records_are_counted,
        test_socket_transport_is_counted_as_socket,
        test_bad_lines_are_reported_with_line_numbers_and_skipped,
        test_a_record_the_client_refuses_is_a_rejected_line,
        test_a_string_with_a_nul_is_rejected_not_cut,
        test_repeat_sends_the_input_n_times,
        test_many_records_are_not_dropped,
        test_no_mixd_flush_times_out_exit_2,
        test_records_mixd_holds_are_not_lost,
        test_integers_are_read_from_their_text,
        test_a_line_too_long_is_rejected_and_reading_goes_on,
        test_sigterm_stops_reading_and_reports,
        test_a_summary_that_cannot_be_written_exits_2,
        test_restarted_mixd_gets_records_sent_while_down,
    ])
