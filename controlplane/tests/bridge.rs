//! REST APIs as tools: a spec no one here wrote (the Petstore, from npm's
//! @readme/oas-examples), served by a small test server, bridged through the real gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use axum::http::{StatusCode, Uri};
use common::Env;
use serde_json::{Value, json};
use tokio::sync::Mutex;

type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// A small Petstore: records method, raw path+query and Authorization; answers by path.
async fn petstore() -> (String, Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: Uri, headers: axum::http::HeaderMap| {
            let seen = s2.clone();
            async move {
                let pq = uri
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                seen.lock()
                    .await
                    .push((method.to_string(), pq.clone(), auth));
                if pq.starts_with("/pet/10") {
                    (
                        StatusCode::OK,
                        [("content-type", "application/json")],
                        json!({"id": 10, "name": "doggie", "status": "available"}).to_string(),
                    )
                } else if pq.starts_with("/pet/findByStatus") {
                    (
                        StatusCode::OK,
                        [("content-type", "application/json")],
                        "x".repeat(300_000),
                    )
                } else if pq.starts_with("/store/inventory") {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [("content-type", "text/plain")],
                        "inventory offline".to_string(),
                    )
                } else {
                    (
                        StatusCode::NOT_FOUND,
                        [("content-type", "application/json")],
                        json!({"message": "Pet not found"}).to_string(),
                    )
                }
            }
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let h = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (base, seen, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn petstore_operations_become_tools_and_requests_stay_in_their_lane() {
    let (base, seen, server) = petstore().await;
    let issuer = testkit::TestIssuer::start().await;
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../bridge/tests/data/petstore/petstore-3.0.json");
    let yaml = common::config_yaml(&issuer.issuer(), &[], "").replace(
        "upstreams:\n  []\n",
        &format!("upstreams:\n  - name: petstore\n    kind: openapi\n    url: {base}\n    spec_file: {}\n    namespace: pets_\n    max_response_bytes: 200000\n    timeout: 2s\n", spec.display()),
    );
    let gw = controlplane::start(
        controlplane::Config::parse(&yaml, "pets.yaml").unwrap(),
        None,
    )
    .await
    .unwrap();
    let env = Env {
        issuer,
        upstreams: vec![],
        gw,
        client: reqwest::Client::new(),
    };
    let tok = env.token("alice");
    let sid = env.session(&tok).await;
    let r = env
        .post(
            Some(&tok),
            Some(&sid),
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let tools = v["result"]["tools"].as_array().unwrap();
    assert_eq!(
        tools.len(),
        19,
        "every operation with an operationId but uploadFile (multipart body)"
    );
    let get = tools
        .iter()
        .find(|t| t["name"] == "pets_getPetById")
        .unwrap();
    assert_eq!(get["inputSchema"]["required"], json!(["petId"]));
    assert_eq!(get["annotations"]["readOnlyHint"], true);

    // A real call: JSON → structuredContent; the user's token is not sent.
    let v = env
        .call(
            &tok,
            &sid,
            json!(2),
            "pets_getPetById",
            json!({"petId": 10}),
        )
        .await;
    assert_eq!(v["result"]["structuredContent"]["name"], "doggie", "{v}");
    // Encoding: traversal, '?', '#', CRLF stay inside one segment.
    let v = env
        .call(
            &tok,
            &sid,
            json!(3),
            "pets_getUserByName",
            json!({"username": "../../admin?x=1#frag\r\nHost: evil"}),
        )
        .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("404")
            && v.to_string().contains("Pet not found"),
        "{v}"
    );
    // Invalid arguments: -32602 before anything is sent.
    let before = seen.lock().await.len();
    let v = env
        .call(
            &tok,
            &sid,
            json!(4),
            "pets_getPetById",
            json!({"petId": "ten"}),
        )
        .await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert_eq!(seen.lock().await.len(), before);
    // 5xx text → isError with the status; oversize → a clear error.
    let v = env
        .call(&tok, &sid, json!(5), "pets_getInventory", json!({}))
        .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert!(
        v.to_string().contains("500") && v.to_string().contains("inventory offline"),
        "{v}"
    );
    let v = env
        .call(
            &tok,
            &sid,
            json!(6),
            "pets_findPetsByStatus",
            json!({"status": ["available"]}),
        )
        .await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large"),
        "{v}"
    );

    let seen = seen.lock().await.clone();
    assert_eq!(seen[0].0, "GET");
    assert_eq!(seen[0].1, "/pet/10");
    assert_eq!(
        seen[1].1, "/user/..%2F..%2Fadmin%3Fx%3D1%23frag%0D%0AHost%3A%20evil",
        "one segment: {:?}",
        seen[1]
    );
    assert!(seen[2].1.starts_with("/store/inventory"));
    assert_eq!(seen[3].1, "/pet/findByStatus?status=available");
    for (_, _, auth) in &seen {
        assert_ne!(
            auth.as_deref(),
            Some(format!("Bearer {tok}").as_str()),
            "never the user's token"
        );
    }
    env.gw.shutdown().await;
    server.abort();
}
