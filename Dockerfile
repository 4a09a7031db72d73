# The worker image: the release binary plus the PostgreSQL client programs of the server's major
# version (pg_dump refuses newer servers; keep PG_MAJOR equal to the database's major version).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin riveredge-backup

FROM debian:bookworm-slim
ARG PG_MAJOR=15
# bookworm ships PostgreSQL 15; for another major add the PGDG apt repository first.
RUN apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" ca-certificates \
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
ENTRYPOINT ["/usr/local/bin/riveredge-backup"]
CMD ["serve"]
