#!/usr/bin/env bash
# Regenerates requirements.txt (exact versions and sha256 hashes of every
# distribution PyPI publishes for them) from requirements.in, with pip-tools
# in a throwaway virtual environment. Run after changing requirements.in.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
"${PYTHON:-python3}" -m venv "${tmp}/venv"
"${tmp}/venv/bin/pip" install --quiet --disable-pip-version-check pip-tools==7.5.2
"${tmp}/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras --no-header \
	-o "${here}/requirements.txt" "${here}/requirements.in"
