//! The seed's scenario: the demo's Cedar, the config-rule form and the Rego import agree for john and sarah.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::*;
use warden_policy::{Action, DefaultDecision, PolicyConfig, PolicyFile, compile, import_rego};

const SEED_REGO: &str = include_str!("data/enterprise-ledger-inbound-authz.rego");

/// The seed's expected outcome: (allowed, reason) for a user's scopes and a ledger tool.
fn seed_expectation(scopes: &[String], tool: &str) -> (bool, Option<&'static str>) {
    let has = |s: &str| scopes.iter().any(|x| x == s);
    match tool {
        "getCustomerPII" if !has("pii:read") => (false, Some(PII_DENIED)),
        "getAuditLog" if !has("audit:read") => (false, Some(AUDIT_DENIED)),
        _ => (true, None),
    }
}

fn check_seed(engine: &warden_policy::Engine) {
    for u in [john(), sarah()] {
        for t in LEDGER_TOOLS {
            let d = call(engine, &u, &format!("enterprise_ledger_{t}"));
            let (allow, reason) = seed_expectation(&u.scopes, t);
            assert_eq!(d.allow, allow, "{} {t}: {d:?}", u.sub);
            assert_eq!(d.reason.as_deref(), reason, "{} {t}", u.sub);
            assert!(
                !d.policy_ids.is_empty(),
                "{} {t}: every seed decision names its policy",
                u.sub
            );
            assert_eq!(d.step_up_scopes, None);
        }
    }
}

#[test]
fn demo_cedar_reproduces_the_seed() {
    let engine = compile(&PolicyConfig::default(), &[demo_file()], &ledger_tools(), 1).unwrap();
    check_seed(&engine);
    let d = call(&engine, &john(), "enterprise_ledger_getCustomerPII");
    assert_eq!(
        d.policy_ids,
        vec!["ledger:pii-requires-pii-read".to_string()]
    );
    let d = call(&engine, &sarah(), "enterprise_ledger_getCustomerPII");
    assert_eq!(d.policy_ids, vec!["ledger:default-allow".to_string()]);
}

/// The seed as configuration rules instead of a `.cedar` file.
pub fn seed_config() -> PolicyConfig {
    let yaml = r#"
default: allow
rules:
  - tools: [enterprise_ledger_getCustomerPII]
    require_scopes: ["pii:read"]
    reason: "Access denied: PII access requires pii:read scope."
  - tools: [enterprise_ledger_getAuditLog]
    require_scopes: ["audit:read"]
    reason: "Insufficient privileges: audit log access requires audit:read scope."
"#;
    serde_yaml_ng::from_str(yaml).unwrap()
}

#[test]
fn config_rules_reproduce_the_seed() {
    let cfg = seed_config();
    assert_eq!(cfg.default, DefaultDecision::Allow);
    let engine = compile(&cfg, &[], &ledger_tools(), 1).unwrap();
    check_seed(&engine);
}

#[test]
fn config_rejects_unknown_keys() {
    let err = serde_yaml_ng::from_str::<PolicyConfig>("default: allow\nrulez: []\n").unwrap_err();
    assert!(err.to_string().contains("rulez"), "{err}");
    let err =
        serde_yaml_ng::from_str::<PolicyConfig>("rules: [{tools: [a], require_scope: [x]}]\n")
            .unwrap_err();
    assert!(err.to_string().contains("require_scope"), "{err}");
}

#[test]
fn rego_import_of_the_seed_matches_the_demo() {
    let cedar = import_rego(SEED_REGO).unwrap();
    assert!(
        cedar.contains("SUBSTRING"),
        "the import must say the seed's contains() is a substring test:\n{cedar}"
    );
    let imported = PolicyFile {
        name: "imported.cedar".into(),
        text: cedar,
    };
    let from_rego = compile(&PolicyConfig::default(), &[imported], &ledger_tools(), 1).unwrap();
    let demo = compile(&PolicyConfig::default(), &[demo_file()], &ledger_tools(), 1).unwrap();
    check_seed(&from_rego);
    let extra = user("pat", &[], &["pii:readonly", "audit:read"]);
    for u in [john(), sarah(), extra] {
        for t in LEDGER_TOOLS {
            let name = format!("enterprise_ledger_{t}");
            let (a, b) = (call(&from_rego, &u, &name), call(&demo, &u, &name));
            assert_eq!((a.allow, &a.reason), (b.allow, &b.reason), "{} {t}", u.sub);
        }
    }
}

