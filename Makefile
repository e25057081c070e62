# StapleGate — every entry point an operator or CI needs. `make demo` and `make test` install the
# Debian packages they need first, so both work on a fresh machine.

SWIFT ?= swift
# systemd: for systemd-analyze, with which the tests verify systemd/*.service (not on a minimal Debian image).
APT_PACKAGES := openssl libssl-dev libmosquitto-dev mosquitto mosquitto-clients socat faketime python3-prometheus-client systemd
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: all deps build test demo clean

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

## demo: a device publishing through StapleGate into Mosquitto; stays up until Ctrl-C
demo: build
	bash config/demo.sh

clean:
	rm -rf .build .demo certs/out
