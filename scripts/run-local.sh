#!/usr/bin/env bash
# `make run`: the whole thing locally on embedded defaults. A dev homeserver
# (the pinned Dendrite) and the bridge on SQLite, both on loopback, with the
# bridge's registration installed in the homeserver. State lives in .run/ and
# is kept between runs; `make clean` removes it. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUN_DIR=${RUN_DIR:-.run}
HS_PORT=${HS_PORT:-8008}
AS_PORT=${AS_PORT:-29330}
SERVER_NAME=${SERVER_NAME:-localhost}
DEMO_USER=${DEMO_USER:-demo}
DEMO_PASSWORD=${DEMO_PASSWORD:-demo-password}
mkdir -p "$RUN_DIR"
config="$RUN_DIR/config.yaml"
registration="$RUN_DIR/registration.yaml"

if [ ! -f "$config" ]; then
	cat >"$config" <<YAML
# Written by make run (scripts/run-local.sh). Every key: config.example.yaml.
homeserver:
    url: http://127.0.0.1:${HS_PORT}
    server_name: ${SERVER_NAME}
appservice:
    url: http://127.0.0.1:${AS_PORT}
    listen: 127.0.0.1:${AS_PORT}
database:
    url: sqlite:${RUN_DIR}/bridge.db
logging:
    level: debug
    format: pretty
YAML
fi
bin/bridge -g -c "$config" -r "$registration" >/dev/null

pids=()
cleanup() {
	trap - EXIT INT TERM
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

go build -o bin/devhomeserver ./cmd/devhomeserver
bin/devhomeserver -dir "$RUN_DIR/homeserver" -port "$HS_PORT" -server-name "$SERVER_NAME" \
	-registration "$registration" -user "${DEMO_USER}:${DEMO_PASSWORD}" >"$RUN_DIR/homeserver.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do
	grep -q "press Ctrl-C" "$RUN_DIR/homeserver.out" 2>/dev/null && break
	if ! kill -0 "${pids[0]}" 2>/dev/null; then
		cat "$RUN_DIR/homeserver.out"; echo "the dev homeserver did not start" >&2; exit 1
	fi
	sleep 0.5
done
cat "$RUN_DIR/homeserver.out"

bin/bridge -c "$config" >"$RUN_DIR/bridge.log" 2>&1 &
pids+=($!)
hs_token=$(sed -n 's/^ *hs_token: *//p' "$config" | tr -d "'\"")
for _ in $(seq 1 100); do
	curl -fsS -X POST -H "Authorization: Bearer $hs_token" "http://127.0.0.1:${AS_PORT}/_matrix/app/v1/ping" -d '{}' >/dev/null 2>&1 && break
	if ! kill -0 "${pids[1]}" 2>/dev/null; then
		cat "$RUN_DIR/bridge.log"; echo "the bridge did not start" >&2; exit 1
	fi
	sleep 0.2
done

cat <<TXT

The DAARION Matrix bridge is running.
  homeserver   http://127.0.0.1:${HS_PORT}  (Dendrite, server name ${SERVER_NAME})
  bridge       http://127.0.0.1:${AS_PORT}  (appservice endpoint; log: ${RUN_DIR}/bridge.log)
  database     ${RUN_DIR}/bridge.db (SQLite)
  demo human   @${DEMO_USER}:${SERVER_NAME}, password ${DEMO_PASSWORD}

Try next, in another terminal:
  # log in as the demo human and create a room; the bridge logs every event the homeserver sends it
  TOKEN=\$(curl -s -X POST http://127.0.0.1:${HS_PORT}/_matrix/client/v3/login \\
    -d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"${DEMO_USER}"},"password":"${DEMO_PASSWORD}"}' \\
    | sed 's/.*"access_token":"\\([^"]*\\)".*/\\1/')
  curl -s -X POST -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:${HS_PORT}/_matrix/client/v3/createRoom \\
    -d '{"name":"hello","invite":["@daarion-bot:${SERVER_NAME}"]}'
  # watch the bridge store it:
  tail -f ${RUN_DIR}/bridge.log
  sqlite3 ${RUN_DIR}/bridge.db 'SELECT position, event_type, sender FROM event_log ORDER BY position DESC LIMIT 10'

Press Ctrl-C to stop both.
TXT
wait -n "${pids[@]}" || true
echo "a process exited; stopping" >&2
