#!/bin/sh
# Run every benchmark in build directory $1 (default build/).
set -eu
dir=${1:-build}
for b in "$dir"/bench/bench_*; do
	[ -x "$b" ] || continue
	"$b"
	echo
done
