#!/usr/bin/env bash
# Installs one pinned Python tool (tools/<name>/requirements.txt: exact
# versions with hashes, installed with pip --require-hashes) into a virtual
# environment at <repo root>/bin/<name>-venv. Called by tools/<name>/build.sh:
#
#   bash tools/pyvenv/build.sh <name> <python check>
#
# <python check> is run with the venv's python once the install is done (it
# imports the tool and prints its version); a failing check fails the build.
#
# Idempotent: nothing is reinstalled while the venv's stamp is newer than
# requirements.txt. Set FORCE=1 to reinstall anyway. PYTHON picks the
# interpreter (default python3).
#
# Concurrent callers (several test packages starting at once) are serialised
# with flock(1) when it is available, so the venv is built once.
set -euo pipefail

name="${1:?usage: build.sh <tool name> <python check>}"
check="${2:?usage: build.sh <tool name> <python check>}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="${root}/tools/${name}"
bin_dir="${root}/bin"
venv="${bin_dir}/${name}-venv"
stamp="${venv}/.installed"
python="${PYTHON:-python3}"

up_to_date() {
	[[ -x "${venv}/bin/python" && -f "${stamp}" && "${stamp}" -nt "${here}/requirements.txt" ]]
}

# shellcheck source=../buildonce.sh
source "${root}/tools/buildonce.sh"
exit_when_built "${bin_dir}/.${name}-build.lock"

echo "installing ${name} (tools/${name}/requirements.txt) into ${venv} ..." >&2
start=$(date +%s)
# The stamp is written last: a build that was killed leaves no stamp, and the
# next caller starts again from an empty venv.
rm -rf "${venv}"
"${python}" -m venv "${venv}"
# --require-hashes: every package, dependencies included, must match a hash in
# the file; --no-deps: nothing outside the file is pulled in.
"${venv}/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
	--require-hashes --no-deps -r "${here}/requirements.txt"
"${venv}/bin/python" -c "${check}" >&2
touch "${stamp}"
echo "installed ${venv} in $(($(date +%s) - start))s" >&2
