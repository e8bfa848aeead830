# Build: a full Rust toolchain; run: a slim Debian with only the binary (migrations are embedded).
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY assets assets
RUN cargo build --release --locked --bin evently

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 evently
COPY --from=build /src/target/release/evently /usr/local/bin/evently
USER evently
ENV EVENTLY_LISTEN=0.0.0.0:8000 EVENTLY_ENV=production
EXPOSE 8000
ENTRYPOINT ["evently"]
CMD ["serve"]
