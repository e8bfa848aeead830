#!/usr/bin/env bash
# The server's CPU instructions per delivered fan-out message, counted by callgrind: a figure
# that does not depend on how loaded the machine is (timings do), so two commits can be
# compared on a busy machine. Kernel work (the socket writes themselves) is not counted.
#
#   scripts/fanout-callgrind.sh [SUBSCRIBERS [BOOKINGS]]      # defaults: 2000 subscribers, 10 bookings
#   EVENTLY_BIN=/path/to/evently scripts/fanout-callgrind.sh  # another build (say, the commit before)
#
# It starts a release build of the server under callgrind on a fresh database, connects the
# subscribers with `bench fanout` (not counted), then counts from the first booking to the
# last message sent, and prints instructions per message sent on the WebSockets
# (`evently_ws_messages_sent_total`). The per-booking work (the mutation, the shared
# execution) is included, spread over every subscriber's message. The bench's latencies are
# meaningless here (the server runs some 50 times slower under callgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_postgres
ensure_redis
command -v valgrind >/dev/null || apt_install valgrind
ulimit -n "$(ulimit -Hn)"

subscribers="${1:-2000}"
bookings="${2:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/evently-target}"
cargo build --release --locked --quiet -p evently -p evently-bench
bin="${EVENTLY_BIN:-$CARGO_TARGET_DIR/release/evently}"
bench="$CARGO_TARGET_DIR/release/bench"

port="${BENCH_PORT:-8097}"
db="${BENCH_DB:-evently_callgrind}"
admin_url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
export DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/$db"
export BENCH_DATABASE_URL="$DATABASE_URL"
export BENCH_URL="http://127.0.0.1:$port"
export EVENTLY_LISTEN="127.0.0.1:$port"
export REDIS_URL="${REDIS_URL-redis://127.0.0.1:6379}"
export REDIS_PREFIX="evently:callgrind:$$:"
export JWT_SECRET="bench-only-secret-bench-only-secret-0000"
export RUST_LOG="${RUST_LOG:-warn}"
export RATE_LIMIT_REQUESTS=0 RATE_LIMIT_LOGIN=0 RATE_LIMIT_REGISTER=0 RATE_LIMIT_BOOKING=0 RATE_LIMIT_ACCOUNT=0
export WS_MAX_ANONYMOUS_PER_ADDRESS=0
export WS_MAX_CONNECTIONS=$(( $(ulimit -n) - 512 ))

work=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
"$bin" seed-demo >/dev/null
valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file="$work/callgrind.out" \
    "$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.2
done

sent() {
    curl -s "$BENCH_URL/metrics" | awk '$1 == "evently_ws_messages_sent_total" { print $2 }' | tail -n 1
}

# One booking every half second: under callgrind the server coalesces what comes faster.
"$bench" --no-baseline --out "$work" fanout --subscribers "$subscribers" --rate 2 \
    --seconds $(( (bookings + 1) / 2 )) --label callgrind >"$work/bench.log" 2>&1 &
bench_pid=$!
until grep -q "subscribers connected" "$work/bench.log"; do
    kill -0 "$bench_pid" 2>/dev/null || { cat "$work/bench.log"; exit 1; }
    sleep 0.5
done
before=$(sent)
callgrind_control -i on "$server_pid" >/dev/null
wait "$bench_pid" || true
callgrind_control -i off "$server_pid" >/dev/null
after=$(sent)
callgrind_control -d "$server_pid" >/dev/null
sleep 1
instructions=$(cat "$work"/callgrind.out* | awk '/^summary:|^totals:/ { total += $2 } END { print total }')
messages=$(awk -v a="$after" -v b="$before" 'BEGIN { print a - b }')
grep -E "subscribers connected|messages received|lost" "$work/bench.log" || true
echo "instructions counted: $instructions"
echo "messages sent while counting: $messages"
awk -v i="$instructions" -v m="$messages" 'BEGIN { if (m > 0) printf "instructions per message: %.0f\n", i / m }'
if [ -n "${CALLGRIND_KEEP:-}" ]; then
    cp "$work"/callgrind.out* "$CALLGRIND_KEEP"/
    echo "profiles copied to $CALLGRIND_KEEP (callgrind_annotate them)"
fi
