//! Starting, running and stopping Warden: listeners, shards, the control loop (`control.rs`)
//! and the admin port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use dataplane::clock::Clock;
use dataplane::control::ControlHandle;
use dataplane::http1::conn::ConnLimits;
use dataplane::session::{Lifetimes, SessionKeys, SessionStore};
use dataplane::shard::{self, DriverChoice, Shared};
use dataplane::snapshot::{Settings, Snapshot, Upstream};
use futures_util::StreamExt;

use crate::catalog::{self, Discovered};
use crate::config::{Config, DelegationMode, IoDriver};
use crate::control::Control;
use crate::issuers::IssuerRuntime;
use crate::reload::{ReloadError, ReloadStatus, StatusCell, Trigger};
use crate::sts::Sts;
use dataplane::auth::replay::{self, ReplaySet};

/// Why Warden could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("upstream {name}: {source}")]
    Upstream {
        name: String,
        source: crate::catalog::UpstreamError,
    },
    #[error("authorization server: {0}")]
    AuthServer(#[from] crate::authz::AuthServerError),
    #[error("{0}")]
    Other(String),
}

/// A running gateway. Dropping it does not stop it; call [`Running::shutdown`].
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shared: Shared,
    threads: Vec<std::thread::JoinHandle<()>>,
    control: tokio::task::JoinHandle<()>,
    engine: tokio::task::JoinHandle<()>,
    admin: tokio::task::JoinHandle<()>,
    grace: Duration,
    /// The embedded STS, when delegation mints in-process.
    pub sts: Option<Arc<Sts>>,
    /// The embedded authorization server, when configured.
    pub auth_server: Option<crate::authz::AuthServer>,
    /// Durable state (authorization server, STS keys, session revocations).
    pub state: crate::state::StateStore,
    /// Reloads and rotates the STS key ring (`Sts::maintain`).
    sts_task: Option<tokio::task::JoinHandle<()>>,
    audit_writer: Option<std::thread::JoinHandle<()>>,
    reload: tokio::sync::mpsc::Sender<Trigger>,
    status: StatusCell,
    /// Kept alive while serving; dropped with the gateway.
    _watcher: Option<notify::RecommendedWatcher>,
    hup: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Current snapshot generation (for tests and /readyz).
    pub fn generation(&self) -> u64 {
        self.shared.snapshot.load().generation
    }

    /// Reload the configuration file now (what `POST /admin/reload` does).
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        request_reload(&self.reload).await
    }

    /// What `GET /admin/config` shows.
    pub fn config_status(&self) -> ReloadStatus {
        (**self.status.load()).clone()
    }

    /// Stop accepting, let in-flight requests finish up to the grace period, stop the shards.
    pub async fn shutdown(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Real waits on tokio's timer (the injected clock may be a test's stopped mock).
        let running = &self.shared.running;
        let _ = tokio::time::timeout(self.grace, async {
            while running.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        // Let the audit writer write everything the last requests recorded, then stop.
        self.shared.audit.close();
        if let Some(w) = self.audit_writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while !w.is_finished() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            if w.is_finished() {
                let _ = w.join();
            } else {
                tracing::error!(
                    "Audit writer did not finish in time; some records may be unwritten"
                );
            }
        }
        self.control.abort();
        self.hup.abort();
        self.engine.abort();
        if let Some(t) = &self.sts_task {
            t.abort();
        }
        self.admin.abort();
        for t in self.threads {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Ask the control loop to reload and wait for the outcome.
pub async fn request_reload(tx: &tokio::sync::mpsc::Sender<Trigger>) -> Result<u64, ReloadError> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    tx.send(Trigger::Admin(reply))
        .await
        .map_err(|_| ReloadError::Stopped)?;
    rx.await.map_err(|_| ReloadError::Stopped)?
}

/// How often, and how far apart, binding a port that is in use is tried again before giving
/// up. A process that was just stopped can hold its port for a moment after it is gone (the
/// kernel releases sockets an io_uring ring still references after the process exits), so an
/// immediate restart would otherwise fail; nginx retries the same way (5 × 500 ms).
const BIND_ATTEMPTS: u32 = 5;
const BIND_PAUSE: Duration = Duration::from_millis(500);

/// Run `bind` until it succeeds, fails other than "address in use", or the attempts run out.
async fn retry_in_use<T>(
    addr: SocketAddr,
    mut bind: impl FnMut() -> std::io::Result<T>,
) -> Result<T, StartError> {
    let mut attempt = 1;
    loop {
        match bind() {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < BIND_ATTEMPTS => {
                tracing::warn!(%addr, attempt, "Address in use; trying again");
                attempt += 1;
                tokio::time::sleep(BIND_PAUSE).await;
            }
            r => return r.map_err(|source| StartError::Listen { addr, source }),
        }
    }
}

/// One TCP socket bound to `addr` (SO_REUSEADDR, and SO_REUSEPORT when `shared`), not yet listening.
fn bound_socket(addr: SocketAddr, shared: bool) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if shared {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// The gateway's listeners: one SO_REUSEPORT socket per shard on the same address.
async fn bind_listeners(
    addr: SocketAddr,
    n: usize,
) -> Result<Vec<std::net::TcpListener>, StartError> {
    // Refuse a port someone else holds, even one shared with SO_REUSEPORT: probe without it first.
    let probe = retry_in_use(addr, || bound_socket(addr, false)).await?;
    let err = |source| StartError::Listen { addr, source };
    let actual = probe
        .local_addr()
        .map_err(err)?
        .as_socket()
        .ok_or_else(|| StartError::Other("bad local address".into()))?;
    drop(probe);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let s = bound_socket(actual, true).map_err(err)?;
        s.listen(1024).map_err(err)?;
        out.push(s.into());
    }
    Ok(out)
}

/// The admin listener, with the same retry as the gateway's.
async fn bind_admin(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    let s = retry_in_use(addr, || {
        let s = bound_socket(addr, false)?;
        s.listen(1024)?;
        Ok(s)
    })
    .await?;
    tokio::net::TcpListener::from_std(s.into())
        .map_err(|source| StartError::Listen { addr, source })
}

/// The shards' settings for one configuration (built again for every snapshot).
pub(crate) fn settings(
    cfg: &Config,
    listen: SocketAddr,
    found: &HashMap<u32, Discovered>,
    upstreams: &[Arc<Upstream>],
    session_keys: Arc<SessionKeys>,
) -> Settings {
    let g = &cfg.gateway;
    let public = g.public_url.as_str().trim_end_matches('/').to_owned();
    let origin = g.public_url.origin().ascii_serialization();
    let mcp_path = g.public_url.path().to_owned();
    let resource_metadata_url = format!("{origin}/.well-known/oauth-protected-resource{mcp_path}");
    let mut prm = serde_json::json!({
        "resource": public,
        "authorization_servers": cfg.issuers.iter().map(|i| i.issuer.clone()).collect::<Vec<_>>(),
        "scopes_supported": g.scopes_supported,
        "bearer_methods_supported": ["header"],
        "resource_name": "Warden MCP gateway",
    });
    let dpop_algs = crate::config::dpop_advertise(&cfg.issuers, &mut prm);
    let mut hosts: Vec<String> = g
        .allowed_hosts
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if hosts.is_empty() {
        if let Some(h) = g.public_url.host_str() {
            hosts.push(match g.public_url.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            });
        }
        hosts.push(listen.to_string());
        if listen.ip().is_loopback() {
            hosts.push(format!("localhost:{}", listen.port()));
            hosts.push(format!("127.0.0.1:{}", listen.port()));
        }
    }
    // The gateway's own origin is always same-origin; browser clients elsewhere must be listed.
    let mut origins: Vec<String> = g
        .allowed_origins
        .iter()
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
        .collect();
    origins.push(origin.to_ascii_lowercase());
    if listen.ip().is_loopback() {
        origins.push(format!("http://127.0.0.1:{}", listen.port()));
        origins.push(format!("http://localhost:{}", listen.port()));
    }
    // logging goes to the one upstream when it is an MCP server; resources, prompts and
    // completions are aggregated over every upstream (`catalog_items`).
    let passthrough = (upstreams.len() == 1 && upstreams[0].bridge.is_none()).then_some(0);
    let mut caps = serde_json::json!({"tools": {"listChanged": true}});
    if let Some(v) = passthrough
        .and_then(|i| found.get(&upstreams[i].id))
        .and_then(|d| d.capabilities.get("logging"))
    {
        caps["logging"] = v.clone();
    }
    crate::catalog_items::capabilities(&mut caps, upstreams, found);
    let instructions: Vec<String> = upstreams
        .iter()
        .filter_map(|u| {
            found
                .get(&u.id)
                .and_then(|d| d.instructions.as_ref())
                .map(|i| format!("[{}] {}", u.name, i))
        })
        .collect();
    Settings {
        public_url: public,
        resource_metadata_url,
        resource_metadata_json: serde_json::to_vec(&prm).unwrap_or_default(),
        mcp_path,
        allowed_origins: origins,
        allowed_hosts: hosts,
        auth_enabled: g.authentication,
        challenge_scope: g.scopes_supported.join(" "),
        max_token_bytes: cfg.limits.max_token_bytes,
        limits: ConnLimits {
            max_header_bytes: cfg.limits.max_header_bytes,
            max_body_bytes: cfg.limits.max_body_bytes,
            header_timeout: cfg.limits.header_timeout,
            body_timeout: cfg.limits.body_timeout,
            idle_timeout: cfg.limits.idle_timeout,
        },
        session_life: Lifetimes {
            idle_secs: g.session_idle_timeout.as_secs() as i64,
            max_secs: cfg.sessions.max_lifetime.as_secs() as i64,
        },
        session_keys,
        max_connections_per_shard: cfg.limits.max_connections_per_shard,
        max_in_flight_per_shard: cfg.limits.max_in_flight_per_shard,
        rate_limits: rate_limits(cfg),
        server_name: "warden".into(),
        server_version: env!("CARGO_PKG_VERSION").into(),
        instructions: (!instructions.is_empty()).then(|| instructions.join("\n\n")),
        passthrough_upstream: passthrough,
        capabilities_json: caps.to_string(),
        legacy_sse: g.legacy_sse_transport,
        upstream_protocols: found
            .iter()
            .map(|(id, d)| (*id, d.protocol_version.clone()))
            .collect(),
        delegation_client_id: cfg.delegation.as_ref().map(|d| d.client_id.clone()),
        dpop_algs,
        public_htu: dataplane::auth::dpop::normalize_htu(g.public_url.as_str()).unwrap_or_default(),
        public_scheme: g.public_url.scheme().to_owned(),
    }
}

