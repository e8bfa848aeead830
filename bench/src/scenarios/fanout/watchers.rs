//! The subscribers of a `fanout` run, in groups. A process may hold only so many sockets (its
//! `nofile` limit, 20,000 on the benchmark machine, where it cannot be raised), so past that
//! the subscribers are split: one group in the tool's own process, the others each in a child
//! process (`bench fanout --part`), which talks to the parent in JSON lines on its stdin and
//! stdout:
//!
//! 1. parent → child: the `Plan` (which subscribers, on which events);
//! 2. child → parent: `Connected`, once every subscriber of the group has its first message;
//! 3. parent → child: `Finals`, after the bookings (each event's last version and when each
//!    booking was sent);
//! 4. child → parent: `Tally`, once every subscriber got its event's last version or the
//!    grace ran out.
//!
//! Times cross processes as microseconds since the Unix epoch, each process converting its
//! monotonic clock with one reading of the wall clock (`Clock`), so a latency is still a
//! difference of two readings a few microseconds apart from the same clock.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::client::Subscriber;

const SUBSCRIPTION: &str =
    "subscription Seats($id: ID!) { seatAvailability(eventId: $id) { seatsAvailable version } }";
/// Connections per source address. One address has about 28,000 ephemeral ports, fewer while
/// the last run's connections sit in TIME_WAIT, so the tool spreads over 127.0.0.2 and up.
const PER_SOURCE: usize = 4_000;
/// How long subscribers have, after the last booking, to receive its version.
const GRACE: Duration = Duration::from_secs(10);

/// One group: every `parts`-th subscriber, from the `part`-th on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub ws_endpoint: String,
    /// Event ids, the hot event (if any) last.
    pub events: Vec<String>,
    /// Subscribers spread round the events before the hot one; the others watch the hot one.
    pub spread: usize,
    pub spread_events: usize,
    pub total: usize,
    pub part: usize,
    pub parts: usize,
    /// Connections this group opens at once.
    pub connect_concurrency: usize,
}

impl Plan {
    fn event_of(&self, i: usize) -> usize {
        if i < self.spread {
            i % self.spread_events
        } else {
            self.spread_events
        }
    }

    fn members(&self) -> impl Iterator<Item = usize> + use<> {
        (self.part..self.total).step_by(self.parts)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Connected {
    pub connected: usize,
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Each event's last version, and when each of its bookings was sent (µs since the epoch): the
/// k-th booking of an event produced its k-th version after the one subscribers first saw.
#[derive(Debug, Serialize, Deserialize)]
pub struct Finals {
    pub versions: Vec<i64>,
    pub sent_us: Vec<Vec<i64>>,
}

/// What a group's subscribers saw.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    /// (arrival in µs since the epoch, send-to-receive in µs), one per message received.
    pub latencies_us: Vec<(i64, i64)>,
    /// Versions lagging subscribers skipped (they jump to the newest, by design).
    pub skipped: u64,
    pub out_of_order: u64,
    /// Subscribers that never got their event's last version.
    pub stale_final: u64,
    /// Messages for versions the tool did not book.
    pub extra: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.skipped += other.skipped;
        self.out_of_order += other.out_of_order;
        self.stale_final += other.stale_final;
        self.extra += other.extra;
    }
}

/// The monotonic clock of this process, as microseconds since the Unix epoch.
#[derive(Clone, Copy)]
pub struct Clock {
    instant: Instant,
    wall_us: i64,
}

impl Clock {
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64),
        }
    }

    pub fn us(&self, at: Instant) -> i64 {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.wall_us + after.as_micros() as i64,
            None => self.wall_us - self.instant.duration_since(at).as_micros() as i64,
        }
    }

    pub fn instant(&self, us: i64) -> Instant {
        let offset = Duration::from_micros((us - self.wall_us).unsigned_abs());
        if us >= self.wall_us {
            self.instant + offset
        } else {
            self.instant.checked_sub(offset).unwrap_or(self.instant)
        }
    }
}

/// What one subscriber saw: the version of its first message, then (version, arrival).
struct Seen {
    event: usize,
    first: i64,
    updates: Vec<(i64, Instant)>,
}

/// A group of subscribers in this process.
pub struct Group {
    tasks: Vec<JoinHandle<Option<Seen>>>,
    finals: watch::Sender<Option<Vec<i64>>>,
}

