# syntax=docker/dockerfile:1
# One image for every role of the kubeestatehub binary.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY events/Cargo.toml events/
COPY services/listing/Cargo.toml services/listing/
COPY services/store/Cargo.toml services/store/
COPY services/platform/Cargo.toml services/platform/
COPY services/command-api/Cargo.toml services/command-api/
COPY services/relay/Cargo.toml services/relay/
COPY services/kubeestatehub/Cargo.toml services/kubeestatehub/
RUN for d in events services/listing services/store services/platform services/command-api services/relay services/kubeestatehub; do \
      mkdir -p "$d/src" && echo '' > "$d/src/lib.rs"; \
    done \
 && echo 'fn main() {}' > services/kubeestatehub/src/main.rs \
 && mkdir -p services/store/migrations \
 && cargo build --release --locked --bin kubeestatehub \
 && rm -rf events/src services/*/src
COPY . .
# Touch the sources so cargo rebuilds them over the dependency-only stubs.
RUN find events services -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin kubeestatehub \
 && cp target/release/kubeestatehub /kubeestatehub

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /kubeestatehub /usr/local/bin/kubeestatehub
USER 65532:65532
ENV KEH_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kubeestatehub"]
CMD ["all"]
