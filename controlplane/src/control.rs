//! The control loop: owns issuers, upstream catalogs, policy and session keys, answers the
//! shards' commands, refreshes keys and catalogs on its timer, and reloads the configuration
//! (validate-then-swap) on SIGHUP, file changes and `POST /admin/reload`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dataplane::clock::Clock;
use dataplane::control::Command;
use dataplane::session::{Lifetimes, SessionKeys, SessionStore};
use dataplane::snapshot::{Snapshot, ToolTable, Upstream};
use futures_util::StreamExt;

use crate::catalog::{self, Discovered};
use crate::config::Config;
use crate::issuers::IssuerRuntime;
use crate::reload::{self, ReloadError, ReloadStatus, StatusCell, Trigger};
use crate::tls::CertCell;

/// Everything the control loop owns.
pub(crate) struct Control {
    pub cfg: Config,
    /// The file the configuration came from, with its YAML document (reload compares them).
    pub source: Option<(PathBuf, serde_yaml_ng::Value)>,
    pub listen: SocketAddr,
    pub issuers: Vec<IssuerRuntime>,
    pub upstreams: Vec<Arc<Upstream>>,
    /// Discovered catalogs by upstream id.
    pub found: HashMap<u32, Discovered>,
    /// Upstream ids are never reused: pooled connections and client sessions' upstream
    /// sessions are keyed by id, so a changed upstream must not inherit them.
    pub next_upstream_id: u32,
    pub generation: u64,
    pub cell: Arc<ArcSwap<Snapshot>>,
    pub http: reqwest::Client,
    pub sessions: Arc<SessionStore>,
    pub session_keys: Arc<SessionKeys>,
    pub engine: Option<crate::delegate::EngineCell>,
    /// The embedded STS, when there is one (a reloaded delegation engine signs with it).
    pub sts: Option<Arc<crate::sts::Sts>>,
    pub policy: crate::policy::PolicyState,
    pub policy_error: Option<String>,
    pub certs: Option<Arc<CertCell>>,
    pub status: StatusCell,
    /// What each issuer and upstream was loaded from.
    pub keys: Keys,
    /// Fingerprint of the config file and every file it names, as last loaded.
    pub fingerprint: [u8; 32],
    /// Durable state: ended session ids are written here and read back from every replica.
    pub state: Option<crate::state::StateStore>,
    /// How far the shared revocation set has been read.
    pub revocation_cursor: i64,
    /// `rate_limits.per_tool` names last warned about (no upstream offers them).
    pub unknown_limited_tools: Vec<String>,
    /// The process's clock (status times, session expiry, and every issuer and engine built
    /// on reload).
    pub clock: Clock,
    /// Change listeners on the upstreams that tell list changes, and the rediscoveries they
    /// asked for.
    pub watch: crate::rediscovery::Rediscovery,
}

/// A section of the config as YAML plus its files' fingerprints, as loaded: equal means
/// "unchanged" (kept with its state across a reload).
type SectionKey = (serde_yaml_ng::Value, [u8; 32]);

/// The keys of every issuer and upstream, and of the delegation block, of one loaded
/// configuration. An upstream that takes delegation tokens includes the delegation block in
/// its key: when the gateway's credentials change it gets a new id, so no delegation token
/// or connection made under the old ones is reused.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    pub issuers: Vec<SectionKey>,
    pub upstreams: Vec<SectionKey>,
    pub delegation: SectionKey,
}

