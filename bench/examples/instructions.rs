//! The instruction-count probe of issue 12: one hot `tools/call` through the real pipeline,
//! bytes in and bytes out (`controlplane::testing::Harness`: `http1::conn::serve`, token cache
//! hit, sealed session, Cedar decision, delegation cache hit, the upstream request on a pooled
//! in-memory connection, the answer re-framed), plus what the audit writer does per record
//! (`controlplane::audit::chain_into`: serialization and the SHA-256 chain), repeated `N` times.
//! `warden`'s Prometheus recorder is installed, so the `metrics` macros cost what they do there.
//!
//! `bench/instructions.sh` runs it under `valgrind --tool=callgrind`, counting only the
//! measured loop (`--toggle-collect=*measured*`, so set-up and warm-up are not counted), divides
//! by `N` and compares the result with the committed ceiling in `bench/instructions-ceiling.txt`.
//!
//!   instructions <call|ping|call-rules-K|call-tools-K|call-cold|call-shards-K|call-nowait|json-…> <N> [cpu]
//!
//! `call-rules-K`: the same call with K more policy rules (one per other tool); `call-tools-K`:
//! K more tools on the upstream, each with its rule. Their counts against `call` show whether a
//! call's cost grows with the policy or the catalog. `call-cold`: every call carries a token
//! never seen before (its own `client_id`, so the token cache, the policy's principal and
//! decision caches and the delegation cache all miss: signature and claims checks, a Cedar
//! decision and a mint run per call); the tokens are made before the measured part.
//! `call-shards-K`: the hot call spread round-robin over K shards of one process (sharing the
//! session table, the audit queue and the counters, each with its own caches and pool).
//! `call-nowait`: the hot call with `audit.answer_wait: 0s` (the answer does not wait for its
//! record's write); against `call` it is what the wait costs.
//! `json-<parser>-<call|result>-<KiB>`: one JSON-RPC body of that size (`<bytes>B` for small
//! ones; large `arguments`, or a large upstream `result`) parsed `N` times by one of the
//! parsers compared in `fixtures/json_bodies.rs` (`auto`, `serde`, `tape`, `envelope`,
//! `simdtape`, `simdvalue`: the serde_json vs simd-json record).
//! With `cpu`, the thread's CPU time over the measured part is printed too (run it without
//! valgrind, release build): the harness runs the shard, the mint and the audit chaining on
//! this one thread.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark fixture that reports on stdout"
)]

use std::hint::black_box;
use std::rc::Rc;

use dataplane::shard::Shard;
use dataplane::testing::exchange;
use testkit::MemIssuer;

#[path = "../fixtures/pipeline.rs"]
#[allow(
    dead_code,
    reason = "shared with the criterion benchmark, which uses the rest"
)]
mod fixtures;
#[path = "../fixtures/json_bodies.rs"]
mod json_bodies;

/// The `warden` binary's allocator, so the count is the production one.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use fixtures::{
    AUD, ISSUER, USER, call_body, cold_tokens, harness_with, ping_body, rules_plus, session_request,
};

/// What a probe name asks for.
struct Probe {
    /// `call` or `ping`.
    what: String,
    extra_rules: usize,
    extra_tools: usize,
    /// Every measured call with a token never seen before.
    cold: bool,
    /// Shards the calls are spread over.
    shards: u16,
    /// `audit.answer_wait: 0s`: answers do not wait for their records.
    nowait: bool,
}

