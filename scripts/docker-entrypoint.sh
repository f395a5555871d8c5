#!/usr/bin/env bash
set -euo pipefail
bash /opt/telegen/scripts/setup-host.sh --runtime >&2
exec /opt/telegen/.venv/bin/telegen "$@"
