# dmonitor in a container: a static binary on Debian's slim image with
# Debian's monitoring-plugins, so checks name check_http, check_tcp, ... as
# they do on a Debian host (/usr/lib/nagios/plugins).
#
#   docker build -t dmonitor --build-arg VERSION=$(git describe --tags --always) .
#   docker run --init -p 127.0.0.1:2929:2929 -v $PWD/myconfig:/etc/dmonitor:ro dmonitor

# Both base images are pinned to a release (Go as go.mod asks, Debian's
# point release), so a rebuild months later starts from the same toolchain
# and the same base; deploy/dockerfile_test.go refuses a series such as
# "golang:1.26" or "debian:bookworm-slim". The plugins still come from the
# archive at build time: rebuild to take their security updates.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# Modules first: they change less often than the code, so this layer is
# reused across code changes.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/dmonitor ./cmd/dmonitor

FROM debian:12.14-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends monitoring-plugins-basic ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, so a host directory mounted as /var/lib/dmonitor can be
# given to it (chown 2929:2929) without looking inside the image.
RUN groupadd --system --gid 2929 dmonitor \
 && useradd --system --uid 2929 --gid dmonitor --home-dir /var/lib/dmonitor --no-create-home --shell /usr/sbin/nologin dmonitor \
 && install -d -o dmonitor -g dmonitor -m 0750 /var/lib/dmonitor
COPY --from=build /out/dmonitor /usr/local/bin/dmonitor
# The default configuration checks nothing; mount your own tree over
# /etc/dmonitor. It keeps the data in the volume and serves the control port
# on every interface of the container, so it can be published; publish it on
# loopback only (127.0.0.1:2929:2929): it has no authentication.
COPY deploy/image/dmonitor.yaml /etc/dmonitor/dmonitor.yaml
# Declared after the chown above, so a new named volume starts out owned by
# dmonitor.
VOLUME /var/lib/dmonitor
WORKDIR /var/lib/dmonitor
USER dmonitor
EXPOSE 2929
# /healthz answers "ok" while the daemon runs; checked with the plugin the
# image ships anyway (there is no curl). It assumes the control port of the
# default configuration.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD /usr/lib/nagios/plugins/check_http -H 127.0.0.1 -p 2929 -u /healthz -t 4 || exit 1
ENTRYPOINT ["dmonitor"]
CMD ["run", "--config", "/etc/dmonitor", "--log-format", "json"]
