//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, MCP 2025-11-25):
//! a `client_id` that is an https URL with a path is fetched (timeout, size limit, no
//! redirects, private addresses refused unless configured for tests), its `client_id` must
//! equal the URL, and its redirect URIs are the client's. Documents are cached as their HTTP
//! caching headers allow (bounded).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use dataplane::clock::{Clock, Instant};
use serde::Deserialize;
use serde_json::Value;

use super::clients::{Client, GRANT_CODE, GRANT_REFRESH, is_loopback_http};

/// `authorization_server.client_id_metadata_documents`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CimdConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Tests only: fetch documents from loopback and private addresses.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// An extra trust anchor (PEM) for the documents' hosts (tests: the dev CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "d_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest document read.
    #[serde(default = "d_max_bytes")]
    pub max_bytes: usize,
    /// Cache lifetime without caching headers, and the upper bound with them.
    #[serde(default = "d_ttl", with = "humantime_serde")]
    pub default_ttl: Duration,
    #[serde(default = "d_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
}

impl Default for CimdConfig {
    fn default() -> Self {
        CimdConfig {
            enabled: true,
            allow_private_addresses: false,
            ca_file: None,
            timeout: d_timeout(),
            max_bytes: d_max_bytes(),
            default_ttl: d_ttl(),
            max_ttl: d_max_ttl(),
        }
    }
}

fn yes() -> bool {
    true
}
fn d_timeout() -> Duration {
    Duration::from_secs(5)
}
fn d_max_bytes() -> usize {
    5 * 1024
}
fn d_ttl() -> Duration {
    Duration::from_secs(300)
}
fn d_max_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// Most cached documents.
const MAX_CACHED: usize = 1_000;

/// Why a metadata document was not accepted (the document's host, or the client's URL).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CimdError {
    #[error("client_id is not an https URL with a path")]
    NotAUrl,
    #[error("the client's host resolves to a private address")]
    PrivateAddress,
    #[error("fetching the client metadata document failed: {0}")]
    Fetch(String),
    #[error("the client metadata document is invalid: {0}")]
    Invalid(String),
}

/// Whether `id` is meant as a metadata-document URL (https, a path, nothing odd).
pub fn is_document_url(id: &str) -> bool {
    let Ok(u) = url::Url::parse(id) else {
        return false;
    };
    u.scheme() == "https"
        && u.host_str().is_some()
        && u.path() != "/"
        && !u.path().split('/').any(|s| s == "." || s == "..")
        && u.fragment().is_none()
        && u.username().is_empty()
        && u.password().is_none()
        && u.as_str() == id
}

fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(a) => {
            a.is_loopback()
                || a.is_unspecified()
                || (a.segments()[0] & 0xfe00) == 0xfc00
                || (a.segments()[0] & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped().is_some_and(|v4| private(IpAddr::V4(v4)))
        }
    }
}

/// The fetcher and its cache.
pub struct Cimd {
    pub cfg: CimdConfig,
    clock: Clock,
    roots: Option<reqwest::Certificate>,
    cache: DashMap<String, (Arc<Client>, Instant, Duration)>,
}

impl std::fmt::Debug for Cimd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cimd")
            .field("cfg", &self.cfg)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl Cimd {
    pub fn new(cfg: CimdConfig, clock: Clock) -> Result<Cimd, String> {
        let roots = match &cfg.ca_file {
            Some(f) => {
                let pem = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
                Some(
                    reqwest::Certificate::from_pem(&pem)
                        .map_err(|e| format!("{}: {e}", f.display()))?,
                )
            }
            None => None,
        };
        Ok(Cimd {
            cfg,
            clock,
            roots,
            cache: DashMap::new(),
        })
    }

    /// The client a metadata-document URL names (cached or fetched now).
    pub async fn client(&self, id: &str) -> Result<Arc<Client>, CimdError> {
        if !is_document_url(id) {
            return Err(CimdError::NotAUrl);
        }
        if let Some(e) = self.cache.get(id)
            && self.clock.since(e.1) < e.2
        {
            return Ok(e.0.clone());
        }
        let (c, ttl) = self.fetch(id).await?;
        let c = Arc::new(c);
        if !ttl.is_zero() {
            if self.cache.len() >= MAX_CACHED {
                self.cache.retain(|_, e| self.clock.since(e.1) < e.2);
            }
            if self.cache.len() < MAX_CACHED {
                self.cache
                    .insert(id.to_owned(), (c.clone(), self.clock.now(), ttl));
            }
        }
        Ok(c)
    }

    async fn fetch(&self, id: &str) -> Result<(Client, Duration), CimdError> {
        let u = url::Url::parse(id).map_err(|_| CimdError::NotAUrl)?;
        let host = u.host_str().ok_or(CimdError::NotAUrl)?.to_owned();
        let port = u.port_or_known_default().unwrap_or(443);
        let fetch = |e: &dyn std::fmt::Display| CimdError::Fetch(e.to_string());
        // Resolve once, check every address, and connect only to the checked one (no
        // rebinding between the check and the connection).
        let addrs: Vec<_> = tokio::time::timeout(
            self.cfg.timeout,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|e| fetch(&e))?
        .map_err(|e| fetch(&e))?
        .collect();
        let first = *addrs.first().ok_or_else(|| fetch(&"no address"))?;
        if !self.cfg.allow_private_addresses && addrs.iter().any(|a| private(a.ip())) {
            return Err(CimdError::PrivateAddress);
        }
        let mut b = reqwest::Client::builder()
            .timeout(self.cfg.timeout)
            .connect_timeout(self.cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&host, first);
        if let Some(r) = &self.roots {
            b = b.add_root_certificate(r.clone());
        }
        let http = b.build().map_err(|e| fetch(&e))?;
        let mut resp = http
            .get(id)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| fetch(&e))?;
        if !resp.status().is_success() {
            return Err(CimdError::Fetch(format!("HTTP {}", resp.status())));
        }
        let ttl = self.ttl(resp.headers());
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fetch(&e))? {
            body.extend_from_slice(&chunk);
            if body.len() > self.cfg.max_bytes {
                return Err(CimdError::Fetch(format!(
                    "document larger than {} bytes",
                    self.cfg.max_bytes
                )));
            }
        }
        let doc: Value =
            serde_json::from_slice(&body).map_err(|e| CimdError::Invalid(e.to_string()))?;
        Ok((validate(id, &doc)?, ttl))
    }

    /// Cache lifetime from `Cache-Control` (`no-store`/`no-cache` → 0, `max-age`), bounded.
    fn ttl(&self, h: &reqwest::header::HeaderMap) -> Duration {
        let cc = h
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut ttl = self.cfg.default_ttl;
        for d in cc.split(',').map(str::trim) {
            if d == "no-store" || d == "no-cache" {
                return Duration::ZERO;
            }
            if let Some(v) = d.strip_prefix("max-age=")
                && let Ok(s) = v.trim_matches('"').parse::<u64>()
            {
                ttl = Duration::from_secs(s);
            }
        }
        ttl.min(self.cfg.max_ttl)
    }
}

