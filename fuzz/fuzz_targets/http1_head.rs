//! `http1::parse::parse_head` (with `decide_framing`) on arbitrary bytes.
//!
//! Differential: a head that is accepted must reframe identically. It is re-serialised
//! (method token as sent, target, headers as parsed) and parsed again, which must give the
//! same method, target, headers, framing, keep-alive and expect decisions; and every proper
//! prefix of an accepted head must ask for more bytes, as the connection loop relies on.
#![no_main]

use dataplane::http1::parse::parse_head;
use libfuzzer_sys::fuzz_target;

const MAX: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, used))) = parse_head(data, MAX) else {
        return;
    };
    assert!(used <= data.len() && used <= MAX);
    // The method token as sent: httparse skips empty lines before the request line.
    let start = data
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .expect("an accepted head has a request line");
    let sp = data[start..]
        .iter()
        .position(|b| *b == b' ')
        .expect("an accepted head has a space after the method");
    let method = &data[start..start + sp];

    let mut again = Vec::with_capacity(used);
    again.extend_from_slice(method);
    again.push(b' ');
    again.extend_from_slice(head.path.as_bytes());
    if let Some(q) = &head.query {
        again.push(b'?');
        again.extend_from_slice(q.as_bytes());
    }
    again.extend_from_slice(format!(" HTTP/1.{}\r\n", head.minor_version).as_bytes());
    for (n, v) in &head.headers {
        again.extend_from_slice(n.as_bytes());
        again.extend_from_slice(b": ");
        again.extend_from_slice(v);
        again.extend_from_slice(b"\r\n");
    }
    again.extend_from_slice(b"\r\n");
    let (h2, used2) = match parse_head(&again, MAX + 4 * head.headers.len() + 16) {
        Ok(Some(x)) => x,
        other => panic!("re-serialised head not accepted: {other:?}\n{again:?}"),
    };
    assert_eq!(used2, again.len());
    assert_eq!(h2.method, head.method);
    assert_eq!(h2.path, head.path);
    assert_eq!(h2.query, head.query);
    assert_eq!(h2.minor_version, head.minor_version);
    assert_eq!(h2.headers, head.headers);
    assert_eq!(h2.framing, head.framing);
    assert_eq!(h2.keep_alive, head.keep_alive);
    assert_eq!(h2.expect_continue, head.expect_continue);

    // Incremental reads: a proper prefix of an accepted head is never accepted or refused.
    for k in [used - 1, used / 2] {
        if k > start {
            assert!(
                matches!(parse_head(&data[..k], MAX), Ok(None)),
                "prefix of {k} of an accepted {used}-byte head was decided"
            );
        }
    }
});