impl Keys {
    pub fn of(raw: &serde_yaml_ng::Value, cfg: &Config) -> Keys {
        // An issuer's default audience is the public URL: part of what it is.
        let public = serde_yaml_ng::Value::String(cfg.gateway.public_url.to_string());
        let delegation: SectionKey = (
            raw.get("delegation")
                .cloned()
                .unwrap_or(serde_yaml_ng::Value::Null),
            reload::files_fingerprint(
                (cfg.delegation.iter()).flat_map(|d| d.private_key_file.iter().cloned()),
            ),
        );
        Keys {
            issuers: cfg
                .issuers
                .iter()
                .enumerate()
                .map(|(i, ic)| {
                    let sec = serde_yaml_ng::Value::Sequence(vec![
                        section(raw, "issuers", i),
                        public.clone(),
                    ]);
                    (sec, reload::files_fingerprint(ic.ca_file.iter().cloned()))
                })
                .collect(),
            upstreams: cfg
                .upstreams
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let files = u.spec_file.iter().chain(u.ca_file.iter()).cloned();
                    let mut sec = section(raw, "upstreams", i);
                    if u.token_exchange.is_some() {
                        let (d, f) = &delegation;
                        let f = serde_yaml_ng::Value::String(dataplane::audit::hex(f));
                        sec = serde_yaml_ng::Value::Sequence(vec![sec, d.clone(), f]);
                    }
                    (sec, reload::files_fingerprint(files))
                })
                .collect(),
            delegation,
        }
    }
}

fn section(raw: &serde_yaml_ng::Value, key: &str, i: usize) -> serde_yaml_ng::Value {
    raw.get(key)
        .and_then(|v| v.get(i))
        .cloned()
        .unwrap_or(serde_yaml_ng::Value::Null)
}

/// What one snapshot is made of.
pub(crate) struct Parts<'a> {
    pub generation: u64,
    pub cfg: &'a Config,
    pub listen: SocketAddr,
    pub issuers: &'a [IssuerRuntime],
    pub upstreams: &'a [Arc<Upstream>],
    pub found: &'a HashMap<u32, Discovered>,
    pub session_keys: &'a Arc<SessionKeys>,
}

/// Build one snapshot: settings, issuers' keys, upstreams, the routing table and the policy
/// compiled for it (no I/O). Also the socket-free harness's, so tests run what publishes.
/// Returns why the policy did not compile, if it did not (the snapshot then denies every
/// call: fail closed).
pub(crate) fn assemble(
    p: Parts<'_>,
    policy: &mut crate::policy::PolicyState,
) -> (Snapshot, Option<String>) {
    let tools: ToolTable = catalog::build_table(p.upstreams, p.found);
    let items = crate::catalog_items::build_items(p.upstreams, p.found);
    let serving = crate::catalog_items::serving_upstreams(p.upstreams, &items);
    let (engine, error) = match policy.engine_for(p.upstreams, &tools, &serving) {
        Ok(e) => (Some(e), None),
        Err(e) => {
            tracing::error!(error = %e, "Policy does not compile; every call is denied");
            (None, Some(e.to_string()))
        }
    };
    let snapshot = Snapshot {
        shadow: engine.as_ref().and_then(|_| policy.shadow()),
        policy: engine,
        generation: p.generation,
        settings: Arc::new(crate::gateway::settings(
            p.cfg,
            p.listen,
            p.found,
            p.upstreams,
            p.session_keys.clone(),
        )),
        issuers: p.issuers.iter().map(IssuerRuntime::state).collect(),
        upstreams: p.upstreams.to_vec(),
        tools: Arc::new(tools),
        items: Arc::new(items),
    };
    (snapshot, error)
}

impl Control {
    pub fn build(&mut self) -> Snapshot {
        self.generation += 1;
        let (snapshot, policy_error) = assemble(
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
        );
        if let Some(e) = policy_error {
            self.policy_error = Some(e);
        }
        snapshot
    }

    pub fn publish(&mut self) {
        self.sync_listeners();
        let s = self.build();
        self.warn_unknown_limited_tools(&s.tools);
        metrics::gauge!("warden_snapshot_generation").set(s.generation as f64);
        self.cell.store(Arc::new(s));
    }

