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

ensure_postgres
ensure_redis
