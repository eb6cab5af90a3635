//! The YAML configuration: strict (`deny_unknown_fields`), validated, with errors that name the key.

mod dpop;
pub use dpop::{DpopSetting, advertise as dpop_advertise};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub limits: Limits,
    /// Per-user and per-(user, tool) token buckets (off when absent).
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// How per-call delegation tokens are obtained (needed by any upstream with `token_exchange`).
    #[serde(default)]
    pub delegation: Option<DelegationConfig>,
    /// Run the embedded OAuth authorization server (it also signs delegation tokens in
    /// embedded mode, with one key ring).
    #[serde(default)]
    pub authorization_server: Option<crate::authz::AuthServerConfig>,
    /// Where audit records go (default: JSON Lines on standard output).
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    /// Per-tool authorization (Cedar). Without this block every call is denied.
    #[serde(default)]
    pub policy: warden_policy::PolicyConfig,
    /// Optional OpenTelemetry span export (off by default).
    #[serde(default)]
    pub telemetry: crate::otlp::TelemetryConfig,
    /// Sealed MCP session ids: the key ring and the absolute lifetime.
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// Durable state of the authorization server and STS. Absent: `warden serve`/`demo` use
    /// `sqlite:<--data-dir>/warden.db`; library callers (`gateway::start*`) get SQLite in memory.
    #[serde(default)]
    pub state: Option<crate::state::StateConfig>,
}

/// Sealed session ids (`dataplane::session::seal`): any replica holding the key ring can
/// serve any session. Without a key ring, the one kept in the state store is used (made on
/// first start, `StateStore::default_session_keys`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Key ring file: one `kid:base64url(32 bytes)` per line; the first seals, all open.
    #[serde(default)]
    pub keys_file: Option<PathBuf>,
    /// Environment variable holding the key ring (lines or comma separated).
    #[serde(default)]
    pub keys_env: Option<String>,
    /// Absolute lifetime of a session, from its creation.
    #[serde(default = "default_session_max", with = "humantime_serde")]
    pub max_lifetime: Duration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            keys_file: None,
            keys_env: None,
            max_lifetime: default_session_max(),
        }
    }
}

fn default_session_max() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl SessionsConfig {
    /// Read the key ring (file I/O and environment: control plane only). `None` = none configured.
    pub fn load_keys(
        &self,
    ) -> Result<Option<dataplane::session::SessionKeys>, (&'static str, String)> {
        let text = match (&self.keys_file, &self.keys_env) {
            (Some(f), None) => std::fs::read_to_string(f)
                .map_err(|e| ("sessions.keys_file", format!("{}: {e}", f.display())))?,
            (None, Some(v)) => std::env::var(v).map_err(|_| {
                (
                    "sessions.keys_env",
                    format!("environment variable {v} is not set"),
                )
            })?,
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err((
                    "sessions",
                    "give `keys_file` or `keys_env`, not both".into(),
                ));
            }
        };
        let key = if self.keys_file.is_some() {
            "sessions.keys_file"
        } else {
            "sessions.keys_env"
        };
        dataplane::session::SessionKeys::parse(&text)
            .map(Some)
            .map_err(|e| (key, e.to_string()))
    }
}

/// The gateway as an OAuth client obtaining per-call tokens (RFC 8693).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationConfig {
    /// The gateway's client id: `act.sub` and `client_id` of every delegation token.
    pub client_id: String,
    #[serde(default)]
    pub mode: DelegationMode,
    /// Embedded mode: the STS issuer (`iss` of minted tokens). Default: the embedded
    /// authorization server's issuer.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Embedded mode: `EdDSA` (default) or `ES256`.
    #[serde(default)]
    pub signing_alg: crate::sts::SigningAlg,
    /// Embedded mode: how often the signing key rotates (the JWKS keeps the previous key).
    #[serde(default = "default_rotation", with = "humantime_serde")]
    pub key_rotation: Duration,
    /// External mode: the authorization server's token endpoint.
    #[serde(default)]
    pub token_endpoint: Option<url::Url>,
    /// External mode: how the gateway authenticates to it.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// External mode: environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// External mode, `private_key_jwt`: PKCS#8 PEM (Ed25519 or P-256) signing the client assertion.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// External mode, `private_key_jwt`: the `kid` under which the authorization server
    /// knows the key. Default: the key's RFC 7638 thumbprint.
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// External mode: time allowed for one exchange.
    #[serde(default = "default_exchange_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DelegationMode {
    /// Mint in-process with the embedded STS.
    #[default]
    Embedded,
    /// Perform RFC 8693 token exchange at an external authorization server.
    External,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

