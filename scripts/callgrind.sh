#!/usr/bin/env bash
# The server's CPU cost per request, in instructions, counted by callgrind: unlike req/s, the
# figure does not move with what else the machine is doing, so a change can be judged on a
# busy machine. Runs a release build of the server under `valgrind --tool=callgrind` on a fresh
# database with the demo data, the response cache off (as the browse bench's "cache off") and
# the bench's settings, then sends REQUESTS requests per phase, one at a time on one keep-alive
# connection (scripts/callgrind_requests.py):
#
#   browse-anonymous       the browse bench's list and detail documents, alternately
#   browse-signed-in       the same signed in (bearer token, `me { id name }` with each)
#   events-list-anonymous  the list document alone
#   sold-out               `bookSeats` with a fresh idempotency key on a sold-out event
#
# and prints each phase's instructions per request. The dumps stay in
# $CARGO_TARGET_DIR/callgrind/ for `callgrind_annotate --inclusive=yes <file>`.
#
#   scripts/callgrind.sh [REQUESTS]     # default 1000
#
# The sold-out hint lasts 250 ms of wall-clock time, and under callgrind a request takes a few
# milliseconds, so about one sold-out request in fifty asks PostgreSQL again: compare figures
# from this script with each other, not with a server at full speed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_postgres
ensure_redis
requests="${1:-1000}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/evently-target}"
cargo build --release --locked --quiet -p evently
bin="$CARGO_TARGET_DIR/release/evently"
out="$CARGO_TARGET_DIR/callgrind"
mkdir -p "$out"
rm -f "$out"/callgrind.out.*

port="${CALLGRIND_PORT:-8098}"
db="${CALLGRIND_DB:-evently_callgrind}"
admin_url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
export DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/$db"
export EVENTLY_LISTEN="127.0.0.1:$port"
export REDIS_URL="${REDIS_URL-redis://127.0.0.1:6379}"
export REDIS_PREFIX="evently:callgrind:$$:"
export JWT_SECRET="callgrind-only-secret-callgrind-only-000"
export RUST_LOG="${RUST_LOG:-warn}"
export RESPONSE_CACHE_MS="${RESPONSE_CACHE_MS:-0}"
export RATE_LIMIT_REQUESTS=0 RATE_LIMIT_LOGIN=0 RATE_LIMIT_REGISTER=0 RATE_LIMIT_BOOKING=0 RATE_LIMIT_ACCOUNT=0
# Callgrind runs the server a few dozen times slower than usual.
export GRAPHQL_TIMEOUT_MS="${GRAPHQL_TIMEOUT_MS:-60000}"

psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
"$bin" seed-demo >/dev/null

server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap stop_server EXIT

valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" \
    "$bin" serve >"$out/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$out/server.log" >&2; exit 1; }
    sleep 0.2
done

python3 scripts/callgrind_requests.py "http://127.0.0.1:$port" "$server_pid" "$requests"

for dump in "$out"/callgrind.out.*.*; do
    phase=$(sed -n 's/^desc: Trigger: Client Request: //p' "$dump")
    [ -n "$phase" ] || continue
    instructions=$(sed -n 's/^summary: //p' "$dump" | awk '{print $1}')
    printf '%-24s %12d instructions per request  (%s)\n' "$phase" \
        $((instructions / requests)) "$dump"
done
