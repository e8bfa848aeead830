//! The PostgreSQL and the Redis of a chaos deployment: its own, on free loopback ports, so a
//! scenario may stop, crash or freeze them.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::{free_port, id_of, set_mode, signal};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostgresStop {
    Fast,
    Immediate,
}

/// A PostgreSQL cluster of our own. As root (CI containers), its processes run as the
/// `postgres` user, since PostgreSQL refuses to run as root.
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl Postgres {
    pub(super) async fn start(parent: &Path, bin: &Path) -> anyhow::Result<Self> {
        let dir = parent.join("postgres");
        std::fs::create_dir_all(&dir)?;
        let as_postgres = std::fs::metadata("/proc/self")?.uid() == 0;
        if as_postgres {
            let uid = id_of("-u")?;
            let gid = id_of("-g")?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
            // The postgres user must be able to reach its directory.
            set_mode(parent, 0o755)?;
        }
        let postgres = Self {
            dir,
            bin: bin.to_owned(),
            port: free_port()?,
            as_postgres,
        };
        let data = postgres.dir.join("data");
        let output = postgres
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .await
            .with_context(|| format!("running initdb from {}", bin.display()))?;
        ensure!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        postgres.start_again().await?;
        Ok(postgres)
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .await?;
        ensure!(
            output.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// `pg_ctl stop -m <mode>`: `fast` is an operator's restart (every session is ended with
    /// an error, 57P01), `immediate` a crash (the next start replays the WAL).
    pub async fn stop(&self, mode: PostgresStop) -> anyhow::Result<()> {
        let mode = match mode {
            PostgresStop::Fast => "fast",
            PostgresStop::Immediate => "immediate",
        };
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", mode, "-w", "stop"])
            .output()
            .await?;
        ensure!(
            output.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    pub(super) fn stop_now(&self) {
        let program = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            std::process::Command::new(program)
        };
        let _ = command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A redis-server of our own, without persistence.
pub struct Redis {
    pub port: u16,
    pub(super) child: Option<Child>,
    log: PathBuf,
}

impl Redis {
    pub(super) async fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut redis = Self {
            port: free_port()?,
            child: None,
            log: dir.join("redis.log"),
        };
        redis.start_again().await?;
        Ok(redis)
    }

    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pong().await {
            ensure!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn pong(&self) -> bool {
        let ping = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            stream.write_all(b"PING\r\n").await?;
            let mut buffer = [0_u8; 7];
            stream.read_exact(&mut buffer).await?;
            anyhow::Ok(&buffer == b"+PONG\r\n")
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), ping).await,
            Ok(Ok(true))
        )
    }

    /// Kills the server; `start_again` brings up an empty one on the same port.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGSTOP: connections stay open and nothing answers, like a half-open connection.
    pub fn freeze(&self) -> anyhow::Result<()> {
        signal(self.pid()?, "STOP")
    }

    pub fn thaw(&self) -> anyhow::Result<()> {
        signal(self.pid()?, "CONT")
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .as_ref()
            .and_then(Child::id)
            .context("redis-server is not running")
    }
}
