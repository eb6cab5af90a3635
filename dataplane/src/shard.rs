//! One shard: a monoio runtime on its own thread, its own listener, and its per-core state.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::auth::TokenCache;
use crate::clock::Clock;
use crate::control::ControlHandle;
use crate::delegation::DelegationCache;
use crate::http1::conn;
use crate::session::SessionStore;
use crate::snapshot::SnapshotCell;
use crate::upstream::Pool;

/// Which io driver a shard ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

/// Which driver to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    Auto,
    Epoll,
}

/// State shared by the shards and the control plane (all `Send + Sync`).
#[derive(Debug, Clone)]
pub struct Shared {
    pub snapshot: SnapshotCell,
    pub sessions: Arc<SessionStore>,
    pub control: ControlHandle,
    /// Shards that have started serving.
    pub running: Arc<AtomicUsize>,
    /// Set by the supervisor to stop accepting.
    pub stopping: Arc<AtomicBool>,
    /// Requests being handled right now, across shards (for graceful shutdown).
    pub in_flight: Arc<AtomicUsize>,
    /// Audit records on their way to the control plane's writer.
    pub audit: Arc<crate::audit::AuditQueue>,
    /// TLS configuration for the listener, if any.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Per-user and per-tool token buckets, shared by the shards.
    pub ratelimit: Arc<crate::ratelimit::RateLimiter>,
    /// The clock every shard reads (the control plane's, cloned: one time for the process).
    pub clock: Clock,
    /// DPoP proofs already used, across the process's shards.
    pub dpop_replay: Arc<crate::auth::replay::ReplaySet>,
    /// Also record each proof in the state store the replicas share (PostgreSQL).
    pub dpop_shared_replay: bool,
    /// Modern clients' calls waiting for their input ([`crate::mcp::park`]), across shards.
    pub parked: Arc<crate::mcp::park::ParkedCalls>,
}

/// Per-shard state, `!Send`: lives in `Rc` on its thread.
#[derive(Debug)]
pub struct Shard {
    pub id: u16,
    pub shared: Shared,
    pub cache: RefCell<TokenCache>,
    pub pool: Pool,
    pub delegations: Rc<DelegationCache>,
    pub policy: RefCell<crate::policy_cache::PolicyCaches>,
    pub meters: crate::meters::Meters,
    pub clock: Clock,
    next_id: Cell<u64>,
    next_req: Cell<u64>,
    /// Random per shard instance: request ids differ across replicas and restarts.
    req_prefix: u32,
    rng: Cell<u64>,
    pub connections: Cell<usize>,
    /// Sessions held for stateless (2026-07-28) callers, by user and capabilities (see
    /// `mcp::sessions::owned`); shard-local, bounded.
    pub owned_sessions:
        RefCell<std::collections::HashMap<[u8; 32], std::sync::Arc<crate::session::Session>>>,
    /// Requests admitted on this shard and not yet answered (streams included).
    active: Cell<usize>,
}

/// An admitted request: counted on its shard and process-wide until dropped.
#[derive(Debug)]
pub struct Admitted<'a>(&'a Shard);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
        self.0.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shard {
    /// A shard's state before it serves anything: empty caches, `clock` for every time
    /// decision on it, upstream connections from `pool`.
    pub fn new(id: u16, shared: Shared, clock: Clock, pool: Pool) -> Shard {
        Shard {
            id,
            shared,
            cache: RefCell::new(TokenCache::new(100_000)),
            pool,
            delegations: Rc::new(DelegationCache::new(clock.clone())),
            policy: RefCell::new(crate::policy_cache::PolicyCaches::default()),
            meters: crate::meters::Meters::default(),
            clock,
            next_id: Cell::new(0),
            next_req: Cell::new(0),
            req_prefix: (seed() >> 32) as u32,
            rng: Cell::new(seed()),
            connections: Cell::new(0),
            owned_sessions: RefCell::new(std::collections::HashMap::new()),
            active: Cell::new(0),
        }
    }

    /// Admit a request unless `max` are already in flight on this shard; the count lasts
    /// until the returned guard is dropped, i.e. to the end of the response.
    pub fn admit(&self, max: usize) -> Option<Admitted<'_>> {
        let n = self.active.get();
        if n >= max {
            return None;
        }
        self.active.set(n + 1);
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Admitted(self))
    }

    /// Requests in flight on this shard.
    pub fn active(&self) -> usize {
        self.active.get()
    }

    /// 64 pseudo-random bits for trace and span ids (xorshift64*, seeded from the system
    /// RNG per shard): unique enough for tracing, never used for anything secret.
    pub fn trace_bits(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A request id for logs and audit records, in hex: a random prefix drawn when the shard
    /// starts, the shard and a per-shard counter. The prefix keeps ids apart between replicas
    /// and across restarts (shard and counter alone repeat in every process).
    pub fn next_request_id(&self) -> String {
        let n = self.next_req.get() + 1;
        self.next_req.set(n);
        format!("{:08x}{:04x}{:012x}", self.req_prefix, self.id, n)
    }

    /// A gateway-assigned JSON-RPC id, unique across shards and over the process's life.
    pub fn next_upstream_id(&self) -> u64 {
        let n = self.next_id.get() + 1;
        self.next_id.set(n);
        (u64::from(self.id) << 48) | (n & 0xFFFF_FFFF_FFFF)
    }
}

/// After SIGTERM, how long a shard keeps serving connections that are already open (bounded
/// by `limits.shutdown_grace`, after which the control plane stops waiting).
const DRAIN_LINGER: Duration = Duration::from_secs(1);
/// How often a draining shard looks again.
const DRAIN_POLL: Duration = Duration::from_millis(20);
const LINGER_POLLS: u32 = (DRAIN_LINGER.as_millis() / DRAIN_POLL.as_millis()) as u32;

