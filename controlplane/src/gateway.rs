//! Starting, running and stopping Warden: listeners, shards, the control loop and the admin port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use dataplane::control::{Command, ControlHandle};
use dataplane::http1::conn::ConnLimits;
use dataplane::session::SessionStore;
use dataplane::shard::{self, DriverChoice, Shared};
use dataplane::snapshot::{Settings, Snapshot, ToolTable, Upstream};
use futures_util::StreamExt;

use crate::catalog::{self, Discovered};
use crate::config::{Config, DelegationMode, IoDriver};
use crate::issuers::IssuerRuntime;
use crate::sts::Sts;

/// Why Warden could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("upstream {name}: {message}")]
    Upstream { name: String, message: String },
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
}

impl Running {
    /// Current snapshot generation (for tests and /readyz).
    pub fn generation(&self) -> u64 {
        self.shared.snapshot.load().generation
    }

    /// Stop accepting, let in-flight requests finish up to the grace period, stop the shards.
    pub async fn shutdown(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + self.grace;
        while self.shared.running.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the audit writer write everything the last requests recorded, then stop.
        self.shared.audit.close();
        if let Some(w) = self.audit_writer.take() {
            let flush_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !w.is_finished() && tokio::time::Instant::now() < flush_deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if w.is_finished() {
                let _ = w.join();
            } else {
                tracing::error!(
                    "Audit writer did not finish in time; some records may be unwritten"
                );
            }
        }
        self.control.abort();
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

fn bind_listeners(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, StartError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mk = |reuse: bool, addr: SocketAddr| -> std::io::Result<Socket> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        if reuse {
            s.set_reuse_port(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        Ok(s)
    };
    let err = |source| StartError::Listen { addr, source };
    // Refuse a port someone else holds, even one shared with SO_REUSEPORT: probe without it first.
    let probe = mk(false, addr).map_err(err)?;
    let actual = probe
        .local_addr()
        .map_err(err)?
        .as_socket()
        .ok_or_else(|| StartError::Other("bad local address".into()))?;
    drop(probe);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let s = mk(true, actual).map_err(err)?;
        s.listen(1024).map_err(err)?;
        out.push(s.into());
    }
    Ok(out)
}

fn tls_config(cfg: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, StartError> {
    use rustls_pki_types::pem::PemObject;
    let Some(t) = &cfg.gateway.tls else {
        return Ok(None);
    };
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(&t.cert)
        .map_err(|e| StartError::Tls(format!("{}: {e}", t.cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError::Tls(format!("{}: {e}", t.cert.display())))?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&t.key)
        .map_err(|e| StartError::Tls(format!("{}: {e}", t.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(sc)))
}

fn settings(
    cfg: &Config,
    listen: SocketAddr,
    found: &HashMap<u32, Discovered>,
    upstreams: &[Arc<Upstream>],
) -> Settings {
    let g = &cfg.gateway;
    let public = g.public_url.as_str().trim_end_matches('/').to_owned();
    let origin = g.public_url.origin().ascii_serialization();
    let mcp_path = g.public_url.path().to_owned();
    let resource_metadata_url = format!("{origin}/.well-known/oauth-protected-resource{mcp_path}");
    let prm = serde_json::json!({
        "resource": public,
        "authorization_servers": cfg.issuers.iter().map(|i| i.issuer.clone()).collect::<Vec<_>>(),
        "scopes_supported": g.scopes_supported,
        "bearer_methods_supported": ["header"],
        "resource_name": "Warden MCP gateway",
    });
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
    // resources/prompts/completion/logging go to the one upstream when it is an MCP server.
    let passthrough = (upstreams.len() == 1 && upstreams[0].bridge.is_none()).then_some(0);
    let mut caps = serde_json::json!({"tools": {"listChanged": true}});
    if let Some(d) = passthrough.and_then(|i| found.get(&upstreams[i].id)) {
        for k in ["resources", "prompts", "completions", "logging"] {
            if let Some(v) = d.capabilities.get(k) {
                caps[k] = v.clone();
            }
        }
    }
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
        session_idle_secs: g.session_idle_timeout.as_secs() as i64,
        max_connections_per_shard: cfg.limits.max_connections_per_shard,
        server_name: "warden".into(),
        server_version: env!("CARGO_PKG_VERSION").into(),
        instructions: (!instructions.is_empty()).then(|| instructions.join("\n\n")),
        passthrough_upstream: passthrough,
        capabilities_json: caps.to_string(),
        delegation_client_id: cfg.delegation.as_ref().map(|d| d.client_id.clone()),
    }
}

/// Everything the control loop owns.
struct Control {
    cfg: Config,
    listen: SocketAddr,
    issuers: Vec<IssuerRuntime>,
    upstreams: Vec<Arc<Upstream>>,
    found: HashMap<u32, Discovered>,
    generation: u64,
    cell: Arc<ArcSwap<Snapshot>>,
    http: reqwest::Client,
    sessions: Arc<SessionStore>,
    engine: Option<Arc<crate::delegate::Engine>>,
    policy: crate::policy::PolicyState,
    policy_error: Option<String>,
}

impl Control {
    fn build(&mut self) -> Snapshot {
        self.generation += 1;
        let tools: ToolTable = catalog::build_table(&self.upstreams, &self.found);
        let policy = match self.policy.engine_for(&self.upstreams, &tools) {
            Ok(e) => Some(e),
            Err(e) => {
                // No policy ever compiled: shards deny every call (fail closed).
                tracing::error!(error = %e, "Policy does not compile; every call is denied");
                self.policy_error = Some(e.to_string());
                None
            }
        };
        Snapshot {
            policy,
            generation: self.generation,
            settings: Arc::new(settings(
                &self.cfg,
                self.listen,
                &self.found,
                &self.upstreams,
            )),
            issuers: self.issuers.iter().map(IssuerRuntime::state).collect(),
            upstreams: self.upstreams.clone(),
            tools: Arc::new(tools),
        }
    }

    fn publish(&mut self) {
        let s = self.build();
        metrics::gauge!("warden_snapshot_generation").set(s.generation as f64);
        self.cell.store(Arc::new(s));
    }

    async fn refresh_issuer(&mut self, i: usize) {
        let http = self.http.clone();
        let iss = &mut self.issuers[i];
        match iss.refresh(&http).await {
            Ok(changed) => tracing::info!(issuer = %iss.cfg.issuer, changed, "JWKS refreshed"),
            Err(e) => {
                tracing::warn!(issuer = %iss.cfg.issuer, error = %e, "JWKS refresh failed; keeping last-known-good keys")
            }
        }
        self.publish();
        for w in std::mem::take(&mut self.issuers[i].waiting) {
            let _ = w.send(());
        }
    }

    async fn discover_missing(&mut self) -> bool {
        let mut changed = false;
        for (i, u) in self.cfg.upstreams.clone().iter().enumerate() {
            let id = i as u32;
            if self.found.contains_key(&id) {
                continue;
            }
            // A bridged REST API offers what its spec says; nothing to ask it.
            if let Some(b) = self.upstreams.get(i).and_then(|up| up.bridge.clone()) {
                self.found.insert(id, catalog::discovered_from_bridge(&b));
                changed = true;
                continue;
            }
            // Upstreams that take delegation tokens see the gateway's own service token.
            let auth = match (&u.token_exchange, &self.engine) {
                (Some(te), Some(engine)) => match engine.service_token(&te.audience).await {
                    Ok(t) => Some(format!("Bearer {}", t.token)),
                    Err(e) => {
                        tracing::warn!(upstream = %u.name, error = %e, "No service token for discovery; will retry");
                        continue;
                    }
                },
                _ => None,
            };
            match catalog::discover(&self.http, u, auth).await {
                Ok(d) => {
                    tracing::info!(upstream = %u.name, tools = d.tools.len(), "Upstream discovered");
                    self.found.insert(id, d);
                    changed = true;
                }
                Err(e) => {
                    tracing::warn!(upstream = %u.name, error = %e, "Upstream discovery failed; will retry")
                }
            }
        }
        changed
    }

    async fn run(mut self, mut rx: futures_channel::mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                cmd = rx.next() => match cmd {
                    None => return,
                    Some(Command::RefreshJwks { issuer, done }) => {
                        if issuer >= self.issuers.len() {
                            let _ = done.send(());
                            continue;
                        }
                        if self.issuers[issuer].refetch_allowed() {
                            self.issuers[issuer].waiting.push(done);
                            self.refresh_issuer(issuer).await;
                        } else {
                            // Rate-limited: answer at once; the shard fails the token closed.
                            metrics::counter!("warden_jwks_refetch_limited_total").increment(1);
                            let _ = done.send(());
                        }
                    }
                },
                _ = tick.tick() => {
                    ticks += 1;
                    for i in 0..self.issuers.len() {
                        if self.issuers[i].refresh_due() {
                            self.refresh_issuer(i).await;
                        }
                    }
                    // Keys turning stale (or fresh again) take effect at once: fail closed.
                    let snap = self.cell.load();
                    if snap.issuers.iter().zip(&self.issuers).any(|(published, now)| published.usable != now.usable()) {
                        drop(snap);
                        tracing::warn!("Issuer key freshness changed; republishing");
                        self.publish();
                    }
                    if self.found.len() < self.cfg.upstreams.len() && ticks.is_multiple_of(5) && self.discover_missing().await {
                        self.publish();
                    }
                    if ticks.is_multiple_of(30) {
                        // Re-publish so staleness limits take effect; expire idle sessions.
                        self.publish();
                        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
                        self.sessions.expire(now, self.cfg.gateway.session_idle_timeout.as_secs() as i64);
                    }
                    metrics::gauge!("warden_sessions_active").set(self.sessions.len() as f64);
                }
            }
        }
    }
}

/// Start Warden on the current tokio runtime (the control plane) plus shard threads.
pub async fn start(cfg: Config, shards: Option<usize>) -> Result<Running, StartError> {
    start_with(cfg, shards, None).await
}

/// Start Warden with an STS shared with an embedded authorization server (`warden demo`).
pub async fn start_with(
    cfg: Config,
    shards: Option<usize>,
    sts: Option<Arc<Sts>>,
) -> Result<Running, StartError> {
    start_observed(cfg, shards, sts, None).await
}

/// Start Warden; `observer` sees every audit record once written (the live page).
pub async fn start_observed(
    cfg: Config,
    shards: Option<usize>,
    sts: Option<Arc<Sts>>,
    observer: Option<crate::audit::Observer>,
) -> Result<Running, StartError> {
    start_full(cfg, shards, sts, observer, Vec::new()).await
}

/// Start Warden with policies supplied in code beside the configured files (the demo).
pub async fn start_full(
    cfg: Config,
    shards: Option<usize>,
    sts: Option<Arc<Sts>>,
    observer: Option<crate::audit::Observer>,
    policy_extra: Vec<warden_policy::PolicyFile>,
) -> Result<Running, StartError> {
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
    let listeners = bind_listeners(cfg.gateway.listen, n)?;
    let listen = listeners[0]
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    let tls = tls_config(&cfg)?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| StartError::Other(e.to_string()))?;

    let mut upstreams = Vec::new();
    for (i, u) in cfg.upstreams.iter().enumerate() {
        let up = catalog::resolve(i as u32, u)
            .await
            .map_err(|message| StartError::Upstream {
                name: u.name.clone(),
                message,
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
        .map(|c| IssuerRuntime::new(c, &public).with_ca())
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| StartError::Other(format!("issuer ca_file: {e}")))?;
    let sessions = Arc::new(SessionStore::new());
    let placeholder = Snapshot {
        generation: 0,
        settings: Arc::new(settings(&cfg, listen, &HashMap::new(), &upstreams)),
        issuers: Vec::new(),
        upstreams: upstreams.clone(),
        tools: Arc::default(),
        policy: None,
    };
    let cell = Arc::new(ArcSwap::from_pointee(placeholder));
    let mut control = Control {
        cfg: cfg.clone(),
        listen,
        issuers,
        upstreams,
        found: HashMap::new(),
        generation: 0,
        cell: cell.clone(),
        http: http.clone(),
        sessions: sessions.clone(),
        engine: None,
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
    };
    // Durable state: the store of the STS the caller brought (`warden demo`), else the
    // `state` block; without one (library callers, tests) SQLite in memory — the CLI fills in
    // `sqlite:<data-dir>/warden.db`, so nothing here writes into the working directory.
    let state = match sts.as_ref().and_then(|s| s.store().cloned()) {
        Some(s) => s,
        None => {
            crate::state::StateStore::from_config(&cfg.state.clone().unwrap_or_default(), "memory")
                .await
                .map_err(|e| StartError::Other(e.to_string()))?
        }
    };
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
    let auth_server = match (&cfg.authorization_server, &sts) {
        (Some(a), Some(s)) => Some(
            crate::authz::start(a.clone(), s.clone())
                .await
                .map_err(StartError::Other)?,
        ),
        _ => None,
    };
    if let Some(d) = &cfg.delegation {
        let engine = crate::delegate::Engine::new(d.clone(), sts.clone(), http)
            .map_err(StartError::Other)?;
        control.engine = Some(Arc::new(engine));
    }
    // Initial keys and catalog before serving; failures leave the gateway not ready (503 /readyz).
    for i in 0..control.issuers.len() {
        control.refresh_issuer(i).await;
    }
    control.discover_missing().await;
    control.publish();
    if let Some(e) = control.policy_error.take() {
        return Err(StartError::Other(format!("policy: {e}")));
    }

    let audit = dataplane::audit::AuditQueue::new(cfg.audit.queue_capacity);
    let live = crate::live::Live::new(cfg.upstreams.iter().map(|u| u.name.clone()).collect());
    let live_obs = live.clone();
    let otlp = crate::otlp::start(&cfg.telemetry, reqwest::Client::new());
    let observer: crate::audit::Observer = Arc::new(move |r: &dataplane::audit::Record| {
        live_obs.observe(r);
        if let Some(tx) = &otlp
            && tx.try_send(r.clone()).is_err()
        {
            metrics::counter!("warden_otlp_spans_dropped_total").increment(1);
        }
        if let Some(o) = &observer {
            o(r);
        }
    });
    let audit_writer = crate::audit::spawn_writer(audit.clone(), cfg.audit.clone(), Some(observer))
        .map_err(|e| StartError::Other(format!("audit writer: {e}")))?;
    let (handle, rx, delegate_rx) = ControlHandle::new();
    let engine_task = match control.engine.clone() {
        Some(engine) => tokio::spawn(engine.run(delegate_rx)),
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
    };
    let driver = if cfg.gateway.io_driver == IoDriver::Epoll {
        DriverChoice::Epoll
    } else {
        DriverChoice::Auto
    };
    let mut threads = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let t = shard::spawn(i as u16, l, shared.clone(), driver, None)
            .map_err(|e| StartError::Other(e.to_string()))?;
        threads.push(t);
    }
    let expected_shards = n;
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.admin.listen,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    let admin = tokio::spawn(crate::admin::serve(
        admin_listener,
        shared.clone(),
        expected_shards,
        sts.clone(),
        live,
    ));
    let grace = cfg.limits.shutdown_grace;
    let control_task = tokio::spawn(control.run(rx));
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
    })
}
