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
echo "== pytest as $(id -un) (uid $(id -u))"
run_pytest tests -p no:cacheprovider -ra "$@"

if [ "$(id -u)" = 0 ] && [ -z "${PYTEST_VDENS_ROOT_ONLY:-}" ]; then
  user=${PYTEST_VDENS_TEST_USER:-vdenstest}
  id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
  chmod 0666 /dev/net/tun
  copy=$(mktemp -d /tmp/vdens-unpriv.XXXXXX)
  trap 'rm -rf "$copy"' EXIT
  tar --exclude=./.venv --exclude=./.git --exclude='*.egg-info' -cf - . | tar -C "$copy" -xf -
  chown -R "$user": "$copy"
  echo "== again as unprivileged user $user, in $copy"
  runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$(getent passwd "$user" | cut -d: -f6)" \
    PYTEST_VDENS_ROOT_ONLY=1 bash "$copy/scripts/test.sh" "$@"
fi
