#!/usr/bin/env bash
# Runs Evently locally with demo data: starts (or installs) PostgreSQL and Redis, applies
# migrations, loads the demo data if missing, and serves the API on http://127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/evently}"
export REDIS_URL="${REDIS_URL-redis://127.0.0.1:6379}"
export EVENTLY_ENV="${EVENTLY_ENV:-development}"
export RUST_LOG="${RUST_LOG:-evently=info,tower_http=info,warn}"

db_name="${DATABASE_URL##*/}"
db_name="${db_name%%\?*}"
server_url="${DATABASE_URL%/*}/postgres"
if ! psql "$server_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db_name'" | grep -q 1; then
    echo "==> creating database $db_name"
    psql "$server_url" -qc "CREATE DATABASE \"$db_name\""
fi

cargo build --release --quiet --bin evently
bin="${CARGO_TARGET_DIR:-target}/release/evently"
"$bin" seed-demo
exec "$bin" serve "$@"