/// The configured rate limits as shards use them. A per-tool entry naming a tool the catalog
/// does not (or not yet) have is not an error: catalogs change at run time (the control loop
/// warns once, `Control::warn_unknown_limited_tools`).
fn rate_limits(cfg: &Config) -> dataplane::ratelimit::Limits {
    use dataplane::ratelimit::{Limits, Quota, ToolLimit, tool_key};
    let r = &cfg.rate_limits;
    // Validation guarantees positive rates and bursts, so `Quota::new` succeeds.
    let per_user = r.per_user.and_then(|u| Quota::new(u.per_second, u.burst));
    let per_tool = r
        .per_tool
        .iter()
        .filter_map(|t| {
            let quota = Quota::new(t.per_second, t.burst)?;
            let key = tool_key(&t.tool);
            Some((t.tool.clone(), ToolLimit { key, quota }))
        })
        .collect();
    Limits {
        per_user,
        per_tool,
        max_buckets: r.max_buckets,
    }
}

/// How to start Warden, beyond its configuration. `Default` is what [`start`] uses.
pub struct StartOptions {
    /// Shards to run (None: `gateway.shards`, else one per core).
    pub shards: Option<usize>,
    /// An STS shared with an embedded authorization server (`warden demo`). It must run on
    /// `clock` (an STS opened on a store takes the store's clock).
    pub sts: Option<Arc<Sts>>,
    /// Sees every audit record once written (the live page).
    pub observer: Option<crate::audit::Observer>,
    /// Policies supplied in code beside the configured files (the demo).
    pub policy_extra: Vec<warden_policy::PolicyFile>,
    /// The one clock of the process: every shard, cache, issuer, the STS, the state store,
    /// audit and reload status read it. Tests pass a [`Clock::mock`] to step time.
    pub clock: Clock,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            shards: None,
            sts: None,
            observer: None,
            policy_extra: Vec::new(),
            clock: Clock::new(),
        }
    }
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("shards", &self.shards)
            .field("sts", &self.sts.is_some())
            .field("observer", &self.observer.is_some())
            .field("policy_extra", &self.policy_extra.len())
            .field("clock", &self.clock)
            .finish()
    }
}

