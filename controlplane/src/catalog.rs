//! Upstream discovery: resolve each upstream, open an MCP session with the gateway's own
//! credential, list its tools (following `nextCursor`) and build the routing table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dataplane::mcp::era;
use dataplane::snapshot::{
    ToolDelegation, ToolRoute, ToolTable, Upstream, UpstreamCredential, UpstreamDelegation,
};
use serde_json::Value;

use crate::config::{Config, UpstreamAuth, UpstreamConfig};

/// What one upstream told us.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    pub tools: Vec<Value>,
    pub instructions: Option<String>,
    pub capabilities: Value,
    /// The revision it speaks: a 2025-xx one negotiated by `initialize`, or 2026-07-28
    /// when it answered `server/discover` with it (then it is spoken to statelessly).
    pub protocol_version: String,
    /// Its resources, resource templates and prompts (`catalog_items`).
    pub items: crate::catalog_items::Items,
}

/// The revision discovery asks a 2025-era upstream for: the newest 2025 one. Its answer is
/// adopted when Warden speaks it ([`dataplane::mcp::SUPPORTED_VERSIONS`]), refused otherwise.
const PROTOCOL_VERSION: &str = dataplane::mcp::UPSTREAM_VERSION;
/// At most this many pages of one list are read from one upstream ...
pub(crate) const MAX_PAGES: usize = 100;
/// ... and at most this many entries kept; either limit is logged when reached.
pub(crate) const MAX_ITEMS: usize = 10_000;

