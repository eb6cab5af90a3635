//! The console's state from audit records, without sockets: denies apart from errors,
//! topology, filters, chain links, and bounds on everything kept.

use super::*;
use dataplane::audit::DelegationRecord;

fn rec(t: i64, client: &str, tool: &str, d: Outcome) -> Record {
    Record {
        time_ms: t,
        request_id: "r".into(),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        span_id: None,
        parent_span_id: None,
        session: None,
        iss: Some("https://idp.example".into()),
        sub: Some("alice".into()),
        client_id: Some(client.into()),
        jti_hash: None,
        sender_constrained: false,
        jkt: None,
        scopes: vec!["mcp:tools".into()],
        groups: vec![],
        shadow: None,
        actors: vec![],
        method: "tools/call".into(),
        upstream: Some("ledger".into()),
        tool: Some(tool.into()),
        upstream_tool: None,
        decision: d,
        policy_ids: vec![],
        reason: None,
        blame: None,
        delegation: (d == Outcome::Allow).then(|| DelegationRecord {
            jti: Some("j".into()),
            aud: "https://ledger/".into(),
            scope: "ledger:read".into(),
            exp: 0,
            cached: false,
        }),
        upstream_status: (d == Outcome::Allow).then_some(200),
        latency_ms: 2.0,
        upstream_ms: (d == Outcome::Allow).then_some(1.5),
        protocol: None,
        upstream_protocol: None,
    }
}

fn link(seq: u64, prev: &str, hash: &str) -> Link {
    Link {
        seq,
        prev: prev.into(),
        hash: hash.into(),
        at: None,
    }
}

fn feed(c: &Console, recs: &[Record]) {
    for (i, r) in recs.iter().enumerate() {
        let i = i as u64;
        c.observe(
            r.clone(),
            &link(i + 1, &format!("h{i}"), &format!("h{}", i + 1)),
        );
    }
}

fn health() -> Health {
    Health {
        issuers: vec![("https://idp.example".into(), true)],
        token_service: Some("embedded STS".into()),
        audit_ok: true,
        audit_queue: 0,
        shards_ok: true,
        generation: 1,
    }
}

#[test]
fn ten_denies_are_ten_denies_not_errors() {
    let c = Console::new(vec!["ledger".into()]);
    let t = 1_000_000;
    let mut recs: Vec<Record> = (0..10)
        .map(|i| rec(t + i, "cli", "pii", Outcome::Deny))
        .collect();
    recs.push(rec(t + 20, "cli", "list", Outcome::Allow));
    recs.push(rec(t + 30, "cli", "list", Outcome::UpstreamError));
    feed(&c, &recs);
    let s = c.state(t + 500, 0, &health());
    assert_eq!(
        s["last_minute"],
        serde_json::json!({"allow": 1, "deny": 10, "error": 1})
    );
    let edges = s["edges"].as_array().unwrap();
    let cli = edges.iter().find(|e| e["from"] == "client:cli").unwrap();
    assert_eq!(
        (cli["deny"].as_u64(), cli["error"].as_u64()),
        (Some(10), Some(1))
    );
    assert!((cli["rate"].as_f64().unwrap() - 12.0 / 60.0).abs() < 1e-9);
    let up = edges.iter().find(|e| e["to"] == "upstream:ledger").unwrap();
    assert_eq!(up["allow"], 1);
    let tools = s["tools"].as_array().unwrap();
    let pii = tools.iter().find(|t| t["tool"] == "pii").unwrap();
    assert_eq!(
        (pii["denies"].as_u64(), pii["errors"].as_u64()),
        (Some(10), Some(0))
    );
    assert_eq!(pii["last_caller"], "alice");
    // Nodes: the client, Warden, the upstream (degraded: one error), the IdP, the STS, the sink.
    let kinds: Vec<&str> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "gateway",
            "client",
            "upstream",
            "idp",
            "token_service",
            "audit"
        ]
    );
    let ledger = &s["nodes"][2];
    assert_eq!(
        ledger["health"], "down",
        "last attempt did not reach it: {ledger}"
    );
    assert_eq!(s["nodes"][4]["health"], "ok", "no failed exchange");
    // A failed token exchange after the last success: the token service is down, then
    // degraded once a token is obtained again, then ok a minute later.
    let mut failed = rec(t + 40, "cli", "list", Outcome::ExchangeFailed);
    failed.delegation = None;
    c.observe(failed, &link(13, "h12", "h13"));
    assert_eq!(c.state(t + 500, 0, &health())["nodes"][4]["health"], "down");
    c.observe(
        rec(t + 50, "cli", "list", Outcome::Allow),
        &link(14, "h13", "h14"),
    );
    assert_eq!(
        c.state(t + 500, 0, &health())["nodes"][4]["health"],
        "degraded"
    );
    assert_eq!(
        c.state(t + 61_000, 0, &health())["nodes"][4]["health"],
        "ok"
    );
}

