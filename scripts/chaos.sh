#!/usr/bin/env bash
# The chaos suite: an onsale through nginx in front of 3 instances while something breaks.
#
#   scripts/chaos.sh [kill] [rolling] [rolling-unannounced] [postgres] [redis] [--small] [options]
#
#   kill                 SIGKILL one instance mid-onsale
#   rolling              each instance in turn: out of nginx (down, reload), SIGTERM, start,
#                        ready, back in (what scripts/cluster.sh restart does)
#   rolling-unannounced  the same with SIGTERM alone, nginx not told
#   postgres             PostgreSQL stopped (-m fast; --postgres-stop immediate for a crash)
#                        mid-load for --outage-secs (6), started again; instances not restarted
#   redis                Redis killed and started empty, then frozen (SIGSTOP) and thawed
#
# All of them when none is named. 256 buyers booking with idempotency keys they retry, and 1,000
# subscribers watching the seat count (--small: 32 and 50, the size the tests run). Each
# scenario starts a deployment of its own (PostgreSQL cluster from initdb, redis-server,
# instances, nginx, on free loopback ports in a temp dir), so the machine's PostgreSQL and
# Redis are never touched. Each prints its figures (its table, then one line: bookings
# confirmed, lost, duplicates, subscribers converged and how fast, 5xx seen,
# SERVICE_UNAVAILABLE answers, time to recover) and writes bench/results/chaos-<name>.json and
# .md; the suite ends with a table of every scenario, and its exit status says whether every
# property held. Bounded: each scenario's waits are bounded (a key is given up after 60 s,
# subscribers get 30 s to converge...), and one still running after --scenario-timeout-secs
# (600) fails and is torn down. At full size a scenario takes 1 to 2 minutes, the suite about
# 10. `bench chaos --help` lists the options; CHAOS_KEEP_DIR=1 keeps the processes' logs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_nginx
# The scenarios initdb their own PostgreSQL from the server package's binaries.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
# A thousand WebSockets hold descriptors in the tool, nginx and the instances.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/evently-target}"
cargo build --release --locked --quiet -p evently -p evently-bench
bin="$CARGO_TARGET_DIR/release"
mkdir -p bench/results
exec "$bin/bench" chaos --evently-bin "$bin/evently" "$@"