/// Why an upstream cannot be used, and so who must act: the operator's configuration
/// (`Config`, `File`, `Spec`), name resolution (`Resolve`), or the upstream's own answers to
/// discovery (`Discovery`).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Config(String),
    /// A file the configuration names (spec, CA) cannot be read or used.
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("OpenAPI spec: {0}")]
    Spec(#[from] warden_bridge::BridgeError),
    #[error("{0}")]
    Resolve(String),
    #[error("{0}")]
    Discovery(#[from] DiscoveryError),
}

impl UpstreamError {
    fn file(path: &std::path::Path, e: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// Why discovery (initialize, `tools/list`) failed: the upstream's transport or answers.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Connecting, sending or reading failed (the message says which).
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {0}")]
    Status(String),
    #[error("JSON-RPC error {0}")]
    JsonRpc(Value),
    /// The answer is not what MCP says it must be.
    #[error("{0}")]
    Answer(String),
}

/// Load an OpenAPI upstream's spec (file I/O here, in the control plane) and bridge it.
pub fn load_bridge(
    u: &UpstreamConfig,
) -> Result<Option<Arc<warden_bridge::Bridge>>, UpstreamError> {
    if u.kind != crate::config::UpstreamKind::Openapi {
        return Ok(None);
    }
    let text = match (&u.spec, &u.spec_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| UpstreamError::file(f, e))?,
        (None, None) => return Err(UpstreamError::Config("no spec".into())),
    };
    let opts = warden_bridge::BridgeOptions {
        namespace: String::new(),
        include: u.include.clone(),
        exclude: u.exclude.clone(),
        base_url: Some(u.url.as_str().trim_end_matches('/').to_owned()),
    };
    let b = warden_bridge::load(&text, &opts).map_err(UpstreamError::Spec)?;
    for s in b.skipped() {
        tracing::warn!(upstream = %u.name, operation = ?s.operation, reason = %s.reason, "OpenAPI operation not bridged");
    }
    Ok(Some(Arc::new(b)))
}

/// What an OpenAPI upstream offers, without any network: its bridged tools.
pub fn discovered_from_bridge(b: &warden_bridge::Bridge) -> Discovered {
    Discovered {
        tools: b.tools().iter().map(|t| t.to_mcp()).collect(),
        instructions: None,
        capabilities: serde_json::json!({"tools": {}}),
        protocol_version: PROTOCOL_VERSION.into(),
        items: Default::default(),
    }
}

/// TLS to an `https://` upstream: rustls with aws-lc-rs; roots are the upstream's `ca_file`
/// when given (private PKI), else the Mozilla roots (webpki-roots).
pub fn upstream_tls(
    u: &UpstreamConfig,
    host: &str,
) -> Result<Option<dataplane::snapshot::UpstreamTls>, UpstreamError> {
    use rustls_pki_types::pem::PemObject;
    if u.url.scheme() != "https" {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &u.ca_file {
        Some(f) => {
            for c in rustls_pki_types::CertificateDer::pem_file_iter(f)
                .map_err(|e| UpstreamError::file(f, e))?
            {
                let c = c.map_err(|e| UpstreamError::file(f, e))?;
                roots.add(c).map_err(|e| UpstreamError::file(f, e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name =
        rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .map_err(|e| UpstreamError::Config(format!("{host}: {e}")))?;
    Ok(Some(dataplane::snapshot::UpstreamTls {
        connector: monoio_rustls::TlsConnector::from(Arc::new(cfg)),
        server_name,
    }))
}

/// Build the shard-facing upstream description; resolves DNS here, never on a shard.
pub async fn resolve(id: u32, u: &UpstreamConfig) -> Result<Upstream, UpstreamError> {
    let (host, port) = host_port(u)?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| UpstreamError::Resolve(format!("resolving {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(UpstreamError::Resolve(format!(
            "{host} resolves to no address"
        )));
    }
    describe(id, u, addrs)
}

fn host_port(u: &UpstreamConfig) -> Result<(String, u16), UpstreamError> {
    let no = |what: &str| UpstreamError::Config(format!("upstream URL has no {what}"));
    let host = u.url.host_str().ok_or_else(|| no("host"))?;
    let port = u.url.port_or_known_default().ok_or_else(|| no("port"))?;
    Ok((host.to_owned(), port))
}

/// The shard-facing upstream description with its addresses already known (`resolve`
/// looks them up; the socket-free harness has none to look up).
pub fn describe(
    id: u32,
    u: &UpstreamConfig,
    addrs: Vec<SocketAddr>,
) -> Result<Upstream, UpstreamError> {
    // The seed format's `type` is acted on: only per-call delegation exists, so any other
    // value is refused rather than silently treated as it. (`idp` is informational.)
    if let Some(te) = &u.token_exchange
        && te.kind != "delegation"
    {
        return Err(UpstreamError::Config(format!(
            "token_exchange.type {:?} is not supported; the only type is `delegation`",
            te.kind
        )));
    }
    let (host, _) = host_port(u)?;
    let authority = match u.url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let mut path = u.url.path().to_owned();
    if let Some(q) = u.url.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok(Upstream {
        id,
        name: u.name.clone(),
        namespace: Config::namespace(u),
        authority,
        path,
        addrs,
        tls: upstream_tls(u, &host)?,
        credential: credential(u)?,
        timeout: u.timeout,
        max_response_bytes: u.max_response_bytes,
        bridge: load_bridge(u)?,
        delegation: u.token_exchange.as_ref().map(|te| UpstreamDelegation {
            audience: te.audience.clone(),
            tools: te
                .tools
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        ToolDelegation {
                            scopes: t.scopes.iter().map(|s| s.name().to_owned()).collect(),
                            ttl_secs: t.ttl.as_secs() as i64,
                        },
                    )
                })
                .collect(),
        }),
    })
}

/// The gateway's own credential for an upstream (never a user's token).
pub fn credential(u: &UpstreamConfig) -> Result<UpstreamCredential, UpstreamError> {
    Ok(match &u.auth {
        UpstreamAuth::None => UpstreamCredential::None,
        UpstreamAuth::Bearer { token_env } => UpstreamCredential::Bearer(
            std::env::var(token_env)
                .map_err(|_| {
                    UpstreamError::Config(format!("environment variable {token_env} is not set"))
                })?
                .into(),
        ),
    })
}

pub(crate) fn auth_header(c: &UpstreamCredential) -> Option<String> {
    match c {
        UpstreamCredential::None => None,
        UpstreamCredential::Bearer(t) => Some(format!("Bearer {}", t.expose())),
    }
}

/// Read a JSON-RPC response with `id` from a JSON or SSE body.
pub(crate) fn response_for(
    body: &str,
    content_type: &str,
    id: i64,
) -> Result<Value, DiscoveryError> {
    let pick = |v: Value| -> Option<Value> {
        (v.get("id").and_then(Value::as_i64) == Some(id)).then_some(v)
    };
    if content_type.starts_with("text/event-stream") {
        for block in body.split("\n\n") {
            let data: Vec<&str> = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<Value>(&data.join("\n"))
                && let Some(v) = pick(v)
            {
                return Ok(v);
            }
        }
        Err(DiscoveryError::Answer(
            "no response in the event stream".into(),
        ))
    } else {
        let v: Value = serde_json::from_str(body)
            .map_err(|e| DiscoveryError::Answer(format!("invalid JSON: {e}")))?;
        pick(v).ok_or_else(|| DiscoveryError::Answer("response id does not match".into()))
    }
}

/// One answer to a discovery request, as the transport read it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    /// Lower-cased.
    pub content_type: String,
    /// The `Mcp-Session-Id` header, if any.
    pub session: Option<String>,
    pub body: String,
}

/// How discovery reaches an upstream: HTTP with reqwest (here), or in memory (the
/// socket-free harness). The exchange itself is [`discover_with`]'s, whichever it is.
pub(crate) trait Transport {
    /// POST one JSON-RPC message with the session and protocol version headers.
    /// `method` is the message's, mirrored in `Mcp-Method` when `version` is modern.
    async fn post(
        &mut self,
        body: String,
        session: Option<&str>,
        version: &str,
        method: Option<&str>,
    ) -> Result<Answer, DiscoveryError>;
    /// End the discovery session (best effort).
    async fn delete(&mut self, session: &str, version: &str);
}

/// Discovery over HTTP: the gateway's own credential, a bounded timeout, no redirects.
struct Http<'a> {
    http: &'a reqwest::Client,
    url: &'a str,
    auth: Option<String>,
    timeout: Duration,
}

