//! The seed's scenario in process: `warden demo`'s pieces, and what the Enterprise Ledger
//! received; plus the external RFC 8693 mode against the embedded authorization server, and
//! against one that never answers the exchange.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use controlplane::Clock;
use controlplane::demo::{self, DemoOptions};
use serde_json::{Value, json};

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start_demo() -> demo::Demo {
    start_demo_on(2, Clock::new()).await
}

/// The demo with `n` shards, its gateway, STS and authorization server on `clock`.
async fn start_demo_on(n: usize, clock: Clock) -> demo::Demo {
    demo::start(DemoOptions {
        gateway: any_port(),
        auth_server: any_port(),
        admin: any_port(),
        ledger: any_port(),
        shards: Some(n),
        audit_dir: common::audit_dir().into(),
        state: None,
        clock,
        shadow_policy: None,
        connectors: Vec::new(),
        cimd_test_ca: None,
    })
    .await
    .expect("demo starts")
}

/// A user token from the demo's authorization server (password grant of the `loadtest` client).
async fn password_token(d: &demo::Demo, user: &str, password: &str, scope: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/token", d.issuer))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "loadtest"),
            ("username", user),
            ("password", password),
            ("scope", scope),
            ("resource", &d.mcp_url),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
    sid: String,
}

impl Client {
    async fn connect(url: &str, token: &str) -> Client {
        let http = reqwest::Client::new();
        let r = http
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        Client {
            http,
            url: url.into(),
            token: token.into(),
            sid,
        }
    }

    async fn call(&self, tool: &str, args: Value) -> Value {
        let r = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("mcp-session-id", &self.sid)
            .header("mcp-protocol-version", "2025-11-25")
            .body(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":args}}).to_string())
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_receives_a_five_second_token_per_call() {
    // Delegation tokens are cached per shard: one shard makes reuse deterministic, and a mock
    // clock lets the test step past the reuse window instead of sleeping through it.
    let (clock, time) = Clock::mock();
    let d = start_demo_on(1, clock).await;
    let john = password_token(
        &d,
        "john.mcclane@orchestrator.lab",
        "yippiekayay",
        "mcp:tools",
    )
    .await;
    let sarah = password_token(
        &d,
        "sarah.connor@orchestrator.lab",
        "judgmentday",
        "mcp:tools pii:read",
    )
    .await;
    let cj = Client::connect(&d.mcp_url, &john).await;
    let v = cj.call("enterprise_ledger_listAccounts", json!({})).await;
    assert_eq!(
        v["result"]["structuredContent"]["accounts"]
            .as_array()
            .unwrap()
            .len(),
        8,
        "{v}"
    );

    let got = d.ledger.received();
    assert_eq!(got.len(), 1);
    let c = &got[0].claims;
    assert_eq!(c["sub"], "john.mcclane@orchestrator.lab");
    assert_eq!(c["act"], json!({"sub": "ai-identity-gateway"}));
    assert_eq!(c["aud"], demo::LEDGER_AUDIENCE);
    assert_eq!(c["scope"], "ledger:ListAccounts");
    assert_eq!(c["client_id"], "ai-identity-gateway");
    assert_eq!(c["iss"], d.issuer.as_str());
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 5);
    // Never the user's token.
    let john_hash: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, john.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_ne!(got[0].token_sha256, john_hash);

    // A second call within the TTL reuses the token; another user gets their own.
    cj.call("enterprise_ledger_listAccounts", json!({})).await;
    let cs = Client::connect(&d.mcp_url, &sarah).await;
    cs.call("enterprise_ledger_listAccounts", json!({})).await;
    let got = d.ledger.received();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0].token_sha256, got[1].token_sha256,
        "reused within the TTL"
    );
    assert_ne!(
        got[1].token_sha256, got[2].token_sha256,
        "never shared between users"
    );
    assert_eq!(got[2].claims["sub"], "sarah.connor@orchestrator.lab");

    // Each tool gets its own scope: the flagged withdrawal comes back through getTransactions.
    let v = cj
        .call(
            "enterprise_ledger_getTransactions",
            json!({"accountId": "ACC-1003"}),
        )
        .await;
    assert!(v.to_string().contains("48500"), "{v}");
    assert_eq!(
        d.ledger.received().last().unwrap().claims["scope"],
        "ledger:ListTransactions"
    );

