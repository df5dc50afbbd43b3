#!/usr/bin/env bash
# Make sure the Debian packages the tests need are installed:
#   bash tests/need.sh busybox-static postgresql musl-tools python3-venv
# A package that is missing is installed with apt-get when we are root (the
# package lists are updated once, if the first try fails); otherwise this says
# what to install and exits 1. On a system without dpkg nothing is checked:
# the test that needs a tool then says which one is missing.
set -euo pipefail
command -v dpkg-query >/dev/null 2>&1 || exit 0
missing=()
for pkg in "$@"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "tests/need.sh: missing Debian packages: ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "tests/need.sh: installing ${missing[*]}" >&2
# One installer at a time: test binaries run in parallel.
exec 9>/tmp/warmpool-need.lock
flock 9
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
