//! End-to-end tests of the Employee Directory REST API against a real JWKS server and real signed tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
#![allow(
    clippy::disallowed_methods,
    reason = "mints tokens for the real now, as a remote client would"
)]

#[path = "directory/harness.rs"]
mod harness;

use demo::directory::{
    Directory, DirectoryOptions, OPENAPI_YAML, OPERATION_SCOPES, required_scope,
};
use harness::{
    AUDIENCE, GATEWAY, Harness, ISSUER, SigningKey, USER, assert_error, assert_invalid_token, ids,
    now,
};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn list_returns_all_ten_then_filters_and_pages() {
    let h = Harness::start().await;
    assert!(h.directory.url().starts_with("http://127.0.0.1:"));
    assert_eq!(h.directory.url(), format!("http://{}", h.directory.addr()));
    let r = h
        .call(Method::GET, "/employees", "employee:List", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        (
            r.body["total"].as_u64(),
            r.body["limit"].as_u64(),
            r.body["offset"].as_u64()
        ),
        (Some(10), Some(20), Some(0))
    );
    let all: Vec<String> = (1001..=1010).map(|n| format!("E{n}")).collect();
    assert_eq!(ids(&r.body), all);
    let items = r.body["items"].as_array().unwrap();
    let inactive: Vec<&Value> = items.iter().filter(|e| e["status"] == "inactive").collect();
    assert_eq!(inactive.len(), 1);
    for e in items {
        assert!(e["email"].as_str().unwrap().ends_with("@orchestrator.lab"));
        assert!(e["hireDate"].as_str().unwrap().len() == 10);
        for f in ["firstName", "lastName", "department", "title"] {
            assert!(e[f].as_str().is_some_and(|s| !s.is_empty()), "{e}");
        }
    }
    assert!(items[0]["managerId"].is_null());
    assert_eq!(items[1]["managerId"], "E1001");

    let q = |path: &'static str| h.call(Method::GET, path, "employee:List", None);
    let r = q("/employees?department=Engineering").await;
    assert_eq!(ids(&r.body), ["E1002", "E1003", "E1004"]);
    let r = q("/employees?status=inactive").await;
    assert_eq!(r.body["total"], 1);
    let r = q("/employees?status=active&department=operations").await;
    assert_eq!(ids(&r.body), ["E1001"]);
    let r = q("/employees?q=CHEN").await;
    assert_eq!(ids(&r.body), ["E1002"]);
    let r = q("/employees?q=david%20chen").await;
    assert_eq!(ids(&r.body), ["E1002"]);
    let r = q("/employees?limit=3&offset=8").await;
    assert_eq!(
        (r.body["total"].as_u64(), ids(&r.body)),
        (Some(10), vec!["E1009", "E1010"])
    );
    let r = q("/employees?limit=100&offset=50").await;
    assert_eq!(
        (r.body["total"].as_u64(), ids(&r.body).len()),
        (Some(10), 0)
    );

    for bad in [
        "/employees?limit=0",
        "/employees?limit=101",
        "/employees?limit=ten",
        "/employees?offset=-1",
        "/employees?status=retired",
    ] {
        let r = q(bad).await;
        assert_error(&r, 400, "invalid_request");
    }
}