    // After the reuse window (TTL 5 s, margin 1 s) a fresh token is minted.
    time.advance(Duration::from_millis(4200));
    cj.call("enterprise_ledger_listAccounts", json!({})).await;
    let got = d.ledger.received();
    let last = got.last().unwrap();
    assert_eq!(last.tool, "listAccounts");
    assert_ne!(
        last.token_sha256, got[0].token_sha256,
        "a fresh token after expiry"
    );
    assert_ne!(last.claims["jti"], got[0].claims["jti"]);
    d.gateway.shutdown().await;
}

/// `warden demo` serves every revision on its one endpoint: a stateless 2026-07-28 call reaches
/// the 2025-era ledger (bridged) with the same five-second delegation token a session's call
/// gets, `server/discover` names both eras, and the 2024-11-05 transport is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_both_eras_and_the_old_transport() {
    let d = start_demo_on(1, Clock::new()).await;
    let john = password_token(
        &d,
        "john.mcclane@orchestrator.lab",
        "yippiekayay",
        "mcp:tools",
    )
    .await;
    let http = reqwest::Client::new();
    let modern = |method: &'static str, name: Option<&'static str>, params: Value| {
        let mut params = params;
        params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}});
        let mut rq = http
            .post(&d.mcp_url)
            .bearer_auth(&john)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method);
        if let Some(n) = name {
            rq = rq.header("mcp-name", n);
        }
        rq.body(json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string())
            .send()
    };

    let r = modern("server/discover", None, json!({})).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let versions = v["result"]["supportedVersions"].to_string();
    assert!(
        versions.contains("2026-07-28") && versions.contains("2025-11-25"),
        "{v}"
    );

    let r = modern(
        "tools/call",
        Some("enterprise_ledger_listAccounts"),
        json!({"name": "enterprise_ledger_listAccounts", "arguments": {}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let v: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).unwrap()
    } else {
        common::last_sse_message(&text)
    };
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert_eq!(
        v["result"]["structuredContent"]["accounts"]
            .as_array()
            .map(Vec::len),
        Some(8),
        "{v}"
    );
    let got = d.ledger.received();
    assert_eq!(got.len(), 1, "the ledger ran the modern client's call once");
    let c = &got[0].claims;
    assert_eq!(c["sub"], "john.mcclane@orchestrator.lab");
    assert_eq!(c["act"], json!({"sub": "ai-identity-gateway"}));
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 5);

    // The same user in a 2025-11-25 session: the same tool, the same kind of token.
    let session = Client::connect(&d.mcp_url, &john).await;
    let v = session
        .call("enterprise_ledger_listAccounts", json!({}))
        .await;
    assert_eq!(
        v["result"]["structuredContent"]["accounts"]
            .as_array()
            .map(Vec::len),
        Some(8),
        "{v}"
    );
    assert_eq!(d.ledger.received().len(), 2);

    // The 2024-11-05 HTTP+SSE transport: GET /sse names the endpoint to post to.
    let base = d.mcp_url.trim_end_matches("/mcp");
    let mut r = http
        .get(format!("{base}/sse"))
        .bearer_auth(&john)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), r.chunk())
        .await
        .expect("the stream names its endpoint")
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(
        first.contains("event: endpoint") && first.contains("/messages?sessionId="),
        "{first}"
    );
    drop(r);
    d.gateway.shutdown().await;
}

