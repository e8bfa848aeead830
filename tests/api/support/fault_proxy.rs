//! A TCP proxy that injects real network faults between the server and PostgreSQL or Redis.
//!
//! Point the server's `DATABASE_URL` or `REDIS_URL` at [`FaultProxy::addr`] instead of the real
//! service. Everything is forwarded untouched until a fault is armed:
//! - [`FaultProxy::cut_after`]: the next connection whose client sends bytes containing a pattern
//!   (say `COMMIT`) has them forwarded, then both sides are closed before any reply comes back: the
//!   server cannot know whether the statement took effect.
//! - [`FaultProxy::stall`]: every connection stops forwarding in both directions without closing,
//!   as a half-open link does; [`FaultProxy::resume`] lets the bytes flow again.
//! - [`FaultProxy::strand`]: every connection open now stops forwarding for good, without
//!   closing, while new connections work: a half-open link that never comes back, as after a
//!   NAT or load balancer silently dropped it.
//! - [`FaultProxy::cut_all`]: closes every open connection now.
//! - [`FaultProxy::refuse`]: new connections are closed as soon as they are accepted.
//!
//! Faults are awaited, never slept on: [`FaultProxy::cuts`] resolves once a cut happened.
//!
//! [`FaultProxy::count`] counts a pattern in what clients send (say a statement's text, or
//! PostgreSQL's `Sync` message, one per query), to measure how often the server asks;
//! [`FaultProxy::round_trips`] counts round trips: a client sending again after its server
//! answered (queries pipelined together are one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

struct Shared {
    upstream: SocketAddr,
    /// Armed cut: the pattern and how many more connections to cut on it.
    cut_on: Mutex<Option<(Vec<u8>, usize)>>,
    cuts: AtomicUsize,
    cut_happened: Notify,
    /// Incremented to close every connection open at that moment.
    cut_generation: watch::Sender<u64>,
    stalled: watch::Sender<bool>,
    /// Incremented to strand every connection open at that moment.
    strand_generation: watch::Sender<u64>,
    refusing: AtomicBool,
    accepted: AtomicUsize,
    /// The pattern counted in clients' bytes, and how often it was seen.
    count_on: Mutex<Option<Vec<u8>>>,
    counted: AtomicUsize,
    /// Times a client sent bytes after its server had sent some (or first).
    round_trips: AtomicUsize,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1:0 forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            cut_on: Mutex::new(None),
            cuts: AtomicUsize::new(0),
            cut_happened: Notify::new(),
            cut_generation: watch::channel(0).0,
            stalled: watch::channel(false).0,
            strand_generation: watch::channel(0).0,
            refusing: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            count_on: Mutex::new(None),
            counted: AtomicUsize::new(0),
            round_trips: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Self { addr, shared, stop }
    }

    /// A proxy in front of the service named by `url` (`postgres://…` or `redis://…`), and `url`
    /// rewritten to go through it.
    pub async fn in_front_of(url: &str) -> (Self, String) {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
        let host_port = rest.find('/').map_or(rest, |i| &rest[..i]);
        let default_port = if scheme.starts_with("redis") {
            6379
        } else {
            5432
        };
        let host_port = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:{default_port}")
        };
        let upstream = tokio::net::lookup_host(&host_port)
            .await
            .unwrap()
            .find(SocketAddr::is_ipv4)
            .expect("an IPv4 address for the service");
        let proxy = Self::start(upstream).await;
        let proxied = proxy.route(url);
        (proxy, proxied)
    }

    /// `url` with its host and port replaced by the proxy's address (scheme, credentials and
    /// path kept).
    pub fn route(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (format!("{auth}@"), rest),
            None => (String::new(), rest),
        };
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        format!("{scheme}://{auth}{}{path}", self.addr)
    }

    /// The next `times` connections whose client sends `pattern` have those bytes forwarded and
    /// are then closed on both sides, the upstream's answer never reaching the client.
    pub fn cut_after(&self, pattern: &[u8], times: usize) {
        *self.shared.cut_on.lock().unwrap() = Some((pattern.to_vec(), times));
    }

    /// Disarms `cut_after`.
    pub fn disarm(&self) {
        *self.shared.cut_on.lock().unwrap() = None;
    }

    /// Waits until at least `n` cuts armed by `cut_after` have happened in total.
    pub async fn cuts(&self, n: usize) {
        loop {
            let notified = self.shared.cut_happened.notified();
            if self.shared.cuts.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }

    /// How many cuts armed by `cut_after` have happened.
    pub fn cut_count(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Every connection stops forwarding, in both directions, without closing.
    pub fn stall(&self) {
        self.shared.stalled.send_replace(true);
    }

    /// Ends a stall: bytes held back flow again.
    pub fn resume(&self) {
        self.shared.stalled.send_replace(false);
    }

    /// Every connection open now stops forwarding for good, in both directions, without
    /// closing; later ones are forwarded as usual.
    pub fn strand(&self) {
        self.shared.strand_generation.send_modify(|g| *g += 1);
    }

    /// Closes every connection open now; later ones are forwarded as usual.
    pub fn cut_all(&self) {
        self.shared.cut_generation.send_modify(|g| *g += 1);
    }

    /// While true, new connections are closed as soon as they are accepted.
    pub fn refuse(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }

    /// From now on, counts the occurrences of `pattern` in the bytes clients send (within each
    /// read: a pattern split across two reads is missed, which whole protocol messages are
    /// not in practice). Replaces any earlier pattern and starts from zero.
    pub fn count(&self, pattern: &[u8]) {
        *self.shared.count_on.lock().unwrap() = Some(pattern.to_vec());
        self.shared.counted.store(0, Ordering::SeqCst);
    }

    /// How often the pattern given to [`FaultProxy::count`] has been sent since.
    pub fn counted(&self) -> usize {
        self.shared.counted.load(Ordering::SeqCst)
    }

    /// Round trips on all connections since the last call: a client writing after its server
    /// answered counts one, however many queries it pipelines in that write.
    pub fn round_trips(&self) -> usize {
        self.shared.round_trips.swap(0, Ordering::SeqCst)
    }

    /// How many connections the proxy has accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        tokio::spawn(connection(client, shared.clone()));
    }
}

