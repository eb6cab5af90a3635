use super::*;

fn head(raw: &str) -> Result<Option<(Head, usize)>, HttpError> {
    parse_head(raw.as_bytes(), 16 * 1024)
}

fn status(raw: &str) -> u16 {
    match head(raw) {
        Err(e) => e.status,
        Ok(Some(_)) => 200,
        Ok(None) => 0,
    }
}

#[test]
fn parses_a_simple_post() {
    let (h, n) = head("POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap()
        .unwrap();
    assert_eq!(h.method, Method::Post);
    assert_eq!(h.path, "/mcp");
    assert_eq!(h.query.as_deref(), Some("x=1"));
    assert_eq!(h.framing, BodyFraming::Length(5));
    assert!(h.keep_alive);
    assert_eq!(
        n,
        "POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n".len()
    );
}

#[test]
fn partial_head_needs_more() {
    assert!(head("POST /mcp HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
}

#[test]
fn ambiguous_framing_is_refused() {
    // CL + TE (request smuggling classic).
    assert_eq!(
        status(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        400
    );
    // Two Content-Length headers, even equal ones.
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"),
        400
    );
    // Comma-joined or signed or non-digit lengths.
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n"),
        400
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n"),
        400
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n"),
        400
    );
    // Transfer codings other than a lone chunked: chunked not last → the length is unknown
    // (RFC 9112 §6.3: 400); chunked last after an unsupported coding → 501 (§6.1).
    for te in [
        "chunked, identity",
        "identity",
        "gzip",
        "chunked, gzip",
        "",
        ",",
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_eq!(status(&raw), 400, "{te:?}");
    }
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        501
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n"),
        200
    );
    assert_eq!(
        status(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        400
    );
    assert_eq!(
        status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400
    );
    // Whitespace before the colon and obs-fold.
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\n"),
        400
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
        400
    );
    // Missing or repeated Host.
    assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    // Absolute-form and garbage targets.
    assert_eq!(status("GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
}

#[test]
fn header_limits() {
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(status(&big), 431);
    let partial_big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "a".repeat(20_000));
    assert_eq!(status(&partial_big), 431);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(status(&many), 431);
}

#[test]
fn connection_semantics() {
    let (h, _) = head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!h.keep_alive);
    let (h, _) = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
    assert!(!h.keep_alive);
    let (h, _) = head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(h.keep_alive);
}

fn dechunk(input: &str, max: usize) -> Result<(Vec<u8>, bool, usize), HttpError> {
    let mut d = ChunkedDecoder::default();
    let mut out = Vec::new();
    let used = d.decode(input.as_bytes(), &mut out, max)?;
    Ok((out, d.is_done(), used))
}

#[test]
fn chunked_bodies() {
    let (out, done, used) = dechunk(
        "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT",
        100,
    )
    .unwrap();
    assert_eq!(out, b"hello world");
    assert!(done);
    assert_eq!(
        used,
        "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n".len()
    );
    // Incremental: a split in the middle of a size line.
    let mut d = ChunkedDecoder::default();
    let mut out = Vec::new();
    let used = d.decode(b"5\r\nhel", &mut out, 100).unwrap();
    assert_eq!(used, 6);
    let used2 = d.decode(b"lo\r\n0\r\n\r\n", &mut out, 100).unwrap();
    assert_eq!(used2, 9);
    assert!(d.is_done());
    assert_eq!(out, b"hello");
}

#[test]
fn chunked_errors() {
    assert_eq!(
        dechunk("5\nhello\r\n0\r\n\r\n", 100).unwrap_err().status,
        400
    );
    assert_eq!(dechunk("zz\r\n", 100).unwrap_err().status, 400);
    assert_eq!(
        dechunk("5\r\nhelloXX0\r\n\r\n", 100).unwrap_err().status,
        400
    );
    assert_eq!(
        dechunk("ffffffffffffffffff\r\n", 100).unwrap_err().status,
        400
    );
    assert_eq!(dechunk("65\r\n", 100).unwrap_err().status, 413);
}
