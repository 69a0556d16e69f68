# The runtime base of Usher's images (BASE of images/Dockerfile): Debian 12 with what
# the server and the runner call (git for checkouts, CA certificates for TLS, tini as
# process 1). `make images` builds it as usher-base:local.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git tini \
 && rm -rf /var/lib/apt/lists/*