fn probe(name: &str) -> Probe {
    let mut p = Probe {
        what: if name.starts_with("call") {
            "call"
        } else {
            name
        }
        .to_owned(),
        extra_rules: 0,
        extra_tools: 0,
        cold: false,
        shards: 1,
        nowait: false,
    };
    // `call`, `ping`, or a call with the policy or the catalog grown: `call-rules-N` (N more
    // rules, one per other tool) and `call-tools-N` (N more tools, each with its rule); a
    // cold call (`call-cold`); the call over K shards (`call-shards-K`).
    if let Some(("call", rest)) = name.split_once('-') {
        match rest.split_once('-') {
            Some(("rules", k)) => p.extra_rules = k.parse().expect("call-rules-N"),
            Some(("tools", k)) => {
                p.extra_tools = k.parse().expect("call-tools-N");
                p.extra_rules = p.extra_tools;
            }
            Some(("shards", k)) => p.shards = k.parse().expect("call-shards-K"),
            None if rest == "cold" => p.cold = true,
            None if rest == "nowait" => p.nowait = true,
            _ => panic!("unknown probe {name:?}"),
        }
    }
    p
}

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "call".into());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let cpu = args.next().as_deref() == Some("cpu");
    if let Some(rest) = name.strip_prefix("json-") {
        return json_probe(rest, n, cpu);
    }
    let p = probe(&name);
    let what = p.what.as_str();
    // `warden`'s Prometheus recorder, so a `counter!` costs what it costs there (without one,
    // the `metrics` macros go to a no-op recorder).
    controlplane::metrics::install();
    let issuer = Rc::new(MemIssuer::new(ISSUER));
    let mut config = rules_plus(p.extra_rules);
    if p.nowait {
        config.push_str("audit:\n  answer_wait: 0s\n");
    }
    // Minted before the harness: its fake clock starts when it is built and stands still, so a
    // token minted after a slow build (1,000 tools under valgrind) would be issued in its future.
    let tok = issuer.mint(&issuer.claims(USER, AUD, "mcp:tools"));
    let h = harness_with(&issuer, &config, p.extra_tools);
    let sid = h.session(&tok);
    let body = match what {
        "call" => call_body(),
        "ping" => ping_body(),
        other => panic!("unknown probe {other:?}: call or ping"),
    };
    let raw = session_request(&h, &sid, &tok, &body);
    let shards: Vec<Rc<Shard>> = (0..p.shards).map(|i| h.shard_on(i)).collect();
    let shard = h.shard();
    let needle = if what == "call" {
        "ACC-1001"
    } else {
        "\"result\":{}"
    };
    // Warm-up: the first call mints the delegation token and opens the upstream session and
    // connection (on every shard: each has its own caches and pool).
    for s in &shards {
        for _ in 0..3 {
            let out = String::from_utf8(h.block_on(exchange(s, &raw))).unwrap();
            assert!(
                out.starts_with("HTTP/1.1 200") && out.contains(needle),
                "{out}"
            );
        }
    }
    // The grown catalog and policy are live: the last extra tool is routed and its rule refuses
    // it (the user lacks its scope).
    if p.extra_tools > 0 {
        let last = p.extra_tools - 1;
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
    // A cold call: the same session and call, each with its own never-seen token (made here,
    // outside the measured part).
    let raws: Vec<Vec<u8>> = if p.cold {
        cold_tokens(&issuer, n as usize)
            .iter()
            .map(|t| session_request(&h, &sid, t, &body))
            .collect()
    } else {
        vec![raw]
    };
    let (verified, minted) = (shard.cache.borrow().len(), shard.delegations.len());
    let cpu_before = thread_cpu_ns();
    let (records, fresh) = measured(&h, &shards, &raws, n);
    let cpu_ns = thread_cpu_ns() - cpu_before;
    // A tool call has one audit record; a ping (answered by the gateway itself) none.
    let expected = if what == "call" { n } else { 0 };
    assert_eq!(records, expected, "audit records for {n} requests");
    if p.cold {
        // Every cold call verified its token, minted a delegation token and recorded it so.
        assert_eq!(
            shard.cache.borrow().len() - verified,
            n as usize,
            "verified"
        );
        assert_eq!(shard.delegations.len() - minted, n as usize, "minted");
        assert_eq!(fresh, n, "records with a freshly minted token");
    } else {
        assert_eq!(fresh, 0, "a hot call takes its token from the cache");
    }
    println!("{name} x{n}: {records} audit records, {fresh} fresh delegation tokens");
    if cpu {
        println!(
            "cpu {name} {:.2} us per request (thread CPU time over {n} requests)",
            cpu_ns as f64 / n as f64 / 1000.0
        );
    }
}