/// Start one shard thread serving `listener`. Returns once the thread is spawned.
pub fn spawn<H: conn::Handler + 'static>(
    id: u16,
    listener: std::net::TcpListener,
    shared: Shared,
    driver: DriverChoice,
    cpu: Option<usize>,
    handler: fn(Rc<Shard>) -> H,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("warden-shard-{id}")).spawn(move || {
        if let Some(cpu) = cpu
            && let Err(e) = monoio::utils::bind_to_cpu_set(Some(cpu)) {
                tracing::warn!(shard = id, cpu, error = ?e, "Could not pin shard to a core");
            }
        let run = move |drv: Driver| {
            tracing::info!(shard = id, driver = ?drv, "Shard starting");
            serve(id, listener, shared, handler)
        };
        match driver {
            DriverChoice::Epoll => {
                match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build() {
                    Ok(mut rt) => rt.block_on(run(Driver::Epoll)),
                    Err(e) => tracing::error!(shard = id, error = %e, "Could not build the epoll runtime"),
                }
            }
            DriverChoice::Auto => {
                if monoio::utils::detect_uring() {
                    match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().enable_timer().with_entries(1024).build() {
                        Ok(mut rt) => return rt.block_on(run(Driver::IoUring)),
                        Err(e) => tracing::warn!(shard = id, error = %e, "io_uring runtime failed to build; falling back to epoll"),
                    }
                } else {
                    tracing::warn!(shard = id, "io_uring unavailable (kernel or seccomp); falling back to epoll");
                }
                match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build() {
                    Ok(mut rt) => rt.block_on(run(Driver::Epoll)),
                    Err(e) => tracing::error!(shard = id, error = %e, "Could not build the epoll runtime"),
                }
            }
        }
    })
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    // xorshift must not start at zero.
    u64::from_le_bytes(b) | 1
}

async fn serve<H: conn::Handler + 'static>(
    id: u16,
    listener: std::net::TcpListener,
    shared: Shared,
    handler: fn(Rc<Shard>) -> H,
) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(shard = id, error = %e, "Could not adopt the listener");
            return;
        }
    };
    let shard = Rc::new(Shard::new(
        id,
        shared.clone(),
        shared.clock.clone(),
        Pool::default(),
    ));
    let tls = shared.tls.clone().map(monoio_rustls::TlsAcceptor::from);
    shared.running.fetch_add(1, Ordering::SeqCst);
    // Pre-registered: the shard label is bounded by the core count.
    let open_conns = metrics::gauge!("warden_connections_open", "shard" => id.to_string());
    // One accept stays in flight across the periodic wake-ups (the timeout only borrows it).
    // Why not a fresh accept per wake-up: under io_uring, dropping an accept the kernel has
    // already completed discards its result, so the accepted socket leaks unread and its
    // client waits forever (6 of 242 connections opened 200 ms apart, before this).
    {
        let mut accept = std::pin::pin!(listener.accept());
        loop {
            if shared.stopping.load(Ordering::Relaxed) {
                break;
            }
            // Wake up periodically to notice shutdown even when no connection arrives.
            let accepted =
                match monoio::time::timeout(Duration::from_millis(200), accept.as_mut()).await {
                    Err(_) => continue,
                    Ok(r) => r,
                };
            accept.set(listener.accept());
            let (stream, _peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(shard = id, error = %e, "Accept failed");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let snap = shared.snapshot.load();
            let limits = snap.settings.limits;
            let max_conns = snap.settings.max_connections_per_shard;
            drop(snap);
            if shard.connections.get() >= max_conns {
                metrics::counter!("warden_connections_refused_total").increment(1);
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            shard.connections.set(shard.connections.get() + 1);
            open_conns.set(shard.connections.get() as f64);
            let shard2 = shard.clone();
            let open_conns2 = open_conns.clone();
            let tls = tls.clone();
            let h = handler(shard.clone());
            monoio::spawn(async move {
                match tls {
                    None => conn::serve(stream, &h, limits).await,
                    Some(acc) => {
                        match monoio::time::timeout(limits.header_timeout, acc.accept(stream)).await
                        {
                            Ok(Ok(s)) => conn::serve(s, &h, limits).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
                shard2.connections.set(shard2.connections.get() - 1);
                open_conns2.set(shard2.connections.get() as f64);
            });
        }
    }
    // Stop accepting. Connections already open are served for at least DRAIN_LINGER (each
    // answer says `connection: close`, so the peer drops them one by one), then until nothing
    // is in flight. Why not stop as soon as nothing is in flight: a balancer keeps idle
    // keep-alive connections and writes its next request into one of them at any moment; once
    // this function returns nothing reads those sockets, and the request (a POST the balancer
    // must not resend) is answered with a reset when the runtime goes. The linger gives the
    // balancer time to use up its idle connections and to find the listener refusing (nginx
    // then marks the replica failed), so the connections left at the end are unused.
    // The linger is counted in polls on the runtime's timer (each at least DRAIN_POLL), not
    // read off the clock: it is a real wait, and a test's stopped mock clock must not stretch it.
    drop(listener);
    let mut polls = 0;
    while shard.connections.get() > 0
        && (shared.in_flight.load(Ordering::Relaxed) > 0 || polls < LINGER_POLLS)
    {
        monoio::time::sleep(DRAIN_POLL).await;
        polls += 1;
    }
    shared.running.fetch_sub(1, Ordering::SeqCst);
    tracing::info!(shard = id, "Shard stopped");
}
