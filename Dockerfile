# syntax=docker/dockerfile:1
# One image for every role of the kubeestatehub binary.

# The dashboard's npm packages (Chart.js is embedded in the binary).
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY events/Cargo.toml events/
COPY projections/Cargo.toml projections/
COPY services/listing/Cargo.toml services/listing/
COPY services/store/Cargo.toml services/store/
COPY services/platform/Cargo.toml services/platform/
COPY services/command-api/Cargo.toml services/command-api/
COPY services/query-api/Cargo.toml services/query-api/
COPY services/analytics/Cargo.toml services/analytics/
COPY services/relay/Cargo.toml services/relay/
COPY services/loadgen/Cargo.toml services/loadgen/
COPY services/kubeestatehub/Cargo.toml services/kubeestatehub/
# Stub sources: every workspace member must exist for cargo to resolve the workspace.
RUN for d in events projections services/listing services/store services/platform services/command-api \
             services/query-api services/analytics services/relay services/kubeestatehub; do \
      mkdir -p "$d/src" && echo '' > "$d/src/lib.rs"; \
    done \
 && echo 'fn main() {}' > services/kubeestatehub/src/main.rs \
 && mkdir -p services/loadgen/src && echo 'fn main() {}' > services/loadgen/src/main.rs \
 && cargo build --release --locked --bin kubeestatehub \
 && rm -rf events/src projections/src services/*/src
COPY . .
COPY --from=web /web/node_modules web/node_modules
# Touch the sources so cargo rebuilds them over the dependency-only stubs.
RUN find events projections services -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin kubeestatehub \
 && cp target/release/kubeestatehub /kubeestatehub

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /kubeestatehub /usr/local/bin/kubeestatehub
USER 65532:65532
ENV KEH_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kubeestatehub"]
CMD ["all"]
