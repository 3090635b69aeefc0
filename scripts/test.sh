#!/usr/bin/env bash
# The test command: installs what is needed, then runs the suite.
# As root it runs the suite twice: as root, then as an unprivileged user on a
# readable copy of the tree (which needs /dev/net/tun usable by that user, as on
# GitHub runners: we chmod it 0666).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

run_pytest() {
  local rc=0
  .venv/bin/python -m pytest "$@" || rc=$?
  if [ "$rc" = 5 ]; then echo "test: pytest collected no tests: failing" >&2; return 1; fi
  return "$rc"
}

echo "== mypy --strict pytest_vdens"
.venv/bin/python -m mypy pytest_vdens
echo "== ruff check"
.venv/bin/python -m ruff check --no-cache pytest_vdens tests benchmarks examples docs conftest.py
if [ -z "${PYTEST_VDENS_ROOT_ONLY:-}" ]; then  # once: not again in the unprivileged copy
  echo "== sphinx-build -W (docs)"
  rm -rf docs/_build
  .venv/bin/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
fi
echo "== pytest as $(id -un) (uid $(id -u))"
# what this run starts carries the token: the leak check finds what outlives it
PYTEST_VDENS_RUN=$(cat /proc/sys/kernel/random/uuid)
export PYTEST_VDENS_RUN
taps=$(mktemp)
copy=""
# a killed run leaves no temporary file either
trap 'rm -f "$taps"; [ -z "$copy" ] || rm -rf "$copy"' EXIT
trap 'exit 143' TERM HUP
trap 'exit 130' INT
bash scripts/leakcheck.sh --record "$taps"
rc=0
run_pytest tests examples -p no:cacheprovider -ra "$@" || rc=$?
echo "== leak check"
bash scripts/leakcheck.sh "$taps" || { [ "$rc" != 0 ] || rc=1; }
[ "$rc" = 0 ] || exit "$rc"

if [ "$(id -u)" = 0 ] && [ -z "${PYTEST_VDENS_ROOT_ONLY:-}" ]; then
  user=${PYTEST_VDENS_TEST_USER:-vdenstest}
  id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
  chmod 0666 /dev/net/tun
  copy=$(mktemp -d /tmp/vdens-unpriv.XXXXXX)
  tar --exclude=./.venv --exclude=./.git --exclude='*.egg-info' -cf - . | tar -C "$copy" -xf -
  chown -R "$user": "$copy"
  echo "== again as unprivileged user $user, in $copy"
  runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$(getent passwd "$user" | cut -d: -f6)" \
    PYTEST_VDENS_ROOT_ONLY=1 bash "$copy/scripts/test.sh" "$@"
fi
