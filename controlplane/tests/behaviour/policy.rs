//! Policy: deny by default, forbid beats permit, a hidden tool is an unknown tool, denials
//! as `isError` text, step-up (moved from `tests/proxy.rs`).

use serde_json::{Value, json};

use crate::env::{AUD, Env, listed_tools};

#[test]
fn policy_step_up_and_deny_by_default() {
    let env = Env::start_edited(1, Default::default(), "", |y| {
        y.replace(
        "policy:\n  default: allow\n",
        "policy:\n  default: deny\n  rules:\n    - tools: [up0_echo]\n    - tools: [up0_whoami]\n      require_scopes: [admin:read]\n      step_up: true\n",
    )
    });
    let tok = env.token("alice");
    let sid = env.session(&tok);
    let r = env.post(
        Some(&tok),
        Some(&sid),
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
    );
    let v = r.json();
    let names = listed_tools(&v);
    assert_eq!(
        names,
        ["up0_echo"],
        "deny by default: only the permitted tool is listed"
    );
    // A tool with no permit is hidden: the same error as an unknown tool.
    let hidden = env.call(&tok, &sid, json!(2), "up0_slow", json!({}));
    let unknown = env.call(&tok, &sid, json!(2), "up0_nonexistent", json!({}));
    assert_eq!(hidden, unknown);
    assert_eq!(hidden["error"]["code"], -32602);
    // A missing scope the user could be granted: 403 step-up challenge with current + needed scopes.
    let r = env.post(Some(&tok), Some(&sid), &json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"up0_whoami","arguments":{}}}));
    assert_eq!(r.status, 403);
    let h = r.header("www-authenticate").unwrap().to_owned();
    assert!(h.starts_with("Bearer error=\"insufficient_scope\""), "{h}");
    assert!(h.contains("scope=\"mcp:tools admin:read\""), "{h}");
    assert!(h.contains("resource_metadata=\""), "{h}");
    // With the scope, the call goes through.
    let tok2 = env
        .issuer
        .mint(&env.issuer.claims("alice", AUD, "mcp:tools admin:read"));
    let sid2 = env.session(&tok2);
    let v = env.call(&tok2, &sid2, json!(4), "up0_whoami", json!({}));
    assert!(v["result"].is_object(), "{v}");
    assert_eq!(
        env.upstreams[0].tool_calls().len(),
        1,
        "only the allowed call reached the upstream"
    );
}

#[test]
fn policy_rules_by_operator_tag() {
    let env = Env::start_edited(1, Default::default(), "", |y| {
        y
        .replace(
            "policy:\n  default: allow\n",
            "policy:\n  default: allow\n  rules:\n    - tag: sensitive\n      deny: true\n      reason: Sensitive tools are switched off.\n",
        )
        .replace("    timeout: 2s\n", "    timeout: 2s\n    tool_tags:\n      echo: [sensitive]\n")
    });
    let tok = env.token("alice");
    let sid = env.session(&tok);
    let v = env.call(&tok, &sid, json!(1), "up0_echo", json!({}));
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert_eq!(
        v["result"]["content"][0]["text"],
        "Sensitive tools are switched off."
    );
    let v = env.call(&tok, &sid, json!(2), "up0_whoami", json!({}));
    assert!(
        v["result"]["isError"].is_null() || v["result"]["isError"] == false,
        "{v}"
    );
    assert_eq!(env.upstreams[0].tool_calls().len(), 1);
}

#[test]
fn forbid_beats_permit() {
    // An explicit permit and a deny rule on the same tool: the deny wins, as isError text.
    let env = Env::start_edited(1, Default::default(), "", |y| {
        y.replace(
            "policy:\n  default: allow\n",
            "policy:\n  default: deny\n  rules:\n    - tools: [up0_echo, up0_whoami]\n    - tools: [up0_echo]\n      deny: true\n      reason: Echo is off today.\n",
        )
    });
    let tok = env.token("alice");
    let sid = env.session(&tok);
    let v = env.call(&tok, &sid, json!(1), "up0_echo", json!({}));
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert_eq!(v["result"]["content"][0]["text"], "Echo is off today.");
    let v = env.call(&tok, &sid, json!(2), "up0_whoami", json!({}));
    assert!(v["result"]["content"].is_array(), "{v}");
    assert_eq!(env.upstreams[0].tool_calls().len(), 1, "only whoami ran");
    // The decision is audited with the policies that made it.
    let denied: Vec<_> = env
        .take_audit()
        .into_iter()
        .filter(|r| r.tool.as_deref() == Some("up0_echo"))
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].decision.label(), "deny");
}

