#!/usr/bin/env bash
# Installs PostgreSQL's server binaries (Debian's postgresql package) when
# they are missing: pkg/testrig starts throwaway clusters with them. Used by
# `make test`; a no-op when /usr/lib/postgresql/*/bin/initdb exists (or
# PG_BINDIR points at a directory holding initdb).
set -euo pipefail

if [[ -n "${PG_BINDIR:-}" && -x "${PG_BINDIR}/initdb" ]] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "PostgreSQL's server binaries are missing and there is no apt-get: install PostgreSQL (initdb, postgres) and set PG_BINDIR" >&2
	exit 1
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
	command -v sudo >/dev/null 2>&1 || { echo "installing postgresql needs root (or sudo)" >&2; exit 1; }
	sudo=(sudo)
fi
echo "installing Debian's postgresql package (server binaries for the test clusters) ..." >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql >/dev/null
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
