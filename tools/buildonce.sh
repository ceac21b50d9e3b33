# Sourced by the build scripts (tools/dendrite/build.sh, tools/pyvenv/build.sh)
# so that a build runs once and only when needed.
#
# exit_when_built <lock file>: ends the calling script (exit 0) when its
# up_to_date function says there is nothing to build and FORCE is not 1.
# Otherwise it returns holding <lock file> with flock(1), when that is
# available, until the script exits: concurrent callers (several test packages
# starting at once) are serialised, and one that waited checks up_to_date
# again, as another may have finished the build meanwhile.

exit_when_built() {
	local lock="$1"
	if [[ "${FORCE:-0}" != "1" ]] && up_to_date; then
		exit 0
	fi
	mkdir -p "$(dirname "${lock}")"
	if command -v flock >/dev/null 2>&1; then
		exec 9>"${lock}"
		flock 9
		if [[ "${FORCE:-0}" != "1" ]] && up_to_date; then
			exit 0
		fi
	fi
}
