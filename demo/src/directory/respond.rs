//! The Employee Directory's HTTP answers: JSON bodies and the JSON errors (`error`, `error_description`, `message`).

use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::data::DataError;
use crate::auth::AuthError;

/// The `{id}` path parameter, or a 400.
#[expect(
    clippy::result_large_err,
    reason = "the error is a ready HTTP response, built once per refused request"
)]
pub(super) fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, Response> {
    id.map(|Path(id)| id)
        .map_err(|e| bad_request(&format!("invalid path parameter: {e}")))
}

/// The JSON request body as `T`, or a 400 (413 if too large) naming the problem.
#[expect(
    clippy::result_large_err,
    reason = "the error is a ready HTTP response, built once per refused request"
)]
pub(super) fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Response> {
    let body = body.map_err(|e| error(e.status(), "invalid_request", &e.body_text()))?;
    if body.is_empty() {
        return Err(bad_request("a JSON request body is required"));
    }
    serde_json::from_slice(&body).map_err(|e| bad_request(&format!("invalid request body: {e}")))
}

pub(super) fn data_error(e: &DataError) -> Response {
    match e {
        DataError::Invalid(msg) => bad_request(msg),
        DataError::NotFound(msg) => error(StatusCode::NOT_FOUND, "not_found", msg),
        DataError::Conflict(msg) => error(StatusCode::CONFLICT, "conflict", msg),
    }
}

pub(super) fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// `{"error", "error_description", "message"}`: OAuth-style fields plus the `message` bridges surface.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({ "error": code, "error_description": message, "message": message }),
    )
}

/// `401 invalid_token` (or `503` when the keys are unreachable).
pub(super) fn auth_error(e: &AuthError) -> Response {
    match e {
        AuthError::Invalid(desc) => {
            let mut resp = error(StatusCode::UNAUTHORIZED, "invalid_token", desc);
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            resp
        }
        AuthError::Unavailable(desc) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            desc,
        ),
    }
}

/// `403 insufficient_scope` naming the scope the operation needs.
pub(super) fn insufficient_scope(operation: &str, scope: &str) -> Response {
    let message = format!("operation {operation} requires scope {scope}");
    let mut resp = json_response(
        StatusCode::FORBIDDEN,
        &json!({
            "error": "insufficient_scope",
            "error_description": message,
            "message": message,
            "scope": scope,
        }),
    );
    let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

pub(super) fn json_value<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_value(v) {
        Ok(v) => json_response(status, &v),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &format!("cannot serialize the response: {e}"),
        ),
    }
}

pub(super) fn json_response(status: StatusCode, v: &Value) -> Response {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
