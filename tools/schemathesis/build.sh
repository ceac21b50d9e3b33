#!/usr/bin/env bash
# Installs the pinned Schemathesis (requirements.txt in this directory: exact
# versions with hashes, installed with pip --require-hashes) into a virtual
# environment at <repo root>/bin/schemathesis-venv, for the e2e test that
# fuzzes the internal API against docs/openapi.yaml. Used by the Makefile and,
# when the venv is missing, by that test. Idempotent and flock-serialised;
# FORCE=1 reinstalls, PYTHON picks the interpreter (3.9 or newer). See
# tools/pyvenv/build.sh.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../pyvenv/build.sh" schemathesis \
	'import importlib.metadata as m; print("schemathesis", m.version("schemathesis"))'
