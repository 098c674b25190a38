# One image with the three binaries: gateway, shopping-service, user-service.
# Build:  docker build -t mcp-federation .     Run: see docker-compose.yml

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p gateway -p shopping-service -p user-service \
 && mkdir /out \
 && cp target/release/gateway target/release/shopping-service target/release/user-service /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home mcp
COPY --from=build /out/gateway /out/shopping-service /out/user-service /usr/local/bin/
USER mcp
WORKDIR /data
EXPOSE 3001 3002 3003
CMD ["gateway"]
