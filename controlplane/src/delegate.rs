//! The delegation engine: answers shards' token requests by minting with the embedded STS
//! or by RFC 8693 token exchange at an external authorization server, and checks what an
//! external server returns before any shard may use it.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dataplane::clock::Clock;
use dataplane::control::{DelegateRequest, Delegated, DelegationError, Subject};
use dataplane::secret::Secret;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::config::{ClientAuth, DelegationConfig, DelegationMode};
use crate::sts::{DelegationGrant, SigningKey, Sts};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Shared by the control loop (discovery) and the request task.
/// The engine in use; a reload of the `delegation` block stores a new one.
pub type EngineCell = Arc<arc_swap::ArcSwap<Engine>>;

#[derive(Debug)]
pub struct Engine {
    cfg: DelegationConfig,
    sts: Option<Arc<Sts>>,
    http: reqwest::Client,
    assertion_key: Option<SigningKey>,
    secret: Option<Secret<String>>,
    /// Token times (`iat`, `exp`) and latency metrics.
    clock: Clock,
}

impl Engine {
    /// Build the engine; in embedded mode `sts` signs, in external mode credentials load here.
    pub fn new(
        cfg: DelegationConfig,
        sts: Option<Arc<Sts>>,
        http: reqwest::Client,
        clock: Clock,
    ) -> Result<Engine, String> {
        let mut assertion_key = None;
        let mut secret = None;
        if cfg.mode == DelegationMode::External {
            match cfg.client_auth {
                ClientAuth::PrivateKeyJwt => {
                    use rustls_pki_types::pem::PemObject;
                    let path = cfg
                        .private_key_file
                        .as_ref()
                        .ok_or("delegation.private_key_file is required")?;
                    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    let probe = SigningKey::from_pkcs8(der.secret_pkcs8_der(), "")
                        .map_err(|e| e.to_string())?;
                    let kid = match &cfg.private_key_id {
                        Some(k) => k.clone(),
                        None => crate::sts::thumbprint(&probe.public_jwk),
                    };
                    assertion_key = Some(
                        SigningKey::from_pkcs8(der.secret_pkcs8_der(), &kid)
                            .map_err(|e| e.to_string())?,
                    );
                }
                ClientAuth::ClientSecretBasic | ClientAuth::ClientSecretPost => {
                    let var = cfg
                        .client_secret_env
                        .as_ref()
                        .ok_or("delegation.client_secret_env is required")?;
                    secret =
                        Some(Secret::new(std::env::var(var).map_err(|_| {
                            format!("environment variable {var} is not set")
                        })?));
                }
            }
        } else if sts.is_none() {
            return Err("embedded delegation needs the STS".into());
        }
        Ok(Engine {
            cfg,
            sts,
            http,
            assertion_key,
            secret,
            clock,
        })
    }

    /// Serve shard requests until the queue closes, each with the engine current when it
    /// arrives (a reload swaps the cell). (STS key rotation is `Sts::maintain`, driven by the
    /// stored key's age so it survives restarts and runs once per rotation across replicas.)
    pub async fn serve(
        cell: EngineCell,
        mut rx: futures_channel::mpsc::UnboundedReceiver<DelegateRequest>,
    ) {
        while let Some(DelegateRequest {
            subject,
            audience,
            scopes,
            ttl_secs,
            reply,
        }) = rx.next().await
        {
            let me = cell.load_full();
            if me.cfg.mode == DelegationMode::Embedded {
                // Signing takes microseconds: answer inline, in order.
                let _ = reply.send(me.mint(&subject, &audience, &scopes, ttl_secs));
            } else {
                tokio::spawn(async move {
                    let r = me.exchange(&subject, &audience, &scopes, ttl_secs).await;
                    let _ = reply.send(r);
                });
            }
        }
    }

    /// Mint in-process (embedded STS).
    pub fn mint(
        &self,
        subject: &Subject,
        audience: &str,
        scopes: &[String],
        ttl_secs: i64,
    ) -> Result<Delegated, DelegationError> {
        self.mint_at(self.clock.unix_secs(), subject, audience, scopes, ttl_secs)
    }

