# Usher's two commands (see README): `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
# cargo-leptos writes the site (JS, WASM, CSS, assets) to <cargo target dir>/site.
export LEPTOS_SITE_ROOT := $(TARGET_DIR)/site

.PHONY: run test lint build-release build-debug build-debug-site test-rust test-e2e test-fuzz screenshots bench bench-replicas bench-peers bench-browser clean images test-images

## Install what is missing, build, serve http://127.0.0.1:3000 (SQLite under ./data, one
## local runner, the demo project). It builds what `make test` tests (the debug build:
## on a fresh 2-core machine it is 4 minutes where release takes 11, see README "First
## start"); `make build-release` is the build to deploy. It serves its own copy of the
## site, so a `make test` meanwhile (which rebuilds target/site) cannot pull the WASM
## from under the running pages.
run: build-debug-site
	rm -rf $(TARGET_DIR)/site-run && cp -r $(TARGET_DIR)/site $(TARGET_DIR)/site-run
	LEPTOS_SITE_ROOT=$(TARGET_DIR)/site-run $(TARGET_DIR)/debug/usher serve --addr 127.0.0.1:3000 --data-dir ./data --local-runners 1 --demo

build-debug-site:
	scripts/setup
	cargo leptos build --split

# `--split`: each page's code is a WASM chunk of its own, loaded when the page is shown
# (app/src/page_chunks.rs); the WASM imports the chunk loader, so every build splits.
build-release:
	scripts/setup
	cargo leptos build --release --precompress --split
	cp $(TARGET_DIR)/release/hash.txt $(TARGET_DIR)/site/hash.txt
	cargo build --release -p usher-runner --bin usher-runner

## Everything CI checks: Rust unit and integration tests, the browser suite, and a
## schema-driven fuzz run of the JSON API.
test: build-debug lint test-rust test-e2e test-fuzz

# The code is formatted as rustfmt.toml says, no two modules of a crate import each
# other (scripts/check-imports), clippy finds nothing (the server side: the browser-only
# crate is WASM), and the dependency tree holds only allowed licenses and sources and
# no banned crates (deny.toml; no network needed). Clippy runs with the test builds'
# RUSTFLAGS so that the two do not rebuild each other's dependencies.
lint: export RUSTFLAGS := --cfg erase_components
lint:
	cargo fmt --all -- --check
	scripts/check-imports
	cargo clippy --workspace --all-targets --exclude usher-frontend -- -D warnings
	cargo deny --log-level error check bans licenses sources

build-debug:
	scripts/setup --test
	$(MAKE) build-debug-site

# Against SQLite and a throwaway PostgreSQL cluster (scripts/with-postgres), with a
# private Docker engine for the docker executor (scripts/with-docker) and an S3 server
# for artifacts in object storage (scripts/with-s3: moto, from PyPI). The same
# RUSTFLAGS as cargo-leptos's debug builds: the tests rebuild the `usher` binary, which
# must render exactly what the WASM hydrates (and this way the two share artifacts).
# The standalone-runner test runs the `usher-runner` binary, built first.
test-rust: export RUSTFLAGS := --cfg erase_components
test-rust:
	cargo build -p usher-runner --bin usher-runner
	USHER_REQUIRE_POSTGRES=1 USHER_REQUIRE_DOCKER=1 USHER_REQUIRE_NGINX=1 USHER_REQUIRE_S3=1 \
	  scripts/with-postgres scripts/with-docker scripts/with-s3 cargo test --workspace --exclude usher-frontend

test-e2e:
	cd end2end && USHER_BIN=$(TARGET_DIR)/debug/usher npx playwright test

# schemathesis against openapi.json of a real server: no 5xx, every answer as documented.
test-fuzz:
	scripts/fuzz-api $(TARGET_DIR)/debug/usher 40

## Photographs every page, with real jobs, into docs/screenshots/ (see docs/ui.md).
screenshots: build-debug
	cd end2end && USHER_BIN=$(TARGET_DIR)/debug/usher npx playwright test -c playwright.shots.config.mjs

## Every performance figure (P1-P9 of docs/benchmarks.md) from the release build, as one
## table with the goals, on SQLite and a throwaway PostgreSQL; JSON in
## $(TARGET_DIR)/bench/latest.json.
bench: build-release
	cargo build --release -p usher --examples
	scripts/with-postgres scripts/bench

## S1 of docs/benchmarks.md: three replicas on one PostgreSQL, 150 runners, 5,000 jobs,
## one replica killed with kill -9 in the middle of a pipeline cancel and restarted.
bench-replicas: build-release
	cargo build --release -p usher --example bench_replicas
	scripts/with-postgres $(TARGET_DIR)/release/examples/bench_replicas

## P1 for Usher and Buildbot (PyPI, in a venv under the target dir) in one run, with the ratio.
bench-peers: build-release
	cargo build --release -p usher --examples
	scripts/bench-peers

## The browser figures of docs/benchmarks.md (a 4 MiB log, P9) against a release build.
bench-browser: build-release
	cd end2end && USHER_BIN=$(TARGET_DIR)/release/usher npx playwright test -c playwright.bench.config.mjs

clean:
	cargo clean

## The container images (images/Dockerfile): usher:local (server and site) and
## usher-runner:local (with the docker command line), built from source on top of
## usher-base:local and usher-builder:local (debian:bookworm-slim and rust:1.95-bookworm
## with the build tools). images/compose.yaml runs them with PostgreSQL.
images:
	docker build -t usher-base:local -f images/base.Dockerfile images
	docker build -t usher-builder:local -f images/builder.Dockerfile images
	docker build --target server -t usher:local -f images/Dockerfile .
	docker build --target runner -t usher-runner:local -f images/Dockerfile .

## The images built offline against a private Docker engine, from base images made of
## Debian's packages, and a pipeline with a graceful cancel through images/compose.yaml
## (scripts/test-images; ~25 minutes, so not part of `make test`).
test-images:
	scripts/test-images
