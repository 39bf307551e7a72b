# syntax=docker/dockerfile:1
# certbound container image: a release build, shipped on distroless (glibc, CA roots, tzdata; no
# shell, no package manager) as the unprivileged uid/gid 65532.
#
#   docker build -t certbound:0.1.0 .
#   docker run --rm -p 9191:9191 -p 9192:9192 \
#     -v "$PWD/certbound.toml:/etc/certbound/certbound.toml:ro" \
#     -v "$PWD/client-ca.pem:/etc/certbound/ca/client-ca.pem:ro" certbound:0.1.0
#
# The configuration is read from /etc/certbound/certbound.toml, or wherever --config says: mount it
# and the files it names (CA bundles) where it says. Kubernetes: mount the ConfigMap as a folder,
# not with subPath, so updates reach the pod and reload (deploy/kubernetes). Ports: 9191 gRPC (ext_authz and
# grpc.health.v1), 9192 HTTP admin (/metrics, /healthz, /readyz). certbound listens on loopback
# unless told otherwise, so a config for this image sets grpc_listen = "0.0.0.0:9191" and
# admin_listen = "0.0.0.0:9192" (as deploy/certbound.example.toml and the manifests do).

# Build on Debian 12 so the binary links against the glibc of the distroless Debian 12 runtime.
# aws-lc-sys compiles its C with the image's gcc (no cmake, clang or nasm needed on Linux x86_64
# and aarch64).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY crates ./crates
# Cargo.toml declares the benchmark target, so its source must exist for cargo to read the manifest.
COPY benches ./benches
# Cargo.toml declares the developer programs (tools/) as example targets too.
COPY tools ./tools
# No .git in the build context: `certbound --version` names the commit given here
# (docker build --build-arg BUILD_GIT_COMMIT="$(git rev-parse --short HEAD)"), else "unknown".
ARG BUILD_GIT_COMMIT=""
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin certbound \
 && install -D -m 0755 target/release/certbound /out/certbound

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/certbound /usr/local/bin/certbound
# Numeric, so Kubernetes' runAsNonRoot can verify it (distroless "nonroot" is 65532).
USER 65532:65532
EXPOSE 9191 9192
ENTRYPOINT ["/usr/local/bin/certbound"]
CMD ["serve", "--config", "/etc/certbound/certbound.toml"]
