# Sourced by dev.sh and test.sh: makes sure PostgreSQL and Redis are installed and running on
# this machine, reusing running ones. Installs with apt-get when missing (Debian; needs root).
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    if [ -z "${EVENTLY_APT_UPDATED:-}" ]; then
        as_root apt-get update -qq
        export EVENTLY_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
    if ! command -v psql >/dev/null; then
        echo "==> installing the PostgreSQL client"
        apt_install postgresql-client
    fi
    if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        return
    fi
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        echo "==> installing PostgreSQL"
        apt_install postgresql
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        echo "==> starting PostgreSQL $version"
        # The package's own start may have beaten us to it; the wait below is what counts.
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
            || as_root pg_ctlcluster "$version" main start || true
    fi
    for _ in $(seq 1 30); do
        pg_isready -q -h 127.0.0.1 -p 5432 && break
        sleep 1
    done
    pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL did not start" >&2; exit 1; }
    # A fresh Debian cluster asks for a password over TCP; give the superuser the one our
    # default URLs use (harmless where trust authentication is configured).
    as_root runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
}

ensure_redis() {
    if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
        return
    fi
    if ! command -v redis-server >/dev/null; then
        echo "==> installing Redis"
        apt_install redis-server
    fi
    if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
        echo "==> starting Redis"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null || true
    fi
    for _ in $(seq 1 30); do
        redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && return
        sleep 0.2
    done
    echo "Redis did not start" >&2
    exit 1
}

ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then
        return
    fi
    echo "==> installing Chromium (for the GraphiQL browser test)"
    apt_install chromium
}

# Prometheus scrapes a test server and promtool checks its exposition (tests/api/metrics.rs).
ensure_prometheus() {
    if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
        return
    fi
    echo "==> installing Prometheus (for the /metrics test)"
    apt_install prometheus
    # The package starts a system Prometheus on :9090; the test runs its own on a free port.
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
}

# Node runs the reference graphql-ws client test (tests/js).
ensure_node() {
    if command -v node >/dev/null && command -v npm >/dev/null; then
        return
    fi
    echo "==> installing Node.js and npm (for the reference WebSocket client test)"
    apt_install nodejs npm
}

# nginx balances N instances (scripts/cluster.sh, the chaos suite in tests/chaos.rs). Only
# the binary is used, run as a child with its own config; the package's service stays off.
ensure_nginx() {
    if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
        return
    fi
    echo "==> installing nginx"
    apt_install nginx
    as_root systemctl disable --now nginx >/dev/null 2>&1 || true
}


# EVENTLY_SERVICES_FUNCTIONS_ONLY=1 only defines the functions (the scaling tests use it).
if [ -z "${EVENTLY_SERVICES_FUNCTIONS_ONLY:-}" ]; then
    ensure_postgres
    ensure_redis
fi

# --- Scaling: a Redis Cluster and a PostgreSQL streaming replica on loopback ----------------
# Used by the scaling tests (tests/api/scale/) and by hand. Each takes a directory of its own
# and ports, and an optional process id: when that process ends, what was started is stopped
# and the directory removed (so a test run leaves nothing behind).

# Stops the daemons whose pid files lie under $1 once process $2 has ended.
stop_when_gone() {
    local dir=$1 owner=$2
    (
        while kill -0 "$owner" 2>/dev/null; do sleep 1; done
        stop_redis_cluster "$dir" 2>/dev/null || true
        stop_pg_replica "$dir" 2>/dev/null || true
        sleep 1
        rm -rf "$dir"
    ) >/dev/null 2>&1 </dev/null &
    disown || true
}

