//! Discovery (RFC 8414 / OIDC), `/jwks`, and RFC 7591 dynamic registration of public loopback clients.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Inner;
use super::clients::{ALL_GRANTS, GRANT_CODE, GRANT_REFRESH, is_loopback_http};
use super::store;

/// `GET /.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`.
pub async fn metadata(State(inner): State<Arc<Inner>>) -> Response {
    let iss = &inner.cfg.issuer;
    let mut m = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ALL_GRANTS,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported":
            ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported":
            ["EdDSA", "ES256", "ES384", "RS256", "PS256", "PS384"],
        "scopes_supported": inner.cfg.scopes.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": inner.cimd.is_some(),
        "revocation_endpoint": format!("{iss}/revoke"),
        "revocation_endpoint_auth_methods_supported":
            ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
        "introspection_endpoint": format!("{iss}/introspect"),
        "introspection_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        // RFC 9449 §5.1: proofs at /token (asymmetric algorithms only).
        "dpop_signing_alg_values_supported": inner.cfg.dpop_algorithms,
        // For OIDC-discovery clients only: no ID tokens are issued (see docs).
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [match inner.sts.jwks()["keys"][0]["alg"].as_str() {
            Some(a) => a.to_owned(),
            None => "EdDSA".to_owned(),
        }],
    });
    if inner.cfg.dynamic_registration {
        m["registration_endpoint"] = Value::String(format!("{iss}/register"));
    }
    let mut r = axum::Json(m).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// `GET /jwks`.
pub async fn jwks(State(inner): State<Arc<Inner>>) -> Response {
    let mut r = axum::Json(inner.sts.jwks()).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    r
}

fn reg_error(error: &str, d: &str) -> Response {
    let mut r = (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": error, "error_description": d})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn str_list(v: &Value, key: &str) -> Result<Option<Vec<String>>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{key} must be an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("{key} must be an array of strings")),
    }
}

/// `POST /register` (RFC 7591): public clients with loopback http redirect URIs only.
pub async fn register(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    if !inner.cfg.dynamic_registration {
        return (StatusCode::NOT_FOUND, "dynamic registration is disabled\n").into_response();
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return reg_error("invalid_client_metadata", "body must be a JSON object");
    };
    if !req.is_object() {
        return reg_error("invalid_client_metadata", "body must be a JSON object");
    }
    let uris = match str_list(&req, "redirect_uris") {
        Ok(Some(u)) if !u.is_empty() && u.len() <= 10 => u,
        Ok(_) => {
            return reg_error(
                "invalid_redirect_uri",
                "redirect_uris: one to ten URIs required",
            );
        }
        Err(e) => return reg_error("invalid_redirect_uri", &e),
    };
    if let Some(bad) = uris.iter().find(|u| u.len() > 2048 || !is_loopback_http(u)) {
        return reg_error(
            "invalid_redirect_uri",
            &format!(
                "{bad}: only loopback http redirect URIs (localhost, 127.0.0.1, [::1]) may be registered"
            ),
        );
    }
    match req.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => {}
        Some(Value::String(m)) if m == "none" => {}
        Some(_) => {
            return reg_error(
                "invalid_client_metadata",
                "only public clients (token_endpoint_auth_method \"none\") may register",
            );
        }
    }
    let grants = match str_list(&req, "grant_types") {
        Ok(None) => vec![GRANT_CODE.to_owned()],
        Ok(Some(g))
            if !g.is_empty()
                && g.iter().all(|x| x == GRANT_CODE || x == GRANT_REFRESH)
                && g.iter().any(|x| x == GRANT_CODE) =>
        {
            let mut out = vec![GRANT_CODE.to_owned()];
            if g.iter().any(|x| x == GRANT_REFRESH) {
                out.push(GRANT_REFRESH.to_owned());
            }
            out
        }
        Ok(Some(_)) => {
            return reg_error(
                "invalid_client_metadata",
                "grant_types: authorization_code (and refresh_token) only",
            );
        }
        Err(e) => return reg_error("invalid_client_metadata", &e),
    };
    match str_list(&req, "response_types") {
        Ok(None) => {}
        Ok(Some(r)) if r.iter().all(|x| x == "code") && !r.is_empty() => {}
        _ => return reg_error("invalid_client_metadata", "response_types: code only"),
    }
    let name = match req.get("client_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 100 => Some(s.clone()),
        Some(_) => {
            return reg_error(
                "invalid_client_metadata",
                "client_name must be a string of at most 100 characters",
            );
        }
    };
    let dpop_bound = match req.get("dpop_bound_access_tokens") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return reg_error(
                "invalid_client_metadata",
                "dpop_bound_access_tokens must be a boolean",
            );
        }
    };
    // MCP 2025-11-25 (SEP-837): registering clients say what they are (OIDC Registration §2).
    let app_type = match req.get("application_type").and_then(Value::as_str) {
        Some(t @ ("native" | "web")) => t.to_owned(),
        Some(_) => {
            return reg_error(
                "invalid_client_metadata",
                "application_type must be \"native\" or \"web\"",
            );
        }
        None => {
            return reg_error(
                "invalid_client_metadata",
                "application_type is required (\"native\" for loopback redirect URIs)",
            );
        }
    };
    let Ok(rand) = store::random_token() else {
        return reg_error("invalid_client_metadata", "random generator failed");
    };
    let id = format!("dyn-{}", &rand[..22]);
    let issued_at = inner.store.now();
    if let Err(d) = inner
        .store
        .register(&id, &uris, &grants, name.clone(), dpop_bound)
        .await
    {
        return reg_error("invalid_client_metadata", d);
    }
    tracing::info!(client_id = %id, "Authorization server: client registered");
    let mut out = json!({
        "client_id": id,
        "client_id_issued_at": issued_at,
        "redirect_uris": uris,
        "token_endpoint_auth_method": "none",
        "application_type": app_type,
        "grant_types": grants,
        "response_types": ["code"],
    });
    if let Some(n) = name {
        out["client_name"] = Value::String(n);
    }
    if dpop_bound {
        out["dpop_bound_access_tokens"] = Value::Bool(true);
    }
    if let Some(s) = req.get("scope").and_then(Value::as_str) {
        out["scope"] = Value::String(s.to_owned());
    }
    let mut r = (StatusCode::CREATED, axum::Json(out)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// CORS for browser-based MCP clients (e.g. the Inspector) on discovery, `/jwks`, `/token` and
/// `/register`: `*` without credentials (these endpoints never read cookies). The cookie-based
/// pages (`/authorize`, `/login`, `/consent`) get no CORS headers.
pub async fn cors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path();
    let open = path.starts_with("/.well-known/")
        || matches!(path, "/jwks" | "/token" | "/register" | "/revoke");
    if !open {
        return next.run(req).await;
    }
    let preflight = req.method() == axum::http::Method::OPTIONS;
    let mut r = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    // A browser client must read the nonce of a `use_dpop_nonce` answer (RFC 9449 §8).
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("DPoP-Nonce"),
    );
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, MCP-Protocol-Version, DPoP"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    r
}
