# wsplice: the two commands a new user needs are `make run` and `make test`.
GO       ?= go
BIN      ?= bin
PREFIX   ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR  ?= $(PREFIX)/lib/systemd/system
ARGS     ?= --allow-private-upstreams
FUZZTIME ?= 10s
# CI fuzzes by execution count, not time: with a duration, Go 1.26's fuzz
# coordinator can fail a clean run with "context deadline exceeded" when
# its deadline races a busy worker (golang/go#75804, fixed in Go 1.27).
SMOKE_FUZZTIME ?= 100000x
SOAK     ?= 5m

.PHONY: all build run test test-deps test-unit fmt lint vet fuzz fuzz-smoke bench deps clean soak install verify-units

all: build

NODE_DIR = cmd/wsplice/testdata/node

deps:
	$(GO) mod download

# test-deps installs what the tests need beyond Go modules: Node's ws
# library for the interop test (node and npm come with the machine),
# HAProxy for the scale-out test (cmd/wsplice/haproxy_test.go), systemd
# for systemd-socket-activate and systemd-analyze (cmd/wsplice/service_test.go,
# verify-units), and Chromium with chromedriver for the browser test
# (cmd/wsplice/browser_test.go).
test-deps: export DEBIAN_FRONTEND = noninteractive
test-deps: deps
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
	@command -v haproxy >/dev/null || { apt-get update -qq && apt-get install -y -qq haproxy; }
	@command -v systemd-socket-activate >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd; }
	@command -v chromedriver >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error

build: deps
	$(GO) build -o $(BIN)/wsplice ./cmd/wsplice
	$(GO) build -o $(BIN)/wsplice-bench ./cmd/wsplice-bench

# run starts wsplice on 127.0.0.1:3000 (override flags with ARGS=...).
run: deps
	$(GO) run ./cmd/wsplice $(ARGS)

# test is what CI runs: formatting, vet, the race-enabled test suite, 30
# seconds of the soak (without the race detector, so its memory figures
# mean something), and a short run of every fuzz target.
test: test-deps lint
	$(GO) test -race -shuffle=on -count=1 -timeout 15m ./...
	$(GO) test -run '^TestSoak$$' -count=1 -timeout 10m ./splice -soak=30s
	$(MAKE) fuzz-smoke
	$(MAKE) verify-units

test-unit: deps
	$(GO) test -count=1 ./...

fmt:
	gofmt -w .

lint: vet
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# vet checks Linux and, for the portable packages and fallbacks, another
# system (STYLE.md: go build and go vet pass everywhere).
vet:
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...

# FUZZ_TARGETS lists package:target pairs; `make fuzz` runs each for FUZZTIME.
FUZZ_TARGETS = \
	./wsframe:FuzzParse \
	./wsframe:FuzzRoundTrip \
	./rpc:FuzzDecode \
	./rpc:FuzzHostPolicy \
	./splice:FuzzProxyHeader \
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

# soak runs the mixed load (connects, disconnects, payloads of 1 B to
# 1 MiB, slow, stalled and dying peers) for SOAK (default 5m), checking
# every echo and that fds, goroutines and RSS do not grow. The test bounds
# its own run time (SOAK plus 3 minutes), hence -timeout 0.
soak: deps
	$(GO) test -run '^TestSoak$$' -count=1 -timeout 0 -v ./splice -soak=$(SOAK)

# install puts the binary in $(PREFIX)/bin, the systemd units in
# $(UNITDIR) with ExecStart pointing at that binary, and the example
# configuration in $(SYSCONFDIR)/wsplice/wsplice.env, unless that file
# exists: then the example goes beside it as wsplice.env.example. DESTDIR
# stages everything under another root (packaging).
install: build
	install -D -m 0755 $(BIN)/wsplice $(DESTDIR)$(PREFIX)/bin/wsplice
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/wsplice
	for f in wsplice.service wsplice.socket; do \
		sed -e 's|/usr/local/bin/wsplice|$(PREFIX)/bin/wsplice|g' -e 's|/etc/wsplice/|$(SYSCONFDIR)/wsplice/|g' \
			deploy/$$f > $(DESTDIR)$(UNITDIR)/$$f && chmod 0644 $(DESTDIR)$(UNITDIR)/$$f || exit 1; \
	done
	@env=$(DESTDIR)$(SYSCONFDIR)/wsplice/wsplice.env; [ -e "$$env" ] && env=$$env.example; \
	sed -e 's|/etc/wsplice/|$(SYSCONFDIR)/wsplice/|g' deploy/wsplice.env > "$$env" && chmod 0644 "$$env" && \
	echo "installed $$env"

# verify-units checks the units as `make install` writes them with
# systemd-analyze verify, installing into a temporary PREFIX so that
# ExecStart names a binary that exists. A warning fails it too.
verify-units:
	@command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(MAKE) --no-print-directory install PREFIX="$$tmp" SYSCONFDIR="$$tmp/etc" UNITDIR="$$tmp/lib/systemd/system" DESTDIR= >/dev/null && \
	out=$$(systemd-analyze verify "$$tmp/lib/systemd/system/wsplice.service" "$$tmp/lib/systemd/system/wsplice.socket" 2>&1); \
	rc=$$?; if [ $$rc -ne 0 ] || [ -n "$$out" ]; then \
		echo "$$out"; echo "verify-units: systemd-analyze verify of deploy/wsplice.service and deploy/wsplice.socket: exit $$rc"; exit 1; \
	fi; echo "verify-units: deploy/wsplice.service and deploy/wsplice.socket pass systemd-analyze verify"

bench: deps
	$(GO) run ./cmd/wsplice-bench

clean:
	rm -rf $(BIN)
