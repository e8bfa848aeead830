#!/usr/bin/env bash
# Runs a load scenario against a release build of Evently on this machine, and writes the
# results (JSON, markdown, PNG) to bench/results/.
#
#   scripts/bench.sh onsale|orders|webhooks|browse|fanout|mixed|baseline [bench options]
#   scripts/bench.sh orders --buyers 256          # placeOrder group commit vs pgbench
#   scripts/bench.sh webhooks --orders 5000       # payment webhooks applied/s (the tool
#                                 # runs a Stripe stand-in; the server is configured for it)
#   scripts/bench.sh all          # every scenario with its defaults
#   scripts/bench.sh browse --peer postgraphile   # also PostGraphile v4 on the same database
#   scripts/bench.sh sweep onsale|browse|fanout SIZES [bench options]
#                                 # the scenario at each size (comma-separated: buyers,
#                                 # connections or subscribers), then its curve as a PNG
#   scripts/bench.sh fanout --via-cluster 3 [bench options]
#                                 # N instances behind nginx (scripts/cluster.sh), the tool
#                                 # talking to nginx; e.g. the issue's figure:
#                                 # --via-cluster 3 --redis-cluster 3 --subscribers 15000 --events 100 --hot-subscribers 5000
#                                 # (--redis-cluster M: the instances on a Redis Cluster of M
#                                 # masters of their own, sharded pub/sub, instead of one Redis)
#
# Each invocation starts its own server on a fresh database (evently_bench), with the demo
# data, Redis pub/sub and the rate limits switched off (a load tool is one client doing the
# work of thousands). `onsale` kills the server with SIGKILL at the end and then checks that
# every booking a client heard "confirmed" is in PostgreSQL. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_postgres
ensure_redis
command -v pgbench >/dev/null || apt_install postgresql-contrib
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_install fonts-dejavu-core
# Thousands of WebSocket connections need as many file descriptors on each side.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The server keeps a quarter of its files spare by default; on a machine whose hard limit is
# low (20,000 here) that caps the fan-out below its 19,000 subscribers. Keep 512 spare instead.
export WS_MAX_CONNECTIONS="${WS_MAX_CONNECTIONS:-$(( $(ulimit -n) - 512 ))}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/evently-target}"
# BENCH_PROFILE=dev: a debug build, to check a scenario works without a release build's wait
# (its figures mean nothing).
profile="${BENCH_PROFILE:-release}"
cargo build --profile "$profile" --locked --quiet -p evently -p evently-bench
bin="$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")"

port="${BENCH_PORT:-8099}"
admin_url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
# BENCH_DB: another name lets two checkouts bench on one PostgreSQL at once (with BENCH_PORT
# and PEER_PORT apart too).
bench_db="${BENCH_DB:-evently_bench}"
export DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/$bench_db"
export BENCH_DATABASE_URL="$DATABASE_URL"
export BENCH_URL="http://127.0.0.1:$port"
export EVENTLY_LISTEN="127.0.0.1:$port"
export REDIS_URL="${REDIS_URL-redis://127.0.0.1:6379}"
export REDIS_PREFIX="evently:bench:$$:"
export JWT_SECRET="bench-only-secret-bench-only-secret-0000"
export RUST_LOG="${RUST_LOG:-warn}"
# One load tool does the work of thousands of clients from one address: no rate limits.
export RATE_LIMIT_REQUESTS=0 RATE_LIMIT_LOGIN=0 RATE_LIMIT_REGISTER=0 RATE_LIMIT_BOOKING=0 RATE_LIMIT_ACCOUNT=0
# ...and holds thousands of anonymous WebSockets from a few loopback addresses.
export WS_MAX_ANONYMOUS_PER_ADDRESS=0
mkdir -p bench/results
log="bench/results/server.log"

server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
trap stop_server EXIT

start_server() {
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $bench_db WITH (FORCE)" -c "CREATE DATABASE $bench_db"
    "$bin/evently" seed-demo >/dev/null
    "$bin/evently" serve >>"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
        sleep 0.1
    done
    echo "the server did not start; see $log" >&2
    exit 1
}

peer_pid=""
stop_peer() {
    if [ -n "$peer_pid" ] && kill -0 "$peer_pid" 2>/dev/null; then
        # The peer's cluster workers are its children: end its process group.
        kill -TERM -- "-$peer_pid" 2>/dev/null || kill -TERM "$peer_pid" 2>/dev/null || true
        wait "$peer_pid" 2>/dev/null || true
    fi
    peer_pid=""
}
trap 'stop_peer; stop_server' EXIT