fn pem(der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mode_performs_rfc8693_with_private_key_jwt() {
    use controlplane::sts::{SigningAlg, SigningKey, Sts};
    // The embedded authorization server plays the external AS, over real HTTP.
    let as_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let as_issuer = format!("http://127.0.0.1:{as_port}");
    let sts = std::sync::Arc::new(Sts::new(&as_issuer, SigningAlg::EdDSA, Clock::new()).unwrap());
    let der = SigningKey::generate_pkcs8(SigningAlg::EdDSA).unwrap();
    let client_key = SigningKey::from_pkcs8(&der, "gw-key").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("gw.pem");
    std::fs::write(&key_file, pem(&der)).unwrap();
    let hash = controlplane::authz::hash_password("pw").unwrap();
    let up = testkit::TestUpstream::start(Default::default()).await;
    let up_aud = "https://up.example/";
    let as_yaml = format!(
        "listen: 127.0.0.1:{as_port}\nissuer: {as_issuer}\nresources: [{}]\nusers:\n  - username: alice\n    password_hash: '{hash}'\n  - username: bob\n    password_hash: '{hash}'\nscopes:\n  - name: mcp:tools\nclients:\n  - client_id: warden-gw\n    jwks: {{\"keys\": [{}]}}\n    grant_types: [client_credentials, 'urn:ietf:params:oauth:grant-type:token-exchange']\n    allowed_audiences: ['{up_aud}']\n    scopes: ['up:echo']\n    exchange_token_ttl: 5s\n",
        common::AUD,
        client_key.public_jwk
    );
    let as_cfg: controlplane::authz::AuthServerConfig = serde_yaml_ng::from_str(&as_yaml).unwrap();
    let auth = controlplane::authz::start(as_cfg, sts.clone())
        .await
        .unwrap();

    let yaml = format!(
        "policy:\n  default: allow\ngateway:\n  listen: 127.0.0.1:0\n  public_url: {aud}\n  shards: 1\nadmin:\n  listen: 127.0.0.1:0\nissuers:\n  - issuer: {as_issuer}\ndelegation:\n  client_id: warden-gw\n  mode: external\n  token_endpoint: {as_issuer}/token\n  client_auth: private_key_jwt\n  private_key_file: {key}\n  private_key_id: gw-key\nupstreams:\n  - name: up0\n    url: {url}\n    token_exchange:\n      audience: '{up_aud}'\n      tools:\n        - name: echo\n          ttl: 5s\n          scopes: [up:echo]\n",
        aud = common::AUD,
        key = key_file.display(),
        url = up.url()
    );
    let gw = controlplane::start(
        controlplane::Config::parse(&yaml, "ext.yaml").unwrap(),
        None,
    )
    .await
    .unwrap();
    let url = format!("http://{}/mcp", gw.addr);
    let alice = auth
        .mint_user_token("alice", "mcp:tools", common::AUD)
        .unwrap();
    let ca = Client::connect(&url, &alice).await;
    let v = ca.call("up0_echo", json!({"x": 1})).await;
    assert_eq!(v["result"]["structuredContent"]["x"], 1, "{v}");
    let call = up.tool_calls().pop().unwrap();
    let tok = call
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    let c: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(tok.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(c["iss"], as_issuer.as_str());
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["act"]["sub"], "warden-gw");
    assert_eq!(c["aud"], up_aud);
    assert_eq!(c["scope"], "up:echo");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 5);
    assert_ne!(tok, alice);

    // The authorization server goes down: a call needing a new exchange fails cleanly with
    // nothing sent upstream, while the cached token for alice keeps working.
    let bob = auth
        .mint_user_token("bob", "mcp:tools", common::AUD)
        .unwrap();
    auth.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cb = Client::connect(&url, &bob).await;
    let before = up.tool_calls().len();
    let v = cb.call("up0_echo", json!({})).await;
    assert_eq!(v["error"]["code"], -32004, "{v}");
    assert_eq!(up.tool_calls().len(), before, "nothing went upstream");
    let v = ca.call("up0_echo", json!({"y": 2})).await;
    assert_eq!(
        v["result"]["structuredContent"]["y"], 2,
        "cached token still used: {v}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_employee_directory_is_bridged_with_delegation() {
    let d = start_demo().await;
    let john = password_token(
        &d,
        "john.mcclane@orchestrator.lab",
        "yippiekayay",
        "mcp:tools",
    )
    .await;
    let c = Client::connect(&d.mcp_url, &john).await;
    let r = c
        .http
        .post(&c.url)
        .bearer_auth(&c.token)
        .header("content-type", "application/json")
        .header("mcp-session-id", &c.sid)
        .body(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}).to_string())
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let tools = v["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for n in [
        "enterprise_ledger_listAccounts",
        "employee_directory_listEmployees",
        "employee_directory_getEmployee",
        "employee_directory_listDepartments",
        "employee_directory_createEmployee",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert!(
        !names.contains(&"employee_directory_health"),
        "excluded by config"
    );
    let get = tools
        .iter()
        .find(|t| t["name"] == "employee_directory_getEmployee")
        .unwrap();
    assert_eq!(get["inputSchema"]["required"], json!(["id"]), "{get}");

    let v = c.call("employee_directory_listEmployees", json!({})).await;
    assert_eq!(v["result"]["structuredContent"]["total"], 10, "{v}");
    let v = c
        .call("employee_directory_getEmployee", json!({"id": "E1001"}))
        .await;
    assert_eq!(v["result"]["structuredContent"]["id"], "E1001", "{v}");
    let v = c
        .call("employee_directory_listDepartments", json!({}))
        .await;
    assert!(v["result"]["structuredContent"]["items"].is_array(), "{v}");
    let v = c
        .call(
            "employee_directory_createEmployee",
            json!({"body": {"firstName": "Kyle", "lastName": "Reese", "email": "kyle.reese@orchestrator.lab", "department": "Operations", "title": "Sergeant"}}),
        )
        .await;
    assert_eq!(v["result"]["structuredContent"]["lastName"], "Reese", "{v}");

    let got = d.directory.received();
    let ops: Vec<&str> = got.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(
        ops,
        [
            "listEmployees",
            "getEmployee",
            "listDepartments",
            "createEmployee"
        ]
    );
    let want = [
        ("listEmployees", "employee:List"),
        ("getEmployee", "employee:Get"),
        ("listDepartments", "department:List"),
        ("createEmployee", "employee:Create"),
    ];
    for (r, (op, scope)) in got.iter().zip(want) {
        assert_eq!(r.operation, op);
        assert_eq!(
            r.claims["aud"],
            "https://employee-directory.orchestrator.lab/"
        );
        assert_eq!(r.claims["scope"], scope);
        assert_eq!(r.claims["sub"], "john.mcclane@orchestrator.lab");
        assert_eq!(r.claims["act"]["sub"], "ai-identity-gateway");
        assert_eq!(
            r.claims["exp"].as_i64().unwrap() - r.claims["iat"].as_i64().unwrap(),
            5
        );
    }

    // Arguments that fail the schema never leave the gateway; traversal stays in one segment.
    let v = c.call("employee_directory_getEmployee", json!({})).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    // The spec's pattern refuses a traversal attempt before anything is built (the bridge's
    // own tests show such values stay inside one percent-encoded segment when no pattern exists).
    let v = c
        .call(
            "employee_directory_getEmployee",
            json!({"id": "../departments"}),
        )
        .await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    // A well-formed unknown id reaches the directory and comes back as an isError result.
    let v = c
        .call("employee_directory_getEmployee", json!({"id": "E9999"}))
        .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("404"),
        "{v}"
    );
    let ops: Vec<String> = d
        .directory
        .received()
        .iter()
        .map(|r| r.operation.clone())
        .collect();
    assert_eq!(ops.len(), 5, "only the well-formed call was sent: {ops:?}");
    d.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_policy_decides_list_and_call() {
    let d = start_demo().await;
    let john = password_token(
        &d,
        "john.mcclane@orchestrator.lab",
        "yippiekayay",
        "mcp:tools pii:read",
    )
    .await;
    let sarah = password_token(
        &d,
        "sarah.connor@orchestrator.lab",
        "judgmentday",
        "mcp:tools pii:read audit:read",
    )
    .await;
    let list = |c: &Client| {
        let http = c.http.clone();
        let (url, token, sid) = (c.url.clone(), c.token.clone(), c.sid.clone());
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .header("mcp-session-id", sid)
                .body(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}).to_string())
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let cj = Client::connect(&d.mcp_url, &john).await;
    let cs = Client::connect(&d.mcp_url, &sarah).await;
    // john was not granted pii:read (not in the compliance group): those tools are not listed...
    let lj = list(&cj).await;
    assert!(lj.contains(&"enterprise_ledger_listAccounts".to_string()));
    assert!(
        !lj.contains(&"enterprise_ledger_getCustomerPII".to_string()),
        "{lj:?}"
    );
    assert!(
        !lj.contains(&"enterprise_ledger_getAuditLog".to_string()),
        "{lj:?}"
    );
    let ls = list(&cs).await;
    assert!(
        ls.contains(&"enterprise_ledger_getCustomerPII".to_string())
            && ls.contains(&"enterprise_ledger_getAuditLog".to_string()),
        "{ls:?}"
    );
    // ...and calling them returns the seed's messages as tool results; the ledger never sees them.
    let before = d.ledger.received().len();
    let v = cj
        .call(
            "enterprise_ledger_getCustomerPII",
            json!({"customerId": "CUST-001"}),
        )
        .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert_eq!(
        v["result"]["content"][0]["text"],
        "Access denied: PII access requires pii:read scope."
    );
    assert!(v["result"].get("structuredContent").is_none());
    let v = cj.call("enterprise_ledger_getAuditLog", json!({})).await;
    assert_eq!(
        v["result"]["content"][0]["text"],
        "Insufficient privileges: audit log access requires audit:read scope."
    );
    assert_eq!(
        d.ledger.received().len(),
        before,
        "denied calls never reach delegation or the upstream"
    );
    // sarah (compliance, granted pii:read and audit:read) gets the data, with a 5 s token for ledger:ReadPII.
    let v = cs
        .call(
            "enterprise_ledger_getCustomerPII",
            json!({"customerId": "CUST-001"}),
        )
        .await;
    assert!(v["result"]["structuredContent"].is_object(), "{v}");
    let last = d.ledger.received().pop().unwrap();
    assert_eq!(last.claims["scope"], "ledger:ReadPII");
    assert_eq!(last.claims["sub"], "sarah.connor@orchestrator.lab");
    // The audit trail recorded the denials with the deciding policy ids.
    d.gateway.shutdown().await;
    let mut denies = Vec::new();
    for f in controlplane::audit::chain_files(&d.audit_dir).unwrap() {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            if r["decision"] == "deny" {
                denies.push(r);
            }
        }
    }
    assert_eq!(denies.len(), 2, "{denies:#?}");
    assert_eq!(
        denies[0]["policy_ids"],
        json!(["rule-0:enterprise_ledger_getCustomerPII:scopes"])
    );
    assert_eq!(
        denies[0]["reason"],
        "Access denied: PII access requires pii:read scope."
    );
}

