//! The serde_json path without its unconditional nesting scan decides every body as the
//! previous order did (scan first, then the envelope, then the duplicate walk): the same
//! `Message` or the same refusal, at every depth and in every member.

use super::{Invalid, MAX_DEPTH, Message, has_duplicate_members, nesting_exceeds};

/// The checks of the serde_json path in their previous order (the id and kind checks after
/// them are unchanged, so the envelope is compared up to there).
fn before(body: &[u8]) -> Result<String, Invalid> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(Invalid::Batch);
    }
    let text = std::str::from_utf8(body).map_err(|_| Invalid::Parse)?;
    if nesting_exceeds(body, MAX_DEPTH) {
        return Err(Invalid::Parse);
    }
    let m: Message<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            Invalid::Envelope
        } else {
            Invalid::Parse
        }
    })?;
    if m.jsonrpc != Some("2.0") || has_duplicate_members(text) {
        return Err(Invalid::Envelope);
    }
    Ok(format!("{m:?}"))
}

/// The current path, all of it.
fn now(body: &[u8]) -> Result<String, Invalid> {
    Message::parse_with(body, false).map(|m| format!("{m:?}"))
}

fn agree(body: &str) {
    let (b, n) = (before(body.as_bytes()), now(body.as_bytes()));
    match (&b, &n) {
        (Ok(x), Ok(y)) => assert_eq!(x, y, "{body}"),
        // The envelope passed before; the id/kind checks refuse it now (the same checks ran
        // after the envelope before as well).
        (Ok(_), Err(Invalid::Envelope)) => {}
        _ => assert_eq!(b, n, "{}", &body[..body.len().min(300)]),
    }
}

fn nest(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn every_depth_in_every_member_decides_as_before() {
    for depth in (0..=135).chain([200, 1_000, 10_000]) {
        let v = nest(depth, "1");
        let obj = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        for inner in [&v, &obj] {
            for body in [
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{inner}}}"#),
                format!(r#"{{"jsonrpc":"2.0","method":"n","params":{inner}}}"#),
                format!(r#"{{"jsonrpc":"2.0","id":1,"result":{inner}}}"#),
                format!(r#"{{"jsonrpc":"2.0","id":1,"error":{inner}}}"#),
                format!(r#"{{"jsonrpc":"2.0","id":1,"result":null,"params":{inner}}}"#),
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","other":{inner}}}"#),
                format!(r#"{{"jsonrpc":"2.0","id":{inner},"method":"x"}}"#),
                format!(r#"{{"jsonrpc":"1.0","id":1,"method":"x","params":{inner}}}"#),
                format!(r#"{{"id":1,"method":"x","params":{inner}}}"#),
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{inner},"params":1}}"#),
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","a":1,"a":2,"params":{inner}}}"#),
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"k":1,"k":{inner}}}}}"#
                ),
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{inner}"#),
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{inner}}} trailing"#),
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{inner},}}"#),
                format!(r#"{{"jsonrpc":2,"id":1,"method":"x","params":{inner}}}"#),
            ] {
                agree(&body);
            }
        }
    }
}

#[test]
fn strings_escapes_and_odd_bodies_decide_as_before() {
    let brackets = "[{".repeat(300);
    for body in [
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"s":"{brackets}"}}}}"#),
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"s":"\"{brackets}\\"}}}}"#),
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a\u0062":1,"ab":2}}"#.to_owned(),
        r#"{"jsonrpc":"2.0","id":"a","result":{"k":1,"k":2}}"#.to_owned(),
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":1e400}}"#.to_owned(),
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":"\ud800"}"#.to_owned(),
        r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#.to_owned(),
        r#"{"jsonrpc":"2.0","id":null,"result":{}}"#.to_owned(),
        r#"{"jsonrpc":"2.0","method":"x","result":{}}"#.to_owned(),
        "{}".to_owned(),
        "".to_owned(),
        "  [1]".to_owned(),
        "null".to_owned(),
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"".to_owned(),
    ] {
        agree(&body);
    }
}
