# wsplice: the two commands a new user needs are `make run` and `make test`.
GO       ?= go
BIN      ?= bin
PREFIX   ?= /usr/local
ARGS     ?= --allow-private-upstreams
FUZZTIME ?= 10s
SMOKE_FUZZTIME ?= 3s

.PHONY: all build run test test-deps test-unit fmt lint vet fuzz fuzz-smoke bench deps clean

all: build

NODE_DIR = cmd/wsplice/testdata/node

deps:
	$(GO) mod download

# test-deps installs what the tests need beyond Go modules: Node's ws
# library for the interop test (node and npm come with the machine).
test-deps: deps
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error

build: deps
	$(GO) build -o $(BIN)/wsplice ./cmd/wsplice
	$(GO) build -o $(BIN)/wsplice-bench ./cmd/wsplice-bench

# run starts wsplice on 127.0.0.1:3000 (override flags with ARGS=...).
run: deps
	$(GO) run ./cmd/wsplice $(ARGS)

# test is what CI runs: formatting, vet, the race-enabled test suite, and a
# short run of every fuzz target.
test: test-deps lint
	$(GO) test -race -shuffle=on -count=1 -timeout 15m ./...
	$(MAKE) fuzz-smoke

test-unit: deps
	$(GO) test -count=1 ./...

fmt:
	gofmt -w .

lint: vet
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# FUZZ_TARGETS lists package:target pairs; `make fuzz` runs each for FUZZTIME.
FUZZ_TARGETS = \
	./wsframe:FuzzParse \
	./wsframe:FuzzRoundTrip \
	./rpc:FuzzDecode \
	./rpc:FuzzHostPolicy \
	./cmd/wsplice:FuzzParseSize \
	./splice:FuzzHandshake

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	done

fuzz-smoke:
	$(MAKE) fuzz FUZZTIME=$(SMOKE_FUZZTIME)

bench: deps
	$(GO) run ./cmd/wsplice-bench

clean:
	rm -rf $(BIN)
