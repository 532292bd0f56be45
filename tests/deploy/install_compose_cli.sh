#!/usr/bin/env bash
# Install the Compose CLI that tests/deploy/test_compose.py runs (`config` only: no Docker engine
# is needed or started). The tests need Compose v2 or newer: Debian 12's `docker-compose` package
# (1.29) validates the file but ignores profiles in `config`, so it cannot show that the
# `opensearch` services stay out of the default stack.
#
# Docker Compose is a Go module; `go install` refuses it (its go.mod has exclude directives), so
# its source is fetched with `go mod download` and built as the main module. Needs Go >= 1.26.8
# (compose v5.6.0's go.mod), about 2 minutes on 2 cores, and up to 0.8 GB of Go module and build cache.
#
#   bash tests/deploy/install_compose_cli.sh            # as root
#
# It installs /usr/local/lib/docker/cli-plugins/docker-compose (so `docker compose` works where
# the docker client is installed) and links /usr/local/bin/docker-compose to it. Nothing happens
# when a Compose >= 2 is already there.
set -euo pipefail

VERSION="${COMPOSE_VERSION:-v5.6.0}"
PLUGIN_DIR="${COMPOSE_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}"
BIN_DIR="${COMPOSE_BIN_DIR:-/usr/local/bin}"

major() { sed -E 's/^v?([0-9]+).*/\1/' <<<"$1"; }

for cli in "docker compose" "docker-compose"; do
    if short=$($cli version --short 2>/dev/null) && [ "$(major "$short")" -ge 2 ] 2>/dev/null; then
        echo "Compose $short is installed ($cli)"
        exit 0
    fi
done

command -v go >/dev/null || { echo "Go >= 1.26.8 is needed to build Docker Compose $VERSION" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dir=$(go mod download -json "github.com/docker/compose/v5@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "go mod download did not give the source of docker/compose $VERSION" >&2; exit 1; }
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
(
    cd "$work/src"
    go build -trimpath -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$VERSION" \
        -o "$work/docker-compose" ./cmd
)
install -D -m 0755 "$work/docker-compose" "$PLUGIN_DIR/docker-compose"
mkdir -p "$BIN_DIR"
ln -sf "$PLUGIN_DIR/docker-compose" "$BIN_DIR/docker-compose"
"$BIN_DIR/docker-compose" version