    /// Once every upstream is discovered, warn (once per change) about `rate_limits.per_tool`
    /// entries naming no offered tool: a typo there would otherwise limit nothing, silently.
    fn warn_unknown_limited_tools(&mut self, tools: &ToolTable) {
        if self.found.len() < self.upstreams.len() {
            return;
        }
        let unknown: Vec<String> = (self.cfg.rate_limits.per_tool.iter())
            .filter(|t| !tools.routes.contains_key(&t.tool))
            .map(|t| t.tool.clone())
            .collect();
        if unknown != self.unknown_limited_tools {
            for t in &unknown {
                tracing::warn!(tool = ?t, "rate_limits.per_tool names a tool no upstream offers; the limit applies if it appears");
            }
            self.unknown_limited_tools = unknown;
        }
    }

    pub async fn refresh_issuer(&mut self, i: usize) {
        self.fetch_keys(i).await;
        self.publish();
        for w in std::mem::take(&mut self.issuers[i].waiting) {
            let _ = w.send(());
        }
    }

    async fn fetch_keys(&mut self, i: usize) {
        let http = self.http.clone();
        let iss = &mut self.issuers[i];
        match iss.refresh(&http).await {
            Ok(changed) => tracing::info!(issuer = %iss.cfg.issuer, changed, "JWKS refreshed"),
            Err(e) => {
                tracing::warn!(issuer = %iss.cfg.issuer, error = %e, "JWKS refresh failed; keeping last-known-good keys")
            }
        }
    }

    /// Discover upstreams without a catalog yet; returns whether any was found.
    pub async fn discover_missing(&mut self) -> bool {
        let mut changed = false;
        for (i, u) in self.cfg.upstreams.clone().iter().enumerate() {
            let Some(up) = self.upstreams.get(i).cloned() else {
                continue;
            };
            if self.found.contains_key(&up.id) {
                continue;
            }
            if let Some(d) = self.discover_one(u, &up, self.engine()).await {
                self.found.insert(up.id, d);
                changed = true;
            }
        }
        changed
    }

    /// An upstream's lists changed: rediscover it now, or at the next tick if it was
    /// rediscovered less than a second ago (`rediscovery.rs`).
    async fn upstream_changed(&mut self, id: u32) {
        if self.watch.signal(id, &self.clock) {
            self.rediscover(id).await;
        }
    }

    /// Rediscover one upstream; publish if its catalog changed.
    async fn rediscover(&mut self, id: u32) {
        let Some(i) = self.upstreams.iter().position(|u| u.id == id) else {
            return;
        };
        let (Some(u), up) = (
            self.cfg.upstreams.get(i).cloned(),
            self.upstreams[i].clone(),
        ) else {
            return;
        };
        metrics::counter!("warden_upstream_rediscoveries_total", "upstream" => up.name.clone())
            .increment(1);
        let Some(d) = self.discover_one(&u, &up, self.engine()).await else {
            return;
        };
        let same = self.found.get(&id).is_some_and(|old| {
            old.tools == d.tools
                && old.capabilities == d.capabilities
                && old.instructions == d.instructions
        });
        if !same {
            tracing::info!(upstream = %up.name, tools = d.tools.len(), "Upstream catalog changed; publishing");
            self.found.insert(id, d);
            self.publish();
        }
    }

    /// Rediscoveries that waited for their interval.
    async fn rediscover_pending(&mut self) {
        for id in self.watch.due(&self.clock) {
            self.rediscover(id).await;
        }
    }

