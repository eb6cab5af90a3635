//! Engine semantics: forbid beats permit, errors and unknowns deny, refused policies, translation, caching.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::*;
use warden_policy::{
    Action, DEFAULT_DENY_REASON, DecisionCache, DefaultDecision, EVALUATION_ERROR_REASON,
    PolicyConfig, PolicyFile, RequestContext, ToolRule, UNKNOWN_METHOD_REASON, compile, translate,
};

fn file(name: &str, text: &str) -> PolicyFile {
    PolicyFile {
        name: name.into(),
        text: text.into(),
    }
}

#[test]
fn deny_by_default() {
    let engine = compile(&PolicyConfig::default(), &[], &ledger_tools(), 1).unwrap();
    let d = call(&engine, &sarah(), "enterprise_ledger_listAccounts");
    assert!(!d.allow);
    assert_eq!(d.reason.as_deref(), Some(DEFAULT_DENY_REASON));
    assert!(d.policy_ids.is_empty());
}

#[test]
fn forbid_beats_permit() {
    let text = r#"
@id("everyone") permit (principal, action, resource);
@id("no-pii") @reason("No PII today.")
forbid (principal, action == Action::"tools/call", resource in Tag::"pii");
"#;
    let engine = compile(
        &PolicyConfig::default(),
        &[file("p.cedar", text)],
        &ledger_tools(),
        1,
    )
    .unwrap();
    let d = call(&engine, &sarah(), "enterprise_ledger_getCustomerPII");
    assert!(!d.allow);
    assert_eq!(d.reason.as_deref(), Some("No PII today."));
    assert_eq!(d.policy_ids, vec!["no-pii".to_string()]);
    let d = call(&engine, &sarah(), "enterprise_ledger_listAccounts");
    assert!(d.allow);
    assert_eq!(d.policy_ids, vec!["everyone".to_string()]);
}

#[test]
fn evaluation_error_is_a_deny() {
    // Validates, but overflows at run time: Cedar would skip this forbid and allow; Warden denies.
    let text = r#"
@id("overflow") @reason("never seen")
forbid (principal, action == Action::"tools/call", resource == Tool::"enterprise_ledger_getAccount")
when { context.now + 9223372036854775807 > 0 };
"#;
    let cfg = PolicyConfig {
        default: DefaultDecision::Allow,
        ..PolicyConfig::default()
    };
    let engine = compile(&cfg, &[file("overflow.cedar", text)], &ledger_tools(), 1).unwrap();
    let d = call(&engine, &sarah(), "enterprise_ledger_getAccount");
    assert!(!d.allow);
    assert_eq!(d.reason.as_deref(), Some(EVALUATION_ERROR_REASON));
    assert_eq!(d.policy_ids, vec!["overflow".to_string()]);
    assert!(call(&engine, &sarah(), "enterprise_ledger_listAccounts").allow);
}

#[test]
fn unknown_tool_and_method_are_denied() {
    let cfg = PolicyConfig {
        default: DefaultDecision::Allow,
        ..PolicyConfig::default()
    };
    let engine = compile(&cfg, &[], &ledger_tools(), 1).unwrap();
    let p = engine.principal(&input(&sarah()));
    let d = engine.decide(
        &p,
        Action::CallTool,
        Some("enterprise_ledger_dropTables"),
        &ctx(None),
    );
    assert!(!d.allow);
    assert_eq!(d.reason.as_deref(), Some(DEFAULT_DENY_REASON));
    assert!(!engine.decide(&p, Action::CallTool, None, &ctx(None)).allow);
    // Byte-for-byte names: case and namespace matter.
    assert!(
        !engine
            .decide(&p, Action::CallTool, Some("listAccounts"), &ctx(None))
            .allow
    );
    assert!(
        !engine
            .decide(
                &p,
                Action::CallTool,
                Some("enterprise_ledger_listaccounts"),
                &ctx(None)
            )
            .allow
    );
    let d = engine.decide(
        &p,
        Action::Other("sampling/createMessage".into()),
        Some("enterprise_ledger_listAccounts"),
        &ctx(None),
    );
    assert!(!d.allow);
    assert_eq!(d.reason.as_deref(), Some(UNKNOWN_METHOD_REASON));
    // Known non-tool methods are decided per upstream by the same engine.
    assert!(
        engine
            .decide(
                &p,
                Action::ReadResource,
                Some("enterprise_ledger"),
                &ctx(None)
            )
            .allow
    );
    assert!(
        !engine
            .decide(&p, Action::GetPrompt, Some("nowhere"), &ctx(None))
            .allow
    );
    let mut cache = DecisionCache::new(16);
    assert!(
        !cache
            .decide(
                &engine,
                &p,
                Action::Other("x/y".into()),
                Some("enterprise_ledger_listAccounts"),
                &ctx(None)
            )
            .allow
    );
}

