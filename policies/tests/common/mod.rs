//! Shared fixtures: the seed's ledger tools, its two users, and request helpers.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::unwrap_used, reason = "test fixtures")]

use serde_json::json;
use serde_json::value::RawValue;
use warden_policy::{
    Action, Decision, Engine, PolicyFile, PrincipalInput, RequestContext, ToolInfo,
};

pub const LEDGER_TOOLS: [&str; 6] = [
    "listAccounts",
    "getAccount",
    "getTransactions",
    "updateAccountStatus",
    "getCustomerPII",
    "getAuditLog",
];
pub const PII_DENIED: &str = "Access denied: PII access requires pii:read scope.";
pub const AUDIT_DENIED: &str =
    "Insufficient privileges: audit log access requires audit:read scope.";

pub fn ledger_tools() -> Vec<ToolInfo> {
    LEDGER_TOOLS
        .iter()
        .map(|t| ToolInfo {
            name: format!("enterprise_ledger_{t}"),
            upstream: "enterprise_ledger".into(),
            upstream_name: (*t).into(),
            annotations: json!({ "readOnlyHint": *t != "updateAccountStatus" }),
            tags: if t.contains("PII") {
                vec!["pii".into()]
            } else {
                vec![]
            },
            input_schema: json!({
                "type": "object",
                "properties": { "accountId": { "type": "string" }, "limit": { "type": "integer" } }
            }),
        })
        .collect()
}

pub fn demo_file() -> PolicyFile {
    PolicyFile {
        name: "demo/ledger.cedar".into(),
        text: include_str!("../../demo/ledger.cedar").into(),
    }
}

pub struct User {
    pub sub: &'static str,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
}

pub fn john() -> User {
    User {
        sub: "john.mcclane@orchestrator.lab",
        groups: vec!["employees".into()],
        scopes: ["openid", "profile", "email", "ledger:ListAccounts"]
            .map(String::from)
            .to_vec(),
    }
}

pub fn sarah() -> User {
    User {
        sub: "sarah.connor@orchestrator.lab",
        groups: vec!["employees".into(), "compliance".into()],
        scopes: ["openid", "profile", "email", "pii:read", "audit:read"]
            .map(String::from)
            .to_vec(),
    }
}

pub fn user(sub: &'static str, groups: &[&str], scopes: &[&str]) -> User {
    User {
        sub,
        groups: groups.iter().map(|s| s.to_string()).collect(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

pub fn input(u: &User) -> PrincipalInput<'_> {
    PrincipalInput {
        iss: "https://auth.warden.test",
        sub: u.sub,
        email: Some(u.sub),
        groups: &u.groups,
        scopes: &u.scopes,
        client_id: Some("mcp-client-cli"),
        actors: &[],
    }
}

pub fn ctx(args: Option<&RawValue>) -> RequestContext<'_> {
    RequestContext {
        session: Some("c2Vzc2lvbg"),
        now_unix: 1_760_000_000,
        protocol_version: "2025-06-18",
        arguments: args,
        item: None,
    }
}

pub fn call(engine: &Engine, u: &User, tool: &str) -> Decision {
    let p = engine.principal(&input(u));
    engine.decide(&p, Action::CallTool, Some(tool), &ctx(None))
}

pub fn raw(v: serde_json::Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).unwrap()
}