impl Transport for Http<'_> {
    async fn post(
        &mut self,
        body: String,
        session: Option<&str>,
        version: &str,
        method: Option<&str>,
    ) -> Result<Answer, DiscoveryError> {
        let mut rb = self
            .http
            .post(self.url)
            .timeout(self.timeout)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", version);
        if let Some(m) = method.filter(|_| era::is_modern(version)) {
            rb = rb.header("mcp-method", m);
        }
        if let Some(a) = &self.auth {
            rb = rb.header("authorization", a);
        }
        if let Some(s) = session {
            rb = rb.header("mcp-session-id", s);
        }
        let resp =
            (rb.body(body).send().await).map_err(|e| DiscoveryError::Transport(e.to_string()))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let session = header("mcp-session-id");
        let content_type = header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let status = resp.status().as_u16();
        let body = (resp.text().await).map_err(|e| DiscoveryError::Transport(e.to_string()))?;
        Ok(Answer {
            status,
            content_type,
            session,
            body,
        })
    }

    async fn delete(&mut self, session: &str, version: &str) {
        let mut rb = self
            .http
            .delete(self.url)
            .timeout(Duration::from_secs(2))
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", version);
        if let Some(a) = &self.auth {
            rb = rb.header("authorization", a);
        }
        let _ = rb.send().await;
    }
}

/// A discovery session over some transport: the session id and negotiated version.
pub(crate) struct Client<T> {
    transport: T,
    session: Option<String>,
    version: String,
}

