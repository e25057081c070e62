# StapleGate — every entry point an operator or CI needs. `make demo` and `make test` install the
# Debian packages they need first, so both work on a fresh machine.

SWIFT ?= swift
# systemd: for systemd-analyze, with which the tests verify systemd/*.service (not on a minimal Debian image).
# nginx, libnginx-mod-stream, gnuplot-nox: `make bench` compares against nginx stream and draws its chart
# (and the bench's smoke test runs in `make test`).
# postgresql: Debian's PostgreSQL 15 server, which the fleet tests (issue 14) start on a free port.
# libmimalloc2.0: the allocator the staplegate binary links (see Package.swift). iproute2: `ss`, with which a
# test reads the listener's accept queue.
APT_PACKAGES := openssl libssl-dev libmosquitto-dev libmimalloc2.0 iproute2 mosquitto mosquitto-clients socat faketime e2fsprogs \
	python3-prometheus-client systemd nginx libnginx-mod-stream gnuplot-nox haproxy postgresql
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: all deps build test test-asan test-tsan demo fleet-demo bench fuzz soak clean

all: build

## deps: install the Debian packages StapleGate builds and tests against (only the missing ones)
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

## build: the release binary at .build/release/staplegate
build: deps
	$(SWIFT) build -c release --product staplegate

## test: every test suite, against a real Mosquitto, real clients and a real OCSP responder
test: deps
	$(SWIFT) test --disable-swift-testing  # every suite is XCTest; this keeps its summary the last line

## test-asan, test-tsan: the unit and integration suites under AddressSanitizer or ThreadSanitizer, each in its
## own build folder (.build/asan, .build/tsan), the gateway binary the integration tests start included. Built with
## glibc's malloc (STAPLEGATE_MALLOC=system): the sanitizers bring their own. SANITIZER_FILTER=RegEx runs some suites.
## Every process writes its reports to .build/SANITIZER/reports/ (a gateway's stderr is the test's): any report
## fails the run and is printed. Suppressions, each with its reason: Tests/Sanitizers/.
SANITIZER_FILTER ?=
SANITIZER_RUN = $(SWIFT) test --sanitize=$(1) --scratch-path .build/$(2) --disable-swift-testing \
	$(if $(SANITIZER_FILTER),--filter '$(SANITIZER_FILTER)'); status=$$?; \
	if ls .build/$(2)/reports/* >/dev/null 2>&1; then \
		echo "sanitizer reports (tests or gateways they started), in .build/$(2)/reports/:"; head -n 60 .build/$(2)/reports/*; exit 1; \
	fi; exit $$status
test-asan: deps
	rm -rf .build/asan/reports && mkdir -p .build/asan/reports
	STAPLEGATE_MALLOC=system STAPLEGATE_SANITIZER=address \
		ASAN_OPTIONS=$$(cat Tests/Sanitizers/asan.options):log_path=$(CURDIR)/.build/asan/reports/asan \
		LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/Sanitizers/lsan.supp $(call SANITIZER_RUN,address,asan)
test-tsan: deps
	rm -rf .build/tsan/reports && mkdir -p .build/tsan/reports
	STAPLEGATE_MALLOC=system STAPLEGATE_SANITIZER=thread \
		TSAN_OPTIONS="suppressions=$(CURDIR)/Tests/Sanitizers/tsan.supp halt_on_error=0 log_path=$(CURDIR)/.build/tsan/reports/tsan" \
		$(call SANITIZER_RUN,thread,tsan)

## fuzz: each libFuzzer target (MQTT, PROXY header, OCSP HTTP and DER, config, control and admin HTTP)
## for FUZZ_SECONDS (default 60) under AddressSanitizer; FUZZ_TARGETS="proxy-header ..." picks some.
## New coverage joins Tests/Fuzz/Corpus, crashes land in Tests/Fuzz/Regressions; make test replays both.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash Tests/Fuzz/run.sh $(FUZZ_TARGETS)

## soak: the soak run against the release binary with the example's defaults: SOAK_DEVICES (default 2000)
## devices reconnecting, publishing numbered QoS 1 messages, 1 % revoked along the way, a reload every 5 min,
## the responder restarted twice, for SOAK_MINUTES (default 60). Writes soak.md, soak.png, samples.tsv and
## gateway.log to SOAK_REPORT_DIR (default .build/soak) and fails unless every criterion held.
## make test runs a 2-minute version (the debug binary).
SOAK_MINUTES ?= 60
SOAK_DEVICES ?= 2000
soak: deps
	$(SWIFT) build -c release --product staplegate
	$(SWIFT) build --build-tests
	STAPLEGATE_EXECUTABLE=$(CURDIR)/.build/release/staplegate SOAK_MINUTES=$(SOAK_MINUTES) SOAK_DEVICES=$(SOAK_DEVICES) \
		$(SWIFT) test --skip-build --disable-swift-testing --filter 'IntegrationTests.Soak'

## demo: a device publishing through StapleGate into Mosquitto; stays up until Ctrl-C.
## make demo FLEET=1 is the fleet demo below.
FLEET ?=
demo: build
	@if [ -n "$(FLEET)" ]; then bash config/fleet-demo.sh; else bash config/demo.sh; fi

## fleet-demo: PostgreSQL, HAProxy, three gateways, Mosquitto and a responder; a revocation
## cuts a device off on every gateway; stays up until Ctrl-C
fleet-demo: build
	bash config/fleet-demo.sh

## bench: StapleGate vs nginx stream vs Mosquitto's TLS listener (issue 7); results in
## .build/bench/results/latest/. Sizes: make bench BENCH_ARGS="--runs 5 --sessions 3000" (see --help).
BENCH_ARGS ?=
# 5 000 idle sessions need ~15 100 descriptors in the load generator and ~10 100 in a proxying front.
BENCH_OPEN_FILES := 15100
bench: deps
	$(SWIFT) build -c release --product staplegate
	$(SWIFT) build -c release --product staplegate-bench
	@hard=$$(ulimit -Hn); \
	if ulimit -n "$$hard" 2>/dev/null; then echo "bench: open-files limit raised to $$(ulimit -n)"; \
	else echo "bench: cannot raise the open-files limit (soft $$(ulimit -n), hard $$hard)"; fi; \
	if [ "$$hard" != unlimited ] && [ "$$hard" -lt $(BENCH_OPEN_FILES) ]; then \
		echo "bench: the hard open-files limit $$hard is below the $(BENCH_OPEN_FILES) that 5000 sessions need:" \
			"raise it (ulimit -Hn, LimitNOFILE=) or pass BENCH_ARGS=--sessions N; the bench will use fewer sessions"; \
	fi; \
	.build/release/staplegate-bench $(BENCH_ARGS)

clean:
	rm -rf .build .demo .demo-fleet certs/out
