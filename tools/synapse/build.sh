#!/usr/bin/env bash
# Installs the pinned Synapse homeserver (requirements.txt in this directory:
# exact versions with hashes, installed with pip --require-hashes) into a
# virtual environment at <repo root>/bin/synapse-venv. Used by the Makefile and,
# when the venv is missing, by pkg/testrig. Idempotent and flock-serialised;
# FORCE=1 reinstalls, PYTHON picks the interpreter (Synapse 1.163 needs 3.10
# or newer). See tools/pyvenv/build.sh.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../pyvenv/build.sh" synapse \
	'import synapse, psycopg2; print("synapse", synapse.__version__)'