/// This thread's CPU time so far, in ns: the first field of `/proc/thread-self/schedstat`
/// (the scheduler's `sum_exec_runtime`, what `CLOCK_THREAD_CPUTIME_ID` reads). The kernel
/// brings a running thread's figure up to date only when it is switched out (or at a tick),
/// so the thread yields first.
fn thread_cpu_ns() -> u64 {
    std::thread::yield_now();
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    s.split_whitespace().next().unwrap().parse().unwrap()
}

/// The measured part: `bench/instructions.sh` counts only while this runs
/// (`--collect-atstart=no --toggle-collect=*measured*`). `n` requests, taken round-robin from
/// `raws` and served round-robin by `shards`; audit records and how many carried a freshly
/// minted delegation token.
#[inline(never)]
fn measured(
    h: &controlplane::testing::Harness,
    shards: &[Rc<Shard>],
    raws: &[Vec<u8>],
    n: u64,
) -> (u64, u64) {
    let counts = Rc::new(std::cell::Cell::new((0u64, 0u64)));
    h.audit_sink(chaining(counts.clone()));
    h.block_on(async {
        let reqs = raws.iter().cycle().zip(shards.iter().cycle());
        for (raw, shard) in reqs.take(n as usize) {
            black_box(exchange(shard, black_box(raw)).await);
        }
    });
    counts.get()
}

/// What the writer thread does per record: chain and serialize it (the harness then tells the
/// waiting answer it is written); counted in `counts` (records, and those whose delegation
/// token was minted, not cached). Not a closure of `measured`: callgrind's
/// `--toggle-collect=*measured*` would switch counting off inside it.
fn chaining(counts: Rc<std::cell::Cell<(u64, u64)>>) -> controlplane::testing::AuditSink {
    let (mut seq, mut prev) = (1u64, "0".repeat(64));
    let mut buf = Vec::with_capacity(64 * 1024);
    Box::new(move |r| {
        buf.clear();
        prev = controlplane::audit::chain_into(&mut buf, &r, seq, &prev).unwrap();
        black_box(&buf);
        seq += 1;
        let fresh = u64::from(r.delegation.as_ref().is_some_and(|d| !d.cached));
        let (n, f) = counts.get();
        counts.set((n + 1, f + fresh));
    })
}

/// `json-<parser>-<call|result>-<KiB>`: see the module docs.
fn json_probe(spec: &str, n: u64, cpu: bool) {
    let mut parts = spec.split('-');
    let (Some(parser), Some(kind), Some(kib), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("json-<parser>-<call|result>-<KiB>, not json-{spec}");
    };
    let parser = json_bodies::Parser::of(parser)
        .expect("auto, serde, tape, envelope, simdtape or simdvalue");
    // `<KiB>`, or `<bytes>B` for the small sizes.
    let bytes = match kib.strip_suffix('B') {
        Some(b) => b.parse::<usize>().expect("bytes"),
        None => kib.parse::<usize>().expect("KiB") * 1024,
    };
    let body = match kind {
        "call" => json_bodies::call_of_size(bytes),
        "result" => json_bodies::result_of_size(bytes),
        other => panic!("call or result, not {other:?}"),
    };
    let mut scratch = json_bodies::Scratch::default();
    // Warm-up (and the check that this parser accepts the body): buffers grown, code paged in.
    assert!(json_bodies::parse(parser, &body, &mut scratch), "rejected");
    let cpu_before = thread_cpu_ns();
    let accepted = measured_json(parser, &body, &mut scratch, n);
    let cpu_ns = thread_cpu_ns() - cpu_before;
    assert_eq!(accepted, n);
    println!("json-{spec} x{n}: {} bytes", body.len());
    if cpu {
        println!(
            "cpu json-{spec} {:.3} us per parse (thread CPU time over {n} parses)",
            cpu_ns as f64 / n as f64 / 1000.0
        );
    }
}

/// The measured part of a `json-*` probe: `n` parses of `body`.
#[inline(never)]
fn measured_json(
    parser: json_bodies::Parser,
    body: &[u8],
    scratch: &mut json_bodies::Scratch,
    n: u64,
) -> u64 {
    (0..n)
        .map(|_| u64::from(json_bodies::parse(parser, black_box(body), scratch)))
        .sum()
}
