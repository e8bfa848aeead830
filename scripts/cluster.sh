#!/usr/bin/env bash
# N Evently instances behind nginx on this machine, the way production runs them.
#
#   scripts/cluster.sh start [N] [--redis-cluster M]
#                                    build if needed, migrate and seed once, start N instances
#                                    (default 3) on ports 8001.. and nginx on 8000; with
#                                    --redis-cluster M (3 or more), a Redis Cluster of M masters
#                                    of its own on ports 7001.. (CLUSTER_REDIS_BASE_PORT), which
#                                    the instances use through REDIS_CLUSTER_URLS (sharded
#                                    pub/sub) instead of REDIS_URL
#   scripts/cluster.sh stop          SIGTERM every instance (each drains, then exits) and nginx
#   scripts/cluster.sh status        each instance's /readyz, nginx's, and the Redis Cluster's
#                                    shards
#   scripts/cluster.sh restart       a rolling restart, one instance at a time: take it out of
#                                    nginx (down, reload), SIGTERM, wait for it to exit, start
#                                    it (a fresh copy of the binary), wait for /readyz 200, put
#                                    it back in nginx
#
# PostgreSQL and Redis are the machine's (scripts/services.sh ensures them), with a database
# of its own (evently_cluster). Settings: CLUSTER_DIR (state: pids, logs, nginx config;
# default target/cluster), CLUSTER_PORT (nginx, 8000), CLUSTER_BASE_PORT (first instance,
# 8001), DATABASE_URL, REDIS_URL, EVENTLY_BIN (a built binary to use instead of building),
# and any Evently setting in the environment (JWT_SECRET, SHUTDOWN_DRAIN_MS, ...).
# `start` writes $CLUSTER_DIR/topology.env (EVENTLY_INSTANCE_URLS, and REDIS_CLUSTER_URLS with a
# Redis Cluster) for tools that look at each instance or shard (the fanout bench).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

state="${CLUSTER_DIR:-$root/target/cluster}"
nginx_port="${CLUSTER_PORT:-8000}"
base_port="${CLUSTER_BASE_PORT:-8001}"
# Each node's cluster bus is on its port + 10000.
redis_base_port="${CLUSTER_REDIS_BASE_PORT:-7001}"

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }

wait_ready() { # port, seconds
    for _ in $(seq 1 $(($2 * 10))); do
        [ "$(http_code "http://127.0.0.1:$1/readyz")" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

instance_ports() {
    local f
    for f in "$state"/instance-*.pid; do
        [ -e "$f" ] || continue
        f=${f##*/instance-}
        echo "${f%.pid}"
    done | sort -n
}

start_instance() { # port
    local port=$1
    EVENTLY_LISTEN="127.0.0.1:$port" "$state/evently" serve >>"$state/instance-$port.log" 2>&1 &
    echo $! >"$state/instance-$port.pid"
    wait_ready "$port" 60 || { echo "instance on :$port did not become ready; see $state/instance-$port.log" >&2; exit 1; }
}

stop_instance() { # port
    local pidfile="$state/instance-$1.pid"
    if pid_alive "$pidfile"; then
        local pid
        pid=$(cat "$pidfile")
        kill -TERM "$pid"
        # SHUTDOWN_GRACE_MS (30 s by default) bounds the drain; a little more, then for sure.
        for _ in $(seq 1 350); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# Renders deploy/nginx/evently.conf.template, the file docker-compose renders too; the
# instance on port $1, if given, is marked down.
render_nginx() {
    local servers="" port down_port=${1:-}
    for port in $(instance_ports); do
        if [ "$port" = "$down_port" ]; then
            servers+="server 127.0.0.1:$port max_fails=1 fail_timeout=2s down; "
        else
            servers+="server 127.0.0.1:$port max_fails=1 fail_timeout=2s; "
        fi
    done
    mkdir -p "$state/nginx/temp"
    cp deploy/nginx/nginx.conf "$state/nginx/nginx.conf"
    sed -e "s|\${EVENTLY_UPSTREAM_SERVERS}|$servers|" \
        -e "s|\${EVENTLY_NGINX_LISTEN}|127.0.0.1:$nginx_port|" \
        deploy/nginx/evently.conf.template >"$state/nginx/evently.conf"
}

# A Redis Cluster of $1 masters (no replicas: this is for load, the failover is tested in
# tests/api/scale/redis_cluster.rs) on $redis_base_port.., each node's files in
# $state/redis-<port>. (Not scripts/services.sh's start_redis_cluster: three masters with a
# replica each, for the failover tests.) Prints the nodes' URLs, comma-separated.
start_cluster_redis() {
    local masters=$1 i port nodes=() urls=()
    [ "$masters" -ge 3 ] || { echo "a Redis Cluster needs 3 masters or more" >&2; exit 2; }
    for i in $(seq 0 $((masters - 1))); do
        port=$((redis_base_port + i))
        # A node remembers its cluster in nodes.conf: start each run from an empty one.
        rm -rf "$state/redis-$port"
        mkdir -p "$state/redis-$port"
        redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file "$state/redis-$port/nodes.conf" --cluster-node-timeout 2000 \
            --save "" --appendonly no --daemonize yes --dir "$state/redis-$port" \
            --pidfile "$state/redis-$port/redis.pid" --logfile "$state/redis-$port/redis.log" >&2
        nodes+=("127.0.0.1:$port")
        urls+=("redis://127.0.0.1:$port")
    done
    for i in $(seq 0 $((masters - 1))); do
        port=$((redis_base_port + i))
        for _ in $(seq 1 50); do
            redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
            sleep 0.1
        done
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-yes >"$state/redis-cluster-create.log" 2>&1 ||
        { echo "redis-cli --cluster create failed; see $state/redis-cluster-create.log" >&2; exit 1; }
    # Every node must agree the cluster is ok before an instance asks it for the slot map.
    for _ in $(seq 1 100); do
        local ok=0
        for i in $(seq 0 $((masters - 1))); do
            redis-cli -p $((redis_base_port + i)) cluster info 2>/dev/null | grep -q 'cluster_state:ok' && ok=$((ok + 1))
        done
        if [ "$ok" -eq "$masters" ]; then
            (IFS=,; echo "${urls[*]}")
            return
        fi
        sleep 0.2
    done
    echo "the Redis Cluster on $redis_base_port.. did not come up; see $state/redis-*/redis.log" >&2
    exit 1
}

stop_cluster_redis() {
    local pidfile pids=() pid
    for pidfile in "$state"/redis-*/redis.pid; do
        [ -f "$pidfile" ] || continue
        pids+=("$(cat "$pidfile")")
        kill "${pids[-1]}" 2>/dev/null || true
    done
    # Gone before we return, so a start right after finds the ports free.
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
}

# Per shard: the slots it owns, the event channels with subscribers on it, and how many
# SPUBLISHes it has taken.
cluster_redis_status() {
    local pidfile port
    for pidfile in "$state"/redis-*/redis.pid; do
        [ -f "$pidfile" ] || continue
        port=${pidfile%/redis.pid}
        port=${port##*/redis-}
        printf '%-22s %-8s %s\n' "redis 127.0.0.1:$port" "$(cat "$pidfile")" \
            "$(redis-cli -p "$port" cluster nodes 2>/dev/null | awk '$2 ~ /:'"$port"'@/ { sub(/myself,/, "", $3); s = 0; for (i = 9; i <= NF; i++) { n = split($i, r, "-"); s += (n == 2 ? r[2] - r[1] + 1 : 1) } print $3 ", " s " slots" }'), $(redis-cli -p "$port" pubsub shardchannels 2>/dev/null | grep -c . || true) shard channels, $(redis-cli -p "$port" info commandstats 2>/dev/null | sed -n 's/^cmdstat_spublish:calls=\([0-9]*\).*/\1/p' | grep . || echo 0) SPUBLISH"
    done
}

start() {
    local count=3 redis_masters="${CLUSTER_REDIS_SHARDS:-}"
    while [ $# -gt 0 ]; do
        case "$1" in
            --redis-cluster) redis_masters=$2; shift 2 ;;
            *) count=$1; shift ;;
        esac
    done
    source scripts/services.sh
    ensure_nginx
    command -v curl >/dev/null || apt_install curl
    mkdir -p "$state"
    if [ -n "$(instance_ports)" ]; then
        echo "already running (scripts/cluster.sh status); stop it first" >&2
        exit 1
    fi
    if [ -n "${EVENTLY_BIN:-}" ]; then
        cp "$EVENTLY_BIN" "$state/evently"
    else
        export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/evently-target}"
        cargo build --release --locked --quiet -p evently
        # A copy: a rebuild while the cluster runs must not change what a restart starts.
        cp "$CARGO_TARGET_DIR/release/evently" "$state/evently"
    fi
    # Thousands of WebSockets need as many descriptors, in nginx and in each instance.
    ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

    export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/evently_cluster}"
    if [ -n "$redis_masters" ]; then
        echo "==> a Redis Cluster of $redis_masters masters on 127.0.0.1:$redis_base_port.."
        REDIS_CLUSTER_URLS=$(start_cluster_redis "$redis_masters")
        export REDIS_CLUSTER_URLS
        # Evently takes one or the other.
        unset REDIS_URL
    else
        export REDIS_URL="${REDIS_URL-redis://127.0.0.1:6379}"
    fi
    export REDIS_PREFIX="${REDIS_PREFIX:-evently:cluster:}"
    export JWT_SECRET="${JWT_SECRET:-cluster-dev-secret-cluster-dev-secret-00}"
    export RUST_LOG="${RUST_LOG:-evently=info,warn}"
    # Only nginx's X-Forwarded-For is believed: clients keep their own rate limits.
    export TRUSTED_PROXIES="${TRUSTED_PROXIES:-127.0.0.1}"
    local admin_url="${DATABASE_URL%/*}/postgres" db="${DATABASE_URL##*/}"
    if [ -z "$(psql -tAq "$admin_url" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
        psql -q "$admin_url" -c "CREATE DATABASE \"$db\""
    fi
    # Migrations run here once (instances would also apply them, under an advisory lock).
    "$state/evently" seed-demo >"$state/seed.log"

    local i port
    for i in $(seq 0 $((count - 1))); do
        port=$((base_port + i))
        echo "==> instance $((i + 1)) on 127.0.0.1:$port"
        start_instance "$port"
    done
    render_nginx
    echo "==> nginx on 127.0.0.1:$nginx_port"
    "$(command -v nginx || echo /usr/sbin/nginx)" -p "$state/nginx" -c "$state/nginx/nginx.conf" -e "$state/nginx/error.log" \
        -g 'daemon off;' >>"$state/nginx/error.log" 2>&1 &
    echo $! >"$state/nginx.pid"
    for _ in $(seq 1 50); do
        [ "$(http_code "http://127.0.0.1:$nginx_port/readyz")" = 200 ] && break
        sleep 0.1
    done
    # What restarts need: the environment the instances started with.
    export -p | grep -E ' (DATABASE_URL|REDIS_URL|REDIS_PREFIX|JWT_SECRET|RUST_LOG|TRUSTED_PROXIES|EVENTLY_[A-Z_]*|RATE_LIMIT_[A-Z_]*|WS_[A-Z_]*|SHUTDOWN_[A-Z_]*|DATABASE_[A-Z_]*|REDIS_[A-Z_]*|GRAPHQL_[A-Z_]*|RESPONSE_CACHE_MS|OTEL_[A-Z_]*)=' \
        >"$state/env.sh"
    {
        echo "EVENTLY_INSTANCE_URLS=$(instance_ports | sed 's|^|http://127.0.0.1:|' | paste -sd, -)"
        [ -z "${REDIS_CLUSTER_URLS:-}" ] || echo "REDIS_CLUSTER_URLS=$REDIS_CLUSTER_URLS"
    } >"$state/topology.env"
    status
    echo "GraphQL: http://127.0.0.1:$nginx_port/graphql    state and logs: $state"
}

stop() {
    local port
    for port in $(instance_ports); do
        echo "==> stopping the instance on :$port (SIGTERM)"
        stop_instance "$port" &
    done
    wait
    if pid_alive "$state/nginx.pid"; then
        echo "==> stopping nginx"
        kill -QUIT "$(cat "$state/nginx.pid")"
        for _ in $(seq 1 50); do pid_alive "$state/nginx.pid" || break; sleep 0.1; done
    fi
    rm -f "$state/nginx.pid"
    stop_cluster_redis
    rm -f "$state/topology.env"
}

# New nginx workers take the new config; old ones finish their requests (and WebSockets) and
# exit. nginx reports no moment at which the reload is done: the new workers start within
# milliseconds, a second is plenty.
reload_nginx() {
    kill -HUP "$(cat "$state/nginx.pid")"
    sleep 1
}

restart() {
    [ -f "$state/env.sh" ] || { echo "not running" >&2; exit 1; }
    source "$state/env.sh"
    ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    if [ -n "${EVENTLY_BIN:-}" ]; then cp "$EVENTLY_BIN" "$state/evently.new" && mv "$state/evently.new" "$state/evently"; fi
    local port
    for port in $(instance_ports); do
        echo "==> restarting the instance on :$port (out of nginx, SIGTERM, start, ready, back in)"
        render_nginx "$port"
        reload_nginx
        stop_instance "$port"
        start_instance "$port"
        render_nginx
        reload_nginx
    done
    status
}

status() {
    local port pid state_of
    printf '%-22s %-8s %s\n' instance pid /readyz
    for port in $(instance_ports); do
        pid=$(cat "$state/instance-$port.pid")
        if kill -0 "$pid" 2>/dev/null; then
            state_of=$(curl -s --max-time 2 -w ' (HTTP %{http_code})' "http://127.0.0.1:$port/readyz" || echo unreachable)
        else
            state_of="not running"
        fi
        printf '%-22s %-8s %s\n' "127.0.0.1:$port" "$pid" "$state_of"
    done
    if pid_alive "$state/nginx.pid"; then
        printf '%-22s %-8s %s\n' "nginx 127.0.0.1:$nginx_port" "$(cat "$state/nginx.pid")" \
            "$(curl -s --max-time 2 -w ' (HTTP %{http_code})' "http://127.0.0.1:$nginx_port/readyz" || echo unreachable)"
    else
        echo "nginx: not running"
    fi
    cluster_redis_status
}

command="${1:-}"
shift || true
case "$command" in
    start) start "$@" ;;
    stop) stop ;;
    status) status ;;
    restart) restart ;;
    *) sed -n '2,25p' "$0"; exit 2 ;;
esac