#[tokio::test]
async fn create_then_get_and_invalid_input() {
    let h = Harness::start().await;
    let new = json!({
        "firstName": "John", "lastName": "McClane", "email": "John.McClane@orchestrator.lab",
        "department": "Operations", "title": "Security Lead", "managerId": "E1001",
    });
    let r = h
        .call(
            Method::POST,
            "/employees",
            "employee:Create",
            Some(new.clone()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["id"], "E1011");
    assert_eq!(r.body["email"], "john.mcclane@orchestrator.lab");
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["managerId"], "E1001");
    assert_eq!(r.headers["location"], "/api/v1/employees/E1011");
    let created = r.body;

    let r = h
        .call(Method::GET, "/employees/E1011", "employee:Get", None)
        .await;
    assert_eq!((r.status, &r.body), (200, &created));
    let r = h
        .call(Method::GET, "/employees", "employee:List", None)
        .await;
    assert_eq!(r.body["total"], 11);

    let r = h
        .call(Method::POST, "/employees", "employee:Create", Some(new))
        .await;
    assert_error(&r, 409, "conflict");

    let base = json!({ "firstName": "Sarah", "lastName": "Connor", "email": "sarah.connor@orchestrator.lab",
                       "department": "Compliance", "title": "Auditor" });
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("email");
    for (body, needle) in [
        (missing, "email"),
        (with("email", json!("not-an-email")), "email"),
        (with("department", json!("Marketing")), "department"),
        (with("firstName", json!("   ")), "firstName"),
        (with("managerId", json!("E9999")), "managerId"),
        (with("nickname", json!("T-800")), "nickname"),
        (with("title", json!(42)), "invalid"),
    ] {
        let r = h
            .call(Method::POST, "/employees", "employee:Create", Some(body))
            .await;
        assert_error(&r, 400, "invalid_request");
        assert!(
            r.body["message"].as_str().unwrap().contains(needle),
            "{}",
            r.body
        );
    }
    let r = h
        .call(Method::POST, "/employees", "employee:Create", None)
        .await;
    assert_error(&r, 400, "invalid_request");

    let r = h
        .call(Method::GET, "/employees/E9999", "employee:Get", None)
        .await;
    assert_error(&r, 404, "not_found");
    let r = h
        .call(
            Method::GET,
            "/employees/..%2Fdepartments",
            "employee:Get",
            None,
        )
        .await;
    assert_error(&r, 404, "not_found");
}

#[tokio::test]
async fn update_deactivate_reports_and_departments() {
    let h = Harness::start().await;
    let r = h
        .call(
            Method::PUT,
            "/employees/E1004",
            "employee:Update",
            Some(json!({ "title": "Senior Software Engineer", "managerId": "E1003" })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["title"], "Senior Software Engineer");
    assert_eq!(r.body["managerId"], "E1003");
    assert_eq!(r.body["firstName"], "Marcus");
    let r = h
        .call(Method::GET, "/employees/E1004", "employee:Get", None)
        .await;
    assert_eq!(r.body["managerId"], "E1003");
    let r = h
        .call(
            Method::PUT,
            "/employees/E1004",
            "employee:Update",
            Some(json!({ "managerId": null })),
        )
        .await;
    assert!(r.body["managerId"].is_null(), "{}", r.body);

    for body in [
        json!({}),
        json!({ "managerId": "E1004" }),
        json!({ "status": "gone" }),
    ] {
        let r = h
            .call(
                Method::PUT,
                "/employees/E1004",
                "employee:Update",
                Some(body),
            )
            .await;
        assert_error(&r, 400, "invalid_request");
    }
    // E1002 manages E1003: making E1003 manage E1002 would be a cycle.
    let r = h
        .call(
            Method::PUT,
            "/employees/E1002",
            "employee:Update",
            Some(json!({ "managerId": "E1003" })),
        )
        .await;
    assert_error(&r, 400, "invalid_request");
    let r = h
        .call(
            Method::PUT,
            "/employees/E4242",
            "employee:Update",
            Some(json!({ "title": "x" })),
        )
        .await;
    assert_error(&r, 404, "not_found");

    let r = h
        .call(
            Method::DELETE,
            "/employees/E1003",
            "employee:Deactivate",
            None,
        )
        .await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (200, &json!("inactive")),
        "{}",
        r.body
    );
    let r = h
        .call(Method::GET, "/employees/E1003", "employee:Get", None)
        .await;
    assert_eq!((r.status, &r.body["status"]), (200, &json!("inactive")));
    let r = h
        .call(Method::GET, "/employees", "employee:List", None)
        .await;
    assert_eq!(r.body["total"], 10);
    let r = h
        .call(
            Method::GET,
            "/employees?status=active",
            "employee:List",
            None,
        )
        .await;
    assert_eq!(r.body["total"], 8);
    let r = h
        .call(
            Method::DELETE,
            "/employees/E0000",
            "employee:Deactivate",
            None,
        )
        .await;
    assert_error(&r, 404, "not_found");

    let r = h
        .call(
            Method::GET,
            "/employees/E1001/reports",
            "employee:List",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ids(&r.body), ["E1002", "E1005", "E1007", "E1009", "E1010"]);
    assert_eq!(
        (&r.body["managerId"], &r.body["total"]),
        (&json!("E1001"), &json!(5))
    );
    let r = h
        .call(
            Method::GET,
            "/employees/E1008/reports",
            "employee:List",
            None,
        )
        .await;
    assert_eq!((r.status, r.body["total"].as_u64()), (200, Some(0)));
    let r = h
        .call(
            Method::GET,
            "/employees/E7777/reports",
            "employee:List",
            None,
        )
        .await;
    assert_error(&r, 404, "not_found");

    let r = h
        .call(Method::GET, "/departments", "department:List", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["total"], 5);
    let depts = r.body["items"].as_array().unwrap();
    let names: Vec<&str> = depts.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["Engineering", "Finance", "Compliance", "Operations", "HR"]
    );
    assert_eq!(
        (&depts[0]["headcount"], &depts[0]["totalEmployees"]),
        (&json!(2), &json!(3))
    );
    assert_eq!(
        (&depts[3]["headcount"], &depts[3]["totalEmployees"]),
        (&json!(1), &json!(2))
    );
}