# start_redis_cluster DIR FIRST_PORT [OWNER_PID]: six redis-servers on FIRST_PORT..FIRST_PORT+5
# (and their cluster bus ports, +10000), made into three masters with one replica each; waits
# until the cluster is ok and every replica is in sync, so a failover can happen at once.
start_redis_cluster() {
    local dir=$1 base=$2 owner=${3:-} port nodes=()
    mkdir -p "$dir"
    for i in 0 1 2 3 4 5; do
        port=$((base + i))
        mkdir -p "$dir/redis-$port"
        redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file "$dir/redis-$port/nodes.conf" \
            --cluster-node-timeout "${REDIS_CLUSTER_NODE_TIMEOUT_MS:-1000}" \
            --save "" --appendonly no --daemonize yes --dir "$dir/redis-$port" \
            --pidfile "$dir/redis-$port/redis.pid" --logfile "$dir/redis-$port/redis.log"
        nodes+=("127.0.0.1:$port")
    done
    if [ -n "$owner" ]; then stop_when_gone "$dir" "$owner"; fi
    for i in 0 1 2 3 4 5; do
        port=$((base + i))
        for _ in $(seq 1 50); do
            redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
            sleep 0.1
        done
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
        >"$dir/cluster-create.log" 2>&1
    for _ in $(seq 1 100); do
        local ready=0
        for i in 0 1 2 3 4 5; do
            port=$((base + i))
            redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || continue
            # Every node knows every replica (CLUSTER SLOTS lists them).
            [ "$(redis-cli -p "$port" cluster nodes | awk '$3 ~ /slave/' | wc -l)" -eq 3 ] || continue
            if redis-cli -p "$port" info replication | grep -q 'role:slave'; then
                redis-cli -p "$port" info replication | grep -q 'master_link_status:up' || continue
            fi
            ready=$((ready + 1))
        done
        [ "$ready" -eq 6 ] && return 0
        sleep 0.2
    done
    echo "the Redis Cluster on $base.. did not come up (see $dir)" >&2
    return 1
}

stop_redis_cluster() {
    local dir=$1 pidfile
    for pidfile in "$dir"/redis-*/redis.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
}

# Runs a command as the postgres user (PostgreSQL refuses to run as root).
as_postgres() {
    if [ "$(id -un)" = postgres ]; then "$@"; else as_root runuser -u postgres -- "$@"; fi
}

pg_bin() {
    ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1
}

# start_pg_replica DIR PRIMARY_PORT REPLICA_PORT [OWNER_PID]: a PostgreSQL primary of its own
# (trust authentication on loopback, user postgres) and a streaming replica of it made with
# `pg_basebackup -R`; returns once the replica accepts read-only connections.
start_pg_replica() {
    local dir=$1 primary_port=$2 replica_port=$3 owner=${4:-} bin
    bin=$(pg_bin)
    mkdir -p "$dir"
    chown postgres "$dir" 2>/dev/null || true
    as_postgres "$bin/initdb" -D "$dir/primary" -U postgres --auth=trust >"$dir/initdb.log" 2>&1
    cat >>"$dir/primary/postgresql.conf" <<CONF
port = $primary_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
wal_level = replica
max_wal_senders = 5
hot_standby = on
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
    as_postgres "$bin/pg_ctl" -D "$dir/primary" -l "$dir/primary.log" -w start >/dev/null
    if [ -n "$owner" ]; then stop_when_gone "$dir" "$owner"; fi
    as_postgres "$bin/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres \
        -D "$dir/replica" -R -X stream >"$dir/basebackup.log" 2>&1
    echo "port = $replica_port" >>"$dir/replica/postgresql.conf"
    as_postgres "$bin/pg_ctl" -D "$dir/replica" -l "$dir/replica.log" -w start >/dev/null
    for _ in $(seq 1 50); do
        pg_isready -q -h 127.0.0.1 -p "$replica_port" && return 0
        sleep 0.1
    done
    echo "the replica on $replica_port did not come up (see $dir)" >&2
    return 1
}

stop_pg_replica() {
    local dir=$1 bin node
    bin=$(pg_bin)
    for node in replica primary; do
        [ -f "$dir/$node/postmaster.pid" ] &&
            as_postgres "$bin/pg_ctl" -D "$dir/$node" -m immediate stop >/dev/null 2>&1 || true
    done
}
