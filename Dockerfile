# Builds the outboxrelay binary into a small image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/outboxrelay ./cmd/outboxrelay

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/outboxrelay /usr/local/bin/outboxrelay
ENTRYPOINT ["/usr/local/bin/outboxrelay"]
CMD ["run"]
