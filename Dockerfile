# Multi-stage build of the single `orderflow` binary; every role runs from this image.
FROM rust:1-bookworm AS build
WORKDIR /src

# 1. Dependencies only. The manifests and the lockfile, with stub sources, so that this layer
#    (every crates.io dependency compiled, librdkafka among them) is rebuilt only when a
#    manifest or Cargo.lock changes, not at every source edit.
COPY Cargo.toml Cargo.lock ./
COPY command/Cargo.toml command/
COPY domain/Cargo.toml domain/
COPY kafka/Cargo.toml kafka/
COPY projector/Cargo.toml projector/
COPY query/Cargo.toml query/
COPY store/Cargo.toml store/build.rs store/
# Cargo reads every member's manifest, and a target a manifest declares ([[bench]], [[test]],
# [[example]], [[bin]]) must have its file, even though only the binary is built: stub those too.
RUN set -eu; \
    mkdir -p src && echo 'fn main() {}' > src/main.rs; \
    for member in command domain kafka projector query store; do \
        mkdir -p "$member/src" && : > "$member/src/lib.rs"; \
        awk ' \
            function flush() { if (kind != "" && name != "") print (path != "" ? path : dir[kind] "/" name ".rs"); kind = name = path = "" } \
            BEGIN { dir["bench"] = "benches"; dir["test"] = "tests"; dir["example"] = "examples"; dir["bin"] = "src/bin" } \
            /^\[\[(bench|test|example|bin)\]\]/ { flush(); kind = $0; gsub(/[][ \t]/, "", kind); next } \
            /^\[/ { flush(); next } \
            kind != "" && /^name[ \t]*=/ { name = $0; sub(/^[^"]*"/, "", name); sub(/".*/, "", name) } \
            kind != "" && /^path[ \t]*=/ { path = $0; sub(/^[^"]*"/, "", path); sub(/".*/, "", path) } \
            END { flush() }' "$member/Cargo.toml" \
        | while read -r target; do \
            mkdir -p "$(dirname "$member/$target")" && echo 'fn main() {}' > "$member/$target"; \
        done; \
    done; \
    cargo build --release --locked --bin orderflow

# 2. The real sources. Their files may be older than the stubs' build, so the crate roots are
#    touched for cargo to rebuild the workspace's own crates (dependencies stay built).
COPY src src
COPY migrations migrations
COPY command command
COPY domain domain
COPY kafka kafka
COPY projector projector
COPY query query
COPY store store
RUN touch src/main.rs */src/lib.rs store/build.rs \
    && cargo build --release --locked --bin orderflow

FROM debian:bookworm-slim
# No curl: docker-compose.yml's health checks use bash's /dev/tcp.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 orderflow
COPY --from=build /src/target/release/orderflow /usr/local/bin/orderflow
USER orderflow
# command, query, and the ops listener of relay/projector/saga in docker-compose.yml.
EXPOSE 8081 8080 9464
ENTRYPOINT ["orderflow"]