    /// [`Engine::mint`] issued at Unix time `issued` (the socket-free harness passes its
    /// fake clock's time, so token lifetimes and the shard's cache agree on what "now" is).
    pub fn mint_at(
        &self,
        issued: i64,
        subject: &Subject,
        audience: &str,
        scopes: &[String],
        ttl_secs: i64,
    ) -> Result<Delegated, DelegationError> {
        let sts = self.sts.as_ref().ok_or(DelegationError::Unavailable)?;
        let started = self.clock.now();
        let jti = Sts::new_jti().map_err(|_| DelegationError::Unavailable)?;
        let (sub, act, email) = match subject {
            Subject::User {
                sub, act, email, ..
            } => (sub.as_str(), act.as_ref(), email.as_deref()),
            Subject::Gateway => (self.cfg.client_id.as_str(), None, None),
        };
        let grant = DelegationGrant {
            subject: sub,
            subject_act: act,
            actor: &self.cfg.client_id,
            audience,
            scopes,
            ttl_secs,
            email,
        };
        let mut claims = crate::sts::delegation_claims(sts.issuer(), &grant, issued, &jti);
        if matches!(subject, Subject::Gateway) {
            // A service token is the gateway acting as itself: no delegation chain.
            if let Some(o) = claims.as_object_mut() {
                o.remove("act");
            }
        }
        let token = sts
            .sign(&claims)
            .map_err(|_| DelegationError::Unavailable)?;
        metrics::counter!("warden_delegation_mints_total").increment(1);
        metrics::histogram!("warden_delegation_mint_duration_seconds")
            .record(self.clock.since(started).as_secs_f64());
        Ok(Delegated {
            token: Secret::new(Arc::from(token)),
            jti: Some(jti),
            exp: issued + ttl_secs,
            scope: scopes.join(" "),
        })
    }

    /// A token for the gateway itself (discovery, upstream sessions).
    pub async fn service_token(&self, audience: &str) -> Result<Delegated, DelegationError> {
        match self.cfg.mode {
            DelegationMode::Embedded => self.mint(&Subject::Gateway, audience, &[], 60),
            DelegationMode::External => self.exchange(&Subject::Gateway, audience, &[], 300).await,
        }
    }

    fn client_assertion(&self, endpoint: &str) -> Result<String, DelegationError> {
        let key = self
            .assertion_key
            .as_ref()
            .ok_or(DelegationError::Unavailable)?;
        let jti = Sts::new_jti().map_err(|_| DelegationError::Unavailable)?;
        let t = self.clock.unix_secs();
        let claims = json!({"iss": self.cfg.client_id, "sub": self.cfg.client_id, "aud": endpoint, "jti": jti, "iat": t, "exp": t + 60});
        key.sign(&claims, "JWT")
            .map_err(|_| DelegationError::Unavailable)
    }

    /// RFC 8693 §2.1 at the external token endpoint (client_credentials for the gateway itself).
    pub async fn exchange(
        &self,
        subject: &Subject,
        audience: &str,
        scopes: &[String],
        ttl_secs: i64,
    ) -> Result<Delegated, DelegationError> {
        let endpoint = self
            .cfg
            .token_endpoint
            .as_ref()
            .ok_or(DelegationError::Unavailable)?
            .to_string();
        let scope = scopes.join(" ");
        let mut form: Vec<(&str, String)> = match subject {
            Subject::User {
                subject_token: Some(t),
                ..
            } => vec![
                ("grant_type", TOKEN_EXCHANGE.into()),
                ("subject_token", t.expose().to_string()),
                ("subject_token_type", ACCESS_TOKEN_TYPE.into()),
                ("audience", audience.into()),
                ("requested_token_type", ACCESS_TOKEN_TYPE.into()),
            ],
            Subject::User {
                subject_token: None,
                ..
            } => {
                return Err(DelegationError::Refused(
                    "no subject token to exchange".into(),
                ));
            }
            Subject::Gateway => vec![
                ("grant_type", "client_credentials".into()),
                ("resource", audience.into()),
            ],
        };
        if !scope.is_empty() {
            form.push(("scope", scope.clone()));
        }
        let mut rb = self
            .http
            .post(&endpoint)
            .timeout(self.cfg.timeout)
            .header("accept", "application/json");
        match self.cfg.client_auth {
            ClientAuth::ClientSecretBasic => {
                // RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding.
                let id = url::form_urlencoded::byte_serialize(self.cfg.client_id.as_bytes())
                    .collect::<String>();
                let secret = url::form_urlencoded::byte_serialize(
                    self.secret.as_ref().map_or("", |s| s.expose()).as_bytes(),
                )
                .collect::<String>();
                rb = rb.basic_auth(id, Some(secret));
            }
            ClientAuth::ClientSecretPost => {
                form.push(("client_id", self.cfg.client_id.clone()));
                form.push((
                    "client_secret",
                    self.secret
                        .as_ref()
                        .map(|s| s.expose().clone())
                        .unwrap_or_default(),
                ));
            }
            ClientAuth::PrivateKeyJwt => {
                form.push(("client_id", self.cfg.client_id.clone()));
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", self.client_assertion(&endpoint)?));
            }
        }
        let started = self.clock.now();
        let resp = rb.form(&form).send().await.map_err(|e| {
            if e.is_timeout() {
                DelegationError::Timeout
            } else {
                DelegationError::Unavailable
            }
        })?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|_| DelegationError::BadToken("response is not JSON".into()))?;
        metrics::counter!("warden_delegation_exchanges_total", "status" => status.as_u16().to_string()).increment(1);
        metrics::histogram!("warden_delegation_exchange_duration_seconds")
            .record(self.clock.since(started).as_secs_f64());
        if !status.is_success() {
            let e = body.get("error").and_then(Value::as_str).unwrap_or("error");
            let d = body
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(DelegationError::Refused(
                format!("{e} {d}").trim().to_owned(),
            ));
        }
        check_issued(
            &body,
            subject,
            audience,
            scopes,
            ttl_secs,
            self.clock.unix_secs(),
        )
    }
}

