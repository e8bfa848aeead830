//! A whole Evently deployment on loopback, as child processes, for the chaos scenarios: a
//! PostgreSQL cluster of its own (initdb in a temp dir, on a free port), a redis-server of its
//! own, N Evently instances and nginx in front of them with the repository's config
//! (`deploy/nginx/`). Nothing here touches the machine's shared PostgreSQL or Redis, so a
//! scenario may stop, freeze or kill any of its processes. Everything is stopped, and the temp
//! dir removed, when the `Cluster` is dropped.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use tokio::process::{Child, Command};

mod services;

pub use services::{Postgres, PostgresStop, Redis};

/// The load balancer's config, shared with `scripts/cluster.sh` and `docker-compose.yml`.
const NGINX_SITE: &str = include_str!("../../../deploy/nginx/evently.conf.template");
const NGINX_MAIN: &str = include_str!("../../../deploy/nginx/nginx.conf");
const JWT_SECRET: &str = "chaos-only-secret-chaos-only-secret-0000";

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub evently_bin: PathBuf,
    pub instances: usize,
    /// Where `initdb`, `pg_ctl` and `postgres` are (Debian: `/usr/lib/postgresql/<v>/bin`).
    pub pg_bin_dir: PathBuf,
    /// Settings for every instance, on top of the ones a load test needs (no rate limits...).
    pub env: Vec<(String, String)>,
}

pub struct Cluster {
    dir: PathBuf,
    options: ClusterOptions,
    pub postgres: Postgres,
    pub redis: Redis,
    pub instances: Vec<Instance>,
    nginx: Option<Child>,
    nginx_port: u16,
    /// How many workers nginx runs (a reload starts as many new ones).
    nginx_workers: usize,
    /// Instances taken out of nginx's upstream (`down`), for a restart nginx knows about.
    out_of_balancer: Vec<bool>,
    /// nginx: what clients talk to.
    pub url: String,
    http: reqwest::Client,
}

pub struct Instance {
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Cluster {
    /// Starts everything and returns once every instance answers `/readyz` and nginx serves.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        ensure!(
            options.evently_bin.exists(),
            "no Evently binary at {} (build it first)",
            options.evently_bin.display()
        );
        let dir = std::env::temp_dir().join(format!("evently-chaos-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let postgres = Postgres::start(&dir, &options.pg_bin_dir).await?;
        let redis = Redis::start(&dir).await?;
        let mut cluster = Self {
            dir,
            postgres,
            redis,
            instances: Vec::new(),
            nginx: None,
            nginx_port: free_port()?,
            nginx_workers: 0,
            out_of_balancer: Vec::new(),
            url: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()?,
            options,
        };
        // Migrations and the demo organizer, once, before the instances start.
        let status = cluster
            .evently_command()
            .arg("seed-demo")
            .stdout(Stdio::null())
            .stderr(File::create(cluster.dir.join("seed.log"))?)
            .status()
            .await?;
        ensure!(status.success(), "evently seed-demo failed: see seed.log");
        for _ in 0..cluster.options.instances {
            let port = free_port()?;
            let log = cluster.dir.join(format!("instance-{port}.log"));
            cluster.instances.push(Instance {
                port,
                child: None,
                log,
            });
            cluster.out_of_balancer.push(false);
        }
        for i in 0..cluster.instances.len() {
            cluster.spawn_instance(i)?;
        }
        for i in 0..cluster.instances.len() {
            cluster.wait_ready(i, Duration::from_secs(60)).await?;
        }
        cluster.start_nginx().await?;
        Ok(cluster)
    }

    pub fn database_url(&self) -> String {
        self.postgres.url()
    }

    /// Where this cluster keeps its logs (kept only while it runs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn evently_command(&self) -> Command {
        let mut command = Command::new(&self.options.evently_bin);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", self.postgres.url())
            .env(
                "REDIS_URL",
                format!("redis://127.0.0.1:{}", self.redis.port),
            )
            .env("JWT_SECRET", JWT_SECRET)
            .env("RUST_LOG", "evently=info,warn")
            // One load tool is thousands of clients on a few addresses.
            .env("RATE_LIMIT_REQUESTS", "0")
            .env("RATE_LIMIT_LOGIN", "0")
            .env("RATE_LIMIT_REGISTER", "0")
            .env("RATE_LIMIT_BOOKING", "0")
            .env("RATE_LIMIT_ACCOUNT", "0")
            .env("WS_MAX_ANONYMOUS_PER_ADDRESS", "0")
            .env("TRUSTED_PROXIES", "127.0.0.1")
            .env("SHUTDOWN_DRAIN_MS", "1500")
            // A frozen Redis is noticed within a second or two.
            .env("REDIS_PING_INTERVAL_MS", "500")
            .env("REDIS_PING_TIMEOUT_MS", "1000")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn spawn_instance(&mut self, i: usize) -> anyhow::Result<()> {
        let instance = &self.instances[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&instance.log)?;
        let child = self
            .evently_command()
            .arg("serve")
            .env("EVENTLY_LISTEN", format!("127.0.0.1:{}", instance.port))
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting an Evently instance")?;
        self.instances[i].child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self, i: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.instances[i].child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "instance {i} exited ({status}); log: {}",
                    self.instances[i].log.display()
                );
            }
            if self.readyz(i).await.is_ok_and(|(status, _)| status == 200) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "instance {i} not ready within {within:?}; log: {}",
                self.instances[i].log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An instance's `/readyz`: its HTTP status and body.
    pub async fn readyz(&self, i: usize) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .get(format!(
                "http://127.0.0.1:{}/readyz",
                self.instances[i].port
            ))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Every instance's `/readyz` at once (a check waiting on a dead dependency takes seconds).
    pub async fn readyz_all(&self) -> Vec<Option<(u16, Value)>> {
        futures_util::future::join_all(
            (0..self.instances.len()).map(|i| async move { self.readyz(i).await.ok() }),
        )
        .await
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.instances[i].child.as_ref().and_then(Child::id)
    }

