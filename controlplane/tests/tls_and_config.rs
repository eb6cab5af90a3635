//! TLS termination with the committed dev certificates, and configuration validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use controlplane::Config;

fn certs() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminates_tls_with_rustls() {
    let issuer = testkit::TestIssuer::start().await;
    let d = certs();
    let yaml = format!(
        "gateway:\n  listen: 127.0.0.1:0\n  public_url: https://localhost/mcp\n  shards: 1\n  allowed_hosts: ['*']\n  tls:\n    cert: {}\n    key: {}\nadmin:\n  listen: 127.0.0.1:0\nissuers:\n  - issuer: {}\n    audiences: [https://localhost/mcp]\n",
        d.join("localhost.pem").display(),
        d.join("localhost.key").display(),
        issuer.issuer()
    );
    let gw = controlplane::start(Config::parse(&yaml, "tls.yaml").unwrap(), None)
        .await
        .unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(d.join("dev-ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve("localhost", gw.addr)
        .build()
        .unwrap();
    let port = gw.addr.port();
    let r = client
        .get(format!(
            "https://localhost:{port}/.well-known/oauth-protected-resource/mcp"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["resource"], "https://localhost/mcp");
    let r = client
        .post(format!("https://localhost:{port}/mcp"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let tok = issuer.mint(&issuer.claims("alice", "https://localhost/mcp", ""));
    let r = client
        .post(format!("https://localhost:{port}/mcp"))
        .bearer_auth(tok)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("mcp-session-id"));
    // Plain HTTP on the TLS port is not served.
    let out = common::raw(
        gw.addr,
        b"GET /mcp HTTP/1.1\r\nHost: localhost\r\n\r\n",
        std::time::Duration::from_secs(2),
    )
    .await;
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
    gw.shutdown().await;
}

fn parse_err(yaml: &str) -> String {
    Config::parse(yaml, "bad.yaml").unwrap_err().to_string()
}

#[test]
fn config_errors_name_the_file_and_key() {
    let base = "gateway:\n  listen: 127.0.0.1:8080\n  public_url: http://127.0.0.1:8080/mcp\nissuers:\n  - issuer: http://127.0.0.1:9000\n";
    assert!(Config::parse(base, "ok.yaml").is_ok());
    let e = parse_err(&format!(
        "{base}  - issuer: http://127.0.0.1:9001\n    leewey: 5s\n"
    ));
    assert!(e.starts_with("bad.yaml: issuers[1]"), "{e}");
    assert!(e.contains("leewey"), "{e}");
    let e = parse_err(
        "gateway:\n  listen: 0.0.0.0:8080\n  public_url: http://gw/mcp\nissuers:\n  - issuer: http://127.0.0.1:9000\n",
    );
    assert!(
        e.contains("gateway.listen") && e.contains("allow_insecure_http"),
        "{e}"
    );
    let e = parse_err(
        "gateway:\n  listen: 0.0.0.0:8080\n  public_url: http://gw/mcp\n  allow_insecure_http: true\n  authentication: false\n",
    );
    assert!(e.contains("gateway.authentication"), "{e}");
    let e =
        parse_err("gateway:\n  listen: 127.0.0.1:8080\n  public_url: http://127.0.0.1:8080/mcp\n");
    assert!(e.contains("issuers"), "{e}");
    let e = parse_err(&format!(
        "{base}  - issuer: http://127.0.0.1:9001\n    leeway: 5m\n"
    ));
    assert!(e.contains("issuers[1].leeway"), "{e}");
    let e = parse_err(&format!(
        "{base}  - issuer: http://127.0.0.1:9001\n    algorithms: [HS256]\n"
    ));
    assert!(e.contains("issuers[1].algorithms"), "{e}");
    let e = parse_err(&format!(
        "{base}upstreams:\n  - name: a\n    url: http://127.0.0.1:1/mcp\n    timeout: soon\n"
    ));
    assert!(e.contains("upstreams[0].timeout"), "{e}");
    let e = parse_err(&format!(
        "{base}upstreams:\n  - name: a\n    url: http://127.0.0.1:1/mcp\n  - name: a\n    url: http://127.0.0.1:2/mcp\n"
    ));
    assert!(e.contains("upstreams[1].name"), "{e}");
    let e = parse_err(
        "gateway:\n  listen: 127.0.0.1:8080\n  public_url: http://127.0.0.1:8080/mcp/\nissuers:\n  - issuer: http://127.0.0.1:9000\n",
    );
    assert!(e.contains("gateway.public_url"), "{e}");
}

#[test]
fn dpop_settings_parse_and_bad_ones_name_their_key() {
    use controlplane::config::DpopSetting;
    let base = "gateway:\n  listen: 127.0.0.1:8080\n  public_url: http://127.0.0.1:8080/mcp\nissuers:\n  - issuer: http://127.0.0.1:9000\n";
    let cfg = Config::parse(base, "ok.yaml").unwrap();
    assert_eq!(cfg.issuers[0].dpop, DpopSetting::Optional);
    assert_eq!(cfg.issuers[0].dpop_algorithms, ["ES256", "EdDSA"]);
    assert_eq!(cfg.issuers[0].dpop_iat_window.as_secs(), 300);
    for (text, want) in [
        ("required", DpopSetting::Required),
        ("optional", DpopSetting::Optional),
        ("\"off\"", DpopSetting::Off),
        ("off", DpopSetting::Off),
    ] {
        let cfg = Config::parse(&format!("{base}    dpop: {text}\n"), "ok.yaml")
            .unwrap_or_else(|e| panic!("dpop: {text}: {e}"));
        assert_eq!(cfg.issuers[0].dpop, want, "{text}");
    }
    let e = parse_err(&format!("{base}    dpop: sometimes\n"));
    assert!(e.contains("issuers[0].dpop"), "{e}");
    for algs in ["[HS256]", "[none]", "[]"] {
        let e = parse_err(&format!("{base}    dpop_algorithms: {algs}\n"));
        assert!(e.contains("issuers[0].dpop_algorithms"), "{algs}: {e}");
    }
    for (key, v) in [("dpop_iat_window", "0s"), ("dpop_nonce_lifetime", "2h")] {
        let e = parse_err(&format!("{base}    {key}: {v}\n"));
        assert!(e.contains(&format!("issuers[0].{key}")), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_port_in_use() {
    // Someone holds the port with SO_REUSEPORT: Warden must refuse rather than share it.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    s.listen(16).unwrap();
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    let yaml = format!(
        "gateway:\n  listen: 127.0.0.1:{port}\n  public_url: http://127.0.0.1:{port}/mcp\n  authentication: false\nadmin:\n  listen: 127.0.0.1:0\n"
    );
    let err = controlplane::start(Config::parse(&yaml, "t.yaml").unwrap(), Some(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot listen"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_released_moments_after_start_is_taken() {
    // A just-stopped process can hold the port briefly (an immediate restart): Warden retries
    // "address in use" for a while rather than failing at once.
    let port = testkit::stable_port();
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        drop(holder);
    });
    let yaml = format!(
        "gateway:\n  listen: 127.0.0.1:{port}\n  public_url: http://127.0.0.1:{port}/mcp\n  authentication: false\nadmin:\n  listen: 127.0.0.1:0\n"
    );
    let gw = controlplane::start(Config::parse(&yaml, "t.yaml").unwrap(), Some(1))
        .await
        .expect("started once the port was free");
    release.join().unwrap();
    assert_eq!(gw.addr.port(), port);
    gw.shutdown().await;
}

#[test]
fn the_committed_examples_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let cfg = Config::load(&dir.join("seed.yaml")).unwrap();
    let te = cfg.upstreams[0].token_exchange.as_ref().unwrap();
    assert_eq!(te.audience, "https://enterprise-ledger.orchestrator.lab/");
    assert_eq!(te.tools.len(), 6);
    assert_eq!(te.tools[0].scopes[0].name(), "ledger:ListAccounts");
    assert_eq!(te.tools[0].ttl, std::time::Duration::from_secs(5));
    assert!(cfg.authorization_server.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_with_a_private_ca() {
    // Upstream: a second Warden terminating TLS with the dev certificate (auth off on loopback),
    // in front of a plain MCP server. The first Warden reaches it over https, trusting dev-ca.pem.
    let d = certs();
    let inner = testkit::TestUpstream::start(Default::default()).await;
    let tls_yaml = format!(
        "policy:\n  default: allow\ngateway:\n  listen: 127.0.0.1:0\n  public_url: https://localhost/mcp\n  shards: 1\n  authentication: false\n  allowed_hosts: ['*']\n  tls:\n    cert: {}\n    key: {}\nadmin:\n  listen: 127.0.0.1:0\nupstreams:\n  - name: inner\n    url: {}\n    namespace: ''\n",
        d.join("localhost.pem").display(),
        d.join("localhost.key").display(),
        inner.url()
    );
    let tls_gw = controlplane::start(Config::parse(&tls_yaml, "tls-up.yaml").unwrap(), None)
        .await
        .unwrap();
    let issuer = testkit::TestIssuer::start().await;
    let outer_yaml = common::config_yaml(&issuer.issuer(), &[], "").replace(
        "upstreams:\n  []\n",
        &format!("upstreams:\n  - name: secure\n    url: https://localhost:{}/mcp\n    ca_file: {}\n    timeout: 3s\n", tls_gw.addr.port(), d.join("dev-ca.pem").display()),
    );
    let gw = controlplane::start(Config::parse(&outer_yaml, "outer.yaml").unwrap(), None)
        .await
        .unwrap();
    let env = common::Env {
        issuer,
        upstreams: vec![inner],
        gw,
        client: reqwest::Client::new(),
    };
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let v = env
        .call(
            &tok,
            &sid,
            serde_json::json!(1),
            "secure_echo",
            serde_json::json!({"over": "tls"}),
        )
        .await;
    assert_eq!(v["result"]["structuredContent"]["over"], "tls", "{v}");
    assert_eq!(env.upstreams[0].tool_calls().len(), 1);

    // Without the CA, the handshake fails: a clear JSON-RPC error, nothing sent in clear.
    let issuer2 = testkit::TestIssuer::start().await;
    let bad_yaml = common::config_yaml(&issuer2.issuer(), &[], "").replace(
        "upstreams:\n  []\n",
        &format!(
            "upstreams:\n  - name: secure\n    url: https://localhost:{}/mcp\n    timeout: 3s\n",
            tls_gw.addr.port()
        ),
    );
    let gw2 = controlplane::start(Config::parse(&bad_yaml, "bad.yaml").unwrap(), None)
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{}/mcp", gw2.addr))
        .bearer_auth(issuer2.mint(&issuer2.claims("alice", common::AUD, "mcp:tools")))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    // No session without initialize; the point here is that discovery found no tools.
    assert_eq!(r.status(), 400);
    let ready: serde_json::Value = reqwest::get(format!("http://{}/readyz", gw2.admin_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["tools"], 0,
        "an untrusted certificate is refused: {ready}"
    );
    gw2.shutdown().await;
    env.gw.shutdown().await;
    tls_gw.shutdown().await;
}

/// A `WARDEN_LOG` that is not a filter stops the binary before it does anything, with an
/// error naming the variable (not a panic, not a silent `info`); a valid one does not.
#[test]
fn a_bad_warden_log_is_a_startup_error() {
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed.yaml");
    let validate = |level: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("validate")
            .arg("-c")
            .arg(&seed)
            .env("WARDEN_LOG", level)
            .output()
            .unwrap()
    };
    for bad in ["warning", "info,dataplane=loud"] {
        let out = validate(bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.starts_with(&format!("error: WARDEN_LOG={bad:?} is not a log filter")),
            "{bad}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = validate("warn,dataplane=debug");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