/// An authorization server that answers the gateway's own `client_credentials` grant (an
/// unsigned service token: the gateway inspects, the test upstream does not verify) and reads
/// every token exchange but never answers it. Its address.
async fn hanging_token_endpoint(up_aud: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                // Head and form body arrive together from reqwest; read until the form is in.
                while !String::from_utf8_lossy(&req).contains("grant_type=") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if !String::from_utf8_lossy(&req).contains("grant_type=client_credentials") {
                    // The exchange: held open, never answered.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                let now = testkit::issuer::now_secs();
                let claims = json!({"iss": "http://as.test", "sub": "warden-gw", "aud": up_aud, "iat": now, "exp": now + 60});
                let token = format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(claims.to_string()));
                let body = json!({"access_token": token, "token_type": "Bearer", "expires_in": 60})
                    .to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// The soak's `sts_failing` checked it: an external token endpoint that accepts the exchange
/// and never answers is cut at `delegation.timeout`; the call is refused (-32004, "timed
/// out"), nothing is sent upstream, and it does not wait out the shard's longer bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_token_endpoint_is_cut_at_the_delegation_timeout() {
    use controlplane::sts::{SigningAlg, SigningKey};
    const UP_AUD: &str = "https://up.example/";
    let issuer = testkit::TestIssuer::start().await;
    let up = testkit::TestUpstream::start(Default::default()).await;
    let as_addr = hanging_token_endpoint(UP_AUD).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("gw.pem");
    std::fs::write(
        &key_file,
        pem(&SigningKey::generate_pkcs8(SigningAlg::EdDSA).unwrap()),
    )
    .unwrap();
    let yaml = format!(
        "policy:\n  default: allow\ngateway:\n  listen: 127.0.0.1:0\n  public_url: {aud}\n  shards: 1\nadmin:\n  listen: 127.0.0.1:0\nissuers:\n  - issuer: {iss}\ndelegation:\n  client_id: warden-gw\n  mode: external\n  token_endpoint: http://{as_addr}/token\n  client_auth: private_key_jwt\n  private_key_file: {key}\n  timeout: 1s\nupstreams:\n  - name: up0\n    url: {url}\n    token_exchange:\n      audience: '{UP_AUD}'\n      tools:\n        - name: echo\n          ttl: 5s\n          scopes: [up:echo]\n",
        aud = common::AUD,
        iss = issuer.issuer(),
        key = key_file.display(),
        url = up.url()
    );
    let gw = controlplane::start(
        controlplane::Config::parse(&yaml, "hang.yaml").unwrap(),
        None,
    )
    .await
    .unwrap();
    let url = format!("http://{}/mcp", gw.addr);
    let alice = issuer.mint(&issuer.claims("alice", common::AUD, "mcp:tools"));
    let c = Client::connect(&url, &alice).await;
    let clock = Clock::new();
    let started = clock.now();
    let v = c.call("up0_echo", json!({})).await;
    let took = clock.since(started);
    assert_eq!(v["error"]["code"], -32004, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out")),
        "{v}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "cut at the 1 s timeout, not the shard's 10 s: {took:?}"
    );
    assert!(up.tool_calls().is_empty(), "nothing was sent upstream");
    gw.shutdown().await;
}
