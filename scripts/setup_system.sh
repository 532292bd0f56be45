#!/usr/bin/env bash
# System tools and services the whole test suite needs, installed when absent (idempotent, quick
# when everything is there). Called by `make test`, `make test-distributed` and `.ci/run`, so a
# fresh machine runs every test instead of skipping the ones whose tool is missing.
#
#   Debian packages: chromium + chromium-driver (the Image search page's browser test),
#   poppler-utils (pdftoppm: the report PDF pages), redis-server (shared rate limiter, Celery
#   broker), postgresql (the distributed run's metadata DB), maven + a JDK 17 (the OpenSearch
#   node under the integration tests); a Compose v2 CLI (docker-compose.yaml validation) built
#   by tests/deploy/install_compose_cli.sh. Redis is started on 127.0.0.1:6379 when not running.
#
# Not root, or no apt-get: it says what is missing and fails, rather than let tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v pdftoppm >/dev/null || need+=(poppler-utils)
command -v redis-server >/dev/null || need+=(redis-server)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v mvn >/dev/null || need+=(maven)
command -v java >/dev/null || need+=(openjdk-17-jdk-headless)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "missing system packages: ${need[*]} (install them, e.g. apt-get install ${need[*]})" >&2
        exit 1
    fi
    echo "installing ${need[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

short=$(docker compose version --short 2>/dev/null || docker-compose version --short 2>/dev/null || true)
case "$short" in
    v[2-9]* | [2-9]* | v1[0-9]* | 1[0-9]*) ;;
    *) bash tests/deploy/install_compose_cli.sh ;;
esac

if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    echo "starting redis-server on 127.0.0.1:6379"
    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save "" --appendonly no >/dev/null
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
fi
