#!/usr/bin/env bash
# Builds the pinned Dendrite homeserver (see go.mod in this directory) into
# <repo root>/bin/dendrite. Used by the Makefile and, when the binary is
# missing, by pkg/testrig.
#
# Idempotent: nothing is rebuilt while bin/dendrite exists and is newer than
# tools/dendrite/go.sum. Set FORCE=1 to rebuild anyway.
#
# Concurrent callers (e.g. several test packages starting at once) are
# serialised with flock(1) when it is available, so the binary is built once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
bin_dir="${root}/bin"
out="${bin_dir}/dendrite"

up_to_date() {
	[[ -x "${out}" && "${out}" -nt "${here}/go.sum" ]]
}

# shellcheck source=../buildonce.sh
source "${here}/../buildonce.sh"
exit_when_built "${bin_dir}/.dendrite-build.lock"

echo "building Dendrite (tools/dendrite) into ${out} ..." >&2
start=$(date +%s)
tmp="${out}.tmp.$$"
trap 'rm -f "${tmp}"' EXIT
(
	cd "${here}"
	# -mod=readonly: go.mod/go.sum here are the pin; never rewrite them from a build.
	# CGO is needed for Dendrite's SQLite driver (mattn/go-sqlite3).
	GOWORK=off CGO_ENABLED=1 go build -mod=readonly -trimpath -o "${tmp}" \
		github.com/element-hq/dendrite/cmd/dendrite
)
mv -f "${tmp}" "${out}"
trap - EXIT
echo "built ${out} in $(($(date +%s) - start))s" >&2
