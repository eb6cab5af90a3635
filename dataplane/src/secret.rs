//! `Secret<T>`: a token, secret or credential whose `Debug` and `Display` print `***`.
//!
//! A leaf module (it uses nothing else of the crate), so the control plane wraps its secrets
//! in the same type. The `secrecy` crate was considered: its `SecretBox` boxes the value and
//! requires `T: Zeroize`, which rules out the shared `Arc<str>` tokens cloned on the request
//! path (a shared buffer cannot be zeroed by one owner) and adds an allocation per clone.
//! Warden's need is narrower — keep secrets out of `Debug` output and log lines — so this
//! small type does only that; reading the value is always an explicit `expose()`.

use std::fmt;

/// A value that must never be printed. `Clone` when `T` is (cheap for `Arc<str>`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The value itself: every use is a visible, reviewable call.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Secret<T> {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Header fields that carry credentials: their values are printed as a [`Secret`].
pub fn is_credential_header(lower_case_name: &str) -> bool {
    matches!(
        lower_case_name,
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed_but_exposed_on_request() {
        let s = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{s:?} {s} {s:#?}"), "Secret(***) *** Secret(***)");
        assert_eq!(s.expose(), "hunter2");
        assert!(is_credential_header("cookie") && !is_credential_header("accept"));
    }
}