impl<T: Transport> Client<T> {
    pub(crate) async fn post(
        &mut self,
        body: Value,
        id: Option<i64>,
    ) -> Result<Option<Value>, DiscoveryError> {
        let method = body
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let a = self
            .transport
            .post(
                body.to_string(),
                self.session.as_deref(),
                &self.version,
                method.as_deref(),
            )
            .await?;
        if let Some(s) = a.session {
            self.session = Some(s);
        }
        if !(200..300).contains(&a.status) {
            return Err(DiscoveryError::Status(status_text(a.status)));
        }
        let Some(id) = id else { return Ok(None) };
        let v = response_for(&a.body, &a.content_type, id)?;
        if let Some(e) = v.get("error") {
            return Err(DiscoveryError::JsonRpc(e.clone()));
        }
        Ok(Some(v.get("result").cloned().unwrap_or(Value::Null)))
    }
}

/// `503 Service Unavailable`, as reqwest's `StatusCode` prints it.
fn status_text(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| status.to_string())
}

/// The control plane's HTTP client for `u`: the shared one, or one trusting the upstream's
/// private CA (`ca_file`) too.
pub(crate) fn http_for(
    http: &reqwest::Client,
    u: &UpstreamConfig,
) -> Result<reqwest::Client, UpstreamError> {
    let Some(f) = &u.ca_file else {
        return Ok(http.clone());
    };
    let pem = std::fs::read(f).map_err(|e| UpstreamError::file(f, e))?;
    let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| UpstreamError::file(f, e))?;
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| UpstreamError::Config(e.to_string()))
}

/// Initialize, list every tool page, and end the discovery session.
pub async fn discover(
    http: &reqwest::Client,
    u: &UpstreamConfig,
    auth: Option<String>,
) -> Result<Discovered, UpstreamError> {
    let http = http_for(http, u)?;
    let cred = credential(u)?;
    let url = u.url.to_string();
    let transport = Http {
        http: &http,
        url: &url,
        auth: auth.or_else(|| auth_header(&cred)),
        timeout: u.timeout.min(Duration::from_secs(10)),
    };
    // The span names the upstream in what discovery logs (a truncated list, a failed one).
    let span = tracing::info_span!("discovery", upstream = %u.name);
    tracing::Instrument::instrument(discover_with(transport), span)
        .await
        .map_err(UpstreamError::from)
}

/// The discovery exchange: `initialize` (adopting the upstream's protocol version),
/// `notifications/initialized`, every `tools/list` page, then `DELETE` of the session.
pub(crate) async fn discover_with<T: Transport>(
    transport: T,
) -> Result<Discovered, DiscoveryError> {
    let mut c = Client {
        transport,
        session: None,
        version: era::MODERN_VERSIONS[0].into(),
    };
    // 2026-07-28 first: `server/discover`. A transport failure is the upstream's; any other
    // answer than a modern discovery result means a 2025-era server: `initialize` then.
    match c
        .post(
            serde_json::json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta": modern_meta()}}),
            Some(1),
        )
        .await
    {
        Ok(Some(r)) if speaks_modern(&r) => return discover_modern(c, r).await,
        Err(e @ DiscoveryError::Transport(_)) => return Err(e),
        _ => {}
    }
    c.version = PROTOCOL_VERSION.into();
    c.session = None;
    let init = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name":"warden","version":env!("CARGO_PKG_VERSION")}}});
    let r = c.post(init, Some(1)).await?.unwrap_or_default();
    match r.get("protocolVersion").and_then(Value::as_str) {
        Some(v) if dataplane::mcp::speaks(v) => c.version = v.to_owned(),
        answered => {
            if let Some(s) = c.session.clone() {
                c.transport.delete(&s, PROTOCOL_VERSION).await;
            }
            return Err(DiscoveryError::Answer(format!(
                "initialize answered protocolVersion {answered:?}; Warden speaks {}",
                dataplane::mcp::SUPPORTED_VERSIONS.join(", ")
            )));
        }
    }
    let mut out = Discovered {
        instructions: r
            .get("instructions")
            .and_then(Value::as_str)
            .map(str::to_owned),
        capabilities: r.get("capabilities").cloned().unwrap_or_default(),
        tools: Vec::new(),
        protocol_version: c.version.clone(),
        items: Default::default(),
    };
    c.post(
        serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        None,
    )
    .await?;
    if out.capabilities.get("tools").is_some() {
        out.tools = list_tools(&mut c, None).await?;
    }
    out.items = crate::catalog_items::discover(&mut c, None, &out.capabilities).await;
    if let Some(s) = c.session.clone() {
        c.transport.delete(&s, &c.version).await;
    }
    Ok(out)
}

