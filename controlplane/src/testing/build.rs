//! Building a harness: the configuration's real snapshot (`control::assemble`) from in-memory
//! JWKS documents and catalogs, and the control plane's side of the shard's queues.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use arc_swap::ArcSwap;
use dataplane::clock::Clock;
use dataplane::control::{
    Command, ControlHandle, DelegateRequest, Delegated, DelegationError, Subject,
};
use dataplane::session::{SessionKeys, SessionStore};
use dataplane::shard::Shared;
use dataplane::snapshot::{SnapshotCell, Upstream};
use dataplane::testing::{FakeUpstream, MemNet, PeerReply, PeerRequest};
use futures_channel::mpsc::UnboundedReceiver;
use futures_util::StreamExt;

use super::{Harness, HarnessError};
use crate::catalog::{self, Answer, Discovered, DiscoveryError, Transport};
use crate::config::{Config, DelegationMode};
use crate::control::{Parts, assemble};
use crate::delegate::Engine;
use crate::issuers::IssuerRuntime;
use crate::policy::PolicyState;
use crate::sts::Sts;

/// Where an issuer's JWKS document comes from: its bytes, or why the fetch failed.
pub type JwksSource = Rc<dyn Fn() -> Result<Vec<u8>, String>>;

/// What answers the shard's delegation requests (the STS's part), when configured.
pub type Delegate = Rc<dyn Fn(&DelegateRequest) -> Result<Delegated, DelegationError>>;

/// Everything a harness needs before it is built; see [`Harness::builder`].
pub struct HarnessBuilder {
    yaml: String,
    jwks: Vec<(String, JwksSource)>,
    upstreams: Vec<(String, Rc<dyn FakeUpstream>)>,
    delegate: Option<Delegate>,
    start_unix_ms: Option<i64>,
}

