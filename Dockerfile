# Build a release binary, then ship it on a distroless base as a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin certbound

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/certbound /usr/local/bin/certbound
USER nonroot:nonroot
EXPOSE 9191 9192
ENTRYPOINT ["/usr/local/bin/certbound"]
CMD ["serve", "--config", "/etc/certbound/certbound.toml"]
