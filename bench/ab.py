#!/usr/bin/env python3
"""ab.py -- compare two builds of one benchmark on a machine whose speed drifts.

    bench/ab.py PAIRS PATTERN BIN_A BIN_B

Runs BIN_A and BIN_B one right after the other, PAIRS times (alternating
which goes first), with this environment (so MIXD_BENCH_CASE=K picks the
case). From each run it takes the median on the first output line matching
the regular expression PATTERN, and prints each pair, the median of each
binary's medians, and the median of the per-pair ratios B/A: the figure to
quote, since both halves of a pair ran in the same phase of the machine.

    MIXD_BENCH_CASE=1 bench/ab.py 8 'median' old/bench/bench_agg build/bench/bench_agg
"""
import os
import re
import statistics
import subprocess
import sys


def median_of(binary, pattern):
    out = subprocess.run([binary], capture_output=True, text=True, check=True,
                         env=os.environ).stdout
    for line in out.splitlines():
        if re.search(pattern, line):
            m = re.search(r"median ([0-9.]+)", line)
            if m:
                return float(m.group(1))
    sys.exit(f"ab.py: no line of {binary} matches {pattern!r} with a median")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    pairs, pattern, a, b = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    got = {a: [], b: []}
    ratios = []
    for i in range(pairs):
        for binary in ((a, b) if i % 2 == 0 else (b, a)):
            got[binary].append(median_of(binary, pattern))
        ratios.append(got[b][-1] / got[a][-1])
        print(f"pair {i + 1}: A {got[a][-1]:g}  B {got[b][-1]:g}", flush=True)
    for name, binary in (("A", a), ("B", b)):
        print(f"{name} {binary}: median of medians {statistics.median(got[binary]):g}")
    print(f"median ratio B/A over {pairs} pairs: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