impl std::fmt::Debug for HarnessBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarnessBuilder")
            .field(
                "issuers",
                &self.jwks.iter().map(|(i, _)| i).collect::<Vec<_>>(),
            )
            .field(
                "upstreams",
                &self.upstreams.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl HarnessBuilder {
    pub(super) fn new(yaml: &str) -> HarnessBuilder {
        HarnessBuilder {
            yaml: yaml.to_owned(),
            jwks: Vec::new(),
            upstreams: Vec::new(),
            delegate: None,
            start_unix_ms: None,
        }
    }

    /// Trust `issuer`'s keys: its JWKS is read through [`testkit::MemIssuer::fetch_jwks`]
    /// at start and on every unknown-`kid` refetch (the config names it by URL).
    pub fn issuer(self, issuer: &Rc<testkit::MemIssuer>) -> HarnessBuilder {
        let i = issuer.clone();
        self.jwks(&issuer.issuer(), move || i.fetch_jwks())
    }

    /// The JWKS of the configured issuer `issuer` (its `issuer:` URL), from `source`.
    /// An issuer without a source never gets keys, like one that cannot be reached.
    pub fn jwks(
        mut self,
        issuer: &str,
        source: impl Fn() -> Result<Vec<u8>, String> + 'static,
    ) -> HarnessBuilder {
        self.jwks.push((issuer.to_owned(), Rc::new(source)));
        self
    }

    /// Serve the configured upstream `name` with `peer`; an upstream without a peer
    /// refuses connections (and is never discovered).
    pub fn upstream<U: FakeUpstream + 'static>(
        mut self,
        name: &str,
        peer: Rc<U>,
    ) -> HarnessBuilder {
        self.upstreams.push((name.to_owned(), peer));
        self
    }

    /// Answer delegation requests with `f`. Without it, a configuration whose `delegation`
    /// block is embedded mints with the real engine and an in-memory STS (on the fake
    /// clock); any other fails every request `Unavailable`.
    pub fn delegation(
        mut self,
        f: impl Fn(&DelegateRequest) -> Result<Delegated, DelegationError> + 'static,
    ) -> HarnessBuilder {
        self.delegate = Some(Rc::new(f));
        self
    }

    /// Start the fake clock at `unix_ms` (default: the real time now).
    pub fn start_at(mut self, unix_ms: i64) -> HarnessBuilder {
        self.start_unix_ms = Some(unix_ms);
        self
    }

    /// Parse the configuration, load the keys, discover the upstreams, publish the first
    /// snapshot and set up the shard. Fails as `warden` would fail to start.
    pub fn build(self) -> Result<Harness, HarnessError> {
        let cfg = Config::parse(&self.yaml, "harness.yaml")?;
        let mut rt = dataplane::testing::runtime().map_err(HarnessError::Runtime)?;
        let public = cfg
            .gateway
            .public_url
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let upstreams = (cfg.upstreams.iter().enumerate())
            .map(|(i, u)| catalog::describe(i as u32, u, Vec::new()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HarnessError::Upstream(e.to_string()))?;
        let sources: Vec<Option<JwksSource>> = (cfg.issuers.iter())
            .map(|ic| {
                let url = ic.issuer.trim_end_matches('/');
                (self.jwks.iter())
                    .find(|(i, _)| i.trim_end_matches('/') == url)
                    .map(|(_, s)| s.clone())
            })
            .collect();
        let start = self
            .start_unix_ms
            .unwrap_or_else(|| dataplane::clock::Clock::new().unix_ms());
        let (clock, fake_clock) = dataplane::testing::mock_clock(start);
        let mut issuers: Vec<IssuerRuntime> = (cfg.issuers.iter().cloned())
            .map(|c| IssuerRuntime::new(c, &public, clock.clone()))
            .collect();
        for (rt, src) in issuers.iter_mut().zip(&sources) {
            if let Some(src) = src
                && let Err(e) = rt.refresh_with(src())
            {
                tracing::warn!(issuer = %rt.cfg.issuer, error = %e, "Harness JWKS not loaded");
            }
        }
        let net = MemNet::new();
        for (name, peer) in &self.upstreams {
            net.serve(name, peer.clone());
        }
        let sts = embedded_sts(&cfg, &clock)?;
        let delegate = match (self.delegate, &sts) {
            (Some(f), _) => Some(f),
            (None, Some((engine, _))) => Some(minting(engine.clone(), clock.clone())),
            (None, None) => None,
        };
        let service = |aud: &str| match &sts {
            Some((e, _)) => e
                .mint_at(clock.unix_secs(), &Subject::Gateway, aud, &[], 60)
                .ok()
                .map(|d| format!("Bearer {}", d.token.expose())),
            None => None,
        };
        let found = rt.block_on(discover_all(&cfg, &upstreams, &self.upstreams, &service));
        let mut policy = PolicyState::load(cfg.policy.clone(), Vec::new())
            .map_err(|e| HarnessError::Policy(e.to_string()))?;
        policy.tags = (cfg.upstreams.iter())
            .map(|u| (u.name.clone(), u.tool_tags.clone()))
            .collect();
        let session_keys = match cfg.sessions.load_keys() {
            Ok(Some(k)) => Arc::new(k),
            Ok(None) => Arc::new(fresh_session_keys()?),
            Err((key, m)) => return Err(HarnessError::Config(format!("{key}: {m}"))),
        };
        let mut ctl = Ctl {
            listen: cfg.gateway.listen,
            cfg,
            issuers,
            sources,
            upstreams,
            found,
            session_keys,
            policy,
            generation: 0,
            cell: None,
            delegate,
            sts: sts.map(|(_, s)| s),
            sessions_ended: 0,
            upstreams_changed: Vec::new(),
        };
        let (first, policy_error) = ctl.build();
        if let Some(e) = policy_error {
            return Err(HarnessError::Policy(e));
        }
        let cell: SnapshotCell = Arc::new(ArcSwap::from_pointee(first));
        ctl.cell = Some(cell.clone());
        let (control, commands, delegations) = ControlHandle::new();
        let shared = Shared {
            snapshot: cell,
            sessions: Arc::new(SessionStore::new()),
            control,
            running: Arc::new(AtomicUsize::new(1)),
            stopping: Arc::new(AtomicBool::new(false)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            // The configured capacity, at most 4096 records: a queue of 64 Ki records is tens
            // of MB to set up, per test, for a backlog a test never builds.
            audit: dataplane::audit::AuditQueue::new(
                ctl.cfg.audit.queue_capacity.min(4096),
                ctl.cfg.audit.answer_wait,
            ),
            tls: None,
            // No sweeper thread: the cap still bounds the map.
            ratelimit: Arc::new(dataplane::ratelimit::RateLimiter::new(clock.now())),
            clock: clock.clone(),
            dpop_replay: Arc::new(dataplane::auth::replay::ReplaySet::new(100_000)),
            // One process, no state store: the process-wide set is the whole replay defence.
            dpop_shared_replay: false,
            parked: Arc::new(dataplane::mcp::park::ParkedCalls::new(1)),
        };
        let shard = dataplane::testing::shard(shared, clock, net.clone());
        let ctl = Rc::new(std::cell::RefCell::new(ctl));
        let (c1, c2) = (ctl.clone(), ctl.clone());
        rt.block_on(async move {
            monoio::spawn(serve_commands(c1, commands));
            monoio::spawn(serve_delegations(c2, delegations));
        });
        Ok(Harness::assemble(rt, shard, net, fake_clock, ctl))
    }
}

/// The real delegation engine and its in-memory STS.
type Embedded = (Arc<Engine>, Arc<Sts>);

/// The real delegation engine over an in-memory STS, for an embedded `delegation` block.
fn embedded_sts(cfg: &Config, clock: &Clock) -> Result<Option<Embedded>, HarnessError> {
    let Some(d) = &cfg.delegation else {
        return Ok(None);
    };
    if d.mode != DelegationMode::Embedded {
        return Ok(None);
    }
    let issuer = (d.issuer.as_deref())
        .ok_or_else(|| HarnessError::Config("delegation.issuer is required".into()))?;
    let sts = Arc::new(
        Sts::new(issuer, d.signing_alg, clock.clone())
            .map_err(|e| HarnessError::Config(e.to_string()))?,
    );
    // Embedded mode never uses the HTTP client; building one opens nothing.
    let engine = Engine::new(
        d.clone(),
        Some(sts.clone()),
        reqwest::Client::new(),
        clock.clone(),
    )
    .map_err(HarnessError::Config)?;
    Ok(Some((Arc::new(engine), sts)))
}

/// Delegation requests answered by `engine`, issued at the shard's (fake) time.
fn minting(engine: Arc<Engine>, clock: Clock) -> Delegate {
    Rc::new(move |r: &DelegateRequest| {
        engine.mint_at(
            clock.unix_secs(),
            &r.subject,
            &r.audience,
            &r.scopes,
            r.ttl_secs,
        )
    })
}

fn fresh_session_keys() -> Result<SessionKeys, HarnessError> {
    let key = SessionKeys::new_key_text().map_err(|e| HarnessError::Config(e.to_string()))?;
    SessionKeys::parse(&format!("harness:{key}")).map_err(|e| HarnessError::Config(e.to_string()))
}

/// The control plane's state behind a harness: what `Control` holds, minus the network.
pub(super) struct Ctl {
    pub cfg: Config,
    listen: std::net::SocketAddr,
    issuers: Vec<IssuerRuntime>,
    sources: Vec<Option<JwksSource>>,
    upstreams: Vec<Arc<Upstream>>,
    found: HashMap<u32, Discovered>,
    session_keys: Arc<SessionKeys>,
    policy: PolicyState,
    generation: u64,
    cell: Option<SnapshotCell>,
    delegate: Option<Delegate>,
    /// The in-memory STS of an embedded `delegation` block.
    pub sts: Option<Arc<Sts>>,
    /// `SessionEnded` commands received (DELETEs the shard reported).
    pub sessions_ended: usize,
    /// `UpstreamChanged` commands received (upstream ids), in order.
    pub upstreams_changed: Vec<u32>,
}

impl Ctl {
    /// The next snapshot, as `Control::build` makes it.
    fn build(&mut self) -> (dataplane::snapshot::Snapshot, Option<String>) {
        self.generation += 1;
        assemble(
            Parts {
                generation: self.generation,
                cfg: &self.cfg,
                listen: self.listen,
                issuers: &self.issuers,
                upstreams: &self.upstreams,
                found: &self.found,
                session_keys: &self.session_keys,
            },
            &mut self.policy,
        )
    }

    pub fn publish(&mut self) {
        let (s, _) = self.build();
        if let Some(cell) = &self.cell {
            cell.store(Arc::new(s));
        }
    }

    /// An unknown-`kid` refetch, rate-limited as the control loop does.
    fn refetch(&mut self, issuer: usize) {
        let Some(rt) = self.issuers.get_mut(issuer) else {
            return;
        };
        if !rt.refetch_allowed() {
            return;
        }
        if let Some(src) = self.sources.get(issuer).cloned().flatten()
            && let Err(e) = rt.refresh_with(src())
        {
            tracing::warn!(issuer = %rt.cfg.issuer, error = %e, "Harness JWKS refetch failed; keeping last-known-good keys");
        }
        self.publish();
    }
}

/// The command queue's far end: JWKS refetches and ended sessions.
async fn serve_commands(ctl: Rc<std::cell::RefCell<Ctl>>, mut rx: UnboundedReceiver<Command>) {
    while let Some(cmd) = rx.next().await {
        match cmd {
            Command::RefreshJwks { issuer, done } => {
                ctl.borrow_mut().refetch(issuer);
                let _ = done.send(());
            }
            Command::SessionEnded { .. } => ctl.borrow_mut().sessions_ended += 1,
            Command::UpstreamChanged { upstream } => {
                ctl.borrow_mut().upstreams_changed.push(upstream)
            }
            // Never sent (`dpop_shared_replay` is off); a store that is not there fails closed.
            Command::DpopProof { reply, .. } => {
                let _ = reply.send(dataplane::control::ProofUse::Unavailable);
            }
        }
    }
}

/// The delegation queue's far end.
async fn serve_delegations(
    ctl: Rc<std::cell::RefCell<Ctl>>,
    mut rx: UnboundedReceiver<DelegateRequest>,
) {
    while let Some(req) = rx.next().await {
        let delegate = ctl.borrow().delegate.clone();
        let r = match delegate {
            Some(f) => f(&req),
            None => Err(DelegationError::Unavailable),
        };
        let _ = req.reply.send(r);
    }
}

/// Every upstream's catalog, by the control plane's discovery exchange over an in-memory
/// transport (bridged upstreams from their spec, as `Control::discover_one` does).
async fn discover_all(
    cfg: &Config,
    upstreams: &[Arc<Upstream>],
    peers: &[(String, Rc<dyn FakeUpstream>)],
    service_token: &dyn Fn(&str) -> Option<String>,
) -> HashMap<u32, Discovered> {
    let mut found = HashMap::new();
    for (u, up) in cfg.upstreams.iter().zip(upstreams) {
        if let Some(b) = &up.bridge {
            found.insert(up.id, catalog::discovered_from_bridge(b));
            continue;
        }
        let Some((_, peer)) = peers.iter().find(|(n, _)| *n == up.name) else {
            continue;
        };
        // Upstreams that take delegation tokens see the gateway's own service token.
        let auth = match (&up.delegation, &up.credential) {
            (Some(d), _) => service_token(&d.audience),
            (None, dataplane::snapshot::UpstreamCredential::None) => None,
            (None, dataplane::snapshot::UpstreamCredential::Bearer(t)) => {
                Some(format!("Bearer {}", t.expose()))
            }
        };
        let transport = PeerTransport {
            peer: peer.as_ref(),
            up,
            auth,
        };
        match catalog::discover_with(transport).await {
            Ok(d) => {
                found.insert(up.id, d);
            }
            Err(e) => {
                tracing::warn!(upstream = %u.name, error = %e, "Harness discovery failed");
            }
        }
    }
    found
}

/// Discovery's requests handed straight to a fake upstream.
struct PeerTransport<'a> {
    peer: &'a dyn FakeUpstream,
    up: &'a Upstream,
    auth: Option<String>,
}

impl PeerTransport<'_> {
    fn request(
        &self,
        method: &str,
        session: Option<&str>,
        version: &str,
        body: String,
    ) -> PeerRequest {
        let mut headers = vec![
            ("host".to_owned(), self.up.authority.clone()),
            ("content-type".to_owned(), "application/json".to_owned()),
            (
                "accept".to_owned(),
                "application/json, text/event-stream".to_owned(),
            ),
            ("mcp-protocol-version".to_owned(), version.to_owned()),
        ];
        if let Some(a) = &self.auth {
            headers.push(("authorization".to_owned(), a.clone()));
        }
        if let Some(s) = session {
            headers.push(("mcp-session-id".to_owned(), s.to_owned()));
        }
        let (path, query) = match self.up.path.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (self.up.path.clone(), None),
        };
        PeerRequest {
            method: method.to_owned(),
            path,
            query,
            headers,
            body: body.into_bytes(),
        }
    }
}

