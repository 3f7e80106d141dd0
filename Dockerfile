# syntax=docker/dockerfile:1
# One image runs every reverie pod: the controller, agent sessions, dream and
# apply jobs. Build: docker build -t ghcr.io/reverie-dev/reverie:dev .
#
# Not verified here: the machine this was written on has no container engine,
# so this image has never been built; the musl build, the distroless stage and
# the chart running it in a real cluster are unchecked (the tests run the same
# binary as local processes against a real apiserver instead).
#
# Stage 1 builds a static binary against musl so the final image needs no libc.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# Dependencies first, so source edits reuse the cached layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo "fn main() {}" > src/main.rs && touch src/lib.rs && for b in dream fleet operator; do echo "fn main() {}" > benches/$b.rs; done \
 && cargo fetch --locked
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin reverie \
 && cp target/x86_64-unknown-linux-musl/release/reverie /reverie

# Stage 2: distroless static, non-root. The same binary is `kubectl-reverie`
# when invoked under that name (argv[0] decides), so users can copy it out.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /reverie /usr/local/bin/reverie
USER 65532:65532
# /metrics, /healthz, /readyz (--metrics-addr).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/reverie"]
CMD ["controller"]