fn subset(granted: &str, asked: &[String]) -> bool {
    granted
        .split(' ')
        .filter(|s| !s.is_empty())
        .all(|s| asked.iter().any(|a| a == s))
}

/// Refuse a returned token that is wider or longer-lived than asked, for another audience,
/// or without the delegation chain.
pub fn check_issued(
    body: &Value,
    subject: &Subject,
    audience: &str,
    scopes: &[String],
    ttl_secs: i64,
    now: i64,
) -> Result<Delegated, DelegationError> {
    let bad = |m: &str| DelegationError::BadToken(m.to_owned());
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no access_token"))?;
    if !body
        .get("token_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
    {
        return Err(bad("token_type is not Bearer"));
    }
    if let Some(t) = body.get("issued_token_type").and_then(Value::as_str)
        && t != ACCESS_TOKEN_TYPE
        && t != "urn:ietf:params:oauth:token-type:jwt"
    {
        return Err(bad("issued_token_type is not an access token"));
    }
    // Delegation tokens must not outlive the tool's TTL nor carry more than its scopes.
    // The gateway's own service token (sessions, discovery; sub = the gateway, no user)
    // takes the lifetime and default scopes the authorization server gives its client;
    // its audience is still checked.
    let is_user = matches!(subject, Subject::User { .. });
    if let Some(e) = body.get("expires_in").and_then(Value::as_i64)
        && is_user
        && e > ttl_secs
    {
        return Err(bad("lifetime longer than asked"));
    }
    if let Some(s) = body.get("scope").and_then(Value::as_str)
        && is_user
        && !subset(s, scopes)
    {
        return Err(bad("scope wider than asked"));
    }
    // A JWT is inspected (not verified: the upstream verifies the signature; here we refuse
    // what the authorization server should not have issued).
    let claims: Value = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| bad("not a JWT access token"))?;
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(a)) => a.len() == 1 && a[0].as_str() == Some(audience),
        _ => false,
    };
    if !aud_ok {
        return Err(bad("audience is not exactly the upstream"));
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("no exp"))?;
    let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(now);
    if is_user && (exp - iat > ttl_secs || exp - now > ttl_secs + 1) {
        return Err(bad("lifetime longer than asked"));
    }
    if exp <= now {
        return Err(bad("already expired"));
    }
    let scope = claims
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if is_user && !subset(&scope, scopes) {
        return Err(bad("scope wider than asked"));
    }
    if let Subject::User { sub, .. } = subject {
        if claims.get("sub").and_then(Value::as_str) != Some(sub.as_str()) {
            return Err(bad("sub is not the user"));
        }
        if !claims
            .get("act")
            .and_then(|a| a.get("sub"))
            .is_some_and(Value::is_string)
        {
            return Err(bad("no act claim: not a delegation token"));
        }
    }
    Ok(Delegated {
        token: Secret::new(Arc::from(token)),
        jti: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
        exp,
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_engine_holds_no_client_secret() {
        let cfg: DelegationConfig = serde_yaml_ng::from_str(
            "client_id: warden\nmode: external\ntoken_endpoint: https://as.example/token\nclient_secret_env: X\n",
        )
        .unwrap();
        let engine = Engine {
            cfg,
            sts: None,
            http: reqwest::Client::new(),
            assertion_key: None,
            secret: Some(Secret::new("c2xpZW50LXNlY3JldA".into())),
            clock: Clock::new(),
        };
        let out = format!("{engine:?} {engine:#?}");
        assert!(!out.contains("c2xpZW50LXNlY3JldA"), "{out}");
        assert!(out.contains("Secret(***)"), "{out}");
    }

    #[test]
    fn minted_tokens_are_dated_by_the_clock() {
        let (clock, time) = Clock::mock_at(1_700_000_000_000);
        let sts = Sts::new(
            "https://warden.example",
            crate::sts::SigningAlg::EdDSA,
            clock.clone(),
        );
        let cfg: DelegationConfig =
            serde_yaml_ng::from_str("client_id: warden\nmode: embedded\n").unwrap();
        let engine = Engine::new(
            cfg,
            Some(Arc::new(sts.unwrap())),
            reqwest::Client::new(),
            clock,
        )
        .unwrap();
        let scopes = ["s".to_owned()];
        let iat = |d: &Delegated| {
            let payload = d.token.expose().split('.').nth(1).unwrap().to_owned();
            let c: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
            c["iat"].as_i64().unwrap()
        };
        let d = engine
            .mint(&user(), "https://up.example", &scopes, 5)
            .unwrap();
        assert_eq!((iat(&d), d.exp), (1_700_000_000, 1_700_000_005));
        time.advance(std::time::Duration::from_secs(60));
        let d = engine
            .mint(&user(), "https://up.example", &scopes, 5)
            .unwrap();
        assert_eq!((iat(&d), d.exp), (1_700_000_060, 1_700_000_065));
    }

    fn jwt(claims: &Value) -> String {
        format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    fn user() -> Subject {
        Subject::User {
            sub: "alice".into(),
            email: None,
            act: None,
            subject_token: None,
        }
    }

    fn body(claims: Value) -> Value {
        json!({"access_token": jwt(&claims), "token_type": "Bearer", "issued_token_type": ACCESS_TOKEN_TYPE, "expires_in": 5})
    }

    fn good() -> Value {
        json!({"sub": "alice", "aud": "https://up/", "scope": "a", "iat": 1000, "exp": 1005, "act": {"sub": "gw"}, "jti": "j"})
    }

    #[test]
    fn accepts_exactly_what_was_asked() {
        let d = check_issued(
            &body(good()),
            &user(),
            "https://up/",
            &["a".into(), "b".into()],
            5,
            1000,
        )
        .unwrap();
        assert_eq!(d.exp, 1005);
        assert_eq!(d.scope, "a");
    }

    #[test]
    fn refuses_wider_longer_misdirected_or_undelegated_tokens() {
        let asked = ["a".to_string()];
        let check =
            |c: Value| check_issued(&body(c), &user(), "https://up/", &asked, 5, 1000).unwrap_err();
        let mut c = good();
        c["scope"] = "a admin".into();
        assert!(matches!(check(c), DelegationError::BadToken(m) if m.contains("scope")));
        let mut c = good();
        c["exp"] = 1060.into();
        assert!(matches!(check(c), DelegationError::BadToken(m) if m.contains("lifetime")));
        let mut c = good();
        c["aud"] = json!(["https://up/", "https://other/"]);
        assert!(matches!(check(c), DelegationError::BadToken(m) if m.contains("audience")));
        let mut c = good();
        c.as_object_mut().unwrap().remove("act");
        assert!(matches!(check(c), DelegationError::BadToken(m) if m.contains("act")));
        let mut c = good();
        c["sub"] = "mallory".into();
        assert!(matches!(check(c), DelegationError::BadToken(m) if m.contains("sub")));
        let mut b = body(good());
        b["expires_in"] = 3600.into();
        assert!(check_issued(&b, &user(), "https://up/", &asked, 5, 1000).is_err());
        let mut b = body(good());
        b["token_type"] = "DPoP".into();
        assert!(check_issued(&b, &user(), "https://up/", &asked, 5, 1000).is_err());
    }
}
