# csi-provisioner: a static binary on a distroless base.
# Build: docker build -t csi-provisioner:dev --build-arg VERSION=$(git describe --tags --always) .
FROM golang:1.26.8 AS build
WORKDIR /src
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -mod=vendor -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/csi-provisioner ./cmd/csi-provisioner

FROM gcr.io/distroless/static-debian12:nonroot
LABEL description="CSI provisioner sidecar with cross-namespace data sources (KEP-3294)"
COPY --from=build /out/csi-provisioner /csi-provisioner
ENTRYPOINT ["/csi-provisioner"]
