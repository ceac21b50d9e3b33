#!/usr/bin/env bash
# Regenerates requirements.txt from requirements.in (tools/pyvenv/lock.sh).
# Run after changing requirements.in.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../pyvenv/lock.sh" schemathesis