fn bad(m: &str) -> CimdError {
    CimdError::Invalid(m.to_owned())
}

fn strings(doc: &Value, k: &str) -> Result<Option<Vec<String>>, CimdError> {
    match doc.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(&format!("{k} must be strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad(&format!("{k} must be an array"))),
    }
}

/// The document's rules: `client_id` equals the URL; a public client (no secret, auth method
/// `none`); redirect URIs https or loopback http, no fragment; code (+ refresh) grants only.
fn validate(id: &str, doc: &Value) -> Result<Client, CimdError> {
    if !doc.is_object() {
        return Err(bad("not a JSON object"));
    }
    if doc.get("client_id").and_then(Value::as_str) != Some(id) {
        return Err(bad("its client_id is not the document's URL"));
    }
    if doc.get("client_secret").is_some() || doc.get("client_secret_expires_at").is_some() {
        return Err(bad("a metadata document must not carry a client secret"));
    }
    match doc
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
    {
        None | Some("none") => {}
        Some(_) => return Err(bad("only token_endpoint_auth_method \"none\" is supported")),
    }
    let uris = strings(doc, "redirect_uris")?.unwrap_or_default();
    if uris.is_empty() || uris.len() > 10 {
        return Err(bad("redirect_uris: one to ten URIs required"));
    }
    for r in &uris {
        let ok = url::Url::parse(r).is_ok_and(|u| {
            u.fragment().is_none() && (u.scheme() == "https" || is_loopback_http(r))
        });
        if !ok || r.len() > 2048 {
            return Err(bad(
                "redirect_uris must be https or loopback http URLs without fragment",
            ));
        }
    }
    let grants = strings(doc, "grant_types")?.unwrap_or_else(|| vec![GRANT_CODE.to_owned()]);
    if !grants.iter().all(|g| g == GRANT_CODE || g == GRANT_REFRESH)
        || !grants.iter().any(|g| g == GRANT_CODE)
    {
        return Err(bad(
            "grant_types: authorization_code (and refresh_token) only",
        ));
    }
    let name = doc
        .get("client_name")
        .and_then(Value::as_str)
        .map(|s| s.chars().take(100).collect::<String>());
    Ok(Client {
        id: id.to_owned(),
        public: true,
        secret_sha256: None,
        jwks: None,
        redirect_uris: uris,
        grant_types: grants,
        allowed_audiences: Vec::new(),
        scopes: Vec::new(),
        exchange_ttl: Duration::from_secs(5),
        name,
        dynamic: true,
        dpop_bound_access_tokens: doc
            .get("dpop_bound_access_tokens")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_documents() {
        let id = "https://app.example/client.json";
        assert!(is_document_url(id));
        for no in [
            "http://app.example/c",
            "https://app.example/",
            "https://app.example",
            "https://u@app.example/c",
            "https://app.example/a/../c",
            "https://app.example/c#f",
            "mcp-client-cli",
        ] {
            assert!(!is_document_url(no), "{no}");
        }
        let ok = serde_json::json!({"client_id": id, "client_name": "App",
            "redirect_uris": ["http://127.0.0.1:5000/cb", "https://app.example/cb"],
            "grant_types": ["authorization_code", "refresh_token"]});
        let c = validate(id, &ok).unwrap();
        assert!(c.public && c.dynamic && c.allows(GRANT_REFRESH));
        let mut other = ok.clone();
        other["client_id"] = "https://evil.example/client.json".into();
        assert!(
            validate(id, &other).is_err(),
            "client_id must equal the URL"
        );
        let mut secret = ok.clone();
        secret["client_secret"] = "x".into();
        assert!(validate(id, &secret).is_err());
        let mut http = ok;
        http["redirect_uris"] = serde_json::json!(["http://app.example/cb"]);
        assert!(
            validate(id, &http).is_err(),
            "plain http redirect to a non-loopback host"
        );
        assert!(private("10.1.2.3".parse().unwrap()) && private("::1".parse().unwrap()));
        assert!(
            private("::ffff:192.168.1.1".parse().unwrap()) && !private("8.8.8.8".parse().unwrap())
        );
    }
}