async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let mut generation = shared.cut_generation.subscribe();
    generation.mark_unchanged();
    let born = *shared.strand_generation.borrow();
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    // Whether the server spoke since the client last did: the client's next bytes start a
    // round trip.
    let answered = AtomicBool::new(true);
    let outbound = pump(client_read, upstream_write, &shared, true, born, &answered);
    let inbound = pump(upstream_read, client_write, &shared, false, born, &answered);
    // The first direction to end (EOF, error or an armed cut) ends the connection: dropping
    // both halves closes both sockets.
    tokio::select! {
        _ = outbound => {}
        _ = inbound => {}
        _ = generation.changed() => {}
    }
}

/// Copies `from` to `to` until EOF, an error, or an armed cut on the client's bytes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    from_client: bool,
    born: u64,
    answered: &AtomicBool,
) {
    let mut stalled = shared.stalled.subscribe();
    let mut buffer = vec![0u8; 64 * 1024];
    // The end of the previous chunk, so a pattern split across two reads is still seen.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        let cut = from_client && should_cut(shared, &mut tail, chunk);
        if from_client {
            count_pattern(shared, chunk);
            if answered.swap(false, Ordering::SeqCst) {
                shared.round_trips.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            answered.store(true, Ordering::SeqCst);
        }
        // A stall holds the bytes already read, as a link that stopped carrying them would.
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        // Stranded: the bytes go nowhere, and the connection stays open until cut.
        if *shared.strand_generation.borrow() > born {
            std::future::pending::<()>().await;
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
        if cut {
            let _ = to.flush().await;
            shared.cuts.fetch_add(1, Ordering::SeqCst);
            shared.cut_happened.notify_waiters();
            return;
        }
    }
}

fn count_pattern(shared: &Shared, chunk: &[u8]) {
    let counting = shared.count_on.lock().unwrap();
    if let Some(pattern) = counting.as_deref() {
        let seen = chunk
            .windows(pattern.len())
            .filter(|w| *w == pattern)
            .count();
        shared.counted.fetch_add(seen, Ordering::SeqCst);
    }
}

fn should_cut(shared: &Shared, tail: &mut Vec<u8>, chunk: &[u8]) -> bool {
    let mut armed = shared.cut_on.lock().unwrap();
    let Some((pattern, remaining)) = armed.as_mut() else {
        tail.clear();
        return false;
    };
    let mut window = std::mem::take(tail);
    window.extend_from_slice(chunk);
    let found = window
        .windows(pattern.len())
        .any(|w| w == pattern.as_slice());
    let keep = pattern.len().saturating_sub(1).min(window.len());
    *tail = window[window.len() - keep..].to_vec();
    if !found {
        return false;
    }
    *remaining -= 1;
    if *remaining == 0 {
        *armed = None;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::redis_url;

    async fn ping(url: &str) -> redis::RedisResult<String> {
        let client = redis::Client::open(url)?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async(&mut connection).await
    }

    #[tokio::test]
    async fn the_proxy_forwards_until_a_fault_is_armed_then_cuts_stalls_and_resumes() {
        let (proxy, url) = FaultProxy::in_front_of(&redis_url()).await;
        assert_eq!(ping(&url).await.unwrap(), "PONG");

        // A cut after the client's PING: the reply never arrives and the connection is gone.
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        proxy.cut_after(b"PING", 1);
        let answer: redis::RedisResult<String> =
            redis::cmd("PING").query_async(&mut connection).await;
        assert!(
            answer.is_err(),
            "the cut connection must not answer: {answer:?}"
        );
        proxy.cuts(1).await;
        assert_eq!(proxy.cut_count(), 1);
        // Disarmed after one cut: a new connection works.
        assert_eq!(ping(&url).await.unwrap(), "PONG");

        // A disarmed cut does nothing.
        proxy.cut_after(b"PING", 1);
        proxy.disarm();
        assert_eq!(ping(&url).await.unwrap(), "PONG");

        // A stall: the reply is held back until resume.
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        proxy.stall();
        let mut held = tokio::spawn(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        });
        let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut held).await;
        assert!(early.is_err(), "a stalled link must not answer");
        proxy.resume();
        assert_eq!(held.await.unwrap().unwrap(), "PONG");

        // Refusing: new connections fail.
        proxy.refuse(true);
        let before = proxy.accepted();
        assert!(ping(&url).await.is_err());
        assert!(
            proxy.accepted() > before,
            "the refused connection reached the proxy"
        );
        proxy.refuse(false);
        assert_eq!(ping(&url).await.unwrap(), "PONG");
    }
}
