//! The simd-json checks of large bodies decide as the serde_json path does, on every kind of
//! body the data plane meets: the same `Message` or the same refusal.

use super::tape::{self, Checked};
use super::{Invalid, Message};

/// `body` with `"pad":"xxx…"` added as the first member of its outermost object, so it is
/// over the threshold.
fn large(body: &str) -> String {
    let pad = "x".repeat(tape::THRESHOLD);
    let rest = body.strip_prefix('{').expect("an object");
    let sep = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    format!(r#"{{"pad":"{pad}"{sep}{rest}"#)
}

/// What a parse gave, comparable across the two paths.
type Outcome = Result<[Option<String>; 6], Invalid>;

fn outcome(r: Result<Message<'_>, Invalid>) -> Outcome {
    r.map(|m| {
        [
            m.jsonrpc.map(str::to_owned),
            m.id.map(|v| v.get().to_owned()),
            m.method.clone(),
            m.params.map(|v| v.get().to_owned()),
            m.result.map(|v| v.get().to_owned()),
            m.error.map(|v| v.get().to_owned()),
        ]
    })
}

/// Both paths on `body`; the outcome, after checking they agree.
fn both(body: &[u8]) -> Outcome {
    let serde = outcome(Message::parse_with(body, false));
    let simd = outcome(Message::parse_with(body, true));
    assert_eq!(serde, simd, "{}", String::from_utf8_lossy(body));
    simd
}

/// A request whose containers nest `depth` deep, the envelope counted.
fn nested(depth: usize) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"a":{}1{}}}}}"#,
        "[".repeat(depth - 2),
        "]".repeat(depth - 2)
    )
}

#[test]
fn large_bodies_take_the_tape_and_parse_as_before() {
    let call = large(
        r#"{"jsonrpc":"2.0","id":"req-7","method":"tools/call","params":{"name":"t","arguments":{"docs":[{"a":1.5,"b":"\"é\\","c":[true,null,-3,18446744073709551615]}]}}}"#,
    );
    let answer =
        large(r#"{"jsonrpc":"2.0","id":12,"result":{"content":[{"type":"text","text":"ok"}]}}"#);
    for body in [&call, &answer] {
        assert_eq!(tape::check(body.as_bytes()), Checked::Clean, "{body}");
        let got = both(body.as_bytes()).expect("accepted");
        assert_eq!(got[0].as_deref(), Some("2.0"));
    }
    let got = both(call.as_bytes()).unwrap();
    assert_eq!(got[2].as_deref(), Some("tools/call"));
    assert!(got[3].as_deref().unwrap().contains(r#""name":"t""#));
    // Small bodies keep the serde_json path.
    assert!(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.len() < tape::THRESHOLD);
}

#[test]
fn repeated_names_are_refused_on_both_paths() {
    let bodies = [
        // In the arguments, deep down, in the envelope, after unescaping, past 16 members.
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":{"b":1,"b":2}}}}"#.to_owned(),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}"#.to_owned(),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\u0061me":"b"}}"#.to_owned(),
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{{}"k7":0}}}}"#,
            (0..40).map(|i| format!(r#""k{i}":{i},"#)).collect::<String>()
        ),
        r#"{"jsonrpc":"2.0","id":1,"result":{},"result":{}}"#.to_owned(),
    ];
    for b in bodies {
        let body = large(&b);
        assert_eq!(tape::check(body.as_bytes()), Checked::Duplicate, "{b}");
        assert_eq!(both(body.as_bytes()), Err(Invalid::Envelope), "{b}");
    }
}

#[test]
fn relayed_results_and_errors_are_not_walked_for_names() {
    for b in [
        r#"{"jsonrpc":"2.0","id":1,"result":{"a":1,"a":2}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","data":{"x":1,"x":2}}}"#,
    ] {
        let body = large(b);
        assert_eq!(tape::check(body.as_bytes()), Checked::Clean, "{b}");
        assert!(both(body.as_bytes()).is_ok(), "{b}");
    }
}

#[test]
fn nesting_limits_and_error_cases_agree() {
    // Near and past the limits the serde_json path decides (the tape pass is unsure).
    for depth in [99, 100, 127, 128, 129, 10_000] {
        let body = large(&nested(depth));
        assert_eq!(both(body.as_bytes()).is_ok(), depth < 128, "depth {depth}");
    }
    assert_eq!(tape::check(large(&nested(50)).as_bytes()), Checked::Clean);
    assert_eq!(tape::check(large(&nested(200)).as_bytes()), Checked::Unsure);
    // A repeated name early and a too-deep value later: refused for the depth, as before.
    let dup_then_deep = large(&format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"a":1,"a":2,"z":{}1{}}}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    ));
    assert_eq!(both(dup_then_deep.as_bytes()), Err(Invalid::Parse));
    let cases = [
        // Invalid JSON: a bracket closed by a brace, cut short, trailing bytes, a bad escape.
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[1,2}}"#,
            Invalid::Parse,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":1"#,
            Invalid::Parse,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"x"} {}"#,
            Invalid::Parse,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"\x"}}"#,
            Invalid::Parse,
        ),
        // Valid JSON serde_json cannot read into a string or a number: a lone surrogate
        // (which simd-json accepts) and a number beyond an f64, in the params.
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"\ud800"}}"#,
            Invalid::Envelope,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":1e400}}"#,
            Invalid::Envelope,
        ),
        // Envelope errors: the version, a method of the wrong type, a fractional id, both
        // method and result, no method and no id.
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            Invalid::Envelope,
        ),
        (r#"{"jsonrpc":"2.0","id":1,"method":5}"#, Invalid::Envelope),
        (
            r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#,
            Invalid::Envelope,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#,
            Invalid::Envelope,
        ),
        (r#"{"jsonrpc":"2.0","params":{}}"#, Invalid::Envelope),
    ];
    for (b, want) in cases {
        assert_eq!(both(large(b).as_bytes()), Err(want), "{b}");
    }
    assert_eq!(
        tape::check(large(cases[4].0).as_bytes()),
        Checked::Unsure,
        "a surrogate escape is left to serde_json"
    );
    // Accepted on both paths: a number serde_json holds only in a relayed result, a
    // surrogate pair.
    for b in [
        r#"{"jsonrpc":"2.0","id":1,"result":{"a":1e400}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"\ud83d\ude00"}}"#,
    ] {
        assert!(both(large(b).as_bytes()).is_ok(), "{b}");
    }
    // A batch and a body that is not UTF-8, large.
    let batch = format!("[{},{}]", large(&nested(3)), large(&nested(3)));
    assert_eq!(both(batch.as_bytes()), Err(Invalid::Batch));
    let mut bad = large(&nested(3)).into_bytes();
    bad[10] = 0xff;
    assert_eq!(both(&bad), Err(Invalid::Parse));
}
