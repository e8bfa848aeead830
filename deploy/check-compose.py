#!/usr/bin/env python3
"""Checks docker-compose.yml against the topology scripts/cluster.sh runs, without Docker.

Where `docker compose up` cannot run (no daemon, no registry), this is what can be checked:
the file parses; it has PostgreSQL, Redis, the instances and nginx; nginx renders the same
template as scripts/cluster.sh (deploy/nginx/evently.conf.template) and sets exactly the
placeholders it has; its upstream lists every instance on the port the image listens on; each
instance gets the settings cluster.sh gives its own, believes nginx's address as a proxy, and
is given longer than SHUTDOWN_GRACE_MS to drain. `docker-compose config` (Debian's
docker-compose package) checks the schema on top of this.

    python3 deploy/check-compose.py        # exit status 1 and the problems when it does not hold
"""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = "deploy/nginx/evently.conf.template"
# What scripts/cluster.sh exports for every instance, besides the listen address.
INSTANCE_SETTINGS = {"DATABASE_URL", "REDIS_URL", "JWT_SECRET", "RUST_LOG", "TRUSTED_PROXIES"}
SHUTDOWN_GRACE_SECS = 30  # SHUTDOWN_GRACE_MS's default


def seconds(value):
    match = re.fullmatch(r"(\d+)s", str(value))
    return int(match.group(1)) if match else None


def main():
    problems = []
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose.get("services", {})
    instances = sorted(name for name in services if name.startswith("evently-"))
    for name in ["postgres", "redis", "nginx"]:
        if name not in services:
            problems.append(f"no {name} service")
    if len(instances) < 2:
        problems.append(f"the issue asks for two instances, found {instances}")

    cluster_sh = (ROOT / "scripts/cluster.sh").read_text()
    if TEMPLATE not in cluster_sh:
        problems.append(f"scripts/cluster.sh no longer renders {TEMPLATE}")
    template = (ROOT / TEMPLATE).read_text()
    placeholders = set(re.findall(r"\$\{([A-Z_]+)\}", template))

    nginx = services.get("nginx", {})
    mounts = [str(v).split(":") for v in nginx.get("volumes", [])]
    if not any(m[0] == f"./{TEMPLATE}" and m[1].startswith("/etc/nginx/templates/") for m in mounts):
        problems.append(f"nginx does not mount {TEMPLATE} into /etc/nginx/templates/")
    nginx_env = nginx.get("environment", {})
    if set(nginx_env) != placeholders:
        problems.append(f"nginx sets {sorted(nginx_env)}, the template needs {sorted(placeholders)}")
    upstream = str(nginx_env.get("EVENTLY_UPSTREAM_SERVERS", ""))
    for name in instances:
        if f"server {name}:8000 " not in upstream + " ":
            problems.append(f"nginx's upstream does not list {name}:8000: {upstream!r}")
    nginx_address = (
        nginx.get("networks", {}).get("evently", {}) or {}
    ).get("ipv4_address") if isinstance(nginx.get("networks"), dict) else None

    for name in instances:
        service = services[name]
        env = service.get("environment", {})
        missing = INSTANCE_SETTINGS - set(env)
        if missing:
            problems.append(f"{name} lacks {sorted(missing)}")
        if env.get("REDIS_URL") and env.get("REDIS_CLUSTER_URLS"):
            problems.append(f"{name} sets both REDIS_URL and REDIS_CLUSTER_URLS")
        if nginx_address and env.get("TRUSTED_PROXIES") != nginx_address:
            problems.append(
                f"{name} trusts {env.get('TRUSTED_PROXIES')!r} as proxy, nginx is {nginx_address}"
            )
        grace = seconds(service.get("stop_grace_period"))
        if grace is None or grace <= SHUTDOWN_GRACE_SECS:
            problems.append(f"{name}: stop_grace_period must exceed {SHUTDOWN_GRACE_SECS}s")
        if "readyz" not in str(service.get("healthcheck", {}).get("test")):
            problems.append(f"{name}'s health check does not ask /readyz")

    for problem in problems:
        print(f"docker-compose.yml: {problem}", file=sys.stderr)
    if not problems:
        print(f"docker-compose.yml: {len(services)} services, {len(instances)} instances behind nginx, "
              f"same nginx template as scripts/cluster.sh: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
