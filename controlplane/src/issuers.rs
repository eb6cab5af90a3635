//! Trusted issuers: metadata discovery (RFC 8414, then OIDC), JWKS fetch, refresh and last-known-good.

use std::sync::Arc;
use std::time::Duration;

use dataplane::auth::IssuerState;
use dataplane::auth::jwks::{self, KeySet};
use dataplane::auth::jwt::ValidationPolicy;
use dataplane::clock::{Clock, Instant};
use futures_channel::oneshot;
use jsonwebtoken::Algorithm;

use crate::config::{DpopSetting, IssuerConfig};
use dataplane::auth::dpop::{DpopMode, DpopPolicy};

/// The control plane's view of one issuer.
#[derive(Debug)]
pub struct IssuerRuntime {
    pub cfg: IssuerConfig,
    pub policy: ValidationPolicy,
    /// The issuer's DPoP rules, as the shards apply them.
    pub dpop: DpopPolicy,
    allowed: Vec<Algorithm>,
    jwks_uri: Option<String>,
    keys: Option<Arc<KeySet>>,
    generation: u64,
    last_ok: Option<Instant>,
    last_attempt: Option<Instant>,
    /// Refresh schedule, refetch rate limit and staleness are judged by it.
    clock: Clock,
    /// Replies owed to shards waiting on a refetch.
    pub waiting: Vec<oneshot::Sender<()>>,
    /// A client trusting only the issuer's `ca_file`, when one is configured.
    http: Option<reqwest::Client>,
}

/// Why a fetch did not produce keys.
/// An issuer's `ca_file` cannot be read or used (the operator's file).
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct CaFileError {
    pub path: std::path::PathBuf,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("metadata discovery failed: {0}")]
    Discovery(String),
    #[error("JWKS fetch failed: {0}")]
    Http(String),
    #[error("JWKS unusable: {0}")]
    Keys(#[from] jwks::JwksError),
}

impl IssuerRuntime {
    pub fn new(cfg: IssuerConfig, default_audience: &str, clock: Clock) -> Self {
        let audiences = if cfg.audiences.is_empty() {
            vec![default_audience.to_owned()]
        } else {
            cfg.audiences.clone()
        };
        let policy = ValidationPolicy {
            issuer: cfg.issuer.clone(),
            audiences,
            leeway_secs: cfg.leeway.as_secs() as i64,
            max_lifetime_secs: cfg.max_token_lifetime.as_secs() as i64,
            token_types: cfg
                .token_types
                .iter()
                .map(|t| {
                    t.to_ascii_lowercase()
                        .trim_start_matches("application/")
                        .to_owned()
                })
                .collect(),
        };
        let allowed = cfg
            .algorithms
            .iter()
            .filter_map(|a| jwks::parse_alg(a))
            .collect();
        let jwks_uri = cfg.jwks_uri.as_ref().map(|u| u.to_string());
        let dpop = DpopPolicy {
            mode: match cfg.dpop {
                DpopSetting::Required => DpopMode::Required,
                DpopSetting::Optional => DpopMode::Optional,
                DpopSetting::Off => DpopMode::Off,
            },
            algorithms: cfg
                .dpop_algorithms
                .iter()
                .filter_map(|a| jwks::parse_alg(a))
                .collect(),
            iat_window_secs: cfg.dpop_iat_window.as_secs() as i64,
            require_nonce: cfg.dpop_nonce,
            nonce_lifetime_secs: cfg.dpop_nonce_lifetime.as_secs() as i64,
        };
        IssuerRuntime {
            cfg,
            policy,
            dpop,
            allowed,
            jwks_uri,
            keys: None,
            generation: 0,
            last_ok: None,
            last_attempt: None,
            waiting: Vec::new(),
            http: None,
            clock,
        }
    }

    /// The shards' view: keys are usable only while fresh enough.
    /// Whether the keys may be used now: loaded, and refreshed within the maximum staleness.
    pub fn usable(&self) -> bool {
        self.keys.is_some()
            && self
                .last_ok
                .is_some_and(|t| self.clock.since(t) <= self.cfg.jwks_max_staleness)
    }

    pub fn state(&self) -> Arc<IssuerState> {
        let usable = self.usable();
        Arc::new(IssuerState {
            policy: self.policy.clone(),
            dpop: self.dpop.clone(),
            keys: self.keys.clone().unwrap_or_default(),
            keys_generation: self.generation,
            usable,
        })
    }

    /// The key generation the shards' token caches are tied to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Make this issuer's generation exceed `floor`, so no token cached under an issuer that
    /// held its place before a reload (another issuer, or the same one with other rules) is
    /// taken as verified under this one.
    pub fn raise_generation_above(&mut self, floor: u64) {
        self.generation = self.generation.max(floor) + 1;
    }

