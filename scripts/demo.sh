#!/usr/bin/env bash
# The demo: installs what is needed, then runs examples/, where namespaces
# talk to each other over the embedded switch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
rc=0
.venv/bin/python -m pytest examples -v -s -p no:cacheprovider "$@" || rc=$?
[ "$rc" = 5 ] && { echo "demo: no tests collected" >&2; exit 1; }
exit "$rc"