#[tokio::test]
async fn wrong_scope_is_403_for_every_operation() {
    let h = Harness::start().await;
    let calls = [
        (Method::GET, "/employees", None),
        (Method::POST, "/employees", Some(json!({}))),
        (Method::GET, "/employees/E1001", None),
        (
            Method::PUT,
            "/employees/E1001",
            Some(json!({ "title": "x" })),
        ),
        (Method::DELETE, "/employees/E1001", None),
        (Method::GET, "/employees/E1001/reports", None),
        (Method::GET, "/departments", None),
    ];
    for ((method, path, body), (op, scope)) in calls.into_iter().zip(OPERATION_SCOPES) {
        let wrong = if scope == "employee:Get" {
            "employee:List"
        } else {
            "employee:Get"
        };
        let r = h
            .call(method, path, &format!("{wrong} ledger:ListAccounts"), body)
            .await;
        assert_error(&r, 403, "insufficient_scope");
        assert_eq!(r.body["scope"], scope);
        assert!(
            r.body["message"].as_str().unwrap().contains(op),
            "{}",
            r.body
        );
        assert_eq!(
            r.headers["www-authenticate"].to_str().unwrap(),
            format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"")
        );
    }
    // Nothing changed, nothing recorded.
    let r = h
        .call(Method::GET, "/employees/E1001", "employee:Get", None)
        .await;
    assert_eq!(r.body["status"], "active");
    assert_eq!(h.directory.received().len(), 1);
}

