# Builds the outboxrelay binary into a small image.
#   docker build --build-arg VERSION=v1.2.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) -t outboxrelay .
ARG VERSION=devel
ARG REVISION=unknown
ARG CREATED=unknown

FROM golang:1.26-bookworm AS build
ARG VERSION
ARG REVISION
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags="-s -w -X main.linkVersion=${VERSION} -X main.linkCommit=${REVISION}" \
    -o /out/outboxrelay ./cmd/outboxrelay

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION
ARG REVISION
ARG CREATED
LABEL org.opencontainers.image.title="outboxrelay" \
      org.opencontainers.image.description="Relays a PostgreSQL outbox table to Kafka through logical replication, as Debezium's Outbox Event Router would" \
      org.opencontainers.image.source="https://github.com/outboxrelay/outboxrelay" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /out/outboxrelay /usr/local/bin/outboxrelay
COPY LICENSE /usr/share/doc/outboxrelay/LICENSE
HEALTHCHECK CMD ["/usr/local/bin/outboxrelay", "health"]
ENTRYPOINT ["/usr/local/bin/outboxrelay"]
CMD ["run"]
