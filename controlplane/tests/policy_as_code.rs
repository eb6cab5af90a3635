//! Policy as code with the real `warden` binary: decision tests (passing, failing, JUnit,
//! coverage), `policy explain` of a forbid-unless, and the seed's worked example end to end —
//! `getTransactions` gains a `ledger:ViewTransactions` requirement: `policy test` fails
//! before the scope is granted and passes after, `policy diff` lists exactly the decisions
//! that change (tests and real audit records), and the rollout (the scope by restart, the
//! policy by reload) applies it to a running gateway in front of the Enterprise Ledger.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::client::{call, session};
use common::process::{WardenProc, free_port};
use serde_json::{Value, json};

fn warden(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(cwd)
        .env("WARDEN_LOG", "warn")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const LEDGER_CEDAR: &str = include_str!("../../policies/demo/ledger.cedar");
const VIEW_TX_POLICY: &str = r#"
@id("ledger:transactions-require-view")
@reason("Access denied: transactions require ledger:ViewTransactions scope.")
forbid (principal, action == Action::"tools/call", resource == Tool::"enterprise_ledger_getTransactions")
unless { principal.scopes.contains("ledger:ViewTransactions") };
"#;
const VIEW_TX_SCOPE: &str = "    - name: ledger:ViewTransactions\n";
const TOOLS: [&str; 6] = [
    "listAccounts",
    "getAccount",
    "getTransactions",
    "updateAccountStatus",
    "getCustomerPII",
    "getAuditLog",
];

/// The tests kept beside the policy in every tree of the example.
fn tests_yaml() -> String {
    let mut y = String::from("tools:\n");
    for t in TOOLS {
        y.push_str(&format!("  - {{ name: enterprise_ledger_{t}, upstream: enterprise-ledger, upstream_name: {t} }}\n"));
    }
    y.push_str(
        r#"principals:
  john: { user: john.mcclane@orchestrator.lab }
tests:
  - name: john reads transactions
    principal: john
    tool: enterprise_ledger_getTransactions
    expect: { decision: allow }
  - name: john is denied PII with the seed's message
    principal: john
    tool: enterprise_ledger_getCustomerPII
    expect:
      decision: deny
      policies: ["ledger:pii-requires-pii-read"]
      reason: "Access denied: PII access requires pii:read scope."
"#,
    );
    y
}

/// The seed's deployment (examples/seed.yaml's shape) on test ports, policy in `ledger.cedar`.
fn config_yaml(as_port: u16, ledger_url: &str, audit: &Path, extra_scope: &str) -> String {
    let hash = controlplane::authz::hash_password("yippiekayay").unwrap();
    format!(
        r#"gateway:
  listen: 127.0.0.1:0
  public_url: http://127.0.0.1/mcp
  shards: 1
  scopes_supported: [mcp:tools]
admin:
  listen: 127.0.0.1:0
authorization_server:
  listen: 127.0.0.1:{as_port}
  issuer: http://127.0.0.1:{as_port}
  resources: [http://127.0.0.1/mcp]
  users:
    - username: john.mcclane@orchestrator.lab
      email: john.mcclane@orchestrator.lab
      password_hash: '{hash}'
      groups: [employees]
  scopes:
    - name: mcp:tools
    - name: pii:read
      groups: [compliance]
{extra_scope}  clients:
    - client_id: loadtest
      public: true
      grant_types: [password, refresh_token]
issuers:
  - issuer: http://127.0.0.1:{as_port}
policy:
  files: [ledger.cedar]
  tests: [tests.yaml]
audit:
  sink: file
  dir: {audit}
delegation:
  client_id: ai-identity-gateway
  mode: embedded
  issuer: http://127.0.0.1:{as_port}
upstreams:
  - name: enterprise-ledger
    url: {ledger_url}
    namespace: enterprise_ledger_
    token_exchange:
      type: delegation
      audience: https://enterprise-ledger.orchestrator.lab/
      tools:
        - name: getTransactions
          ttl: 5s
          scopes: [ledger:ListTransactions]
        - name: listAccounts
          ttl: 5s
          scopes: [ledger:ListAccounts]
"#,
        audit = audit.display()
    )
}

fn write_tree(dir: &Path, config: &str, cedar: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("warden.yaml"), config).unwrap();
    std::fs::write(dir.join("ledger.cedar"), cedar).unwrap();
    std::fs::write(dir.join("tests.yaml"), tests_yaml()).unwrap();
}

async fn password_token(as_port: u16, scope: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{as_port}/token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "loadtest"),
            ("username", "john.mcclane@orchestrator.lab"),
            ("password", "yippiekayay"),
            ("scope", scope),
            ("resource", "http://127.0.0.1/mcp"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

fn denied_text(v: &Value) -> Option<String> {
    (v["result"]["isError"] == true).then(|| {
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_worked_example_tested_diffed_and_rolled_out() {
    let root = tempfile::tempdir().unwrap();
    let (live, base, step1, step2) = (
        root.path().join("live"),
        root.path().join("base"),
        root.path().join("step1"),
        root.path().join("step2"),
    );
    let audit = root.path().join("audit");
    let as_port = testkit::stable_port();
    let ledger = demo::ledger::Ledger::start(demo::ledger::LedgerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        jwks_uri: format!("http://127.0.0.1:{as_port}/jwks"),
        issuer: format!("http://127.0.0.1:{as_port}"),
        audience: "https://enterprise-ledger.orchestrator.lab/".into(),
        gateway_client_id: "ai-identity-gateway".into(),
    })
    .unwrap();
    let before = config_yaml(as_port, &ledger.url(), &audit, "");
    let after = config_yaml(as_port, &ledger.url(), &audit, VIEW_TX_SCOPE);
    let changed_cedar = format!("{LEDGER_CEDAR}{VIEW_TX_POLICY}");
    write_tree(&base, &before, LEDGER_CEDAR);
    // Step 1: the Rego-equivalent rule alone. Step 2: and the scope the authorization server grants.
    write_tree(&step1, &before, &changed_cedar);
    write_tree(&step2, &after, &changed_cedar);

    // Traffic under the base policy, recorded in the real audit trail. The running gateway
    // reads its policy file from its working directory: the live config names it absolutely.
    write_tree(&live, &before, LEDGER_CEDAR);
    let absolute = |y: &str| {
        y.replace(
            "files: [ledger.cedar]",
            &format!("files: [{}]", live.join("ledger.cedar").display()),
        )
    };
    let (port, admin_port) = (free_port(), free_port());
    let live_yaml = absolute(&before);
    let mut w = WardenProc::start(&live, &live_yaml, port, admin_port).await;
    let c = reqwest::Client::new();
    let old_token = password_token(as_port, "mcp:tools").await;
    let sid = session(&c, &w.url(), &old_token).await;
    let v = call(
        &c,
        &w.url(),
        &old_token,
        &sid,
        "enterprise_ledger_getTransactions",
        json!({"accountId": "ACC-1001"}),
    )
    .await;
    assert_eq!(denied_text(&v), None, "{v}");
    let v = call(
        &c,
        &w.url(),
        &old_token,
        &sid,
        "enterprise_ledger_listAccounts",
        json!({}),
    )
    .await;
    assert_eq!(denied_text(&v), None, "{v}");

    // The base tree's tests pass; step 1's fail on exactly the changed decision; step 2's pass.
    let o = warden(&["policy", "test", "-c", "warden.yaml"], &base);
    assert!(o.status.success(), "{}", text(&o));
    let o = warden(
        &[
            "policy",
            "test",
            "-c",
            "warden.yaml",
            "--junit",
            "junit.xml",
        ],
        &step1,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("FAIL john reads transactions"), "{out}");
    assert!(out.contains("decision: expected allow, got deny"), "{out}");
    assert!(out.contains("ledger:transactions-require-view"), "{out}");
    assert!(out.contains("2 tests, 1 passed, 1 failed"), "{out}");
    let junit = std::fs::read_to_string(step1.join("junit.xml")).unwrap();
    assert!(
        junit.contains("<testsuites name=\"warden policy test\" tests=\"2\" failures=\"1\">"),
        "{junit}"
    );
    assert!(
        junit.contains(
            "<testcase classname=\"tests.yaml\" name=\"john reads transactions\">\n      <failure"
        ),
        "{junit}"
    );
    let o = warden(&["policy", "test", "-c", "warden.yaml"], &step2);
    assert!(o.status.success(), "{}", text(&o));

    // The reviewer's view: which tools changed, and every decision that flips. The tests'
    // john is allowed before and after (step 2 grants him the scope); the audit trail's calls
    // were made with tokens that lack it, so exactly the recorded getTransactions flips.
    let o = warden(
        &[
            "policy",
            "diff",
            "-c",
            "warden.yaml",
            base.to_str().unwrap(),
            step2.to_str().unwrap(),
            "--audit",
            audit.to_str().unwrap(),
        ],
        root.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("tools whose policies changed: enterprise_ledger_getTransactions\n"),
        "{out}"
    );
    assert!(out.contains("replayed 2 audit records"), "{out}");
    let changes: Vec<&str> = out.lines().filter(|l| l.starts_with("request ")).collect();
    assert_eq!(changes.len(), 1, "{out}");
    assert!(changes[0].contains("→ enterprise_ledger_getTransactions: allow [ledger:default-allow] → deny [ledger:transactions-require-view]"), "{out}");
    assert!(out.ends_with("1 decisions change\n"), "{out}");
    // Without the audit trail, no test decision changes.
    let o = warden(
        &[
            "policy",
            "diff",
            "-c",
            "warden.yaml",
            base.to_str().unwrap(),
            step2.to_str().unwrap(),
        ],
        root.path(),
    );
    assert!(o.status.success(), "{}", text(&o));

    // Rollout. The scope first: the authorization server's section takes a restart (state
    // survives it, nobody is logged out); then the policy by reload.
    std::fs::write(
        live.join("warden.yaml"),
        common::process::with_ports(&absolute(&after), port, admin_port),
    )
    .unwrap();
    w.kill();
    let w = WardenProc::spawn(live.join("warden.yaml"), port, admin_port, &[]).await;
    std::fs::write(live.join("ledger.cedar"), &changed_cedar).unwrap();
    let r = c.post(w.admin("/admin/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let log = w.log_text();
    assert!(
        log.contains("Policy changed for these tools")
            && log.contains("enterprise_ledger_getTransactions"),
        "the reload says which tools changed:\n{log}"
    );
    // The old token lacks the new scope: denied with the policy's reason, never forwarded.
    let sid = session(&c, &w.url(), &old_token).await;
    let calls_before = ledger.received().len();
    let v = call(
        &c,
        &w.url(),
        &old_token,
        &sid,
        "enterprise_ledger_getTransactions",
        json!({"accountId": "ACC-1001"}),
    )
    .await;
    assert_eq!(
        denied_text(&v).as_deref(),
        Some("Access denied: transactions require ledger:ViewTransactions scope."),
        "{v}"
    );
    assert_eq!(
        ledger.received().len(),
        calls_before,
        "a denied call never reaches the ledger"
    );
    // A token with the newly granted scope is allowed.
    let new_token = password_token(as_port, "mcp:tools ledger:ViewTransactions").await;
    let sid = session(&c, &w.url(), &new_token).await;
    let v = call(
        &c,
        &w.url(),
        &new_token,
        &sid,
        "enterprise_ledger_getTransactions",
        json!({"accountId": "ACC-1001"}),
    )
    .await;
    assert_eq!(denied_text(&v), None, "{v}");
    assert_eq!(ledger.received().len(), calls_before + 1);

    // `audit explain`: the first recorded getTransactions call, allowed then, denied now.
    let cfg = live.join("warden.yaml");
    let id = std::fs::read_dir(&audit)
        .unwrap()
        .flat_map(|f| {
            std::fs::read_to_string(f.unwrap().path())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .find(|r| {
            r["tool"] == "enterprise_ledger_getTransactions"
                && r["decision"] == "allow"
                && r["scopes"] == json!(["mcp:tools"])
        })
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .unwrap();
    let o = warden(
        &[
            "audit",
            "explain",
            &id,
            "-c",
            cfg.to_str().unwrap(),
            "--dir",
            audit.to_str().unwrap(),
        ],
        &live,
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains(
            "recorded decision: allow [ledger:default-allow]; under the current policy: deny"
        ),
        "{out}"
    );
    assert!(
        out.contains("forbid ledger:transactions-require-view: decided"),
        "{out}"
    );

    // `token inspect` against the live issuer: valid, and a forged signature refused; neither
    // the token nor its signature is ever printed.
    let o = warden(
        &["token", "inspect", "-c", cfg.to_str().unwrap(), &new_token],
        &live,
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("verdict: valid: Warden accepts it (issuer http://127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("jti: present (not shown)"), "{out}");
    let sig = new_token.rsplit('.').next().unwrap();
    assert!(
        !out.contains(sig) && !out.contains(&new_token),
        "never the token or its signature"
    );
    let forged = format!(
        "{}{}",
        &new_token[..new_token.len() - 2],
        if new_token.ends_with("AA") {
            "BB"
        } else {
            "AA"
        }
    );
    let o = warden(
        &["token", "inspect", "-c", cfg.to_str().unwrap(), &forged],
        &live,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("verdict: refused: "), "{}", text(&o));
}

#[test]
fn the_demo_ships_passing_tests_with_coverage_and_explains_a_forbid_unless() {
    let dir = tempfile::tempdir().unwrap();
    let o = warden(&["policy", "test", "--coverage"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("ok   john is denied PII with the seed's message"),
        "{out}"
    );
    assert!(out.contains("8 tests, 8 passed, 0 failed"), "{out}");
    assert!(out.contains("policies no test exercises: none"), "{out}");
    assert!(out.contains("tools no test calls: \n  enterprise_ledger_getAccount\n  enterprise_ledger_updateAccountStatus\n"), "{out}");

    // Coverage of a deny-by-default file: a tool no permit reaches, a policy no test decides.
    let suite = r#"
tools:
  - { name: t_open, upstream: t, upstream_name: open }
  - { name: t_closed, upstream: t, upstream_name: closed }
tests:
  - name: anyone opens
    principal: { sub: alice }
    tool: t_open
    expect: { decision: allow, policies: [open] }
  - name: not through agent-x
    principal: { sub: alice, act: [agent-y, agent-x] }
    tool: t_open
    expect: { decision: deny, policies: [no-agent-x], reason: "agent-x may not act." }
"#;
    let config = "gateway:\n  listen: 127.0.0.1:0\n  public_url: http://127.0.0.1/mcp\nissuers:\n  - issuer: https://idp.test\npolicy:\n  default: deny\n  files: [p.cedar]\n  tests: [t.yaml]\nupstreams: []\n";
    let cedar = "@id(\"open\")\npermit (principal, action == Action::\"tools/call\", resource == Tool::\"t_open\");\n@id(\"unused\")\nforbid (principal, action == Action::\"tools/call\", resource == Tool::\"t_open\") when { principal.sub == \"mallory\" };\n@id(\"no-agent-x\")\n@reason(\"agent-x may not act.\")\nforbid (principal, action == Action::\"tools/call\", resource) when { principal.actors.contains(\"agent-x\") };\n";
    std::fs::write(dir.path().join("t.yaml"), suite).unwrap();
    std::fs::write(dir.path().join("w.yaml"), config).unwrap();
    std::fs::write(dir.path().join("p.cedar"), cedar).unwrap();
    let o = warden(
        &["policy", "test", "-c", "w.yaml", "--coverage"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("policies no test exercises: \n  unused\n"),
        "{out}"
    );
    assert!(
        out.contains("tools no permit reaches (nobody can call them): \n  t_closed\n"),
        "{out}"
    );
    // A malformed test file is a clear error (exit 2), not a pass.
    std::fs::write(dir.path().join("t.yaml"), "tests:\n  - name: x\n    principal: { sub: a }\n    tool: t_open\n    expect: { decision: maybe }\n").unwrap();
    let o = warden(&["policy", "test", "-c", "w.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("t.yaml: tests[0].expect.decision"),
        "{}",
        text(&o)
    );

    // Explain: the forbid-unless that decided, the permit it beat, the policies outside the slice.
    let o = warden(
        &[
            "policy",
            "explain",
            "--user",
            "john.mcclane@orchestrator.lab",
            "--tool",
            "enterprise_ledger_getCustomerPII",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.starts_with("decision: deny by [rule-0:enterprise_ledger_getCustomerPII:scopes] — \"Access denied: PII access requires pii:read scope.\"\n"), "{out}");
    assert!(
        out.contains("forbid rule-0:enterprise_ledger_getCustomerPII:scopes: decided"),
        "{out}"
    );
    assert!(
        out.contains("| unless { principal.scopes.containsAll([\"pii:read\"]) };"),
        "{out}"
    );
    assert!(
        out.contains("permit default-allow: satisfied, did not decide"),
        "{out}"
    );
    assert!(out.contains("forbid rule-1:enterprise_ledger_getAuditLog:scopes: skipped: its resource scope cannot match this target"), "{out}");
    assert!(
        out.contains("\"scopes\":[\"mcp:tools\"]"),
        "the principal as built: {out}"
    );
    assert!(out.contains("decided in "), "{out}");
    // With pii:read the forbid's condition is false and the call is allowed.
    let o = warden(
        &[
            "policy",
            "explain",
            "--claims",
            "{sub: sarah, scopes: [mcp:tools, pii:read]}",
            "--tool",
            "enterprise_ledger_getCustomerPII",
        ],
        dir.path(),
    );
    let out = text(&o);
    assert!(
        out.starts_with(
            "decision: allow by [default-allow, rule-0:enterprise_ledger_getCustomerPII:permit]\n"
        ),
        "{out}"
    );
    assert!(out.contains("forbid rule-0:enterprise_ledger_getCustomerPII:scopes: does not apply: its condition is false"), "{out}");
}
