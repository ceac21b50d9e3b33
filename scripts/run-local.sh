#!/usr/bin/env bash
# `make run`: the whole thing locally on embedded defaults. A dev homeserver
# (the pinned Dendrite; HOMESERVER=synapse for the pinned Synapse) and the
# bridge on SQLite, both on loopback, with the bridge's registration installed
# in the homeserver. State lives in .run/ (.run/synapse/ for Synapse) and is
# kept between runs; `make clean` removes it. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HOMESERVER=${HOMESERVER:-dendrite}
case "$HOMESERVER" in
dendrite) RUN_DIR=${RUN_DIR:-.run} ;;
synapse) RUN_DIR=${RUN_DIR:-.run/synapse} ;;
*) echo "HOMESERVER=$HOMESERVER: want dendrite or synapse" >&2; exit 2 ;;
esac
HS_PORT=${HS_PORT:-8008}
AS_PORT=${AS_PORT:-29330}
SERVER_NAME=${SERVER_NAME:-localhost}
DEMO_USER=${DEMO_USER:-demo}
DEMO_PASSWORD=${DEMO_PASSWORD:-demo-password}
API_PORT=${API_PORT:-7025}
METRICS_PORT=${METRICS_PORT:-9100}
# The bridge refuses a service secret shorter than 24 characters.
dev_secret=dev-internal-service-secret-0123456789
SECRET=${INTERNAL_SERVICE_SECRET:-$dev_secret}
mkdir -p "$RUN_DIR"
config="$RUN_DIR/config.yaml"
registration="$RUN_DIR/registration.yaml"

# A config written by an earlier run may hold the old default secret, now too short.
if [ -f "$config" ] && grep -q '^    service_secret: dev-secret-token$' "$config"; then
	sed -i.bak "s/^    service_secret: dev-secret-token\$/    service_secret: ${dev_secret}/" "$config"
	rm -f "$config.bak"
fi

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
internal_api:
    port: ${API_PORT}
    service_secret: ${SECRET}
metrics:
    listen: 127.0.0.1:${METRICS_PORT}
permissions:
    "@${DEMO_USER}:${SERVER_NAME}": admin
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
bin/devhomeserver -kind "$HOMESERVER" -dir "$RUN_DIR/homeserver" -port "$HS_PORT" -server-name "$SERVER_NAME" \
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

# Something real to look at: a city room with an agent in it.
api() { curl -fsS -H "X-Internal-Service-Token: $SECRET" -H 'Content-Type: application/json' "$@"; }
room=$(api -X POST "http://127.0.0.1:${API_PORT}/internal/matrix/rooms/create" \
	-d '{"slug":"demo","name":"Demo","visibility":"public","topic":"Try the DAARION bridge"}' | sed 's/.*"matrix_room_id":"\([^"]*\)".*/\1/')
api -X PUT "http://127.0.0.1:${API_PORT}/internal/matrix/users/agent:guide/display-name" -d '{"display_name":"Guide"}' >/dev/null
api -X POST "http://127.0.0.1:${API_PORT}/internal/matrix/send" -H 'Idempotency-Key: demo-welcome' \
	-d '{"city_slug":"demo","sender":"agent:guide","body":"Welcome to DAARION City! I am an agent, posting through the bridge."}' >/dev/null

cat <<TXT

The DAARION Matrix bridge is running.
  homeserver   http://127.0.0.1:${HS_PORT}  (${HOMESERVER}, server name ${SERVER_NAME})
  bridge       http://127.0.0.1:${AS_PORT}  (appservice endpoint; log: ${RUN_DIR}/bridge.log)
  internal API http://127.0.0.1:${API_PORT}  (X-Internal-Service-Token: ${SECRET})
  metrics      http://127.0.0.1:${METRICS_PORT}/metrics
  database     ${RUN_DIR}/bridge.db (SQLite)
  demo human   @${DEMO_USER}:${SERVER_NAME}, password ${DEMO_PASSWORD} (a bridge admin)
  demo room    #city_demo:${SERVER_NAME} (${room}), where agent:guide has posted a welcome

Try next, in another terminal:
  # post as an agent, list city rooms, read the room's history
  curl -s -H 'X-Internal-Service-Token: ${SECRET}' -H 'Content-Type: application/json' \\
    -X POST http://127.0.0.1:${API_PORT}/internal/matrix/send \\
    -d '{"city_slug":"demo","sender":"agent:guide","body":"Hello again"}'
  curl -s -H 'X-Internal-Service-Token: ${SECRET}' http://127.0.0.1:${API_PORT}/internal/matrix/rooms
  curl -s -H 'X-Internal-Service-Token: ${SECRET}' "http://127.0.0.1:${API_PORT}/internal/matrix/rooms/${room}/messages?limit=5"
  # long-poll what Matrix sends the bridge (Ctrl-C to stop)
  curl -s -H 'X-Internal-Service-Token: ${SECRET}' "http://127.0.0.1:${API_PORT}/internal/matrix/sync?timeout=30000"
  # log in as the demo human with any Matrix client at http://127.0.0.1:${HS_PORT}, join #city_demo:${SERVER_NAME},
  # and DM @daarion-bot:${SERVER_NAME} "help" for the admin commands. Or with curl:
  TOKEN=\$(curl -s -X POST http://127.0.0.1:${HS_PORT}/_matrix/client/v3/login \\
    -d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"${DEMO_USER}"},"password":"${DEMO_PASSWORD}"}' \\
    | sed 's/.*"access_token":"\\([^"]*\\)".*/\\1/')
  curl -s -X POST -H "Authorization: Bearer \$TOKEN" "http://127.0.0.1:${HS_PORT}/_matrix/client/v3/join/%23city_demo:${SERVER_NAME}"
  # every event the homeserver pushed, as the bridge stored it
  sqlite3 ${RUN_DIR}/bridge.db 'SELECT position, event_type, sender FROM event_log ORDER BY position DESC LIMIT 10'

Press Ctrl-C to stop both.
TXT
wait -n "${pids[@]}" || true
echo "a process exited; stopping" >&2
