#!/usr/bin/env bash
# Installs the pinned Synapse homeserver (requirements.txt in this directory:
# exact versions with hashes, installed with pip --require-hashes) into a
# virtual environment at <repo root>/bin/synapse-venv. Used by the Makefile and,
# when the venv is missing, by pkg/testrig.
#
# Idempotent: nothing is reinstalled while the venv's stamp is newer than
# requirements.txt. Set FORCE=1 to reinstall anyway. PYTHON picks the
# interpreter (default python3; Synapse 1.163 needs 3.10 or newer).
#
# Concurrent callers (several test packages starting at once) are serialised
# with flock(1) when it is available, so the venv is built once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
bin_dir="${root}/bin"
venv="${bin_dir}/synapse-venv"
stamp="${venv}/.installed"
python="${PYTHON:-python3}"

up_to_date() {
	[[ -x "${venv}/bin/python" && -f "${stamp}" && "${stamp}" -nt "${here}/requirements.txt" ]]
}

if [[ "${FORCE:-0}" != "1" ]] && up_to_date; then
	exit 0
fi

mkdir -p "${bin_dir}"

if command -v flock >/dev/null 2>&1; then
	exec 9>"${bin_dir}/.synapse-build.lock"
	flock 9
	# Someone else may have finished the install while we waited for the lock.
	if [[ "${FORCE:-0}" != "1" ]] && up_to_date; then
		exit 0
	fi
fi

echo "installing Synapse (tools/synapse/requirements.txt) into ${venv} ..." >&2
start=$(date +%s)
# The stamp is written last: a build that was killed leaves no stamp, and the
# next caller starts again from an empty venv.
rm -rf "${venv}"
"${python}" -m venv "${venv}"
# --require-hashes: every package, dependencies included, must match a hash in
# the file; --no-deps: nothing outside the file is pulled in.
"${venv}/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
	--require-hashes --no-deps -r "${here}/requirements.txt"
"${venv}/bin/python" -c 'import synapse, psycopg2; print("synapse", synapse.__version__)' >&2
touch "${stamp}"
echo "installed ${venv} in $(($(date +%s) - start))s" >&2
