#!/usr/bin/env bash
# Start-up time and memory of the pinned test homeservers, as pkg/testrig
# runs them (fresh directory, SQLite, loopback): for each of Synapse and
# Dendrite, RUNS times, the seconds from launch until /_matrix/client/versions
# answers, and the homeserver process's resident memory (VmRSS) right after
# start and after registering a user and creating a room. Figures go in
# docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-3}
go build -o bin/devhomeserver ./cmd/devhomeserver
bash tools/dendrite/build.sh
bash tools/synapse/build.sh
rss() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
for kind in synapse dendrite; do
	for run in $(seq 1 "$RUNS"); do
		dir=$(mktemp -d)
		out="$dir/out"
		start=$(date +%s.%N)
		bin/devhomeserver -kind "$kind" -dir "$dir/hs" -port 0 -user "probe:probe-password-1" >"$out" 2>&1 &
		pid=$!
		until grep -q "is running" "$out" 2>/dev/null; do
			kill -0 "$pid" 2>/dev/null || { cat "$out"; exit 1; }
			sleep 0.02
		done
		ready=$(date +%s.%N)
		until grep -q "press Ctrl-C" "$out"; do sleep 0.02; done
		child=$(pgrep -P "$pid" | head -1)
		url=$(sed -n 's/^  homeserver URL: *//p' "$out")
		token=$(curl -fsS -X POST "$url/_matrix/client/v3/login" -d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"probe"},"password":"probe-password-1"}' | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
		curl -fsS -X POST -H "Authorization: Bearer $token" "$url/_matrix/client/v3/createRoom" -d '{"name":"probe"}' >/dev/null
		printf '%s run %d: ready in %.2f s, RSS %s MiB after start-up and a user, a login and a room\n' \
			"$kind" "$run" "$(echo "$ready - $start" | bc)" "$(rss "$child")"
		kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
		rm -rf "$dir"
	done
done