#[test]
fn syntax_error_is_refused_with_file_and_line() {
    let text = "// ok so far\n@id(\"a\")\npermit (principal, action, resource);\n\nforbid (principal, action resource);\n";
    let err = compile(
        &PolicyConfig::default(),
        &[file("policies/broken.cedar", text)],
        &ledger_tools(),
        1,
    )
    .unwrap_err();
    assert_eq!(err.file, "policies/broken.cedar");
    assert_eq!(err.line, Some(5), "{err}");
    assert!(!err.message.is_empty());
    assert!(
        err.to_string().starts_with("policies/broken.cedar:5: "),
        "{err}"
    );
}

#[test]
fn schema_violation_is_refused_with_file_and_line() {
    let text = "@id(\"fine\")\npermit (principal, action, resource);\n\n@id(\"bad\")\nforbid (principal, action == Action::\"tools/call\", resource)\nwhen { principal.department == \"finance\" };\n";
    let err = compile(
        &PolicyConfig::default(),
        &[demo_file(), file("policies/bad.cedar", text)],
        &ledger_tools(),
        1,
    )
    .unwrap_err();
    assert_eq!(err.file, "policies/bad.cedar");
    assert_eq!(err.line, Some(6), "{err}");
    assert!(err.message.contains("department"), "{err}");
    // An unknown action or entity type is refused too.
    let text = "permit (principal, action == Action::\"tools/delete\", resource);";
    let err = compile(
        &PolicyConfig::default(),
        &[file("x.cedar", text)],
        &ledger_tools(),
        1,
    )
    .unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("x.cedar", Some(1)), "{err}");
}

#[test]
fn contradictory_rules_and_duplicate_ids_are_refused() {
    let cfg = PolicyConfig {
        rules: vec![ToolRule {
            tools: vec!["a".into()],
            deny: true,
            require_scopes: vec!["x".into()],
            ..ToolRule::default()
        }],
        ..PolicyConfig::default()
    };
    let err = compile(&cfg, &[], &ledger_tools(), 1).unwrap_err();
    assert!(err.message.starts_with("policy.rules[0]:"), "{err}");
    let twice = "@id(\"same\") permit (principal, action, resource);\n@id(\"same\") permit (principal, action, resource);";
    let err = compile(
        &PolicyConfig::default(),
        &[file("d.cedar", twice)],
        &ledger_tools(),
        1,
    )
    .unwrap_err();
    assert!(err.message.contains("duplicate policy id"), "{err}");
}

const GOLDEN: &str = r#"// Generated by Warden from the `policy:` section of the configuration.
// Edit the configuration, not this text: it is regenerated at every load.

// default: deny. Nothing is allowed unless a permit below (or in a .cedar file) applies.

// rule 0: tools [enterprise_ledger_getCustomerPII]; require_scopes [pii:read]; allow_groups [compliance]; step_up
@id("rule-0:enterprise_ledger_getCustomerPII:permit")
permit (principal, action == Action::"tools/call", resource == Tool::"enterprise_ledger_getCustomerPII");
@id("rule-0:enterprise_ledger_getCustomerPII:scopes")
@reason("Access denied: PII access requires pii:read scope.")
@step_up("pii:read")
forbid (principal, action == Action::"tools/call", resource == Tool::"enterprise_ledger_getCustomerPII")
unless { principal.scopes.containsAll(["pii:read"]) };
@id("rule-0:enterprise_ledger_getCustomerPII:groups")
@reason("Access denied: PII access requires pii:read scope.")
forbid (principal, action == Action::"tools/call", resource == Tool::"enterprise_ledger_getCustomerPII")
unless { principal in Group::"compliance" };

