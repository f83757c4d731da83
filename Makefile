# greybox — make targets. `make run` starts the probe server with the example
# config; `make test` is what CI runs.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
BUILD_USER ?= $(shell id -un 2>/dev/null || echo unknown)@$(shell hostname 2>/dev/null || echo unknown)
# promu's format, which version.Print shows as "build date".
BUILD_DATE ?= $(shell date -u +%Y%m%d-%H:%M:%S)
VERSION_PKG := github.com/prometheus/common/version
LDFLAGS   := -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Revision=$(REVISION) -X $(VERSION_PKG).Branch=$(BRANCH) \
             -X $(VERSION_PKG).BuildUser=$(BUILD_USER) -X $(VERSION_PKG).BuildDate=$(BUILD_DATE)
FUZZTIME  ?= 10s

.PHONY: all build build-greybox run test vet fmt-check lint fuzz bench clean print-ldflags

all: build

build: build-greybox
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/greybox-remediator ./cmd/greybox-remediator

build-greybox:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/greybox ./cmd/greybox

# Runs the probe server on :9116 with the example config (no cluster needed
# for the http and ttyd modules). It builds greybox only: on a cold build
# cache the remediator's link would double the wait for nothing.
run: build-greybox examples/secrets/ttyd-password
	./bin/greybox --config.file=examples/greybox.yml --web.listen-address=127.0.0.1:9116

# The example's in-cluster ttyd modules read their basic-auth password from
# secrets/ttyd-password next to the config (a Secret in the cluster); for a
# local run greybox only needs the file to exist, so make a random one.
examples/secrets/ttyd-password:
	@mkdir -p examples/secrets
	@head -c 18 /dev/urandom | base64 > $@

# The e2e tests build greybox with these, as `make build` does.
print-ldflags:
	@echo '$(LDFLAGS)'

lint: fmt-check vet

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Everything CI runs: formatting, vet, the race-enabled test suite (unit,
# integration against local fakes, promtool rule tests, end-to-end with a
# real Prometheus). Every fuzz target's seed corpus runs as a test here;
# `make fuzz` mutates for longer (each target builds its own instrumented
# binary, which on a cold cache cost more than the rest of the suite).
test: lint
	$(GO) test -race -count=1 -timeout 30m ./...

fuzz:
	@./scripts/fuzz.sh $(FUZZTIME)

bench:
	./scripts/bench.sh

clean:
	rm -rf bin
