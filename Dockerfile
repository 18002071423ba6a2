# Multi-stage build of the single `orderflow` binary; every role runs from this image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin orderflow

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 orderflow
COPY --from=build /src/target/release/orderflow /usr/local/bin/orderflow
USER orderflow
ENTRYPOINT ["orderflow"]