// rule 1: upstream enterprise_ledger; tag "quoted"
@id("rule-1:upstream=enterprise_ledger:permit")
permit (principal, action == Action::"tools/call", resource in Upstream::"enterprise_ledger")
when { resource in Tag::"\"quoted\"" };

// rule 2: all tools; deny
@id("rule-2:all-tools:deny")
@reason("Access denied by policy.")
forbid (principal, action == Action::"tools/call", resource is Tool);

"#;

#[test]
fn translation_is_stable_and_validates() {
    let cfg = PolicyConfig {
        default: DefaultDecision::Deny,
        rules: vec![
            ToolRule {
                tools: vec!["enterprise_ledger_getCustomerPII".into()],
                require_scopes: vec!["pii:read".into()],
                allow_groups: vec!["compliance".into()],
                reason: Some(PII_DENIED.into()),
                step_up: true,
                ..ToolRule::default()
            },
            ToolRule {
                upstream: Some("enterprise_ledger".into()),
                tag: Some("\"quoted\"".into()),
                ..ToolRule::default()
            },
            ToolRule {
                deny: true,
                ..ToolRule::default()
            },
        ],
        files: vec![],
        ..PolicyConfig::default()
    };
    let text = translate(&cfg);
    assert_eq!(text, GOLDEN, "translation changed:\n{text}");
    assert_eq!(translate(&cfg), text);
    compile(&cfg, &[], &ledger_tools(), 1).unwrap();
    // The seed's config form validates too, with default allow.
    let allow = PolicyConfig {
        default: DefaultDecision::Allow,
        ..cfg
    };
    assert!(translate(&allow).contains("@id(\"default-allow\")"));
    compile(&allow, &[], &ledger_tools(), 1).unwrap();
}

const ARGS_POLICY: &str = r#"
@id("frozen-account") @reason("Account ACC-1003 is under investigation.")
forbid (principal, action == Action::"tools/call", resource == Tool::"enterprise_ledger_getAccount")
when { context has arguments && context.arguments has accountId && context.arguments.accountId == "ACC-1003" };
"#;

#[test]
fn decision_cache_hits_and_skips_context_readers() {
    let cfg = PolicyConfig {
        default: DefaultDecision::Allow,
        ..PolicyConfig::default()
    };
    let files = [demo_file(), file("args.cedar", ARGS_POLICY)];
    let engine = compile(&cfg, &files, &ledger_tools(), 1).unwrap();
    assert!(engine.context_sensitive("enterprise_ledger_getAccount"));
    assert!(!engine.context_sensitive("enterprise_ledger_getCustomerPII"));

    let mut cache = DecisionCache::new(100);
    let p = engine.principal(&input(&john()));
    let pii = Some("enterprise_ledger_getCustomerPII");
    let first = cache.decide(&engine, &p, Action::CallTool, pii, &ctx(None));
    assert_eq!(cache.len(), 1);
    let second = cache.decide(&engine, &p, Action::CallTool, pii, &ctx(None));
    assert_eq!(first, second);
    assert_eq!(first, engine.decide(&p, Action::CallTool, pii, &ctx(None)));
    assert_eq!(cache.len(), 1, "a hit adds nothing");
    // Another user never shares the entry.
    let s = engine.principal(&input(&sarah()));
    assert!(
        cache
            .decide(&engine, &s, Action::CallTool, pii, &ctx(None))
            .allow
    );
    assert!(
        !cache
            .decide(&engine, &p, Action::CallTool, pii, &ctx(None))
            .allow
    );
    assert_eq!(cache.len(), 2);

    // getAccount's policies read the arguments: decided every time, never cached.
    let frozen = raw(serde_json::json!({ "accountId": "ACC-1003" }));
    let other = raw(serde_json::json!({ "accountId": "ACC-1001" }));
    let acct = Some("enterprise_ledger_getAccount");
    let d = cache.decide(&engine, &p, Action::CallTool, acct, &ctx(Some(&frozen)));
    assert!(!d.allow);
    assert_eq!(
        d.reason.as_deref(),
        Some("Account ACC-1003 is under investigation.")
    );
    assert!(
        cache
            .decide(&engine, &p, Action::CallTool, acct, &ctx(Some(&other)))
            .allow
    );
    // An argument of the wrong type for the validated schema is an error (a deny), not an absent value.
    let wrong = raw(serde_json::json!({ "accountId": 1003 }));
    let d = cache.decide(&engine, &p, Action::CallTool, acct, &ctx(Some(&wrong)));
    assert_eq!(d.reason.as_deref(), Some(EVALUATION_ERROR_REASON));
    // Arguments no tool declares are dropped (no policy can name them).
    let extra = raw(serde_json::json!({ "accountId": "ACC-1001", "unknown": [1, 2] }));
    assert!(
        cache
            .decide(&engine, &p, Action::CallTool, acct, &ctx(Some(&extra)))
            .allow
    );
    // The tools/list filter (no arguments) shows the tool.
    assert!(
        cache
            .decide(&engine, &p, Action::CallTool, acct, &ctx(None))
            .allow
    );
    assert_eq!(cache.len(), 2);

    // A new generation empties the cache.
    let next = compile(&PolicyConfig::default(), &[], &ledger_tools(), 2).unwrap();
    let p2 = next.principal(&input(&sarah()));
    assert!(
        !cache
            .decide(&next, &p2, Action::CallTool, pii, &ctx(None))
            .allow
    );
    assert_eq!(cache.len(), 1);
}

