# syntax=docker/dockerfile:1
# One image for every role of the kubeestatehub binary.

# The dashboard's npm packages (Chart.js and Swagger UI are embedded in the binary).
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# cargo-chef turns the workspace's manifests into a recipe, so the dependencies build in a
# layer of their own that a source change does not invalidate (no hand-kept member list).
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin kubeestatehub
COPY . .
COPY --from=web /web/node_modules web/node_modules
RUN cargo build --release --locked --bin kubeestatehub \
 && cp target/release/kubeestatehub /kubeestatehub

# Distroless: no shell, no package manager; a numeric non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /kubeestatehub /usr/local/bin/kubeestatehub
USER 65532:65532
ENV KEH_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
# The binary asks its own listener: no shell or curl needed in the image.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/kubeestatehub", "health"]
ENTRYPOINT ["/usr/local/bin/kubeestatehub"]
CMD ["all"]
