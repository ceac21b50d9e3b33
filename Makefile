# DAARION Matrix bridge.
#   make run    start a local dev homeserver (Dendrite) and the bridge on SQLite
#   make test   every test, against real PostgreSQL, SQLite and Dendrite
#   make bench  transaction ingest benchmark (see docs/benchmarks.md)

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/daarion/matrix-bridge/pkg/bridge.Version=$(VERSION)
BIN      := bin
TEST_TIMEOUT ?= 30m

.PHONY: all build dendrite test vet fmt-check unit bench run clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/bridge ./cmd/bridge

# The pinned test homeserver, built from tools/dendrite (its own go.mod).
dendrite:
	bash tools/dendrite/build.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Every test, with the race detector, against the real parts.
test: dendrite fmt-check vet
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

bench: build
	$(GO) run ./cmd/loadgen $(BENCH_ARGS)

# Starts Dendrite and the bridge locally on embedded defaults (SQLite, loopback).
run: build dendrite
	bash scripts/run-local.sh

clean:
	rm -rf $(BIN) .run
