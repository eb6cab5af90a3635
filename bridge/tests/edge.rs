//! OpenAPI 3.1 and 3.0 specifics, `$ref` chains and cycles, allOf, naming and validation messages.

mod common;

use serde_json::json;
use warden_bridge::{BridgeError, BridgeOptions, CallError};

#[test]
fn openapi_31_document_loads() {
    let b = common::edge();
    assert_eq!(b.base_url(), "https://api.example.test/v2");
    let names: Vec<&str> = b.tools().iter().map(|t| t.name.as_str()).collect();
    // In document order (serde_json's preserve_order is on workspace-wide).
    assert_eq!(
        names,
        [
            "edge_getRepo",
            "edge_create_thing_v2",
            "edge_putNode",
            "edge_deleteThing"
        ]
    );
    assert_eq!(b.skipped().len(), 1);
    assert_eq!(b.skipped()[0].operation, "GET /nodes");
    assert_eq!(b.skipped()[0].reason, "no operationId");
}

#[test]
fn ref_chain_and_path_item_parameters() {
    let b = common::edge();
    let t = b.tool("edge_getRepo").unwrap();
    let props = &t.input_schema["properties"];
    // SortAlias → Sort: both hops followed, the enum kept.
    assert_eq!(
        props["sort"],
        json!({"type": "string", "enum": ["name", "created"], "description": "Sort order"})
    );
    assert_eq!(props["org"]["description"], "Organization login");
    assert_eq!(t.input_schema["required"], json!(["org", "repo"]));
    assert!(t.description.starts_with("Get a repository\n\nReturns one repository of an organization.\n\nArguments:\n- `org` (path, required): Organization login\n- `repo` (path, required): Repository name\n- `labels` (query): Only repositories"));
    let err = b
        .build_request(
            "edge_getRepo",
            Some(&json!({"org": "o", "repo": "r", "sort": "size"})),
        )
        .unwrap_err();
    assert_eq!(
        err,
        CallError::InvalidArguments("`sort`: must be one of [\"name\",\"created\"]".into())
    );
}

