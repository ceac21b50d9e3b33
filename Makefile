# DAARION Matrix bridge.
#   make run    start a local dev homeserver (Dendrite; HOMESERVER=synapse for Synapse) and the bridge on SQLite
#   make test   every test, against real PostgreSQL, SQLite, Synapse and Dendrite
#   make bench  benchmarks: transaction ingest (loadgen) and the rig (rigbench); see docs/benchmarks.md
#   make bench-e2ee  end-to-bridge encryption's cost on Synapse (e2eebench, ~12 min); see docs/benchmarks.md
#   make bench-e2e   the whole bridge binary end to end: throughput through every consumer vs mautrix,
#                    1-event transactions, webhook/NATS/sync latency, Synapse's ceiling (e2ebench, ~10 min;
#                    also the last part of `make bench`)
#   make soak   chaos soak on the real rig (DURATION=10m, SEED=…; see docs/reliability.md)

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/daarion/matrix-bridge/pkg/bridge.Version=$(VERSION)
BIN      := bin
TEST_TIMEOUT ?= 30m
# End-to-bridge encryption uses mautrix's crypto on goolm, its pure-Go Olm
# (without the tag mautrix needs the C libolm). Every go command here, and
# the ones the tests and the soak run, build with it.
export GOFLAGS := -tags=goolm $(GOFLAGS)

.PHONY: all build dendrite synapse schemathesis postgres test vet fmt-check unit bench bench-e2ee bench-e2e soak run clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/bridge ./cmd/bridge

# The pinned test homeserver, built from tools/dendrite (its own go.mod).
dendrite:
	bash tools/dendrite/build.sh

# The pinned production homeserver for tests: Synapse from PyPI with hashes
# (tools/synapse/requirements.txt) in a venv at bin/synapse-venv.
synapse:
	bash tools/synapse/build.sh

# The schema-driven fuzzer of the internal API (e2e TestInternalAPIMatchesOpenAPI):
# Schemathesis from PyPI with hashes (tools/schemathesis/requirements.txt) in a
# venv at bin/schemathesis-venv.
schemathesis:
	bash tools/schemathesis/build.sh

# PostgreSQL's server binaries for the throwaway test clusters (Debian's
# postgresql package, installed only when missing).
postgres:
	bash tools/postgres/install.sh

# The e2e tests' E2EE client (e2e/jsclient: matrix-js-sdk from npm, pinned by
# package-lock.json), installed when node_modules is missing or older than
# the lock file; the e2e tests run the same npm ci themselves if needed.
.PHONY: jsclient
jsclient: e2e/jsclient/node_modules/.npm-ci-stamp
e2e/jsclient/node_modules/.npm-ci-stamp: e2e/jsclient/package-lock.json
	cd e2e/jsclient && npm ci --no-audit --no-fund
	touch $@

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Every test, with the race detector, against the real parts.
test: postgres dendrite synapse schemathesis jsclient fmt-check vet
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

bench: build dendrite synapse postgres
	$(GO) run ./cmd/loadgen $(BENCH_ARGS)
	$(GO) run ./cmd/rigbench $(RIGBENCH_ARGS)
	$(GO) run ./cmd/e2ebench $(E2EBENCH_ARGS)

# End-to-bridge encryption's cost (issue 13): a Go E2EE client's messages
# through Synapse and the bridge (its own process, built by the bench) to a
# webhook, encrypted vs clear, and an agent's sends into both rooms. Not
# part of `bench`: both databases take about 12 minutes on 2 cores.
E2EEBENCH_ARGS ?= -db sqlite,postgres
bench-e2ee: synapse postgres
	$(GO) run ./cmd/e2eebench $(E2EEBENCH_ARGS)

# The whole bridge binary as deployed, end to end (issue 15): its own process
# (built by the bench from this tree, or E2EBENCH_ARGS=-bridge-bin PATH) with
# every consumer on, Dendrite idle while the bench pushes transactions, on
# PostgreSQL and SQLite, beside mautrix's handler; webhook (a receiver
# process), NATS and sync latency; and a real Synapse with real clients.
# Also the last part of `bench`; about 10 minutes on 2 cores.
E2EBENCH_ARGS ?=
bench-e2e: dendrite synapse postgres
	$(GO) run ./cmd/e2ebench $(E2EBENCH_ARGS)

# The chaos soak: the bridge (built by the soak), Dendrite, PostgreSQL, NATS
# and a webhook receiver under load and faults; stops by itself after
# DURATION plus a bounded drain. Exit 1 if anything was lost or out of order.
DURATION ?= 10m
SEED     ?= 0
soak: dendrite
	$(GO) build -o $(BIN)/soak ./cmd/soak
	$(BIN)/soak -duration $(DURATION) -seed $(SEED) $(SOAK_ARGS)

# Starts a dev homeserver and the bridge locally on embedded defaults (SQLite,
# loopback): Dendrite by default, HOMESERVER=synapse for the pinned Synapse.
HOMESERVER ?= dendrite
run: build $(HOMESERVER)
	HOMESERVER=$(HOMESERVER) bash scripts/run-local.sh

clean:
	rm -rf $(BIN) .run

# Native Go fuzzing of every decoder of untrusted input, each target for
# FUZZTIME (go test -fuzz takes one target of one package at a time). A
# failing input is written to the package's testdata/fuzz/, which plain
# `go test` (and so `make test`) replays. Minimizing is kept short so that a
# target stops on time; FUZZFLAGS=-parallel=1 leaves a core free.
FUZZTIME         ?= 30s
FUZZMINIMIZETIME ?= 5s
FUZZFLAGS        ?=
.PHONY: fuzz
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseTransaction$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/appservice
	$(GO) test -run '^$$' -fuzz '^FuzzTransactionHandler$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/appservice
	$(GO) test -run '^$$' -fuzz '^FuzzQueryPaths$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/appservice
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeJSON$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/internalapi
	$(GO) test -run '^$$' -fuzz '^FuzzCreateRoomBody$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/rooms
	$(GO) test -run '^$$' -fuzz '^FuzzCreateRequestValidate$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/rooms
	$(GO) test -run '^$$' -fuzz '^FuzzValidateIDs$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/rooms
	$(GO) test -run '^$$' -fuzz '^FuzzListQuery$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/rooms
	$(GO) test -run '^$$' -fuzz '^FuzzSendRequest$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/messaging
	$(GO) test -run '^$$' -fuzz '^FuzzApplyRelation$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/messaging
	$(GO) test -run '^$$' -fuzz '^FuzzMembershipRequest$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/messaging
	$(GO) test -run '^$$' -fuzz '^FuzzMapper$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/identity
	$(GO) test -run '^$$' -fuzz '^FuzzSyncToken$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/syncapi
	$(GO) test -run '^$$' -fuzz '^FuzzSyncRequest$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/syncapi
	$(GO) test -run '^$$' -fuzz '^FuzzCheckURL$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/delivery/webhook
	$(GO) test -run '^$$' -fuzz '^FuzzSignVerify$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/delivery/webhook
	$(GO) test -run '^$$' -fuzz '^FuzzSubscribe$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/delivery/webhook
	$(GO) test -run '^$$' -fuzz '^FuzzConfig$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/config
	$(GO) test -run '^$$' -fuzz '^FuzzEnsureTokens$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/config
	$(GO) test -run '^$$' -fuzz '^FuzzMap$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $(FUZZFLAGS) ./pkg/mapping
