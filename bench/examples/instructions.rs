//! The instruction-count probe of issue 12: one hot `tools/call` through the real pipeline,
//! bytes in and bytes out (`controlplane::testing::Harness`: `http1::conn::serve`, token cache
//! hit, sealed session, Cedar decision, delegation cache hit, the upstream request on a pooled
//! in-memory connection, the answer re-framed), plus what the audit writer does per record
//! (`controlplane::audit::chain_into`: serialization and the SHA-256 chain), repeated `N` times.
//!
//! `bench/instructions.sh` runs it under `valgrind --tool=callgrind`, counting only the
//! measured loop (`--toggle-collect=*measured*`, so set-up and warm-up are not counted), divides
//! by `N` and compares the result with the committed ceiling in `bench/instructions-ceiling.txt`.
//!
//!   instructions <call|ping|call-rules-K|call-tools-K> <N>
//!
//! `call-rules-K`: the same call with K more policy rules (one per other tool); `call-tools-K`:
//! K more tools on the upstream, each with its rule. Their counts against `call` show whether a
//! call's cost grows with the policy or the catalog.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark fixture that reports on stdout"
)]

use std::hint::black_box;
use std::rc::Rc;

use dataplane::testing::exchange;
use testkit::MemIssuer;

#[path = "../fixtures/pipeline.rs"]
#[allow(
    dead_code,
    reason = "shared with the criterion benchmark, which uses the rest"
)]
mod fixtures;

/// The `warden` binary's allocator, so the count is the production one.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use fixtures::{
    AUD, ISSUER, USER, call_body, harness_with, ping_body, rules_plus, session_request,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "call".into());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    // `call`, `ping`, or a call with the policy or the catalog grown: `call-rules-N` (N more
    // rules, one per other tool) and `call-tools-N` (N more tools, each with its rule).
    let (extra_rules, extra_tools) = match what.split_once('-') {
        Some(("call", rest)) => match rest.split_once('-') {
            Some(("rules", k)) => (k.parse().expect("call-rules-N"), 0),
            Some(("tools", k)) => {
                let k: usize = k.parse().expect("call-tools-N");
                (k, k)
            }
            _ => panic!("unknown probe {what:?}"),
        },
        _ => (0, 0),
    };
    let what = if what.starts_with("call") {
        "call".to_owned()
    } else {
        what
    };
    let issuer = Rc::new(MemIssuer::new(ISSUER));
    let h = harness_with(&issuer, &rules_plus(extra_rules), extra_tools);
    let tok = issuer.mint(&issuer.claims(USER, AUD, "mcp:tools"));
    let sid = h.session(&tok);
    let body = match what.as_str() {
        "call" => call_body(),
        "ping" => ping_body(),
        other => panic!("unknown probe {other:?}: call or ping"),
    };
    let raw = session_request(&h, &sid, &tok, &body);
    let shard = h.shard();
    let needle = if what == "call" {
        "ACC-1001"
    } else {
        "\"result\":{}"
    };
    // Warm-up: the first call mints the delegation token and opens the upstream connection.
    for _ in 0..3 {
        let out = String::from_utf8(h.block_on(exchange(&shard, &raw))).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200") && out.contains(needle),
            "{out}"
        );
    }
    // The grown catalog and policy are live: the last extra tool is routed and its rule refuses
    // it (the user lacks its scope).
    if extra_tools > 0 {
        let last = extra_tools - 1;
        let body = serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": format!("enterprise_ledger_tool{last}"), "arguments": {}}});
        let req = session_request(&h, &sid, &tok, &body);
        let out = String::from_utf8(h.block_on(exchange(&shard, &req))).unwrap();
        assert!(
            out.contains(&format!("tool{last} needs scope:{last}")),
            "{out}"
        );
    }
    let _ = h.take_audit();
    let records = measured(&h, &shard, &raw, n);
    // A tool call has one audit record; a ping (answered by the gateway itself) none.
    let expected = if what == "call" { n } else { 0 };
    assert_eq!(records, expected, "audit records for {n} requests");
    println!("{what} x{n}: {records} audit records");
}

/// The measured part: `bench/instructions.sh` counts only while this runs
/// (`--collect-atstart=no --toggle-collect=*measured*`).
#[inline(never)]
fn measured(
    h: &controlplane::testing::Harness,
    shard: &Rc<dataplane::shard::Shard>,
    raw: &[u8],
    n: u64,
) -> u64 {
    let records = Rc::new(std::cell::Cell::new(0u64));
    h.audit_sink(chaining(records.clone()));
    h.block_on(async {
        for _ in 0..n {
            black_box(exchange(shard, black_box(raw)).await);
        }
    });
    records.get()
}

/// What the writer thread does per record: chain and serialize it (the harness then tells the
/// waiting answer it is written); counted in `records`. Not a closure of `measured`: callgrind's
/// `--toggle-collect=*measured*` would switch counting off inside it.
fn chaining(records: Rc<std::cell::Cell<u64>>) -> controlplane::testing::AuditSink {
    let (mut seq, mut prev) = (1u64, "0".repeat(64));
    let mut buf = Vec::with_capacity(64 * 1024);
    Box::new(move |r| {
        buf.clear();
        prev = controlplane::audit::chain_into(&mut buf, &r, seq, &prev).unwrap();
        black_box(&buf);
        seq += 1;
        records.set(records.get() + 1);
    })
}
