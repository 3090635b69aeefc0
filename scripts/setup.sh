#!/usr/bin/env bash
# Installs what pytest-vdens needs on Debian 12: system packages (when root),
# a virtualenv in .venv, and the package in editable mode with its test extras.
# Idempotent; sourced by scripts/test.sh and scripts/demo.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES=(
  libvdeplug2 vdeplug libvdeplug-slirp   # libvdeplug, its plugins, vde_plug (embedded switch)
  libcap-dev gcc python3-dev python3-venv # to build python-prctl and our C zygote
  vdens vde2 iperf3 iproute2 iputils-ping # real peers used by the tests
  tcpdump tshark                          # read the tests' pcap captures
)

if [ "$(id -u)" = 0 ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,docs]' 2>&1 \
  | { grep -vE "^(WARNING: Location|  DEPRECATION|DEPRECATION)" || true; }