#[test]
fn filters_and_detail_with_its_chain_link() {
    let c = Console::new(vec!["ledger".into()]);
    let mut recs = vec![
        rec(1000, "cli", "list", Outcome::Allow),
        rec(2000, "agent", "pii", Outcome::Deny),
        rec(3000, "cli", "pii", Outcome::UpstreamError),
    ];
    recs[1].sub = Some("bob".into());
    feed(&c, &recs);
    let all = c.decisions(&Filter::default());
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 2, 1]);
    let f = |f: Filter| c.decisions(&f).iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(
        f(Filter {
            user: Some("bob".into()),
            ..Default::default()
        }),
        [2]
    );
    assert_eq!(
        f(Filter {
            client: Some("cli".into()),
            ..Default::default()
        }),
        [3, 1]
    );
    assert_eq!(
        f(Filter {
            tool: Some("pii".into()),
            ..Default::default()
        }),
        [3, 2]
    );
    assert_eq!(
        f(Filter {
            decision: Some("error".into()),
            ..Default::default()
        }),
        [3]
    );
    assert_eq!(
        f(Filter {
            decision: Some("deny".into()),
            ..Default::default()
        }),
        [2]
    );
    assert_eq!(
        f(Filter {
            upstream: Some("other".into()),
            ..Default::default()
        }),
        Vec::<u64>::new()
    );
    assert_eq!(
        f(Filter {
            since_ms: Some(1500),
            until_ms: Some(2500),
            ..Default::default()
        }),
        [2]
    );
    let (r, l, linked) = c.decision(2).unwrap();
    assert_eq!(r.sub.as_deref(), Some("bob"));
    assert_eq!((l.seq, l.prev.as_str()), (2, "h1"));
    assert_eq!(linked, Some(true), "record 1 hashes to record 2's prev");
    assert_eq!(c.decision(1).unwrap().2, None, "nothing older held");
    assert!(c.decision(99).is_none());
    // A broken link is reported as such.
    c.observe(recs[0].clone(), &link(4, "not-h3", "h4"));
    assert_eq!(c.decision(4).unwrap().2, Some(false));
}

#[test]
fn memory_is_bounded_at_any_rate_and_any_number_of_clients() {
    let c = Console::new(vec!["ledger".into()]);
    for i in 0..5_000i64 {
        let r = rec(
            i,
            &format!("client-{i}"),
            &format!("tool-{i}"),
            Outcome::Allow,
        );
        c.observe(r, &link(i as u64 + 1, "p", "h"));
    }
    let g = c.inner.read().unwrap();
    assert_eq!(g.recent.len(), RECENT);
    assert_eq!(
        g.clients.len(),
        MAX_CLIENTS + 1,
        "64 named, then one (other)"
    );
    assert_eq!(g.tool_count, MAX_TOOLS + 1);
    assert_eq!(
        g.tools.values().map(HashMap::len).sum::<usize>(),
        MAX_TOOLS + 1,
        "{MAX_TOOLS} named, then one (other)"
    );
    assert_eq!(
        g.upstreams.len(),
        2,
        "configured upstreams plus (not routed)"
    );
}
