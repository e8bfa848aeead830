#!/usr/bin/env bash
# Runs the whole test suite against real PostgreSQL and Redis (started or installed if
# missing), a real headless Chromium for the GraphiQL test, Node for the reference
# graphql-ws client test, Prometheus for the /metrics test and nginx for the chaos suite
# (tests/chaos.rs, which runs its own PostgreSQL and Redis from the same packages).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_chromium
ensure_node
ensure_prometheus
ensure_nginx
# The reference client's exact versions, from tests/js/package-lock.json.
npm ci --prefix tests/js --no-audit --no-fund --loglevel=error >/dev/null

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
exec cargo test --locked "$@"