/// The `_meta` of every modern discovery request: Warden as the client, with no capabilities.
fn modern_meta() -> Value {
    serde_json::json!({
        era::META_VERSION: era::MODERN_VERSIONS[0],
        era::META_CAPABILITIES: {},
        era::META_CLIENT: {"name": "warden", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// Whether a `server/discover` result names a modern revision Warden speaks.
fn speaks_modern(r: &Value) -> bool {
    r.get("supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().filter_map(Value::as_str).any(era::is_modern))
}

/// A modern upstream's catalog: its discovery result, then every `tools/list` page, each
/// request stateless (`_meta` and the mirrored headers; no session).
async fn discover_modern<T: Transport>(
    mut c: Client<T>,
    r: Value,
) -> Result<Discovered, DiscoveryError> {
    let version = r
        .get("supportedVersions")
        .and_then(Value::as_array)
        .and_then(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .find(|v| era::is_modern(v))
        })
        .unwrap_or(era::MODERN_VERSIONS[0])
        .to_owned();
    c.version = version.clone();
    let mut out = Discovered {
        instructions: r
            .get("instructions")
            .and_then(Value::as_str)
            .map(str::to_owned),
        capabilities: r.get("capabilities").cloned().unwrap_or_default(),
        tools: Vec::new(),
        protocol_version: version,
        items: Default::default(),
    };
    if out.capabilities.get("tools").is_some() {
        out.tools = list_tools(&mut c, Some(modern_meta())).await?;
    }
    let meta = Some(modern_meta());
    out.items = crate::catalog_items::discover(&mut c, meta, &out.capabilities).await;
    Ok(out)
}

/// Every `tools/list` page (at most `MAX_PAGES`), following `nextCursor`; `meta` is the
/// `_meta` a modern upstream needs on each request.
async fn list_tools<T: Transport>(
    c: &mut Client<T>,
    meta: Option<Value>,
) -> Result<Vec<Value>, DiscoveryError> {
    list_pages(c, meta.as_ref(), "tools/list", "tools", 2).await
}

/// Every page of one list method, following `nextCursor`: the entries under `key`, at most
/// [`MAX_PAGES`] pages and [`MAX_ITEMS`] entries (an upstream that pages forever, or lists a
/// million items, cannot hold discovery or the snapshot hostage); reaching either is logged
/// and the rest is not served. Request ids count up from `first_id`.
pub(crate) async fn list_pages<T: Transport>(
    c: &mut Client<T>,
    meta: Option<&Value>,
    method: &str,
    key: &str,
    first_id: i64,
) -> Result<Vec<Value>, DiscoveryError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let id = first_id + page as i64;
        let mut params = serde_json::json!({});
        if let Some(m) = &meta {
            params["_meta"] = (*m).clone();
        }
        if let Some(cur) = &cursor {
            params["cursor"] = Value::String(cur.clone());
        }
        let r = c
            .post(
                serde_json::json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}),
                Some(id),
            )
            .await?
            .unwrap_or_default();
        let listed = r.get(key).and_then(Value::as_array);
        let room = MAX_ITEMS - items.len();
        if let Some(t) = listed {
            items.extend(t.iter().take(room).cloned());
        }
        cursor = r
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if listed.is_some_and(|t| t.len() > room) || (items.len() == MAX_ITEMS && cursor.is_some())
        {
            tracing::warn!(
                method,
                limit = MAX_ITEMS,
                pages = page + 1,
                "Upstream list truncated: item limit reached; later entries are not served"
            );
            return Ok(items);
        }
        if cursor.is_none() {
            return Ok(items);
        }
    }
    tracing::warn!(
        method,
        limit = MAX_PAGES,
        entries = items.len(),
        "Upstream list truncated: page limit reached; later pages are not served"
    );
    Ok(items)
}