    pub fn loaded(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether a scheduled refresh is due.
    pub fn refresh_due(&self) -> bool {
        match (self.last_ok, self.last_attempt) {
            (_, None) => true,
            // After a failure retry sooner (every min-refetch interval), else on schedule —
            // and at least twice within the staleness limit, so keys never go stale unprobed.
            (Some(ok), Some(at)) if ok >= at => {
                self.clock.since(ok)
                    >= self
                        .cfg
                        .jwks_refresh_interval
                        .min(self.cfg.jwks_max_staleness / 2)
            }
            (_, Some(at)) => {
                self.clock.since(at)
                    >= self
                        .cfg
                        .jwks_min_refetch_interval
                        .max(Duration::from_secs(1))
            }
        }
    }

    /// Whether an unknown-kid refetch may run now (rate limit shared by all shards).
    pub fn refetch_allowed(&self) -> bool {
        self.last_attempt
            .is_none_or(|t| self.clock.since(t) >= self.cfg.jwks_min_refetch_interval)
    }

    /// Build the issuer's own HTTP client when it has a private CA (`ca_file`).
    pub fn with_ca(mut self) -> Result<Self, CaFileError> {
        if let Some(f) = &self.cfg.ca_file {
            let bad = |e: &dyn std::fmt::Display| CaFileError {
                path: f.clone(),
                message: e.to_string(),
            };
            let pem = std::fs::read(f).map_err(|e| bad(&e))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| bad(&e))?;
            let client = reqwest::Client::builder()
                .tls_certs_only([cert])
                .connect_timeout(Duration::from_secs(3))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| bad(&e))?;
            self.http = Some(client);
        }
        Ok(self)
    }

    /// Fetch the JWKS (discovering its URL first if needed). Returns whether the keys changed.
    /// On any failure the last-known-good keys stay.
    pub async fn refresh(&mut self, http: &reqwest::Client) -> Result<bool, FetchError> {
        let own = self.http.clone();
        let http = own.as_ref().unwrap_or(http);
        self.begin_attempt();
        let res = self.fetch(http).await;
        self.adopt(res)
    }

    /// [`IssuerRuntime::refresh`] with the JWKS document (or why there is none) obtained
    /// elsewhere, e.g. in memory by the socket-free harness: the same parsing, rules and
    /// bookkeeping (rate limit, generation, last-known-good).
    pub fn refresh_with(&mut self, body: Result<Vec<u8>, String>) -> Result<bool, FetchError> {
        self.begin_attempt();
        let res = body.map_err(FetchError::Http).and_then(|b| self.parse(&b));
        self.adopt(res)
    }

    fn begin_attempt(&mut self) {
        self.last_attempt = Some(self.clock.now());
        metrics::counter!("warden_jwks_fetches_total", "issuer" => self.cfg.issuer.clone())
            .increment(1);
    }

    /// Take a fetch's keys, or keep the last-known-good ones. Whether the keys changed.
    fn adopt(&mut self, res: Result<KeySet, FetchError>) -> Result<bool, FetchError> {
        match res {
            Ok(set) => {
                log_refused(&self.cfg.issuer, &set.refused);
                metrics::gauge!("warden_jwks_keys", "issuer" => self.cfg.issuer.clone())
                    .set(set.len() as f64);
                let changed = self.keys.as_ref().is_none_or(|old| !same_kids(old, &set));
                self.keys = Some(Arc::new(set));
                self.generation += 1;
                self.last_ok = Some(self.clock.now());
                Ok(changed)
            }
            Err(e) => {
                metrics::counter!("warden_jwks_fetch_failures_total", "issuer" => self.cfg.issuer.clone()).increment(1);
                Err(e)
            }
        }
    }

    async fn fetch(&mut self, http: &reqwest::Client) -> Result<KeySet, FetchError> {
        let uri = match &self.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let u = discover_jwks_uri(http, &self.cfg.issuer).await?;
                self.jwks_uri = Some(u.clone());
                u
            }
        };
        let resp = http
            .get(&uri)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(FetchError::Http(format!("HTTP {}", resp.status())));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        self.parse(&body)
    }

    fn parse(&self, body: &[u8]) -> Result<KeySet, FetchError> {
        if body.len() > 1024 * 1024 {
            return Err(FetchError::Http("JWKS larger than 1 MiB".into()));
        }
        Ok(jwks::parse_jwks(body, &self.allowed)?)
    }
}

fn same_kids(a: &KeySet, b: &KeySet) -> bool {
    a.len() == b.len() && a.by_kid.keys().all(|k| b.by_kid.contains_key(k))
}