/// Start Warden on the current tokio runtime (the control plane) plus shard threads.
pub async fn start(cfg: Config, shards: Option<usize>) -> Result<Running, StartError> {
    start_with(
        cfg,
        StartOptions {
            shards,
            ..StartOptions::default()
        },
    )
    .await
}

/// Start Warden with options (a shared STS, an audit observer, policies in code, a clock).
pub async fn start_with(cfg: Config, opts: StartOptions) -> Result<Running, StartError> {
    start_inner(cfg, None, opts).await
}

/// Start Warden from a configuration file (`warden serve`): SIGHUP, edits of the file or any
/// file it names, and `POST /admin/reload` reload it.
/// Without a `state` block, state goes to `sqlite:<data_dir>/warden.db`.
pub async fn start_file(
    path: &Path,
    shards: Option<usize>,
    data_dir: &Path,
) -> Result<Running, StartError> {
    let (mut cfg, raw) = Config::load_raw(path).map_err(|e| StartError::Other(e.to_string()))?;
    cfg.state = Some(
        crate::state::StateConfig::or_data_dir(cfg.state.take(), data_dir)
            .map_err(|e| StartError::Other(e.to_string()))?,
    );
    let opts = StartOptions {
        shards,
        ..StartOptions::default()
    };
    start_inner(cfg, Some((path.to_path_buf(), raw)), opts).await
}