    /// True while instance `i`'s process (the one started last) runs.
    pub fn running(&mut self, i: usize) -> bool {
        self.instances[i]
            .child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGKILL, as a crash would; the instance stays down.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.instances[i].child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the graceful shutdown to end (bounded by its grace).
    pub async fn terminate(&mut self, i: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        if let Some(mut child) = self.instances[i].child.take() {
            if let Some(pid) = child.id() {
                signal(pid, "TERM")?;
            }
            match tokio::time::timeout(Duration::from_secs(40), child.wait()).await {
                Ok(status) => {
                    status?;
                }
                Err(_) => {
                    child.start_kill()?;
                    child.wait().await?;
                    bail!("instance {i} did not stop within 40 s of SIGTERM");
                }
            }
        }
        Ok(started.elapsed())
    }

    /// Starts instance `i` again on its port and waits until it is ready.
    pub async fn restart_instance(&mut self, i: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.spawn_instance(i)?;
        self.wait_ready(i, Duration::from_secs(60)).await?;
        Ok(started.elapsed())
    }

    async fn start_nginx(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.join("nginx");
        for temp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join("temp").join(temp))?;
        }
        // Run as root, nginx's workers run as nobody and must be able to write there.
        set_mode(&dir.join("temp"), 0o1777)?;
        for temp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            set_mode(&dir.join("temp").join(temp), 0o1777)?;
        }
        let port = self.nginx_port;
        std::fs::write(dir.join("nginx.conf"), NGINX_MAIN)?;
        self.render_nginx_site()?;
        let log = File::create(dir.join("stderr.log"))?;
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off;"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting nginx (scripts/services.sh ensure_nginx installs it)")?;
        self.nginx = Some(child);
        self.url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let healthy = self
                .http
                .get(format!("{}/nginx-healthz", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                let master = self.nginx.as_ref().and_then(Child::id).unwrap_or(0);
                self.nginx_workers = children(master).len();
                return Ok(());
            }
            if let Some(status) = self
                .nginx
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                bail!("nginx exited ({status}): {log}");
            }
            ensure!(Instant::now() < deadline, "nginx did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Cluster {
    /// `deploy/nginx/evently.conf.template` with this cluster's instances, those taken out
    /// marked `down`.
    fn render_nginx_site(&self) -> anyhow::Result<()> {
        let servers: String = self
            .instances
            .iter()
            .zip(&self.out_of_balancer)
            .map(|(instance, out)| {
                let down = if *out { " down" } else { "" };
                format!(
                    "server 127.0.0.1:{} max_fails=1 fail_timeout=2s{down}; ",
                    instance.port
                )
            })
            .collect();
        std::fs::write(
            self.dir.join("nginx").join("evently.conf"),
            NGINX_SITE
                .replace("${EVENTLY_UPSTREAM_SERVERS}", &servers)
                .replace(
                    "${EVENTLY_NGINX_LISTEN}",
                    &format!("127.0.0.1:{}", self.nginx_port),
                ),
        )?;
        Ok(())
    }

    /// Takes instance `i` out of nginx's upstream (`serving: false`) or puts it back, and
    /// returns once nginx runs the new config: a reload (SIGHUP) starts new workers with it,
    /// while the old ones finish the requests they have and then exit.
    pub async fn set_in_balancer(&mut self, i: usize, serving: bool) -> anyhow::Result<()> {
        self.out_of_balancer[i] = !serving;
        self.render_nginx_site()?;
        let master = self
            .nginx
            .as_ref()
            .and_then(Child::id)
            .context("nginx is not running")?;
        let before = children(master);
        signal(master, "HUP")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let fresh = children(master)
                .into_iter()
                .filter(|pid| !before.contains(pid))
                .count();
            // Old workers linger while they have WebSockets: count only the new ones.
            if fresh >= self.nginx_workers.max(1) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "nginx did not reload; see {}",
                self.dir.join("nginx").join("error.log").display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let child: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')'.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(nginx) = self.nginx.as_mut() {
            let _ = nginx.start_kill();
        }
        for instance in &mut self.instances {
            if let Some(child) = instance.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        self.postgres.stop_now();
        if let Some(redis) = self.redis.child.as_mut() {
            let _ = redis.start_kill();
        }
        if std::env::var_os("CHAOS_KEEP_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("chaos: logs kept in {}", self.dir.display());
        }
    }
}

/// A port free now (the kernel's choice); whoever binds it next gets it.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

pub(crate) fn id_of(flag: &str) -> anyhow::Result<u32> {
    let output = std::process::Command::new("id")
        .args([flag, "postgres"])
        .output()?;
    ensure!(
        output.status.success(),
        "no postgres user to run PostgreSQL as"
    );
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

fn nginx_bin() -> PathBuf {
    std::env::var_os("NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
                .into_iter()
                .map(PathBuf::from)
                .find(|path| path.exists())
                .unwrap_or_else(|| PathBuf::from("nginx"))
        })
}
