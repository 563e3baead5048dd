#!/bin/bash
# run-demo.sh -- what `make run` starts: mixd on the user's config from
# deploy/ and mixd-loadgen writing bookinfo-shaped mesh traffic into it.
# Ctrl-C (SIGINT) or SIGTERM stops both and exits 0; nothing is left running.
#
# Environment (all optional):
#   MIXD_BUILD_DIR           where mixd and mixd-loadgen are built (build)
#   MIXD_DEMO_RATE           records per second from mixd-loadgen (500)
#   MIXD_MARATHON_ADDRESS    Marathon to enrich records from
#                            (http://127.0.0.1:8080; mixd keeps serving with
#                            "unknown" workloads when none answers)
#   MIXD_MONITORING_ADDRESS  self-metrics and /healthz (127.0.0.1:9093; a
#                            demo listens on this machine only)
#   MIXD_PROMETHEUS_ADDRESS  the istio_* metrics (127.0.0.1:42422)
#
# Prints "mixd-demo: ready" once mixd answers /healthz and mixd-loadgen runs.
# bash, not sh: `wait -n` lets the script notice either child dying.
# shellcheck disable=SC2317 # the stop functions run from traps
set -eu

cd "$(dirname "$0")/.."
build=${MIXD_BUILD_DIR:-build}
rate=${MIXD_DEMO_RATE:-500}
marathon=${MIXD_MARATHON_ADDRESS:-http://127.0.0.1:8080}
monitoring=${MIXD_MONITORING_ADDRESS:-127.0.0.1:9093}
prometheus=${MIXD_PROMETHEUS_ADDRESS:-127.0.0.1:42422}
config=deploy/config/mixer-seed.yaml

say() { printf 'mixd-demo: %s\n' "$*" >&2; }

for bin in mixd mixd-loadgen; do
	if [ ! -x "$build/$bin" ]; then
		say "$build/$bin is missing: run 'make' (or set MIXD_BUILD_DIR)"
		exit 1
	fi
done

# A private directory for the socket and mixd's log, so that two demos (or a
# demo and a test) never share a socket.
rundir=$(mktemp -d "${XDG_RUNTIME_DIR:-/tmp}/mixd-demo.XXXXXX")
sock="$rundir/mixd.sock"
log="$rundir/mixd.log"
mixd_pid=""
loadgen_pid=""

# Stop loadgen first so its final flush still finds mixd, then mixd, which
# drains the rings before it exits. Each is waited for: no orphans.
stop_all() {
	if [ -n "$loadgen_pid" ]; then
		kill -TERM "$loadgen_pid" 2>/dev/null || true
		wait "$loadgen_pid" 2>/dev/null || true
		loadgen_pid=""
	fi
	if [ -n "$mixd_pid" ]; then
		kill -TERM "$mixd_pid" 2>/dev/null || true
		wait "$mixd_pid" 2>/dev/null || true
		mixd_pid=""
	fi
}

cleanup() {
	stop_all
	rm -rf "$rundir"
}

on_signal() {
	say "stopping"
	trap - INT TERM
	cleanup
	trap - EXIT
	say "stopped"
	exit 0
}

trap cleanup EXIT
trap on_signal INT TERM

show_log() {
	say "mixd's log:"
	tail -n 30 "$log" >&2 || true
}

# Each child in a session of its own (setsid; not a group leader, so it
# execs in place and keeps its pid): the terminal's Ctrl-C goes to the
# script alone, which stops loadgen before mixd, not to all three at once.
setsid "$build/mixd" --address "unix://$sock" \
	--config "$config" --configDefaultNamespace default \
	--marathon-address "$marathon" \
	--monitoring-address "$monitoring" \
	--prometheus-address "$prometheus" \
	</dev/null >"$log" 2>&1 &
mixd_pid=$!

# mixd announces the ports it bound ("mixd: monitoring on http://H:P"), which
# also covers port 0 in the addresses.
mon_port=""
prom_port=""
tries=0
while :; do
	if ! kill -0 "$mixd_pid" 2>/dev/null; then
		wait "$mixd_pid" && rc=0 || rc=$?
		mixd_pid=""
		say "mixd exited with status $rc during startup"
		show_log
		exit 1
	fi
	if [ -z "$mon_port" ]; then
		mon_port=$(sed -n 's|^mixd: monitoring on http://[^ ]*:\([0-9][0-9]*\)$|\1|p' "$log" | head -n 1)
		prom_port=$(sed -n 's|^mixd: prometheus on http://[^ ]*:\([0-9][0-9]*\)$|\1|p' "$log" | head -n 1)
	fi
	if [ -n "$mon_port" ] && [ -n "$prom_port" ] &&
		curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$mon_port/healthz"; then
		break
	fi
	tries=$((tries + 1))
	if [ "$tries" -ge 150 ]; then # 15 s
		say "mixd did not answer /healthz within 15 s"
		show_log
		exit 1
	fi
	sleep 0.1
done

setsid "$build/mixd-loadgen" --address "unix://$sock" --rate "$rate" </dev/null &
loadgen_pid=$!
sleep 0.2
if ! kill -0 "$loadgen_pid" 2>/dev/null; then
	wait "$loadgen_pid" && rc=0 || rc=$?
	loadgen_pid=""
	say "mixd-loadgen exited with status $rc at start"
	exit 1
fi

say "mixd (pid $mixd_pid) on unix://$sock, config $config, Marathon $marathon"
say "mixd-loadgen (pid $loadgen_pid) writing $rate records/s"
say "mixd's log: $log"
say "look at:"
say "  curl -s localhost:$prom_port/metrics | grep istio_requests_total"
say "  curl -s localhost:$mon_port/metrics"
say "Ctrl-C stops everything."
say "ready"

# Run until a signal, or until a child dies on its own (a failure: the
# children are in sessions of their own, so a Ctrl-C reaches the script
# alone, whose trap stops them in order).
wait -n "$mixd_pid" "$loadgen_pid" && rc=0 || rc=$?
if kill -0 "$mixd_pid" 2>/dev/null; then
	say "mixd-loadgen exited with status $rc"
else
	say "mixd exited with status $rc"
	show_log
fi
exit 1