/// RFC 8414 metadata first, then OpenID Connect discovery; the document's `issuer` must match exactly.
pub async fn discover_jwks_uri(http: &reqwest::Client, issuer: &str) -> Result<String, FetchError> {
    let u = url::Url::parse(issuer).map_err(|e| FetchError::Discovery(e.to_string()))?;
    let path = u.path().trim_end_matches('/');
    let origin = u.origin().ascii_serialization();
    let candidates = [
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{origin}/.well-known/openid-configuration{path}"),
        format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ),
    ];
    let mut last = String::from("no metadata found");
    for c in candidates {
        match http.get(&c).timeout(Duration::from_secs(5)).send().await {
            Ok(r) if r.status().is_success() => {
                let doc: serde_json::Value = match r.json().await {
                    Ok(d) => d,
                    Err(e) => {
                        last = format!("{c}: {e}");
                        continue;
                    }
                };
                if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
                    last = format!("{c}: metadata issuer does not match {issuer:?}");
                    continue;
                }
                match doc.get("jwks_uri").and_then(|v| v.as_str()) {
                    Some(j) => return Ok(j.to_owned()),
                    None => last = format!("{c}: no jwks_uri"),
                }
            }
            Ok(r) => last = format!("{c}: HTTP {}", r.status()),
            Err(e) => last = format!("{c}: {e}"),
        }
    }
    Err(FetchError::Discovery(last))
}

/// Log the keys a JWKS fetch refused. A `kid` is the issuer's text: it is a `Debug` field
/// (quoted, `\n` escaped), so a hostile issuer cannot split or forge log lines.
fn log_refused(issuer: &str, refused: &[(String, &'static str)]) {
    for (kid, why) in refused {
        tracing::warn!(issuer = %issuer, kid = ?kid, reason = why, "JWKS key refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_kid_cannot_split_log_lines() {
        let kid =
            "k1\n2026-01-01T00:00:00Z  INFO warden: Admin login succeeded user=root\r".to_owned();
        let out = crate::testlog::captured(|| {
            log_refused("https://idp.example", &[(kid, "weak RSA key")]);
        });
        assert_eq!(out.matches('\n').count(), 1, "one event, one line: {out:?}");
        assert!(!out.contains('\r'), "{out:?}");
        assert!(
            out.contains(r#"kid="k1\n2026"#),
            "escaped, still readable: {out:?}"
        );
    }

    fn cfg(ca: Option<&str>) -> IssuerConfig {
        let yaml = match ca {
            Some(f) => format!("issuer: https://idp.example\nca_file: {f}\n"),
            None => "issuer: https://idp.example\n".into(),
        };
        serde_yaml_ng::from_str(&yaml).unwrap()
    }

    #[test]
    fn a_private_ca_gets_its_own_client() {
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/../certs/dev-ca.pem");
        assert!(
            IssuerRuntime::new(cfg(Some(ca)), "https://gw/mcp", Clock::new())
                .with_ca()
                .unwrap()
                .http
                .is_some()
        );
        assert!(
            IssuerRuntime::new(cfg(None), "https://gw/mcp", Clock::new())
                .with_ca()
                .unwrap()
                .http
                .is_none()
        );
        let e = IssuerRuntime::new(
            cfg(Some("/nonexistent/ca.pem")),
            "https://gw/mcp",
            Clock::new(),
        )
        .with_ca()
        .unwrap_err();
        assert_eq!(e.path, std::path::Path::new("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn refetch_rate_limit_schedule_and_staleness_follow_the_clock() {
        let (clock, mock) = Clock::mock();
        let yaml = "issuer: https://idp.example\njwks_min_refetch_interval: 2s\njwks_refresh_interval: 300s\njwks_max_staleness: 1h\n";
        let mut rt = IssuerRuntime::new(
            serde_yaml_ng::from_str(yaml).unwrap(),
            "https://gw/mcp",
            clock.clone(),
        );
        assert!(rt.refresh_due() && rt.refetch_allowed() && !rt.usable());
        // A successful fetch now (what `refresh` records).
        rt.keys = Some(Arc::default());
        rt.last_attempt = Some(clock.now());
        rt.last_ok = rt.last_attempt;
        assert!(rt.usable() && !rt.refresh_due());
        let ms = |n| mock.advance(Duration::from_millis(n));
        ms(1_999);
        assert!(!rt.refetch_allowed(), "inside the 2 s window");
        ms(1);
        assert!(rt.refetch_allowed(), "the window is over");
        ms(298_000);
        assert!(rt.refresh_due(), "scheduled refresh at 300 s");
        // A failed attempt: retried after the refetch interval, keys still usable.
        rt.last_attempt = Some(clock.now());
        assert!(!rt.refresh_due());
        ms(2_000);
        assert!(rt.refresh_due() && rt.usable());
        // No success for longer than the staleness limit: the keys are no longer usable.
        ms(3_600_000);
        assert!(!rt.usable());
    }
}
