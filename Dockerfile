# posthog-cli in a small image, running as a non-root user.
#
#   docker build -t posthog-cli .
#   docker run --rm -v "$PWD:/work" -v /run/secrets/posthog:/run/secrets/posthog:ro \
#       posthog-cli --api-key-file /run/secrets/posthog run --config /work/config.yaml \
#       --output-dir /work/posthog-output
#
# Build stage: the pinned toolchain of rust-toolchain.toml, a locked dependency graph.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p posthog-cli

# Runtime stage: glibc and the CA certificates rustls verifies PostHog's TLS certificates
# against (reqwest's platform verifier reads the system's roots).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /work --create-home posthog
COPY --from=build /src/target/release/posthog-cli /usr/local/bin/posthog-cli
USER 10001
WORKDIR /work
ENTRYPOINT ["posthog-cli"]
CMD ["--help"]