#[test]
fn the_act_chain_is_a_principal_attribute_and_part_of_the_cache_key() {
    let text = r#"
@id("everyone") permit (principal, action, resource);
@id("no-untrusted-agent") @reason("This agent may not act for users.")
forbid (principal, action == Action::"tools/call", resource)
when { principal.actors.contains("agent-untrusted") };
"#;
    let engine = compile(
        &PolicyConfig::default(),
        &[file("p.cedar", text)],
        &ledger_tools(),
        1,
    )
    .unwrap();
    let u = sarah();
    let direct = input(&u);
    let via_ok = ["agent-ok".to_owned()];
    let via_bad = ["agent-ok".to_owned(), "agent-untrusted".to_owned()];
    let mut cache = DecisionCache::new(100);
    let decide = |cache: &mut DecisionCache, actors: &[String]| {
        let p = engine.principal(&warden_policy::PrincipalInput { actors, ..direct });
        cache.decide(
            &engine,
            &p,
            Action::CallTool,
            Some("enterprise_ledger_listAccounts"),
            &ctx(None),
        )
    };
    assert!(decide(&mut cache, &[]).allow);
    assert!(decide(&mut cache, &via_ok).allow);
    // Same user, same claims, a different chain: a different cache entry, and denied.
    let d = decide(&mut cache, &via_bad);
    assert!(!d.allow);
    assert_eq!(d.policy_ids, ["no-untrusted-agent"]);
    assert!(
        decide(&mut cache, &[]).allow,
        "the direct caller's entry is untouched"
    );
}

/// `context.item` names the resource or prompt a decision is about: one upstream's items
/// are decided apart, and the per-shard cache never answers one item with another's decision.
#[test]
fn items_are_decided_by_name_and_never_share_a_cached_decision() {
    let text = r#"
@id("items")
permit (principal, action in [Action::"prompts/get", Action::"resources/read"], resource == Upstream::"enterprise_ledger");
@id("no-secret")
@reason("Not this one.")
forbid (principal, action == Action::"prompts/get", resource)
when { context has item && context.item == "enterprise_ledger_secret" };
"#;
    let engine = compile(
        &PolicyConfig::default(),
        &[file("items.cedar", text)],
        &ledger_tools(),
        1,
    )
    .unwrap();
    let p = engine.principal(&input(&john()));
    let with = |item| RequestContext {
        item: Some(item),
        ..ctx(None)
    };
    let mut cache = DecisionCache::new(16);
    for _ in 0..2 {
        let mut get = |item| {
            cache.decide(
                &engine,
                &p,
                Action::GetPrompt,
                Some("enterprise_ledger"),
                &with(item),
            )
        };
        assert!(get("enterprise_ledger_greet").allow);
        let d = get("enterprise_ledger_secret");
        assert!(!d.allow);
        assert_eq!(d.reason.as_deref(), Some("Not this one."));
        assert_eq!(d.policy_ids, ["no-secret"]);
    }
    let read = engine.decide(
        &p,
        Action::ReadResource,
        Some("enterprise_ledger"),
        &with("enterprise_ledger_secret"),
    );
    assert!(read.allow, "the forbid names prompts/get only");
}
