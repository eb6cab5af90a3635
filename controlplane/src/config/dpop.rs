//! The DPoP keys of an issuer's configuration (`issuers[].dpop*`): the mode, defaults and checks.

use std::time::Duration;

use serde::Deserialize;

use super::IssuerConfig;

/// `issuers[].dpop`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpopSetting {
    Required,
    #[default]
    Optional,
    Off,
}

pub(super) fn default_algs() -> Vec<String> {
    vec!["ES256".into(), "EdDSA".into()]
}

pub(super) fn default_window() -> Duration {
    Duration::from_secs(300)
}

/// The issuer's DPoP keys, or the key (under `p`, e.g. `issuers[0]`) that is wrong and why.
pub(super) fn validate(iss: &IssuerConfig, p: &str) -> Result<(), (String, String)> {
    if iss.dpop_algorithms.is_empty() {
        return Err((format!("{p}.dpop_algorithms"), "must not be empty".into()));
    }
    for a in &iss.dpop_algorithms {
        if dataplane::auth::jwks::parse_alg(a).is_none() {
            return Err((
                format!("{p}.dpop_algorithms"),
                format!(
                    "unsupported algorithm {a:?} (only asymmetric algorithms sign DPoP proofs)"
                ),
            ));
        }
    }
    for (key, d) in [
        ("dpop_iat_window", iss.dpop_iat_window),
        ("dpop_nonce_lifetime", iss.dpop_nonce_lifetime),
    ] {
        if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
            return Err((format!("{p}.{key}"), "between 1s and 1h".into()));
        }
    }
    Ok(())
}

/// RFC 9728 §2 / RFC 9449 §5.1 in the protected resource metadata `prm`: the proof algorithms
/// of the issuers that take DPoP (not `off`), each once, and whether every issuer requires
/// it. Returns the algorithms as the challenge's `algs` names them, if any.
pub fn advertise(issuers: &[IssuerConfig], prm: &mut serde_json::Value) -> Option<String> {
    let mut algs: Vec<String> = Vec::new();
    for i in issuers.iter().filter(|i| i.dpop != DpopSetting::Off) {
        for a in &i.dpop_algorithms {
            if !algs.contains(a) {
                algs.push(a.clone());
            }
        }
    }
    if algs.is_empty() {
        return None;
    }
    prm["dpop_signing_alg_values_supported"] = serde_json::json!(algs);
    prm["dpop_bound_access_tokens_required"] =
        serde_json::json!(issuers.iter().all(|i| i.dpop == DpopSetting::Required));
    Some(algs.join(" "))
}