/// The seed's `tokenExchange` block, one-to-one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeConfig {
    /// Only `delegation` (the seed's value).
    #[serde(rename = "type", default = "default_exchange_type")]
    pub kind: String,
    /// The seed names its identity provider here; Warden uses `delegation` at top level.
    #[serde(default)]
    pub idp: Option<String>,
    /// `aud` of every token for this upstream.
    pub audience: String,
    #[serde(default)]
    pub tools: Vec<ToolExchangeConfig>,
}

/// Per-tool delegation: scopes and TTL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolExchangeConfig {
    /// The tool's name at its upstream (without namespace).
    pub name: String,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(default)]
    pub scopes: Vec<ScopeRef>,
}

/// A scope written as `ledger:ListAccounts` or, as in the seed, `{name: ledger:ListAccounts}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ScopeRef {
    Name(String),
    Named { name: String },
}

impl ScopeRef {
    pub fn name(&self) -> &str {
        match self {
            ScopeRef::Name(n) | ScopeRef::Named { name: n } => n,
        }
    }
}

fn default_rotation() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_exchange_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_exchange_type() -> String {
    "delegation".into()
}
fn default_ttl() -> Duration {
    Duration::from_secs(5)
}

/// The MCP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address to listen on, e.g. `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The exact URL clients use for the MCP endpoint; the RFC 9728 `resource`.
    pub public_url: url::Url,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Plain HTTP on a non-loopback address must be asked for.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Switch authentication off (loopback only; for the MCP conformance suite).
    #[serde(default = "yes")]
    pub authentication: bool,
    /// Browser origins allowed (CORS and DNS-rebinding protection).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Host header values accepted; default: the public URL's and the listen address's.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Scopes published in metadata and named in 401 challenges.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Number of shards; 0 = one per core.
    #[serde(default)]
    pub shards: usize,
    /// `auto` (io_uring, falling back to epoll) or `epoll`.
    #[serde(default)]
    pub io_driver: IoDriver,
    /// Idle time after which a session ends.
    #[serde(default = "default_session_idle", with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    /// Also serve the 2024-11-05 HTTP+SSE transport (`GET /sse`, `POST /messages`) for old
    /// clients, with the same authentication, policy, delegation and audit. Off by default.
    #[serde(default)]
    pub legacy_sse_transport: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IoDriver {
    #[default]
    Auto,
    Epoll,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin")]
    pub listen: SocketAddr,
    /// Who may read the operator console (open on loopback, authenticated elsewhere).
    #[serde(default)]
    pub console: crate::console::access::ConsoleConfig,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin(),
            console: Default::default(),
        }
    }
}

/// Request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub max_token_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub max_connections_per_shard: usize,
    /// Requests one shard handles at once; beyond it a fast 503 with `Retry-After: 1`.
    pub max_in_flight_per_shard: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// `rate_limits`: token buckets per user (`iss`, `sub`) and per (user, tool).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    #[serde(default)]
    pub per_user: Option<RateConfig>,
    #[serde(default)]
    pub per_tool: Vec<ToolRateConfig>,
    /// Hard cap on buckets held at once (when full, newcomers share one bucket per scope).
    #[serde(default = "default_max_buckets")]
    pub max_buckets: usize,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig {
            per_user: None,
            per_tool: Vec::new(),
            max_buckets: default_max_buckets(),
        }
    }
}

