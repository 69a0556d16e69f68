# The build stage's toolchain (BUILDER of images/Dockerfile), from the official Rust
# image: the wasm32 target, cargo-leptos, wasm-bindgen-cli and wasm-opt at the versions
# scripts/setup pins. `make images` builds it once as usher-builder:local.
FROM rust:1.95-bookworm
RUN rustup target add wasm32-unknown-unknown \
 && cargo install cargo-leptos --version 0.3.10 --locked \
 && cargo install wasm-bindgen-cli --version 0.2.130 \
 && apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && npm install -g binaryen@132.0.0 \
 && rm -rf /var/lib/apt/lists/* /usr/local/cargo/registry
