# One image with every binary of the saga lab; docker-compose.yml picks the command.
# Build: docker build -t saga-lab .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Migrations are embedded at compile time (sqlx::migrate!), so no database is needed here.
RUN cargo build --release --locked \
        -p broker -p schema-registry -p order-service -p payment-service -p inventory-service \
        -p notification-service \
    && mkdir /out \
    && cp target/release/broker target/release/schema-registry target/release/order-service \
          target/release/payment-service target/release/inventory-service \
          target/release/notification-service /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home saga \
    && mkdir /data && chown saga /data
COPY --from=build /out/ /usr/local/bin/
USER saga
ENV RUST_LOG=info
