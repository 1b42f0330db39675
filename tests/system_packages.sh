#!/usr/bin/env bash
# System packages the tests need: a PostgreSQL server (database destinations) and Chromium
# (the HTML report in a real browser). Installed with apt when we are root; otherwise this
# fails with the exact command to run. Tests never skip for want of them.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

command="apt-get update && apt-get install -y ${missing[*]}"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing system packages for the tests: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "The tests need: ${missing[*]}. Install them with (as root):" >&2
  echo "  $command" >&2
  exit 1
fi