    /// One change listener for each discovered MCP upstream that tells list changes.
    fn sync_listeners(&mut self) {
        let Some(tx) = self.watch.tx.clone() else {
            return;
        };
        let keep: Vec<u32> = (self.upstreams.iter())
            .filter(|u| u.bridge.is_none())
            .filter(|u| {
                self.found
                    .get(&u.id)
                    .is_some_and(crate::upstream_watch::tells_changes)
            })
            .map(|u| u.id)
            .collect();
        let engine = self.engine.clone();
        let (upstreams, cfgs, found, http) = (
            &self.upstreams,
            &self.cfg.upstreams,
            &self.found,
            &self.http,
        );
        self.watch.listeners.sync(
            &keep,
            |id| {
                let i = upstreams.iter().position(|u| u.id == id)?;
                let u = cfgs.get(i)?;
                let auth = match (&u.token_exchange, &engine) {
                    (Some(te), Some(engine)) => crate::upstream_watch::Auth::Service {
                        engine: engine.clone(),
                        audience: te.audience.clone(),
                    },
                    _ => crate::upstream_watch::Auth::Fixed(
                        catalog::credential(u)
                            .ok()
                            .as_ref()
                            .and_then(catalog::auth_header),
                    ),
                };
                Some(crate::upstream_watch::Target {
                    id,
                    name: u.name.clone(),
                    url: u.url.to_string(),
                    http: catalog::http_for(http, u).ok()?,
                    auth,
                    version: found.get(&id)?.protocol_version.clone(),
                })
            },
            &tx,
        );
    }

    /// The delegation engine in use.
    fn engine(&self) -> Option<Arc<crate::delegate::Engine>> {
        self.engine.as_ref().map(|c| c.load_full())
    }

    /// One upstream's catalog: from its spec (bridged REST) or by asking it (MCP), with the
    /// gateway's service token from `engine` when the upstream takes delegation tokens.
    async fn discover_one(
        &self,
        u: &crate::config::UpstreamConfig,
        up: &Upstream,
        engine: Option<Arc<crate::delegate::Engine>>,
    ) -> Option<Discovered> {
        if let Some(b) = &up.bridge {
            return Some(catalog::discovered_from_bridge(b));
        }
        // Upstreams that take delegation tokens see the gateway's own service token.
        let auth = match (&u.token_exchange, &engine) {
            (Some(te), Some(engine)) => match engine.service_token(&te.audience).await {
                Ok(t) => Some(format!("Bearer {}", t.token.expose())),
                Err(e) => {
                    tracing::warn!(upstream = %u.name, error = %e, "No service token for discovery; will retry");
                    return None;
                }
            },
            _ => None,
        };
        match catalog::discover(&self.http, u, auth).await {
            Ok(d) => {
                tracing::info!(upstream = %u.name, tools = d.tools.len(), "Upstream discovered");
                Some(d)
            }
            Err(e) => {
                tracing::warn!(upstream = %u.name, error = %e, "Upstream discovery failed; will retry");
                None
            }
        }
    }

