# syntax=docker/dockerfile:1
#
# Both commands, statically linked, in a distroless non-root image (docker or podman):
#   docker build -t greybox --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg REVISION=$(git rev-parse HEAD) --build-arg BRANCH=$(git rev-parse --abbrev-ref HEAD) .
# Tag and push it to your registry and set it in examples/kubernetes/kustomization.yaml
# (README, "Deploying on Kubernetes"). To run it locally with the example configurations,
# whose ttyd modules need secrets/ttyd-password next to greybox.yml:
#   make examples/secrets/ttyd-password
#   docker run --rm -p 9116:9116 -v "$PWD/examples:/etc/greybox:ro" greybox
#   docker run --rm -v "$PWD/examples:/etc/greybox:ro" --entrypoint /bin/greybox-remediator greybox \
#     --config.file=/etc/greybox/remediator.yml --config.check

FROM golang:1.26 AS build
WORKDIR /src

# Dependencies first, so source edits do not invalidate the module download layer.
COPY go.mod go.sum ./
RUN go mod download

COPY . .

ARG VERSION=unknown
ARG REVISION=unknown
ARG BRANCH=unknown
ARG BUILD_USER=docker
ARG BUILD_DATE=unknown
# CGO off: static binaries that run on distroless/static (no libc).
# -trimpath: no build-machine paths in the binaries.
ENV CGO_ENABLED=0
RUN set -eu; \
    pkg=github.com/prometheus/common/version; \
    ldflags="-s -w \
      -X ${pkg}.Version=${VERSION} \
      -X ${pkg}.Revision=${REVISION} \
      -X ${pkg}.Branch=${BRANCH} \
      -X ${pkg}.BuildUser=${BUILD_USER} \
      -X ${pkg}.BuildDate=${BUILD_DATE}"; \
    go build -trimpath -buildvcs=false -ldflags "${ldflags}" -o /out/greybox ./cmd/greybox; \
    go build -trimpath -buildvcs=false -ldflags "${ldflags}" -o /out/greybox-remediator ./cmd/greybox-remediator

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="greybox" \
      org.opencontainers.image.description="Prometheus probe server for the failures black-box checks miss, plus a remediator" \
      org.opencontainers.image.source="https://github.com/greybox-probe/greybox"

COPY --from=build /out/greybox /bin/greybox
COPY --from=build /out/greybox-remediator /bin/greybox-remediator
COPY examples/greybox.yml /etc/greybox/greybox.yml

# nobody:nogroup, numeric so that Kubernetes' runAsNonRoot can verify it.
USER 65534:65534
EXPOSE 9116 9117
# The config flag is in CMD, not ENTRYPOINT: kingpin rejects a repeated flag, and
# Kubernetes `args:` (or `docker run ... <flags>`) replace CMD wholesale.
ENTRYPOINT ["/bin/greybox"]
CMD ["--config.file=/etc/greybox/greybox.yml"]
