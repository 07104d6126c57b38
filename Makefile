GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build test bench fuzz deps lint clean deb

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/dmonitor ./cmd/dmonitor

# The Debian package, bin/dmonitor_<version>_<arch>.deb, built with nfpm
# (run by go run: nothing to install); docs/PACKAGE.md.
deb: build
	GO=$(GO) deploy/debian/build-deb bin/dmonitor '$(VERSION)' bin

# The one test command: installs redis-server and monitoring-plugins when
# missing, then runs every test under the race detector.
test: deps
	$(GO) vet ./...
	$(GO) test -race -timeout 12m ./...
	# Counts of allocations mean nothing under -race (sync.Pool drops
	# what is put back), so these tests skip there and run here.
	$(GO) test -count=1 -run 'AllocatesLittle|AllocatesOnly' ./evaluator/leader/ ./rules/
	FUZZTIME=3s GO=$(GO) scripts/fuzz

# Every fuzz target for a minute each; make test runs them for 3 seconds.
fuzz:
	FUZZTIME=60s GO=$(GO) scripts/fuzz

# Benchmarks: figures and how to read them are in docs/BENCHMARKS.md.
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./...

deps:
	@scripts/test-deps

lint:
	gofmt -l . | tee /dev/stderr | (! read -r _)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest ./...

clean:
	rm -rf bin