#[tokio::test]
async fn bad_tokens_are_401() {
    let h = Harness::start().await;
    let ok = h.delegation("employee:List");
    let with = |k: &str, v: Value| {
        let mut c = ok.clone();
        c[k] = v;
        h.key.token(&c)
    };
    let mut no_act = ok.clone();
    no_act.as_object_mut().unwrap().remove("act");
    let other_key = SigningKey::generate("ed-1");
    let cases = [
        (
            "wrong aud",
            with("aud", json!("https://enterprise-ledger.orchestrator.lab/")),
        ),
        ("wrong iss", with("iss", json!("https://evil.example"))),
        ("expired", with("exp", json!(now() - 30))),
        ("wrong actor", with("act", json!({ "sub": "someone-else" }))),
        ("no act", h.key.token(&no_act)),
        (
            "typ JWT",
            h.key
                .sign(&json!({ "alg": "EdDSA", "typ": "JWT", "kid": "ed-1" }), &ok),
        ),
        ("bad signature", other_key.token(&ok)),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in cases {
        let r = h.send(Method::GET, "/employees", Some(&token), None).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_invalid_token(&r);
    }
    let r = h.send(Method::GET, "/departments", None, None).await;
    assert_invalid_token(&r);
    let r = h
        .send(
            Method::POST,
            "/employees",
            None,
            Some(json!({ "firstName": "x" })),
        )
        .await;
    assert_invalid_token(&r);
    // Exp within the 5 s leeway is still accepted.
    let r = h
        .send(
            Method::GET,
            "/employees",
            Some(&with("exp", json!(now() - 2))),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(h.directory.received().len(), 1);
}

#[tokio::test]
async fn health_spec_and_metadata_need_no_token() {
    let h = Harness::start().await;
    let r = h.send(Method::GET, "/health", None, None).await;
    assert_eq!((r.status, &r.body["status"]), (200, &json!("ok")));

    let r = h.send(Method::GET, "/openapi.yaml", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/yaml");
    let text = r.body.as_str().unwrap();
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/openapi/employee-directory.yaml"
    ))
    .unwrap();
    assert_eq!(text, committed);
    assert_eq!(text, OPENAPI_YAML);
    let spec: Value = serde_yaml_ng::from_str(text).unwrap();
    assert_eq!(spec["openapi"], "3.0.3");
    assert_eq!(spec["servers"][0]["url"], "/api/v1");
    let bearer = &spec["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"], &bearer["bearerFormat"]),
        (&json!("http"), &json!("bearer"), &json!("JWT"))
    );

    let mut seen = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(
                op["summary"].is_string() && op["description"].is_string(),
                "{id}"
            );
            let scopes = &op["x-required-scopes"];
            if id == "health" {
                assert_eq!(op["security"], json!([]));
            } else {
                assert_eq!(scopes, &json!([required_scope(id).unwrap()]), "{id}");
                assert_eq!(op["security"], json!([{ "bearerAuth": [] }]), "{id}");
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                assert!(
                    p["schema"].is_object() && p["description"].is_string(),
                    "{id}: {p}"
                );
            }
            if let Some(body) = op.get("requestBody") {
                let schema = &body["content"]["application/json"]["schema"]["$ref"];
                assert!(
                    schema
                        .as_str()
                        .unwrap()
                        .starts_with("#/components/schemas/"),
                    "{id}"
                );
            }
            for (code, resp) in op["responses"].as_object().unwrap() {
                let resp = resp.get("$ref").map_or(resp.clone(), |r| {
                    let name = r.as_str().unwrap().rsplit('/').next().unwrap();
                    spec["components"]["responses"][name].clone()
                });
                assert!(
                    resp["content"]["application/json"]["schema"].is_object(),
                    "{id} {code}"
                );
            }
            seen.push(id.to_owned());
        }
    }
    seen.sort();
    let mut expected: Vec<String> = OPERATION_SCOPES
        .iter()
        .map(|(op, _)| (*op).to_owned())
        .collect();
    expected.push("health".to_owned());
    expected.sort();
    assert_eq!(seen, expected);

    let r = h
        .http
        .get(format!(
            "{}/.well-known/oauth-protected-resource",
            h.directory.url()
        ))
        .send()
        .await
        .unwrap();
    let meta: Value = r.json().await.unwrap();
    assert_eq!(meta["resource"], AUDIENCE);
    assert_eq!(meta["scopes_supported"].as_array().unwrap().len(), 6);

    let r = h.send(Method::GET, "/nope", None, None).await;
    assert_error(&r, 404, "not_found");
    let r = h.send(Method::PATCH, "/health", None, None).await;
    assert_error(&r, 405, "method_not_allowed");
    assert!(h.directory.received().is_empty());
}

#[tokio::test]
async fn received_records_claims_and_hash_never_the_token() {
    let h = Harness::start().await;
    let token = h.token("employee:Get");
    let r = h
        .send(Method::GET, "/employees/E1002", Some(&token), None)
        .await;
    assert_eq!(r.status, 200);
    let r = h
        .call(Method::GET, "/departments", "department:List", None)
        .await;
    assert_eq!(r.status, 200);

    let received = h.directory.received();
    assert_eq!(received.len(), 2);
    let first = &received[0];
    assert_eq!(first.operation, "getEmployee");
    assert_eq!(first.claims["sub"], USER);
    assert_eq!(first.claims["act"]["sub"], GATEWAY);
    assert_eq!(first.claims["scope"], "employee:Get");
    assert_eq!(first.claims["aud"], AUDIENCE);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(first.token_sha256, hex);
    assert_eq!(received[1].operation, "listDepartments");
    let dump = format!("{received:?}");
    assert!(!dump.contains(&token));
    assert!(!dump.contains(token.split('.').nth(2).unwrap()));
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let err = Directory::start(DirectoryOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        jwks_uri: "http://127.0.0.1:9/jwks".to_owned(),
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        gateway_client_id: GATEWAY.to_owned(),
    })
    .unwrap_err();
    assert!(err.contains("tokio runtime"), "{err}");
}