/// The example in `docs/testing.md`, verbatim: keep them in step.
#[test]
fn a_denied_tool_is_an_error_result() {
    use controlplane::testing::Harness;
    use std::rc::Rc;
    use testkit::{MemIssuer, MemUpstream};

    let issuer = Rc::new(MemIssuer::new("https://idp.test"));
    let crm = Rc::new(MemUpstream::default());
    let h = Harness::builder(
        "gateway:\n  listen: 127.0.0.1:0\n  public_url: http://127.0.0.1/mcp\n\
         issuers:\n  - issuer: https://idp.test\n\
         upstreams:\n  - name: crm\n    url: http://crm.test/mcp\n\
         policy:\n  default: allow\n  rules:\n    - tools: [crm_echo]\n      deny: true\n      reason: No.\n",
    )
    .issuer(&issuer)
    .upstream("crm", crm.clone())
    .build()
    .unwrap();
    let tok = issuer.mint(&issuer.claims("alice", "http://127.0.0.1/mcp", "mcp:tools"));
    let sid = h.session(&tok);
    let v = h.call(&tok, &sid, json!(1), "crm_echo", json!({}));
    assert_eq!(v["result"]["isError"], true);
    assert!(crm.tool_calls().is_empty());
}

/// `policy.shadow`: a stricter candidate is decided beside the live policy on every call; the
/// live decision is unchanged (the upstream runs every call), and each disagreement is on the
/// call's audit record with the shadow's decision and policies; agreeing calls carry nothing.
#[test]
fn a_shadow_policy_is_audited_where_it_disagrees_and_never_enforced() {
    let env = Env::start_edited(1, Default::default(), "", |y| {
        y.replace(
            "policy:\n  default: allow\n",
            "policy:\n  default: allow\n  shadow:\n    default: allow\n    rules:\n      - tools: [up0_echo]\n        require_scopes: [echo:use]\n        reason: Echo needs echo:use.\n",
        )
    });
    let tok = env.token("alice");
    let sid = env.session(&tok);
    env.take_audit();
    for i in 0..3 {
        let v = env.call(&tok, &sid, json!(i), "up0_echo", json!({"n": i}));
        assert!(v["result"]["isError"].is_null(), "live policy allows: {v}");
    }
    let v = env.call(&tok, &sid, json!(9), "up0_whoami", json!({}));
    assert!(v["result"].is_object(), "{v}");
    assert_eq!(env.upstreams[0].tool_calls().len(), 4, "every call ran");
    let records = env.take_audit();
    let calls: Vec<_> = records
        .iter()
        .filter(|r| r.method == "tools/call")
        .collect();
    assert_eq!(calls.len(), 4);
    for r in &calls {
        let shadow = r.shadow.as_ref().map(|s| serde_json::to_value(s).unwrap());
        match r.tool.as_deref() {
            Some("up0_echo") => {
                assert_eq!(r.decision, dataplane::audit::Outcome::Allow);
                assert_eq!(
                    shadow,
                    Some(
                        json!({"decision": "deny", "policy_ids": ["rule-0:up0_echo:scopes"], "reason": "Echo needs echo:use."})
                    ),
                );
            }
            _ => assert_eq!(shadow, None, "the shadow agrees on whoami"),
        }
    }
    // A token with the scope: both policies allow, nothing is recorded.
    let tok = env
        .issuer
        .mint(&env.issuer.claims("bob", AUD, "mcp:tools echo:use"));
    let sid = env.session(&tok);
    env.call(&tok, &sid, json!(10), "up0_echo", json!({}));
    let records = env.take_audit();
    assert!(records.iter().all(|r| r.shadow.is_none()));
}

/// The token's `act` chain reaches policy as `principal.actors`: the same user is denied
/// through an agent a policy names, and allowed directly or through another agent.
#[test]
fn policy_reads_the_act_chain() {
    let dir = tempfile::tempdir().unwrap();
    let cedar = dir.path().join("agents.cedar");
    std::fs::write(
        &cedar,
        "@id(\"no-agent-x\")\n@reason(\"agent-x may not act for users.\")\nforbid (principal, action == Action::\"tools/call\", resource) when { principal.actors.contains(\"agent-x\") };\n",
    )
    .unwrap();
    let env = Env::start_edited(1, Default::default(), "", |y| {
        y.replace(
            "policy:\n  default: allow\n",
            &format!(
                "policy:\n  default: allow\n  files: [{}]\n",
                cedar.display()
            ),
        )
    });
    let via = |chain: Option<Value>| {
        let mut c = env.issuer.claims("alice", AUD, "mcp:tools");
        if let Some(a) = chain {
            c["act"] = a;
        }
        let tok = env.issuer.mint(&c);
        let sid = env.session(&tok);
        env.call(&tok, &sid, json!(1), "up0_echo", json!({}))
    };
    let served = |v: &Value| v["result"].is_object() && v["result"]["isError"] != true;
    let direct = via(None);
    assert!(served(&direct), "{direct}");
    let other = via(Some(json!({"sub": "agent-y"})));
    assert!(served(&other), "{other}");
    let nested = via(Some(json!({"sub": "agent-y", "act": {"sub": "agent-x"}})));
    assert_eq!(nested["result"]["isError"], true, "{nested}");
    assert_eq!(
        nested["result"]["content"][0]["text"],
        "agent-x may not act for users."
    );
    assert_eq!(
        env.upstreams[0].tool_calls().len(),
        2,
        "the denied call never ran"
    );
}
