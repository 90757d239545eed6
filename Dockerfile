# Borealis container images: the relay and the agent, one file, two targets.
# (Containerfile is a link to this file, for Podman and Buildah; this one is
# the file because BuildKit does not follow a linked Dockerfile.)
#
# Build the release binaries first, then the images, from the repository
# root; the binaries come from the build context, target/release/:
#
#   cargo build --release --bins
#   docker build --target relay -t borealis-relay .
#   docker build --target agent -t borealis-agent .
#
# (podman build the same; without --target the relay, the last stage).
# No compiler runs here: the binaries must be built for the image's platform
# and against a glibc no newer than the base's (2.36, Debian 12): build them
# on Debian 12, or in a debian:12 / rust:*-bookworm container. Docker needs
# BuildKit (its default builder since 23.0) for COPY --chmod.
#
# The base: --build-arg BASE=IMAGE, by default Google's distroless
# cc-debian12:nonroot, which holds glibc, libgcc_s, the CA certificates and
# the user nonroot (65532), and no shell. scripts/image-base.sh builds the
# same from Debian packages as localhost/borealis-base:bookworm, for
# machines without a registry (scripts/image-test.sh uses it).
#
# Both images run as 65532:65532 (numeric: the user needs no name and
# Kubernetes' runAsNonRoot can check it), need no shell (there is none: no
# RUN, HEALTHCHECK or sh -c; `exec` a binary, e.g. kubectl exec deploy/relay
# -- borealis ...), and run with a read-only root filesystem
# (readOnlyRootFilesystem: true, docker run --read-only); the relay writes
# only to its data volume. SIGTERM drains: in-flight requests get
# --shutdown-grace (30s), so allow a termination grace period above it.
#
# Health, for probes: the relay answers GET /healthz (alive) and /readyz
# (ready: "ready", 200) on its HTTP port 8080; the agent on 9100, its
# --health-listen address (BOREALIS_HEALTH_LISTEN below), /readyz being 200
# once it is connected to the relay, with /metrics beside them.

ARG BASE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BASE} AS base

# The agent: dials out to the relay's agent port (9090) and forwards the
# relay's requests to what --allow permits. Give it --relay (or
# BOREALIS_TUNNEL_URL), --client-id (BOREALIS_CLIENT_ID), and its client
# secret in a mounted file named by BOREALIS_CLIENT_SECRET_FILE (or
# --client-secret-file), or in the environment as BOREALIS_CLIENT_SECRET;
# never as a flag, which every process on the host can read.
FROM base AS agent
ARG VERSION=""
ARG REVISION=""
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="borealis-agent" \
      org.opencontainers.image.description="Borealis agent: dials out to a Borealis relay and forwards its webhook calls inside this network" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY target/release/borealis-agent /usr/local/bin/borealis-agent
ENV BOREALIS_HEALTH_LISTEN=0.0.0.0:9100
# Health and metrics only; the agent listens for nothing else.
EXPOSE 9100/tcp
USER 65532:65532
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/borealis-agent"]

# The relay, with the CLI beside it (kubectl exec ... -- borealis ...).
FROM base AS relay
ARG VERSION=""
ARG REVISION=""
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="borealis-relay" \
      org.opencontainers.image.description="Borealis relay: webhook-gated deployments and the agents' tunnel, with the borealis CLI" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY target/release/borealis-relay target/release/borealis /usr/local/bin/
# The data directory (database, admin token, secret key): the base's empty
# home of nonroot, copied as an empty directory owned by 65532. BuildKit
# makes it 0700; Buildah (Podman 4) makes it 0755, and the relay, its owner,
# narrows it to 0700 when it starts, as it does a volume's.
COPY --from=base --chown=65532:65532 --chmod=0700 /home/nonroot/ /var/lib/borealis/
ENV BOREALIS_DATA_DIR=/var/lib/borealis \
    BOREALIS_LISTEN=0.0.0.0:8080 \
    BOREALIS_AGENT_LISTEN=0.0.0.0:9090
# A volume: with a read-only root it is the one place the relay writes.
# With the built-in SQLite database, give it a persistent one (or use
# BOREALIS_DATABASE_URL=postgres://...). It is the working directory too:
# SQLite puts its temporary files in the first writable of /var/tmp, /tmp
# and the working directory.
VOLUME ["/var/lib/borealis"]
WORKDIR /var/lib/borealis
# 8080: HTTP API, console, token endpoint, callbacks, /healthz, /readyz.
# 9090: the agents' tunnel (gRPC) and its token endpoint.
EXPOSE 8080/tcp 9090/tcp
USER 65532:65532
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/borealis-relay"]
