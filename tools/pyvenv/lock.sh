#!/usr/bin/env bash
# Regenerates tools/<name>/requirements.txt (exact versions and sha256 hashes
# of every distribution PyPI publishes for them) from tools/<name>/requirements.in,
# with pip-tools in a throwaway virtual environment. Called by
# tools/<name>/lock.sh; run that after changing requirements.in.
set -euo pipefail
name="${1:?usage: lock.sh <tool name>}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../${name}" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
"${PYTHON:-python3}" -m venv "${tmp}/venv"
"${tmp}/venv/bin/pip" install --quiet --disable-pip-version-check pip-tools==7.5.2
"${tmp}/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras --no-header \
	-o "${here}/requirements.txt" "${here}/requirements.in"
