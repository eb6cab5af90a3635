//! Criterion benches of policy decisions: cached vs uncached, the demo set, and 10 vs 1,000 tool rules.
#![allow(
    clippy::expect_used,
    reason = "a bench whose fixture does not compile has nothing to measure"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use warden_policy::{
    Action, DecisionCache, DefaultDecision, Engine, PolicyConfig, PolicyFile, PrincipalInput,
    RequestContext, ToolInfo, ToolRule, compile,
};

fn tools(n: usize) -> Vec<ToolInfo> {
    (0..n)
        .map(|i| ToolInfo {
            name: format!("up{}_tool{i}", i % 10),
            upstream: format!("up{}", i % 10),
            upstream_name: format!("tool{i}"),
            annotations: json!({ "readOnlyHint": true }),
            tags: vec![],
            input_schema: json!({ "type": "object", "properties": { "id": { "type": "string" } } }),
        })
        .collect()
}

/// `n` per-tool rules (one per tool, each requiring its own scope) under default allow.
fn rules_engine(n: usize) -> Engine {
    let ts = tools(n);
    let rules = ts
        .iter()
        .enumerate()
        .map(|(i, t)| ToolRule {
            tools: vec![t.name.clone()],
            require_scopes: vec![format!("scope:{i}")],
            ..ToolRule::default()
        })
        .collect();
    let cfg = PolicyConfig {
        default: DefaultDecision::Allow,
        rules,
        files: vec![],
        ..PolicyConfig::default()
    };
    compile(&cfg, &[], &ts, 1).expect("compiles")
}

fn demo_engine() -> Engine {
    let ledger: Vec<ToolInfo> = [
        "listAccounts",
        "getAccount",
        "getTransactions",
        "updateAccountStatus",
        "getCustomerPII",
        "getAuditLog",
    ]
    .iter()
    .map(|t| ToolInfo {
        name: format!("enterprise_ledger_{t}"),
        upstream: "enterprise_ledger".into(),
        upstream_name: (*t).into(),
        annotations: json!({}),
        tags: vec![],
        input_schema: json!({}),
    })
    .collect();
    let file = PolicyFile {
        name: "ledger.cedar".into(),
        text: include_str!("../demo/ledger.cedar").into(),
    };
    compile(&PolicyConfig::default(), &[file], &ledger, 1).expect("compiles")
}

fn bench(c: &mut Criterion) {
    let groups = vec!["employees".to_string(), "compliance".to_string()];
    let scopes: Vec<String> = ["openid", "profile", "email", "pii:read", "scope:0"]
        .map(String::from)
        .to_vec();
    let input = PrincipalInput {
        iss: "https://auth.warden.test",
        sub: "sarah.connor@orchestrator.lab",
        email: Some("sarah.connor@orchestrator.lab"),
        groups: &groups,
        scopes: &scopes,
        client_id: Some("mcp-client-cli"),
        actors: &[],
    };
    let ctx = RequestContext {
        session: Some("aGFzaA"),
        now_unix: 1_760_000_000,
        protocol_version: "2025-06-18",
        arguments: None,
        item: None,
    };

    let demo = demo_engine();
    let p = demo.principal(&input);
    c.bench_function("principal_build", |b| {
        b.iter(|| black_box(demo.principal(black_box(&input))))
    });
    c.bench_function("demo_uncached", |b| {
        b.iter(|| {
            black_box(demo.decide(
                &p,
                Action::CallTool,
                Some(black_box("enterprise_ledger_getCustomerPII")),
                &ctx,
            ))
        })
    });
    let mut cache = DecisionCache::new(10_000);
    c.bench_function("demo_cached", |b| {
        b.iter(|| {
            black_box(cache.decide(
                &demo,
                &p,
                Action::CallTool,
                Some(black_box("enterprise_ledger_getCustomerPII")),
                &ctx,
            ))
        })
    });

    for n in [10, 1000] {
        let engine = rules_engine(n);
        let p = engine.principal(&input);
        c.bench_function(&format!("rules_{n}_uncached"), |b| {
            b.iter(|| {
                black_box(engine.decide(&p, Action::CallTool, Some(black_box("up0_tool0")), &ctx))
            })
        });
        c.bench_function(&format!("rules_{n}_unsliced"), |b| {
            b.iter(|| {
                black_box(engine.decide_unsliced(
                    &p,
                    Action::CallTool,
                    Some(black_box("up0_tool0")),
                    &ctx,
                ))
            })
        });
        let mut cache = DecisionCache::new(10_000);
        c.bench_function(&format!("rules_{n}_cached"), |b| {
            b.iter(|| {
                black_box(cache.decide(
                    &engine,
                    &p,
                    Action::CallTool,
                    Some(black_box("up0_tool0")),
                    &ctx,
                ))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