impl Group {
    /// Connects the group's subscribers; returns once each has its first message or failed.
    pub async fn connect(plan: &Plan) -> anyhow::Result<(Self, Connected)> {
        let (final_tx, final_rx) = watch::channel::<Option<Vec<i64>>>(None);
        let (ready_tx, mut ready_rx) = mpsc::channel::<anyhow::Result<()>>(1024);
        let gate = Arc::new(Semaphore::new(plan.connect_concurrency.max(1)));
        let mut tasks = Vec::new();
        for i in plan.members() {
            let event = plan.event_of(i);
            let (endpoint, event_id) = (plan.ws_endpoint.clone(), plan.events[event].clone());
            let (gate, ready, finals) = (gate.clone(), ready_tx.clone(), final_rx.clone());
            let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i / PER_SOURCE)?);
            tasks.push(tokio::spawn(watch_one(
                endpoint, event_id, event, source, gate, ready, finals,
            )));
        }
        drop(ready_tx);
        let (mut failed, mut first_error) = (0, None);
        for _ in 0..tasks.len() {
            match ready_rx.recv().await {
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    failed += 1;
                    first_error.get_or_insert(format!("{error:#}"));
                }
                None => break,
            }
        }
        let connected = Connected {
            connected: tasks.len() - failed,
            failed,
            first_error,
        };
        Ok((
            Self {
                tasks,
                finals: final_tx,
            },
            connected,
        ))
    }

    /// Tells the subscribers which versions are the last, waits (bounded) for them to get
    /// there, and counts what they saw.
    pub async fn finish(self, finals: &Finals, clock: Clock) -> anyhow::Result<Tally> {
        self.finals.send(Some(finals.versions.clone()))?;
        let mut tally = Tally::default();
        let grace = tokio::time::sleep(GRACE);
        tokio::pin!(grace);
        for task in self.tasks {
            let seen = tokio::select! {
                // A subscriber that is done counts as such even once the grace is over.
                biased;
                seen = task => seen?,
                () = &mut grace => {
                    tally.stale_final += 1;
                    continue;
                }
            };
            let Some(seen) = seen else { continue };
            let sent = &finals.sent_us[seen.event];
            let mut previous = seen.first;
            let mut received = HashSet::new();
            for &(version, at) in &seen.updates {
                if version <= previous {
                    tally.out_of_order += 1;
                }
                previous = previous.max(version);
                let k = version - seen.first - 1;
                match usize::try_from(k).ok().and_then(|k| sent.get(k)) {
                    Some(&sent_us) => {
                        received.insert(version);
                        let at_us = clock.us(at);
                        tally.latencies_us.push((at_us, (at_us - sent_us).max(0)));
                    }
                    None => tally.extra += 1,
                }
            }
            let last = finals.versions[seen.event];
            tally.skipped +=
                ((last - seen.first).max(0) as u64).saturating_sub(received.len() as u64);
            if previous < last {
                tally.stale_final += 1;
            }
        }
        Ok(tally)
    }
}

async fn watch_one(
    endpoint: String,
    event_id: String,
    event: usize,
    source: Ipv4Addr,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<anyhow::Result<()>>,
    mut finals: watch::Receiver<Option<Vec<i64>>>,
) -> Option<Seen> {
    let permit = gate.acquire_owned().await.expect("never closed");
    let connected = async {
        let mut sub =
            Subscriber::connect(&endpoint, source, SUBSCRIPTION, json!({ "id": event_id })).await?;
        let version = sub.next_version().await?.context("no first message")?;
        anyhow::Ok((sub, version))
    }
    .await;
    drop(permit);
    let (mut sub, first) = match connected {
        Ok(ok) => {
            let _ = ready.send(Ok(())).await;
            ok
        }
        Err(error) => {
            let _ = ready.send(Err(error)).await;
            return None;
        }
    };
    drop(ready);
    let mut seen = Seen {
        event,
        first,
        updates: Vec::new(),
    };
    let mut last = first;
    loop {
        if let Some(finals) = &*finals.borrow_and_update()
            && last >= finals[event]
        {
            break;
        }
        tokio::select! {
            version = sub.next_version() => {
                let Ok(Some(version)) = version else { break };
                seen.updates.push((version, Instant::now()));
                last = last.max(version);
            }
            changed = finals.changed() => if changed.is_err() { break },
        }
    }
    sub.close().await;
    Some(seen)
}

/// A group in a child process (`bench fanout --part`).
pub struct ChildGroup {
    child: tokio::process::Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl ChildGroup {
    pub async fn spawn(plan: &Plan) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["fanout", "--part"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a subscriber process")?;
        let mut stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        send_line(&mut stdin, plan).await?;
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    pub async fn connected(&mut self) -> anyhow::Result<Connected> {
        read_line(&mut self.stdout).await
    }

    pub async fn finish(mut self, finals: &Finals) -> anyhow::Result<Tally> {
        send_line(&mut self.stdin, finals).await?;
        let tally = read_line(&mut self.stdout).await?;
        let _ = self.child.wait().await;
        Ok(tally)
    }
}

/// The child's side: one group, driven by the parent over stdin and stdout.
pub async fn run_part() -> anyhow::Result<()> {
    let clock = Clock::now();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let plan: Plan = read_line(&mut stdin).await?;
    let (group, connected) = Group::connect(&plan).await?;
    send_line(&mut stdout, &connected).await?;
    let finals: Finals = read_line(&mut stdin).await?;
    let tally = group.finish(&finals, clock).await?;
    send_line(&mut stdout, &tally).await?;
    Ok(())
}

async fn send_line(
    to: &mut (impl AsyncWriteExt + Unpin),
    value: &impl Serialize,
) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    to.write_all(&line).await?;
    to.flush().await?;
    Ok(())
}

async fn read_line<T: DeserializeOwned>(
    from: &mut Lines<impl tokio::io::AsyncBufRead + Unpin>,
) -> anyhow::Result<T> {
    let line = from
        .next_line()
        .await?
        .context("the other fanout process ended early")?;
    Ok(serde_json::from_str(&line)?)
}