/// A token bucket: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub per_second: f64,
    pub burst: u32,
}

/// A per-(user, tool) bucket; `tool` is the namespaced name clients see.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRateConfig {
    pub tool: String,
    pub per_second: f64,
    pub burst: u32,
}

fn default_max_buckets() -> usize {
    dataplane::ratelimit::DEFAULT_MAX_BUCKETS
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 32 * 1024,
            max_body_bytes: 4 * 1024 * 1024,
            max_token_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections_per_shard: 10_000,
            max_in_flight_per_shard: 1024,
            shutdown_grace: Duration::from_secs(15),
        }
    }
}

/// A trusted token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer identifier, compared exactly with `iss` and the metadata's `issuer`.
    pub issuer: String,
    /// Audiences accepted; default: the gateway's public URL.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Skip discovery and use this JWKS URL.
    #[serde(default)]
    pub jwks_uri: Option<url::Url>,
    #[serde(default = "default_algs")]
    pub algorithms: Vec<String>,
    /// Accepted `typ` header values (default `at+jwt`; some IdPs send `JWT`).
    #[serde(default = "default_types")]
    pub token_types: Vec<String>,
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    #[serde(default = "default_max_lifetime", with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub jwks_refresh_interval: Duration,
    /// Minimum time between two refetches triggered by unknown `kid`s.
    #[serde(default = "default_min_refetch", with = "humantime_serde")]
    pub jwks_min_refetch_interval: Duration,
    /// Keys older than this (no successful refresh) stop being used: fail closed.
    #[serde(default = "default_staleness", with = "humantime_serde")]
    pub jwks_max_staleness: Duration,
    /// Extra CA certificate (PEM) for this issuer's HTTPS endpoints.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// DPoP (RFC 9449): `required` (only DPoP-bound tokens), `optional` (bearer tokens too;
    /// a bound token still needs its proof) or `off` (bound tokens refused).
    #[serde(default)]
    pub dpop: DpopSetting,
    /// Algorithms accepted for DPoP proofs (asymmetric only).
    #[serde(default = "dpop::default_algs")]
    pub dpop_algorithms: Vec<String>,
    /// How far a proof's `iat` may be from now, either way (SEP-1932: 5 minutes).
    #[serde(default = "dpop::default_window", with = "humantime_serde")]
    pub dpop_iat_window: Duration,
    /// Require a nonce issued by the gateway in every proof (RFC 9449 §9).
    #[serde(default)]
    pub dpop_nonce: bool,
    /// How long a gateway nonce is accepted.
    #[serde(default = "dpop::default_window", with = "humantime_serde")]
    pub dpop_nonce_lifetime: Duration,
}

/// An upstream: an MCP server (proxied) or a REST API with an OpenAPI spec (bridged).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// MCP: the Streamable HTTP endpoint. OpenAPI: the API's base URL (overrides the spec's servers).
    pub url: url::Url,
    #[serde(default)]
    pub kind: UpstreamKind,
    /// OpenAPI: the spec file (YAML or JSON, 3.0 or 3.1).
    #[serde(default)]
    pub spec_file: Option<PathBuf>,
    /// OpenAPI: the spec inline.
    #[serde(default)]
    pub spec: Option<String>,
    /// OpenAPI: operationIds to bridge (empty = all).
    #[serde(default)]
    pub include: Vec<String>,
    /// OpenAPI: operationIds not to bridge.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Prefix for tool names; `""` for none. Default: the name with `-` → `_`, plus `_`.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub auth: UpstreamAuth,
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    /// Per-call delegation tokens for this upstream (the seed's `tokenExchange`).
    #[serde(default)]
    pub token_exchange: Option<TokenExchangeConfig>,
    /// `https://` upstreams: PEM roots to trust instead of the Mozilla set (private PKI).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Operator tags per tool (the upstream's tool name → tags), for policy rules by `tag`.
    #[serde(default)]
    pub tool_tags: std::collections::HashMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    #[default]
    Mcp,
    Openapi,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum UpstreamAuth {
    #[default]
    None,
    /// A static bearer token read from an environment variable (never written in the file).
    Bearer { token_env: String },
}