# PostGraphile on the bench database, for `browse --peer postgraphile`.
start_peer() {
    ensure_node
    local peer_port="${PEER_PORT:-5099}"
    set -m
    bench/peers/postgraphile.sh >>"bench/results/peer.log" 2>&1 &
    peer_pid=$!
    set +m
    for _ in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$peer_port") 2>/dev/null; then return; fi
        kill -0 "$peer_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "PostGraphile did not start; see bench/results/peer.log" >&2
    exit 1
}

cluster_state="$CARGO_TARGET_DIR/bench-cluster"
stop_cluster() {
    CLUSTER_DIR="$cluster_state" CLUSTER_PORT="$port" scripts/cluster.sh stop >/dev/null 2>&1 || true
}

# N instances on the ports after $port, behind nginx on $port, on the same fresh database;
# on a Redis Cluster of M masters when M is given.
run_via_cluster() {
    local instances=$1 redis_masters=$2 scenario=$3
    shift 3
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS evently_bench WITH (FORCE)" -c "CREATE DATABASE evently_bench"
    trap 'stop_server; stop_cluster' EXIT
    CLUSTER_DIR="$cluster_state" CLUSTER_PORT="$port" CLUSTER_BASE_PORT=$((port + 1)) EVENTLY_BIN="$bin/evently" \
        CLUSTER_REDIS_SHARDS="$redis_masters" CLUSTER_REDIS_BASE_PORT=$((port + 101)) \
        scripts/cluster.sh start "$instances"
    echo "==> $scenario through nginx in front of $instances instances${redis_masters:+ on a Redis Cluster of $redis_masters masters}"
    # The instances' and shards' addresses, for the per-instance and per-shard figures.
    (set -a; source "$cluster_state/topology.env"; exec "$bin/bench" "$scenario" "$@")
    stop_cluster
}

run() {
    local scenario=$1
    shift
    local args=() via_cluster="" redis_cluster=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --via-cluster) via_cluster=$2; shift 2 ;;
            --redis-cluster) redis_cluster=$2; shift 2 ;;
            *) args+=("$1"); shift ;;
        esac
    done
    if [ -n "$via_cluster" ]; then
        run_via_cluster "$via_cluster" "$redis_cluster" "$scenario" "${args[@]}"
        return
    fi
    set -- "${args[@]}"
    if [ "$scenario" = webhooks ]; then
        # Card payments through the tool's Stripe stand-in, signed with a bench-only secret.
        local stripe_addr="127.0.0.1:${BENCH_STRIPE_PORT:-$((port - 2))}"
        export STRIPE_API_BASE="http://$stripe_addr" BENCH_STRIPE_ADDR="$stripe_addr"
        export STRIPE_SECRET_KEY="sk_test_bench_only" STRIPE_WEBHOOK_SECRET="whsec_bench_only"
    fi
    start_server
    case " $* " in
        *" --peer postgraphile "*|*" --peer=postgraphile "*) start_peer ;;
    esac
    echo "==> $scenario"
    "$bin/bench" --server-pid "$server_pid" "$scenario" "$@"
    stop_peer
    stop_server
}

# The scenario at each size, each on a fresh server, labelled sweep-<size>; then the curve.
sweep() {
    local scenario=$1 sizes=$2
    shift 2
    local size_option
    case "$scenario" in
        onsale|browse) size_option=--concurrency ;;
        fanout) size_option=--subscribers ;;
        *) echo "sweep: onsale, browse or fanout" >&2; exit 2 ;;
    esac
    for size in ${sizes//,/ }; do
        run "$scenario" "$size_option" "$size" --label "sweep-$size" "$@"
    done
    "$bin/bench" curve "$scenario" --sizes "$sizes"
}

scenario="${1:-}"
[ -n "$scenario" ] || { sed -n '2,19p' "$0"; exit 2; }
shift
case "$scenario" in
    sweep)
        [ $# -ge 2 ] || { echo "usage: scripts/bench.sh sweep onsale|browse|fanout SIZES [options]" >&2; exit 2; }
        sweep "$@"
        ;;
    all)
        run browse "$@"
        run fanout "$@"
        run mixed "$@"
        run onsale "$@"
        ;;
    *) run "$scenario" "$@" ;;
esac
