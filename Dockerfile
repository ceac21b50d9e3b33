# DAARION Matrix bridge. Multi-stage: build with cgo (SQLite), run as non-root.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -trimpath -tags goolm \
      -ldflags "-s -w -X github.com/daarion/matrix-bridge/pkg/bridge.Version=${VERSION}" \
      -o /out/bridge ./cmd/bridge

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home bridge
COPY --from=build /out/bridge /usr/local/bin/bridge
# The schema upgrades are embedded in the binary; the SQL files ship alongside
# for operators who want to read what a version changes.
COPY database/ /usr/share/daarion-bridge/database/
COPY config.example.yaml registration.yaml.tmpl /usr/share/daarion-bridge/
USER bridge
WORKDIR /data
# 29330: appservice (homeserver -> bridge); 7025: internal API; 9100: metrics.
EXPOSE 29330 7025 9100
ENTRYPOINT ["/usr/local/bin/bridge"]
CMD ["-c", "/data/config.yaml"]
