#!/usr/bin/env bash
# Runs the whole test suite against real PostgreSQL and Redis (started or installed if
# missing) and a real headless Chromium for the GraphiQL test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_chromium

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
exec cargo test --locked "$@"
