#!/usr/bin/env bash
# PostGraphile v4, the peer of the browse scenario: installed with npm into a cache directory
# on first use, serving GraphQL at http://127.0.0.1:$PEER_PORT/graphql over $DATABASE_URL
# (the same database the Evently server under test reads).
#
#   bench/peers/postgraphile.sh            # run in the foreground (scripts/bench.sh starts it
#                                          # in the background for `browse --peer postgraphile`)
#
# PEER_PORT (5099), PEER_WORKERS (2: one Node.js process per core of this 2-core machine, as
# Evently's runtime has one thread per core) and PEER_POOL (16: Evently's DATABASE_POOL_SIZE,
# split across the workers) tune it; POSTGRAPHILE_VERSION (4.14.1) pins it.
set -euo pipefail
: "${DATABASE_URL:?DATABASE_URL must name the database to serve}"
cache="${BENCH_CACHE:-$HOME/.cache/evently-bench}/postgraphile"
version="${POSTGRAPHILE_VERSION:-4.14.1}"
port="${PEER_PORT:-5099}"
workers="${PEER_WORKERS:-2}"
pool="${PEER_POOL:-16}"
bin="$cache/node_modules/.bin/postgraphile"
if ! [ -x "$bin" ] || ! grep -q "\"version\": \"$version\"" "$cache/node_modules/postgraphile/package.json" 2>/dev/null; then
    mkdir -p "$cache"
    echo "==> installing postgraphile@$version into $cache" >&2
    npm install --silent --no-audit --no-fund --prefix "$cache" "postgraphile@$version" >&2
fi
per_worker=$(( (pool + workers - 1) / workers ))
args=(--connection "$DATABASE_URL" --schema public --host 127.0.0.1 --port "$port"
      --disable-query-log --max-pool-size "$per_worker")
if [ "$workers" -gt 1 ]; then
    args+=(--cluster-workers "$workers")
fi
exec "$bin" "${args[@]}"