#[test]
fn all_of_objects_are_flattened_and_31_null_types_validate() {
    let b = common::edge();
    let t = b.tool("edge_create_thing_v2").unwrap();
    assert_eq!(t.operation_id, "create.thing/v2");
    let body = &t.input_schema["properties"]["body"];
    assert_eq!(body["type"], "object");
    assert_eq!(body["required"], json!(["name", "kind"]));
    assert_eq!(
        body["properties"]["note"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(body["description"], "The new thing");

    let call = |body: serde_json::Value| {
        b.build_request("edge_create_thing_v2", Some(&json!({"body": body})))
    };
    let req = call(json!({"name": "widget", "kind": "small", "note": null})).unwrap();
    assert_eq!(req.path_and_query, "/v2/things");
    assert_eq!(
        req.body.as_deref(),
        Some(&br#"{"name":"widget","kind":"small","note":null}"#[..])
    );
    let cases = [
        (
            json!({"name": "Widget", "kind": "small"}),
            "`body.name`: must match the pattern \"^[a-z][a-z0-9-]*$\"",
        ),
        (
            json!({"name": "", "kind": "small"}),
            "`body.name`: must be at least 1 characters long",
        ),
        (
            json!({"name": "w", "kind": "small", "count": 11}),
            "`body.count`: must be at most 10",
        ),
        (
            json!({"name": "w", "kind": "small", "count": 1.5}),
            "`body.count`: expected integer, got number 1.5",
        ),
        (
            json!({"name": "w", "kind": "small", "note": 3}),
            "`body.note`: expected string or null, got number 3",
        ),
        (json!({"name": "w"}), "`body.kind`: is required"),
    ];
    for (body, want) in cases {
        assert_eq!(call(body), Err(CallError::InvalidArguments(want.into())));
    }
    assert_eq!(
        b.build_request("edge_create_thing_v2", Some(&json!([1]))),
        Err(CallError::InvalidArguments(
            "arguments must be a JSON object".into()
        ))
    );
}

#[test]
fn recursive_schemas_are_cut_not_rejected() {
    let b = common::edge();
    let t = b.tool("edge_putNode").unwrap();
    let children = &t.input_schema["properties"]["body"]["properties"]["children"];
    let inner = &children["items"];
    assert_eq!(
        inner,
        &json!({"description": "(recursive reference to #/components/schemas/Node, not expanded)"})
    );
    let req = b
        .build_request("edge_putNode", Some(&json!({"body": {"value": "a", "children": [{"value": "b", "children": [{"x": 1}]}]}})))
        .unwrap();
    assert_eq!(req.method, "PUT");
    let del = b
        .build_request("edge_deleteThing", Some(&json!({"id": 0})))
        .unwrap_err();
    assert_eq!(
        del,
        CallError::InvalidArguments("`id`: must be at least 1".into())
    );
}

const MINI_30: &str = r##"{
  "openapi": "3.0.3",
  "info": {"title": "mini", "version": "1"},
  "servers": [{"url": "http://10.0.0.1:9000/base/"}],
  "paths": {
    "/items": {
      "get": {
        "operationId": "list items",
        "parameters": [
          {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "exclusiveMinimum": true, "maximum": 100}},
          {"name": "cursor", "in": "query", "schema": {"type": "string", "nullable": true}}
        ],
        "responses": {"200": {"description": "ok"}}
      },
      "post": {
        "operationId": "list_items",
        "responses": {"200": {"description": "ok"}}
      }
    }
  }
}"##;

#[test]
fn openapi_30_json_with_nullable_and_boolean_bounds() {
    let opts = BridgeOptions {
        exclude: vec!["list_items".into()],
        ..BridgeOptions::default()
    };
    let b = warden_bridge::load(MINI_30, &opts).unwrap();
    assert_eq!(b.base_url(), "http://10.0.0.1:9000/base");
    let t = b.tool("list_items").unwrap();
    let props = &t.input_schema["properties"];
    assert_eq!(
        props["limit"],
        json!({"type": "integer", "exclusiveMinimum": 0, "maximum": 100})
    );
    assert_eq!(props["cursor"]["type"], json!(["string", "null"]));
    assert_eq!(
        b.build_request("list_items", Some(&json!({"limit": 0}))),
        Err(CallError::InvalidArguments(
            "`limit`: must be greater than 0".into()
        ))
    );
    let req = b
        .build_request("list_items", Some(&json!({"limit": 5, "cursor": null})))
        .unwrap();
    assert_eq!(req.path_and_query, "/base/items?limit=5");
}

#[test]
fn sanitized_name_collisions_and_long_names_are_errors() {
    let err = warden_bridge::load(MINI_30, &BridgeOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "operations list items and list_items both become tool \"list_items\""
    );
    let long = BridgeOptions {
        namespace: "n".repeat(60),
        exclude: vec!["list_items".into()],
        ..BridgeOptions::default()
    };
    let err = warden_bridge::load(MINI_30, &long).unwrap_err();
    assert!(
        matches!(&err, BridgeError::NameTooLong { len: 70, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("list items (GET /items)"));
    let bad_ns = BridgeOptions {
        namespace: "a.b".into(),
        ..BridgeOptions::default()
    };
    assert!(matches!(
        warden_bridge::load(MINI_30, &bad_ns),
        Err(BridgeError::Namespace(_))
    ));
}

#[test]
fn broken_documents_name_the_problem() {
    let swagger2 = r#"{"swagger": "2.0", "paths": {}}"#;
    assert_eq!(
        warden_bridge::load(swagger2, &BridgeOptions::default())
            .unwrap_err()
            .to_string(),
        "unsupported OpenAPI version \"2.0\": 3.0.x and 3.1.x are supported"
    );
    let dangling = r##"{"openapi": "3.1.0", "servers": [{"url": "http://h"}], "paths": {"/a": {"get": {"operationId": "a",
        "parameters": [{"$ref": "#/components/parameters/Nope"}]}}}}"##;
    assert_eq!(
        warden_bridge::load(dangling, &BridgeOptions::default())
            .unwrap_err()
            .to_string(),
        "#/paths/~1a/get/parameters/0/$ref: $ref \"#/components/parameters/Nope\" points at nothing"
    );
    let external = r##"{"openapi": "3.1.0", "servers": [{"url": "http://h"}], "paths": {"/a": {"get": {"operationId": "a",
        "parameters": [{"$ref": "other.yaml#/P"}]}}}}"##;
    assert!(
        warden_bridge::load(external, &BridgeOptions::default())
            .unwrap_err()
            .to_string()
            .contains("external $ref")
    );
    // Fan-out bomb: every level references the next twice.
    let mut schemas = serde_json::Map::new();
    for i in 0..24 {
        let next = json!({"$ref": format!("#/components/schemas/S{}", i + 1)});
        schemas.insert(
            format!("S{i}"),
            json!({"type": "object", "properties": {"a": next.clone(), "b": next}}),
        );
    }
    schemas.insert("S24".into(), json!({"type": "string"}));
    let bomb = json!({"openapi": "3.1.0", "servers": [{"url": "http://h"}],
        "components": {"schemas": schemas},
        "paths": {"/a": {"post": {"operationId": "a", "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/S0"}}}}}}}});
    let err = warden_bridge::load(&bomb.to_string(), &BridgeOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("expands to more than 50000 nodes"),
        "{err}"
    );
    assert!(matches!(
        warden_bridge::load("{not json", &BridgeOptions::default()),
        Err(BridgeError::Parse(_))
    ));
}