async fn start_inner(
    cfg: Config,
    source: Option<(PathBuf, serde_yaml_ng::Value)>,
    opts: StartOptions,
) -> Result<Running, StartError> {
    let StartOptions {
        shards,
        sts,
        observer,
        policy_extra,
        clock,
    } = opts;
    crate::metrics::install();
    let n = shards
        .filter(|n| *n > 0)
        .unwrap_or(if cfg.gateway.shards > 0 {
            cfg.gateway.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
    let listeners = bind_listeners(cfg.gateway.listen, n).await?;
    let listen = listeners[0]
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    let (tls, certs) = match &cfg.gateway.tls {
        Some(t) => {
            let (sc, cell) = crate::tls::server_config(t)?;
            (Some(sc), Some(cell))
        }
        None => (None, None),
    };
    // Durable state: the store of the STS the caller brought (`warden demo`), else the
    // `state` block; without one (library callers, tests) SQLite in memory — the CLI fills in
    // `sqlite:<data-dir>/warden.db`, so nothing here writes into the working directory.
    let state = match sts.as_ref().and_then(|s| s.store().cloned()) {
        Some(s) => s,
        None => crate::state::StateStore::from_config(
            &cfg.state.clone().unwrap_or_default(),
            "memory",
            clock.clone(),
        )
        .await
        .map_err(|e| StartError::Other(e.to_string()))?,
    };
    // Without a configured ring, the one kept in the state store: sessions survive a restart
    // (and, on one PostgreSQL database, are served by every replica).
    let session_keys = match cfg.sessions.load_keys() {
        Ok(Some(k)) => Arc::new(k),
        Ok(None) => {
            let text = state
                .default_session_keys()
                .await
                .map_err(|e| StartError::Other(format!("session keys: {e}")))?;
            Arc::new(SessionKeys::parse(&text).map_err(|e| StartError::Other(e.to_string()))?)
        }
        Err((key, m)) => return Err(StartError::Other(format!("{key}: {m}"))),
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| StartError::Other(e.to_string()))?;

    let mut upstreams = Vec::new();
    let next_upstream_id = cfg.upstreams.len() as u32;
    for (i, u) in cfg.upstreams.iter().enumerate() {
        let up = catalog::resolve(i as u32, u)
            .await
            .map_err(|source| StartError::Upstream {
                name: u.name.clone(),
                source,
            })?;
        upstreams.push(Arc::new(up));
    }
    let public = cfg
        .gateway
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let issuers = cfg
        .issuers
        .iter()
        .cloned()
        .map(|c| IssuerRuntime::new(c, &public, clock.clone()).with_ca())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError::Other(format!("issuer ca_file: {e}")))?;
    let sessions = Arc::new(SessionStore::new());
    let placeholder = Snapshot {
        generation: 0,
        settings: Arc::new(settings(
            &cfg,
            listen,
            &HashMap::new(),
            &upstreams,
            session_keys.clone(),
        )),
        issuers: Vec::new(),
        upstreams: upstreams.clone(),
        tools: Arc::default(),
        items: Arc::default(),
        policy: None,
        shadow: None,
    };
    let cell = Arc::new(ArcSwap::from_pointee(placeholder));
    let keys = match &source {
        Some((_, raw)) => crate::control::Keys::of(raw, &cfg),
        None => crate::control::Keys::default(),
    };
    let status: StatusCell = Arc::new(ArcSwap::from_pointee(ReloadStatus {
        path: source.as_ref().map(|(p, _)| p.display().to_string()),
        config_generation: 1,
        loaded_at: clock.unix_secs(),
        last_attempt_at: clock.unix_secs(),
        ..Default::default()
    }));
    let mut control = Control {
        cfg: cfg.clone(),
        source,
        next_upstream_id,
        session_keys,
        certs,
        status: status.clone(),
        keys,
        fingerprint: [0; 32],
        state: Some(state.clone()),
        revocation_cursor: 0,
        unknown_limited_tools: Vec::new(),
        listen,
        issuers,
        upstreams,
        found: HashMap::new(),
        generation: 0,
        cell: cell.clone(),
        http: http.clone(),
        sessions: sessions.clone(),
        engine: None,
        sts: None,
        policy: {
            let mut p = crate::policy::PolicyState::load(cfg.policy.clone(), policy_extra)
                .map_err(|e| StartError::Other(format!("policy: {e}")))?;
            p.tags = cfg
                .upstreams
                .iter()
                .map(|u| (u.name.clone(), u.tool_tags.clone()))
                .collect();
            p
        },
        policy_error: None,
        clock: clock.clone(),
        watch: Default::default(),
    };
    control.fingerprint = control.current_fingerprint();
    // Delegation: the embedded STS (shared with the authorization server when there is one),
    // or an external RFC 8693 token endpoint. Its keys are the state store's.
    let open_sts = |issuer: String, alg| {
        let state = state.clone();
        async move {
            Sts::open(state, &issuer, alg)
                .await
                .map(Arc::new)
                .map_err(|e| StartError::Other(e.to_string()))
        }
    };
    let sts = match (&cfg.delegation, &cfg.authorization_server, sts) {
        (_, _, Some(s)) => Some(s),
        // One key ring for the authorization server and the STS.
        (d, Some(a), None) => {
            let alg = d.as_ref().map(|d| d.signing_alg).unwrap_or_default();
            Some(open_sts(a.issuer.clone(), alg).await?)
        }
        (Some(d), None, None) if d.mode == DelegationMode::Embedded => {
            let issuer = d
                .issuer
                .clone()
                .ok_or_else(|| StartError::Other("delegation.issuer is required".into()))?;
            Some(open_sts(issuer, d.signing_alg).await?)
        }
        _ => None,
    };
    let rotation = cfg
        .delegation
        .as_ref()
        .map(|d| d.key_rotation)
        .unwrap_or(Duration::from_secs(24 * 3600));
    let sts_task = sts.clone().map(|s| tokio::spawn(s.maintain(rotation)));
    control.sts = sts.clone();
    let auth_server = match (&cfg.authorization_server, &sts) {
        (Some(a), Some(s)) => Some(crate::authz::start(a.clone(), s.clone()).await?),
        _ => None,
    };
    if let Some(d) = &cfg.delegation {
        let engine = crate::delegate::Engine::new(d.clone(), sts.clone(), http, clock.clone())
            .map_err(StartError::Other)?;
        control.engine = Some(Arc::new(arc_swap::ArcSwap::from_pointee(engine)));
    }
    let audit = dataplane::audit::AuditQueue::new(cfg.audit.queue_capacity, cfg.audit.answer_wait);
    let console =
        crate::console::Console::new(cfg.upstreams.iter().map(|u| u.name.clone()).collect());
    let access = crate::console::access::Access::new(cfg.admin.listen, &cfg.admin.console)
        .map_err(|e| StartError::Other(e.to_string()))?;
    let console_obs = console.clone();
    let otlp = crate::otlp::start(&cfg.telemetry, reqwest::Client::new());
    let observer: crate::audit::ChainObserver = Arc::new(
        move |r: dataplane::audit::Record, link: &crate::audit::Link| {
            if let Some(tx) = &otlp
                && tx.try_send(r.clone()).is_err()
            {
                metrics::counter!("warden_otlp_spans_dropped_total").increment(1);
            }
            if let Some(o) = &observer {
                o(&r);
            }
            // Last: the console keeps the record.
            console_obs.observe(r, link);
        },
    );
    let audit_writer = crate::audit::spawn_writer(
        audit.clone(),
        cfg.audit.clone(),
        Some(observer),
        clock.clone(),
    )
    .map_err(|e| StartError::Other(format!("audit writer: {e}")))?;
    let (handle, rx, delegate_rx) = ControlHandle::new();
    let engine_task = match control.engine.clone() {
        Some(cell) => tokio::spawn(crate::delegate::Engine::serve(cell, delegate_rx)),
        // No delegation configured: any request for a token fails closed at once.
        None => tokio::spawn(async move {
            let mut rx = delegate_rx;
            while let Some(req) = rx.next().await {
                let _ = req
                    .reply
                    .send(Err(dataplane::control::DelegationError::Unavailable));
            }
        }),
    };
    let shared = Shared {
        snapshot: cell.clone(),
        sessions,
        control: handle,
        running: Arc::new(AtomicUsize::new(0)),
        stopping: Arc::new(AtomicBool::new(false)),
        in_flight: Arc::new(AtomicUsize::new(0)),
        audit,
        tls,
        ratelimit: dataplane::ratelimit::RateLimiter::start(clock.clone()),
        clock: clock.clone(),
        dpop_replay: Arc::new(ReplaySet::new(replay::PROCESS_CAPACITY)),
        // Replicas share one PostgreSQL database: a proof used at one must be refused at all.
        // SQLite is one process's (its shards share the set above).
        dpop_shared_replay: matches!(state.location(), crate::state::Location::Postgres(_)),
        // This process's name in parked calls' states: another replica's is told apart.
        parked: Arc::new(dataplane::mcp::park::ParkedCalls::new(
            u64::from(std::process::id()) << 32 ^ clock.unix_ms() as u64,
        )),
    };
    let driver = if cfg.gateway.io_driver == IoDriver::Epoll {
        DriverChoice::Epoll
    } else {
        DriverChoice::Auto
    };
    // Reload triggers: SIGHUP, file changes (watching directories), POST /admin/reload.
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(16);
    let watcher = match &control.source {
        Some((path, _)) => {
            let dirs = crate::reload::watch_dirs(path, &crate::reload::named_files(&control.cfg));
            match crate::reload::spawn_watcher(&dirs, reload_tx.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    // The control loop's own fingerprint check still picks changes up.
                    tracing::warn!(error = %e, "File watcher unavailable; polling the configuration every 2 s");
                    None
                }
            }
        }
        None => None,
    };
    let hup_tx = reload_tx.clone();
    let hup = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            if hup_tx.send(Trigger::Signal).await.is_err() {
                return;
            }
        }
    });
    // A file-size limit (RLIMIT_FSIZE: `ulimit -f`, systemd's LimitFSIZE) must fail the write
    // (EFBIG: the audit sink's "disk full" path, calls refused until it recovers), not kill the
    // process: SIGXFSZ's default action terminates it. A handler that does nothing turns the
    // signal into the write's error.
    #[cfg(target_os = "linux")]
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        const SIGXFSZ: i32 = 25;
        let Ok(mut xfsz) = signal(SignalKind::from_raw(SIGXFSZ)) else {
            return;
        };
        while xfsz.recv().await.is_some() {}
    });
    let status_view = control.status.clone();
    let expected_shards = n;
    let admin_listener = bind_admin(cfg.admin.listen).await?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    let admin = tokio::spawn(crate::admin::serve(
        admin_listener,
        crate::admin::AdminState {
            shared: shared.clone(),
            shards: expected_shards,
            sts: sts.clone(),
            console,
            access,
            token_service: cfg.delegation.as_ref().map(|d| match d.mode {
                crate::config::DelegationMode::Embedded => "embedded STS".to_owned(),
                crate::config::DelegationMode::External => format!(
                    "token service {}",
                    d.token_endpoint
                        .as_ref()
                        .map(|u| u.as_str())
                        .unwrap_or("(external)")
                ),
            }),
            reload: reload_tx.clone(),
            status: status_view.clone(),
            clock,
        },
    ));
    // Initial keys and catalog before the shards serve; failures leave the gateway not ready
    // (503 /readyz). The admin port (`/sts/jwks.json`) already serves: discovery sends the
    // upstreams the gateway's service token, and an upstream that verifies it fetches the
    // STS JWKS from there.
    for i in 0..control.issuers.len() {
        control.refresh_issuer(i).await;
    }
    control.discover_missing().await;
    control.pull_revocations().await;
    control.publish();
    if let Some(e) = control.policy_error.take() {
        admin.abort();
        hup.abort();
        engine_task.abort();
        return Err(StartError::Other(format!("policy: {e}")));
    }

    {
        let mut st = (**status_view.load()).clone();
        st.snapshot_generation = control.generation;
        st.watched_files = control.watched();
        status_view.store(Arc::new(st));
    }
    let mut threads = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let gateway = |shard| dataplane::mcp::Gateway { shard };
        let t = shard::spawn(i as u16, l, shared.clone(), driver, None, gateway)
            .map_err(|e| StartError::Other(e.to_string()))?;
        threads.push(t);
    }
    let grace = cfg.limits.shutdown_grace;
    let control_task = tokio::spawn(control.run(rx, reload_rx));
    // Wait (bounded) until every shard runs, so callers can connect right away.
    for _ in 0..500 {
        if shared.running.load(Ordering::SeqCst) >= expected_shards {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tracing::info!(%listen, %admin_addr, shards = n, "Warden serving");
    Ok(Running {
        addr: listen,
        admin_addr,
        shared,
        threads,
        control: control_task,
        engine: engine_task,
        admin,
        grace,
        sts,
        auth_server,
        state,
        sts_task,
        audit_writer: Some(audit_writer),
        reload: reload_tx,
        status: status_view,
        _watcher: watcher,
        hup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reload_without_a_control_loop_is_a_typed_error() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let e = request_reload(&tx).await.unwrap_err();
        assert!(matches!(e, ReloadError::Stopped), "{e}");
        assert_eq!(e.label(), "stopped");
    }
}
