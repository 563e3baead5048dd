#!/bin/sh
# Install the Debian packages mixd needs to build, test and run.
# Idempotent: installs only what is missing and runs `apt-get update` only
# then. Non-interactive. Needs root (or sudo) only when something is missing.
set -eu

PKGS="build-essential cmake pkg-config clang libclang-rt-14-dev
liburing-dev libck-dev libxxhash-dev libcurl4-openssl-dev libcjson-dev
libmicrohttpd-dev libyaml-dev zlib1g-dev libisal-dev libcmocka-dev
prometheus curl python3 procps groff-base"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

echo "mixd: installing Debian packages:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