fn yes() -> bool {
    true
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_session_idle() -> Duration {
    Duration::from_secs(3600)
}
fn default_algs() -> Vec<String> {
    ["EdDSA", "ES256", "RS256", "PS256"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_types() -> Vec<String> {
    vec!["at+jwt".into()]
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_max_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_min_refetch() -> Duration {
    Duration::from_secs(10)
}
fn default_staleness() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_response() -> usize {
    16 * 1024 * 1024
}

/// A configuration error, naming the file and the key path.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {path}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub path: String,
    pub message: String,
}

fn err(file: &str, path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.into(),
        path: path.into(),
        message: message.into(),
    }
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| err(&file, "(file)", e.to_string()))?;
        Self::parse(&text, &file)
    }

    /// Read, parse and validate a config file, also returning the document as YAML (the
    /// reload compares sections of it to see what changed). `warden validate`, start and
    /// reload all go through [`Config::parse`].
    pub fn load_raw(path: &Path) -> Result<(Config, serde_yaml_ng::Value), ConfigError> {
        let file = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| err(&file, "(file)", e.to_string()))?;
        let cfg = Self::parse(&text, &file)?;
        let raw =
            serde_yaml_ng::from_str(&text).map_err(|e| err(&file, "(root)", e.to_string()))?;
        Ok((cfg, raw))
    }

    /// Parse and validate YAML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            err(
                file,
                if path.is_empty() || path == "." {
                    "(root)".to_string()
                } else {
                    path
                },
                e.into_inner().to_string(),
            )
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        if let Err((key, message)) = self.sessions.load_keys() {
            return Err(err(file, key, message));
        }
        let g = &self.gateway;
        let loopback = g.listen.ip().is_loopback();
        if g.tls.is_none() && !loopback && !g.allow_insecure_http {
            return Err(err(
                file,
                "gateway.listen",
                "plain HTTP on a non-loopback address needs `allow_insecure_http: true` (or configure `tls`)",
            ));
        }
        if !g.authentication && !loopback {
            return Err(err(
                file,
                "gateway.authentication",
                "authentication can only be switched off on a loopback address",
            ));
        }
        if g.authentication && self.issuers.is_empty() {
            return Err(err(
                file,
                "issuers",
                "at least one trusted issuer is required while authentication is on",
            ));
        }
        if !matches!(g.public_url.scheme(), "http" | "https")
            || g.public_url.query().is_some()
            || g.public_url.fragment().is_some()
        {
            return Err(err(
                file,
                "gateway.public_url",
                "must be an http(s) URL without query or fragment",
            ));
        }
        if g.public_url.path().len() < 2 || g.public_url.path().ends_with('/') {
            return Err(err(
                file,
                "gateway.public_url",
                "must name the MCP endpoint path, without a trailing slash (e.g. https://gw.example/mcp)",
            ));
        }
        for (i, iss) in self.issuers.iter().enumerate() {
            let p = format!("issuers[{i}]");
            if iss.leeway > Duration::from_secs(30) {
                return Err(err(file, format!("{p}.leeway"), "at most 30s"));
            }
            if iss.algorithms.is_empty() {
                return Err(err(file, format!("{p}.algorithms"), "must not be empty"));
            }
            for a in &iss.algorithms {
                if dataplane::auth::jwks::parse_alg(a).is_none() {
                    return Err(err(
                        file,
                        format!("{p}.algorithms"),
                        format!("unsupported algorithm {a:?} (HMAC and none are never accepted)"),
                    ));
                }
            }
            dpop::validate(iss, &p).map_err(|(key, m)| err(file, key, m))?;
            let u = url::Url::parse(&iss.issuer)
                .map_err(|e| err(file, format!("{p}.issuer"), e.to_string()))?;
            if u.scheme() != "https" && !u.host_str().is_some_and(is_loopback_host) {
                return Err(err(
                    file,
                    format!("{p}.issuer"),
                    "issuers must use https (http only on loopback)",
                ));
            }
        }
        if let Some(d) = &self.delegation {
            if d.mode == DelegationMode::External {
                if d.token_endpoint.is_none() {
                    return Err(err(
                        file,
                        "delegation.token_endpoint",
                        "required in external mode",
                    ));
                }
                match d.client_auth {
                    ClientAuth::PrivateKeyJwt if d.private_key_file.is_none() => {
                        return Err(err(
                            file,
                            "delegation.private_key_file",
                            "required for private_key_jwt",
                        ));
                    }
                    ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost
                        if d.client_secret_env.is_none() =>
                    {
                        return Err(err(
                            file,
                            "delegation.client_secret_env",
                            "required for client_secret_basic / client_secret_post",
                        ));
                    }
                    _ => {}
                }
            } else if d.issuer.is_none() && self.authorization_server.is_none() {
                return Err(err(
                    file,
                    "delegation.issuer",
                    "required in embedded mode unless `authorization_server` is configured (its issuer is used)",
                ));
            }
        }
        self.validate_limits(file)?;
        if let Some(st) = &self.state {
            st.validate()
                .map_err(|(path, message)| err(file, path, message))?;
        }
        if self.audit.sink == crate::audit::SinkKind::File && self.audit.dir.is_none() {
            return Err(err(file, "audit.dir", "required for the file sink"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let p = format!("upstreams[{i}]");
            if !names.insert(u.name.clone()) {
                return Err(err(file, format!("{p}.name"), "duplicate upstream name"));
            }
            if !matches!(u.url.scheme(), "http" | "https") {
                return Err(err(
                    file,
                    format!("{p}.url"),
                    "upstream URLs must be http:// or https://",
                ));
            }
            if let Some(ns) = &u.namespace
                && (!ns
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    || ns.len() > 32)
            {
                return Err(err(
                    file,
                    format!("{p}.namespace"),
                    "only [A-Za-z0-9_-], at most 32 characters",
                ));
            }
        }
        Ok(())
    }

    fn validate_limits(&self, file: &str) -> Result<(), ConfigError> {
        if self.limits.max_in_flight_per_shard == 0 {
            return Err(err(
                file,
                "limits.max_in_flight_per_shard",
                "must be at least 1",
            ));
        }
        let r = &self.rate_limits;
        let rate = |p: String, per_second: f64, burst: u32| {
            if !(per_second.is_finite() && per_second > 0.0) {
                return Err(err(file, format!("{p}.per_second"), "must be a number > 0"));
            }
            if burst == 0 {
                return Err(err(file, format!("{p}.burst"), "must be at least 1"));
            }
            Ok(())
        };
        if let Some(u) = &r.per_user {
            rate("rate_limits.per_user".into(), u.per_second, u.burst)?;
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in r.per_tool.iter().enumerate() {
            let p = format!("rate_limits.per_tool[{i}]");
            if t.tool.is_empty() {
                return Err(err(file, format!("{p}.tool"), "must name a tool"));
            }
            if !seen.insert(t.tool.as_str()) {
                return Err(err(file, format!("{p}.tool"), "duplicate tool"));
            }
            rate(p, t.per_second, t.burst)?;
        }
        if r.max_buckets == 0 {
            return Err(err(file, "rate_limits.max_buckets", "must be at least 1"));
        }
        Ok(())
    }

    /// The namespace of upstream `u`.
    pub fn namespace(u: &UpstreamConfig) -> String {
        u.namespace
            .clone()
            .unwrap_or_else(|| format!("{}_", u.name.replace(['-', '.'], "_")))
    }
}

/// Whether a URL host is a loopback name or address.
pub fn is_loopback_host(h: &str) -> bool {
    h == "localhost"
        || h.trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