    /// Load, validate and prepare the configuration file's current content; publish it only
    /// if every part is good, else change nothing. Returns the new snapshot generation.
    pub async fn reload(&mut self) -> Result<u64, ReloadError> {
        let Some((path, old_raw)) = self.source.clone() else {
            return Err(ReloadError::NoSource);
        };
        let (mut new, new_raw) = Config::load_raw(&path)?;
        // The `state` block cannot change at run time (checked below); keep the resolved one.
        new.state = self.cfg.state.clone();
        let restart = reload::restart_needed(&self.cfg, &new, &old_raw, &new_raw);
        if !restart.is_empty() {
            return Err(ReloadError::RestartNeeded(restart));
        }
        let prep = ReloadError::Prepare;
        // Session keys: a new ring seals new sessions; old keys still listed open old ones.
        let session_keys = match new.sessions.load_keys() {
            Ok(Some(k)) => Arc::new(k),
            Ok(None)
                if self.cfg.sessions.keys_file.is_none()
                    && self.cfg.sessions.keys_env.is_none() =>
            {
                self.session_keys.clone()
            }
            Ok(None) => {
                return Err(prep(
                    "sessions: removing the key ring would end every session; give a new ring instead".into(),
                ));
            }
            Err((key, m)) => return Err(prep(format!("{key}: {m}"))),
        };
        // Listener certificate: parsed and matched with its key before anything changes.
        let certified = match (&new.gateway.tls, &self.certs) {
            (Some(t), Some(_)) => {
                Some(crate::tls::load_certified(t).map_err(|e| prep(e.to_string()))?)
            }
            _ => None,
        };
        let keys = Keys::of(&new_raw, &new);
        // Delegation: a changed block (client id, token endpoint, credentials, timeout) gets a
        // new engine, its credentials read now; `restart_needed` refused what the STS owns.
        let engine = match (&new.delegation, keys.delegation != self.keys.delegation) {
            (Some(d), true) => Some(Arc::new(
                crate::delegate::Engine::new(
                    d.clone(),
                    self.sts.clone(),
                    self.http.clone(),
                    self.clock.clone(),
                )
                .map_err(|e| prep(format!("delegation: {e}")))?,
            )),
            _ => None,
        };
        // Issuers: unchanged ones keep their keys (and shards' cached verifications); new or
        // changed ones are fetched now, under a generation above every earlier one.
        let public = new
            .gateway
            .public_url
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let floor = self
            .issuers
            .iter()
            .map(IssuerRuntime::generation)
            .max()
            .unwrap_or(0);
        let mut issuer_plan: Vec<Result<usize, IssuerRuntime>> = Vec::new();
        for (i, ic) in new.issuers.iter().enumerate() {
            let kept = self.keys.issuers.iter().enumerate().position(|(j, k)| {
                *k == keys.issuers[i] && !issuer_plan.iter().any(|p| p.as_ref().ok() == Some(&j))
            });
            match kept {
                Some(j) => issuer_plan.push(Ok(j)),
                None => {
                    let mut rt = IssuerRuntime::new(ic.clone(), &public, self.clock.clone())
                        .with_ca()
                        .map_err(|e| prep(format!("issuers[{i}].ca_file: {e}")))?;
                    rt.raise_generation_above(floor);
                    if let Err(e) = rt.refresh(&self.http).await {
                        tracing::warn!(issuer = %ic.issuer, error = %e, "New issuer's JWKS not loaded yet; will retry");
                    }
                    issuer_plan.push(Err(rt));
                }
            }
        }
        // Upstreams: unchanged ones keep their id, catalog, pooled connections and sessions.
        let mut upstreams = Vec::new();
        let mut found = HashMap::new();
        let mut next_id = self.next_upstream_id;
        for (i, u) in new.upstreams.iter().enumerate() {
            let kept = self
                .keys
                .upstreams
                .iter()
                .position(|k| *k == keys.upstreams[i])
                .and_then(|j| self.upstreams.get(j).cloned());
            let up = match kept {
                Some(up) => up,
                None => {
                    let up = catalog::resolve(next_id, u)
                        .await
                        .map_err(|m| prep(format!("upstream {}: {m}", u.name)))?;
                    next_id += 1;
                    Arc::new(up)
                }
            };
            let d = match self.found.get(&up.id) {
                Some(d) => Some(d.clone()),
                None => {
                    let e = engine.clone().or_else(|| self.engine());
                    self.discover_one(u, &up, e).await
                }
            };
            if let Some(d) = d {
                found.insert(up.id, d);
            }
            upstreams.push(up);
        }
        // Policy: compiled now against the new catalog; one that does not compile refuses
        // the whole reload.
        let tags = new
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), u.tool_tags.clone()))
            .collect();
        let mut policy = self
            .policy
            .successor(new.policy.clone(), tags)
            .map_err(|e| prep(format!("policy: {e}")))?;
        let tools = catalog::build_table(&upstreams, &found);
        let items = crate::catalog_items::build_items(&upstreams, &found);
        let serving = crate::catalog_items::serving_upstreams(&upstreams, &items);
        policy
            .engine_for(&upstreams, &tools, &serving)
            .map_err(|e| prep(format!("policy: {e}")))?;
        // Everything is prepared: commit and publish one snapshot. Shards adopt it between
        // requests; requests in flight finish on the snapshot they started with.
        let mut old: Vec<Option<IssuerRuntime>> = std::mem::take(&mut self.issuers)
            .into_iter()
            .map(Some)
            .collect();
        let mut issuers = Vec::with_capacity(issuer_plan.len());
        for (i, p) in issuer_plan.into_iter().enumerate() {
            match p {
                Ok(j) => match old.get_mut(j).and_then(Option::take) {
                    Some(rt) => issuers.push(rt),
                    // Each kept index is planned once, so this does not happen; if it did,
                    // a fresh runtime (keys fetched on the next tick) is still correct.
                    None => {
                        let mut rt =
                            IssuerRuntime::new(new.issuers[i].clone(), &public, self.clock.clone());
                        rt.raise_generation_above(floor);
                        issuers.push(rt);
                    }
                },
                Err(rt) => issuers.push(rt),
            }
        }
        self.issuers = issuers;
        for w in old.into_iter().flatten().flat_map(|rt| rt.waiting) {
            let _ = w.send(());
        }
        self.cfg = new;
        self.upstreams = upstreams;
        self.found = found;
        self.policy = policy;
        self.keys = keys;
        self.next_upstream_id = next_id;
        self.session_keys = session_keys;
        if let (Some(cell), Some(ck)) = (&self.certs, certified) {
            cell.store(ck);
        }
        if let (Some(cell), Some(e)) = (&self.engine, engine) {
            cell.store(e);
        }
        self.source = Some((path, new_raw));
        self.fingerprint = self.current_fingerprint();
        self.publish();
        Ok(self.generation)
    }

    /// Fingerprint of the config file and the files it names, now.
    pub fn current_fingerprint(&self) -> [u8; 32] {
        let mut files = reload::named_files(&self.cfg);
        if let Some((p, _)) = &self.source {
            files.push(p.clone());
        }
        reload::fingerprint(&files)
    }

    /// Run one reload and record its outcome (log, metric, `/admin/config`).
    async fn reload_and_record(&mut self, why: &'static str) -> Result<u64, ReloadError> {
        let outcome = self.reload().await;
        let now = self.clock.unix_secs();
        let mut st: ReloadStatus = (**self.status.load()).clone();
        st.last_attempt_at = now;
        let label = match &outcome {
            Ok(generation) => {
                tracing::info!(generation, trigger = why, "Configuration reloaded");
                st.config_generation += 1;
                st.snapshot_generation = *generation;
                st.loaded_at = now;
                st.last_error = None;
                st.watched_files = self.watched();
                "ok"
            }
            Err(e) => {
                tracing::error!(error = %e, trigger = why, "Configuration reload refused; the running configuration stays");
                st.last_error = Some(e.to_string());
                e.label()
            }
        };
        metrics::counter!("warden_config_reload_total", "result" => label).increment(1);
        self.status.store(Arc::new(st));
        if outcome.is_err() {
            // Do not retry the same broken content on every tick.
            self.fingerprint = self.current_fingerprint();
        }
        outcome
    }

    pub fn watched(&self) -> Vec<String> {
        let mut v: Vec<String> = reload::named_files(&self.cfg)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        if let Some((p, _)) = &self.source {
            v.insert(0, p.display().to_string());
        }
        v
    }

    fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            idle_secs: self.cfg.gateway.session_idle_timeout.as_secs() as i64,
            max_secs: self.cfg.sessions.max_lifetime.as_secs() as i64,
        }
    }

    /// Adopt session ids ended on any replica since the last call (one query when nothing
    /// changed). A store that cannot be read leaves the known set as it is and is retried.
    pub async fn pull_revocations(&mut self) {
        let Some(st) = &self.state else { return };
        loop {
            match st.session_revocations_since(self.revocation_cursor).await {
                Ok((rows, next)) => {
                    let full = rows.len() >= crate::state::REVOCATION_BATCH;
                    for (hash, until) in rows {
                        self.sessions.revoke_hash(hash, until);
                    }
                    self.revocation_cursor = next;
                    if !full {
                        return;
                    }
                }
                Err(e) => {
                    metrics::counter!("warden_session_revocations_failed_total").increment(1);
                    tracing::warn!(error = %e, "Reading ended sessions from the state store failed; will retry");
                    return;
                }
            }
        }
    }

    pub async fn run(
        mut self,
        mut rx: futures_channel::mpsc::UnboundedReceiver<Command>,
        mut triggers: tokio::sync::mpsc::Receiver<Trigger>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
        self.watch.tx = Some(changed_tx);
        self.sync_listeners();
        loop {
            tokio::select! {
                Some(id) = changed.recv() => self.upstream_changed(id).await,
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
                    Some(Command::DpopProof { key, until, reply }) => {
                        // One statement at the shared store decides, for every replica at once.
                        let st = self.state.clone();
                        tokio::spawn(async move {
                            use dataplane::control::ProofUse;
                            let verdict = match st {
                                None => ProofUse::Unavailable,
                                Some(st) => match st.first_use(crate::state::Kind::DpopProof, &dataplane::audit::hex(&key), until).await {
                                    Ok(true) => ProofUse::First,
                                    Ok(false) => ProofUse::Replayed,
                                    Err(e) => {
                                        metrics::counter!("warden_dpop_store_failures_total").increment(1);
                                        tracing::error!(error = %e, "DPoP proof not recorded in the state store; the request is refused");
                                        ProofUse::Unavailable
                                    }
                                },
                            };
                            let _ = reply.send(verdict);
                        });
                    }
                    Some(Command::UpstreamChanged { upstream }) => self.upstream_changed(upstream).await,
                    Some(Command::SessionEnded { id_hash, until }) => {
                        // This process's shards already refuse the id; the store tells the
                        // other replicas (and this one after a restart).
                        metrics::counter!("warden_sessions_ended_total").increment(1);
                        if let Some(st) = self.state.clone() {
                            tokio::spawn(async move {
                                if let Err(e) = st.revoke_session(id_hash, until).await {
                                    metrics::counter!("warden_session_revocations_failed_total").increment(1);
                                    tracing::error!(error = %e, "Ended session not recorded in the state store; other replicas still accept it");
                                }
                            });
                        }
                    }
                },
                t = triggers.recv() => match t {
                    None => {}
                    Some(Trigger::Admin(reply)) => {
                        let r = self.reload_and_record("admin").await;
                        let _ = reply.send(r);
                    }
                    Some(Trigger::Signal) => {
                        let _ = self.reload_and_record("sighup").await;
                    }
                    Some(Trigger::Files) if self.source.is_some() && self.current_fingerprint() != self.fingerprint => {
                        let _ = self.reload_and_record("file change").await;
                    }
                    Some(Trigger::Files) => {}
                },
                _ = tick.tick() => {
                    ticks += 1;
                    // Sequence numbers of concurrent PostgreSQL inserts can commit out of
                    // order, so one committed late could sit below the cursor: read the
                    // whole (purged, so bounded) set again once a minute.
                    if ticks.is_multiple_of(60) {
                        self.revocation_cursor = 0;
                    }
                    self.pull_revocations().await;
                    self.rediscover_pending().await;
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
                    if self.found.len() < self.upstreams.len() && ticks.is_multiple_of(5) && self.discover_missing().await {
                        self.publish();
                    }
                    // A missed watcher event delays a reload by at most two seconds.
                    if self.source.is_some() && ticks.is_multiple_of(2) && self.current_fingerprint() != self.fingerprint {
                        let _ = self.reload_and_record("file change").await;
                    }
                    if ticks.is_multiple_of(30) {
                        // Re-publish so staleness limits take effect; expire idle sessions.
                        self.publish();
                        self.sessions.expire(self.clock.unix_secs(), self.lifetimes());
                    }
                    metrics::gauge!("warden_sessions_active").set(self.sessions.len() as f64);
                }
            }
        }
    }
}
