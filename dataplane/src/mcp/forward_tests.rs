//! Tests of the forwarding step.
use super::*;
use crate::control::Subject;
use crate::http1::conn::Request;
use crate::mcp::vocab::Caller;
use crate::snapshot::UpstreamCredential;

#[test]
fn debug_output_holds_no_secret() {
    // A token, a client secret, a cookie: none may appear in any `Debug` output, as text
    // or as the byte list a derived `Debug` of `Vec<u8>` prints.
    const TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.c2VjcmV0LXBheWxvYWQ.c2ln";
    const COOKIE: &str = "sid=c2Vzc2lvbi1jb29raWU";
    let token = || Arc::<str>::from(TOKEN);
    let caller = Caller {
        claims: None,
        owner: [0; 32],
        token: Some(token().into()),
        next_nonce: None,
    };
    let outbound = Outbound {
        auth: Some(Secret::new(format!("Bearer {TOKEN}"))),
        auth_exp: None,
        traceparent: None,
    };
    let delegated = crate::control::Delegated {
        token: token().into(),
        jti: None,
        exp: 0,
        scope: String::new(),
    };
    let subject = Subject::User {
        sub: "alice".into(),
        email: None,
        act: None,
        subject_token: Some(token().into()),
    };
    let credential = UpstreamCredential::Bearer(TOKEN.to_owned().into());
    let raw = format!(
        "POST /mcp?access_token={TOKEN} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nCookie: {COOKIE}\r\nContent-Length: 0\r\n\r\n"
    );
    let (head, _) = crate::http1::parse::parse_head(raw.as_bytes(), 16384)
        .unwrap()
        .unwrap();
    let request = Request {
        head: head.clone(),
        body: Vec::new(),
    };
    let printed = [
        ("Caller", format!("{caller:?} {caller:#?}")),
        ("Outbound", format!("{outbound:?} {outbound:#?}")),
        ("Delegated", format!("{delegated:?} {delegated:#?}")),
        ("Subject", format!("{subject:?} {subject:#?}")),
        ("UpstreamCredential", format!("{credential:?}")),
        ("Head", format!("{head:?} {head:#?}")),
        ("Request", format!("{request:?} {request:#?}")),
    ];
    let bytes = |s: &str| {
        let b = format!("{:?}", &s.as_bytes()[..12]);
        b.trim_matches(['[', ']']).to_owned()
    };
    for (what, out) in &printed {
        for secret in ["c2VjcmV0LXBheWxvYWQ", "c2Vzc2lvbi1jb29raWU"] {
            assert!(!out.contains(secret), "{what} prints a secret: {out}");
            assert!(
                !out.contains(&bytes(secret)),
                "{what} prints its bytes: {out}"
            );
        }
    }
    // What is not secret still shows.
    assert!(
        printed[5].1.contains(r#"("host", "a")"#),
        "{}",
        printed[5].1
    );
}