#[test]
fn rego_import_uses_exact_scope_membership() {
    let cedar = import_rego(SEED_REGO).unwrap();
    let engine = compile(
        &PolicyConfig::default(),
        &[PolicyFile {
            name: "i.cedar".into(),
            text: cedar,
        }],
        &ledger_tools(),
        1,
    )
    .unwrap();
    // In the seed, `pii:readonly` passes contains(scope, "pii:read"); in Warden it does not.
    let d = call(
        &engine,
        &user("pat", &[], &["pii:readonly"]),
        "enterprise_ledger_getCustomerPII",
    );
    assert!(!d.allow);
    assert_eq!(d.reason.as_deref(), Some(PII_DENIED));
}

#[test]
fn rego_import_refuses_unsupported_constructs() {
    let some = SEED_REGO.replace(
        "    input.request.mcp.tool.params.name == \"getAuditLog\"\n    not contains",
        "    some i\n    input.request.mcp.tool.params.name == \"getAuditLog\"\n    not contains",
    );
    let err = import_rego(&some).unwrap_err();
    assert!(
        err.starts_with("unsupported Rego construct: `some` iteration at line "),
        "{err}"
    );
    let line: usize = err.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(some.lines().nth(line - 1).unwrap().trim(), "some i");

    let with = SEED_REGO.replace(
        "not contains(jwt_payload.scope, \"audit:read\")",
        "input.x == 1 with input as {}",
    );
    let err = import_rego(&with).unwrap_err();
    assert!(
        err.contains("unsupported Rego construct") && err.contains("with input"),
        "{err}"
    );

    let other_head = format!("{SEED_REGO}\nallow if {{\n  input.user == \"x\"\n}}\n");
    let err = import_rego(&other_head).unwrap_err();
    assert!(err.contains("rule head `allow if`"), "{err}");

    let no_default = SEED_REGO.replace("default result[\"allowed\"] := true", "");
    assert!(import_rego(&no_default).is_err());
}

#[test]
fn default_deny_variant_lists_only_permitted_tools() {
    // The second demo config: deny by default; ledger reads for employees, PII and audit by scope.
    let yaml = r#"
default: deny
rules:
  - upstream: enterprise_ledger
    allow_groups: [employees]
  - tools: [enterprise_ledger_getCustomerPII]
    require_scopes: ["pii:read"]
    reason: "Access denied: PII access requires pii:read scope."
    step_up: true
  - tools: [enterprise_ledger_getAuditLog]
    require_scopes: ["audit:read"]
    reason: "Insufficient privileges: audit log access requires audit:read scope."
  - tools: [enterprise_ledger_updateAccountStatus]
    deny: true
    reason: "Account changes are not allowed through agents."
"#;
    let cfg: PolicyConfig = serde_yaml_ng::from_str(yaml).unwrap();
    let engine = compile(&cfg, &[], &ledger_tools(), 7).unwrap();
    let visible = |u: &User| -> Vec<&str> {
        let p = engine.principal(&input(u));
        LEDGER_TOOLS
            .into_iter()
            .filter(|t| {
                engine
                    .decide(
                        &p,
                        Action::CallTool,
                        Some(&format!("enterprise_ledger_{t}")),
                        &ctx(None),
                    )
                    .allow
            })
            .collect()
    };
    assert_eq!(
        visible(&john()),
        ["listAccounts", "getAccount", "getTransactions"]
    );
    assert_eq!(
        visible(&sarah()),
        [
            "listAccounts",
            "getAccount",
            "getTransactions",
            "getCustomerPII",
            "getAuditLog"
        ]
    );
    assert!(visible(&user("eve", &[], &["pii:read"])).is_empty());

    // Step-up: john lacks pii:read; the rule says re-consent, so current + needed scopes.
    let d = call(&engine, &john(), "enterprise_ledger_getCustomerPII");
    assert!(!d.allow);
    assert_eq!(d.reason.as_deref(), Some(PII_DENIED));
    let mut want = john().scopes;
    want.push("pii:read".into());
    assert_eq!(d.step_up_scopes, Some(want));
    // No step-up when a non-scope rule also forbids (re-consent could not help).
    let d = call(
        &engine,
        &user("eve", &[], &[]),
        "enterprise_ledger_getCustomerPII",
    );
    assert_eq!(d.step_up_scopes, None);
    // getAuditLog has no step_up: an isError result, not a 403.
    assert_eq!(
        call(&engine, &john(), "enterprise_ledger_getAuditLog").step_up_scopes,
        None
    );
    let d = call(&engine, &sarah(), "enterprise_ledger_updateAccountStatus");
    assert_eq!(
        d.reason.as_deref(),
        Some("Account changes are not allowed through agents.")
    );
    assert_eq!(
        d.policy_ids,
        vec!["rule-3:enterprise_ledger_updateAccountStatus:deny".to_string()]
    );
}