/// Whether a namespaced tool name is acceptable to every major client.
pub fn valid_tool_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Merge every upstream's tools into one exact-match table. Invalid names and collisions are
/// refused (logged, not served); the first upstream in config order keeps a contested name.
/// A tool name is the upstream's text: logged as a `Debug` field (quoted, escaped), so it
/// cannot split or forge log lines.
pub fn build_table(upstreams: &[Arc<Upstream>], found: &HashMap<u32, Discovered>) -> ToolTable {
    let mut t = ToolTable::default();
    for (idx, up) in upstreams.iter().enumerate() {
        let Some(d) = found.get(&up.id) else { continue };
        for tool in &d.tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let exposed = format!("{}{}", up.namespace, name);
            if !valid_tool_name(&exposed) {
                tracing::warn!(upstream = %up.name, tool = ?exposed, "Tool name refused: must match [A-Za-z0-9_-]{{1,64}}");
                continue;
            }
            if t.routes.contains_key(&exposed) {
                tracing::error!(upstream = %up.name, tool = ?exposed, "Tool name collision refused; the first upstream keeps it");
                continue;
            }
            let param_headers = match crate::catalog_headers::param_headers(tool) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(upstream = %up.name, tool = ?exposed, error = %e, "Tool refused: invalid x-mcp-header annotation");
                    continue;
                }
            };
            let mut def = tool.clone();
            def["name"] = Value::String(exposed.clone());
            let Ok(definition) = serde_json::value::to_raw_value(&def) else {
                continue;
            };
            t.order.push(exposed.clone());
            t.routes.insert(
                exposed,
                ToolRoute {
                    upstream: idx,
                    upstream_name: name.to_owned(),
                    definition,
                    param_headers,
                },
            );
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_delegation_exchange_type_is_accepted() {
        let up = |kind: &str| -> UpstreamConfig {
            serde_yaml_ng::from_str(&format!(
                "name: crm\nurl: http://127.0.0.1:9/mcp\ntoken_exchange:\n  type: {kind}\n  idp: any-idp\n  audience: https://crm.example\n"
            ))
            .unwrap()
        };
        let e = resolve(0, &up("impersonation")).await.unwrap_err();
        // The operator's configuration, and the message names the key.
        assert!(
            matches!(&e, UpstreamError::Config(m) if m.contains("token_exchange.type")),
            "{e}"
        );
        let ok = resolve(0, &up("delegation")).await.unwrap();
        assert_eq!(ok.delegation.unwrap().audience, "https://crm.example");
    }

    #[test]
    fn a_hostile_tool_name_cannot_split_log_lines() {
        let up = Arc::new(Upstream {
            id: 0,
            name: "crm".into(),
            namespace: "crm_".into(),
            authority: "127.0.0.1:1".into(),
            path: "/mcp".into(),
            addrs: Vec::new(),
            tls: None,
            credential: UpstreamCredential::None,
            timeout: Duration::from_secs(1),
            max_response_bytes: 1024,
            delegation: None,
            bridge: None,
        });
        let evil = "x\n2026-01-01T00:00:00Z  INFO warden: Policy reloaded; every call is allowed";
        let found = HashMap::from([(
            0,
            Discovered {
                tools: vec![
                    serde_json::json!({"name": evil}),
                    serde_json::json!({"name": "ok"}),
                ],
                ..Default::default()
            },
        )]);
        let mut table = ToolTable::default();
        let out = crate::testlog::captured(|| table = build_table(&[up], &found));
        assert_eq!(table.order, ["crm_ok"], "the hostile name is not served");
        assert_eq!(out.matches('\n').count(), 1, "one event, one line: {out:?}");
        assert!(out.contains(r#"tool="crm_x\n2026"#), "escaped: {out:?}");
    }
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod discovery_tests;