impl Transport for PeerTransport<'_> {
    async fn post(
        &mut self,
        body: String,
        session: Option<&str>,
        version: &str,
        method: Option<&str>,
    ) -> Result<Answer, DiscoveryError> {
        let mut req = self.request("POST", session, version, body);
        if let Some(m) = method.filter(|_| dataplane::mcp::era::is_modern(version)) {
            req.headers.push(("mcp-method".to_owned(), m.to_owned()));
        }
        answer_of(self.peer.handle(&req))
    }

    async fn delete(&mut self, session: &str, version: &str) {
        let req = self.request("DELETE", Some(session), version, String::new());
        let _ = self.peer.handle(&req);
    }
}

fn answer_of(reply: PeerReply) -> Result<Answer, DiscoveryError> {
    let header = |headers: &[(&'static str, String)], name: &str| {
        (headers.iter())
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    match reply {
        PeerReply::Full {
            status,
            headers,
            body,
        } => Ok(Answer {
            status,
            content_type: header(&headers, "content-type")
                .unwrap_or_default()
                .to_ascii_lowercase(),
            session: header(&headers, "mcp-session-id"),
            body: String::from_utf8_lossy(&body).into_owned(),
        }),
        PeerReply::Sse {
            status,
            headers,
            events,
            ..
        } => Ok(Answer {
            status,
            content_type: "text/event-stream".into(),
            session: header(&headers, "mcp-session-id"),
            body: String::from_utf8_lossy(&events.concat()).into_owned(),
        }),
        // Discovery does not wait out a fake's delay.
        PeerReply::After(_, next) => answer_of(*next),
        PeerReply::HangUp => Err(DiscoveryError::Transport(
            "connection closed before an answer".into(),
        )),
        PeerReply::Raw(_) => Err(DiscoveryError::Transport("invalid HTTP response".into())),
    }
}
