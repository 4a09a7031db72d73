# The worker image: the release binary plus the PostgreSQL client programs of the server's major
# version (pg_dump refuses newer servers; keep PG_MAJOR equal to the database's major version).
# Images are pinned; bump them deliberately (the Rust tag matches rust-toolchain.toml).
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# rust-toolchain.toml asks for rustfmt and clippy; the image ships a minimal profile, so add
# them here once instead of letting every cargo call try to fetch them.
COPY rust-toolchain.toml ./
RUN rustup component add rustfmt clippy
# Dependencies first, against stub sources: this layer is rebuilt only when the manifests or
# the lock file change, not on every source edit.
COPY Cargo.toml Cargo.lock build.rs ./
COPY inngest/Cargo.toml inngest/Cargo.toml
RUN mkdir -p src/bin inngest/src migrations \
 && echo 'fn main() {}' > src/main.rs && cp src/main.rs src/bin/bench.rs \
 && touch src/lib.rs inngest/src/lib.rs \
 && cargo build --release --locked --bin riveredge-backup \
 && rm -rf src inngest/src
COPY . .
# The stubs' build outputs are newer than the real sources' checkout times: touch to rebuild.
RUN touch src/main.rs src/lib.rs inngest/src/lib.rs \
 && cargo build --release --locked --bin riveredge-backup

FROM debian:bookworm-slim
ARG PG_MAJOR=15
# bookworm ships PostgreSQL 15; for another major add the PGDG apt repository first.
# curl is for the health check only.
RUN apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/riveredge-backup riveredge \
 && mkdir -p /var/lib/riveredge-backup && chown riveredge /var/lib/riveredge-backup && chmod 0700 /var/lib/riveredge-backup
COPY --from=build /src/target/release/riveredge-backup /usr/local/bin/riveredge-backup
USER riveredge
ENV BIND_ADDRESS=0.0.0.0:3000 \
    BACKUP_STORAGE_DIR=/var/lib/riveredge-backup \
    PG_BIN_DIR=/usr/lib/postgresql/${PG_MAJOR}/bin \
    LOG_FORMAT=json
EXPOSE 3000
# /health answers 200 while the worker can reach its database.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:3000/health || exit 1
ENTRYPOINT ["/usr/local/bin/riveredge-backup"]
CMD ["serve"]
