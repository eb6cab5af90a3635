//! The public Swagger Petstore spec, which no one on the project wrote, through the bridge:
//! the OpenAPI 3.0 and 3.1 versions shipped by the npm package `@readme/oas-examples` 8.2.2.

mod common;

use serde_json::json;
use warden_bridge::{Bridge, BridgeError, BridgeOptions, CallError};

/// Both documents describe the same 20 operations; all but `uploadFile` become tools.
const TOOL_NAMES: [&str; 19] = [
    "petstore_updatePet",
    "petstore_addPet",
    "petstore_findPetsByStatus",
    "petstore_findPetsByTags",
    "petstore_getPetById",
    "petstore_updatePetWithForm",
    "petstore_deletePet",
    "petstore_getInventory",
    "petstore_placeOrder",
    "petstore_getOrderById",
    "petstore_deleteOrder",
    "petstore_createUser",
    "petstore_createUsersWithArrayInput",
    "petstore_createUsersWithListInput",
    "petstore_loginUser",
    "petstore_logoutUser",
    "petstore_getUserByName",
    "petstore_updateUser",
    "petstore_deleteUser",
];

fn names(b: &Bridge) -> Vec<&str> {
    b.tools().iter().map(|t| t.name.as_str()).collect()
}

#[test]
fn every_operation_with_an_id_becomes_a_namespaced_tool() {
    let b = common::petstore();
    assert_eq!(names(&b), TOOL_NAMES);
    // uploadFile only takes multipart/form-data in 3.0: skipped, with the reason.
    assert_eq!(b.skipped().len(), 1);
    assert_eq!(b.skipped()[0].operation, "uploadFile");
    assert!(b.skipped()[0].reason.contains("multipart/form-data"));
    // findPetsByTags is `deprecated: true`.
    assert!(
        b.tool("petstore_findPetsByTags")
            .unwrap()
            .description
            .starts_with("Deprecated. Finds Pets by tags\n\n")
    );
    // The configured base_url replaces the spec's absolute server.
    assert_eq!(b.base_url(), "http://127.0.0.1:8080");
}

#[test]
fn openapi_3_1_version_yields_the_same_tools() {
    let b30 = common::petstore();
    let b31 = common::petstore_31();
    assert_eq!(names(&b31), TOOL_NAMES);
    assert_eq!(names(&b31), names(&b30));
    // uploadFile only takes application/octet-stream in 3.1: skipped, with the reason.
    assert_eq!(b31.skipped().len(), 1);
    assert_eq!(b31.skipped()[0].operation, "uploadFile");
    assert!(b31.skipped()[0].reason.contains("application/octet-stream"));
    assert_eq!(b31.warnings(), b30.warnings());
    assert_eq!(b31.base_url(), "http://127.0.0.1:8080");
    for (t31, t30) in b31.tools().iter().zip(b30.tools()) {
        assert_eq!(t31.description, t30.description, "{}", t31.name);
        assert_eq!(t31.annotations, t30.annotations, "{}", t31.name);
    }
    // Identical operations give identical tools; 3.0's Pet.id adds only a `default`.
    assert_eq!(
        b31.tool("petstore_getPetById").unwrap().to_mcp(),
        b30.tool("petstore_getPetById").unwrap().to_mcp()
    );
    assert_eq!(
        b31.tool("petstore_placeOrder").unwrap().input_schema,
        b30.tool("petstore_placeOrder").unwrap().input_schema
    );
    let mut pet30 = b30.tool("petstore_addPet").unwrap().input_schema.clone();
    assert_eq!(
        pet30["properties"]["body"]["properties"]["id"]
            .as_object_mut()
            .unwrap()
            .remove("default"),
        Some(json!(40))
    );
    assert_eq!(b31.tool("petstore_addPet").unwrap().input_schema, pet30);
    for (tool, args) in [
        ("petstore_getPetById", json!({"petId": 10})),
        (
            "petstore_addPet",
            json!({"body": {"name": "rex", "photoUrls": []}}),
        ),
        (
            "petstore_loginUser",
            json!({"username": "u", "password": "p w"}),
        ),
    ] {
        assert_eq!(
            b31.build_request(tool, Some(&args)),
            b30.build_request(tool, Some(&args)),
            "{tool}"
        );
    }
}

#[test]
fn get_pet_by_id_worked_example() {
    let b = common::petstore();
    let t = b.tool("petstore_getPetById").unwrap();
    assert_eq!(t.operation_id, "getPetById");
    assert_eq!(
        t.input_schema,
        json!({
            "type": "object",
            "properties": {
                "petId": {"type": "integer", "format": "int64", "description": "ID of pet to return"}
            },
            "required": ["petId"],
            "additionalProperties": false
        })
    );
    assert_eq!(
        t.description,
        "Find pet by ID\n\nReturns a single pet\n\nArguments:\n- `petId` (path, required): ID of pet to return"
    );
    let mcp = t.to_mcp();
    assert_eq!(mcp["annotations"], json!({"readOnlyHint": true}));
    assert_eq!(mcp["title"], "Find pet by ID");
    assert_eq!(mcp["name"], "petstore_getPetById");

    let req = b
        .build_request("petstore_getPetById", Some(&json!({"petId": 10})))
        .unwrap();
    assert_eq!(req.method, "GET");
    assert_eq!(req.path_and_query, "/pet/10");
    assert_eq!(req.body, None);
    assert_eq!(
        req.headers,
        vec![("accept".to_owned(), "application/json".to_owned())]
    );

    let ok = b.map_response(
        "petstore_getPetById",
        200,
        Some("application/json"),
        br#"{"id":10,"name":"doggie","photoUrls":[],"status":"available"}"#,
    );
    assert_eq!(ok["structuredContent"]["name"], "doggie");
    assert!(
        ok["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("\"doggie\"")
    );
    assert!(ok.get("isError").is_none());

    let err = b.build_request("petstore_getPetById", Some(&json!({"petId": "ten"})));
    assert_eq!(
        err,
        Err(CallError::InvalidArguments(
            "`petId`: expected integer, got string \"ten\"".into()
        ))
    );
}

#[test]
fn request_bodies_resolve_refs_and_keep_required_fields() {
    let b = common::petstore();
    let add = b.tool("petstore_addPet").unwrap();
    let s = &add.input_schema;
    assert_eq!(s["required"], json!(["body"]));
    let body = &s["properties"]["body"];
    assert_eq!(body["required"], json!(["name", "photoUrls"]));
    // The body is a $ref to #/components/requestBodies/Pet, whose schema is a $ref to Pet.
    assert_eq!(
        body["description"],
        "Pet object that needs to be added to the store"
    );
    // $ref to Category and Tag inlined; xml/example dropped.
    assert_eq!(
        body["properties"]["category"]["properties"]["name"]["type"],
        "string"
    );
    assert_eq!(
        body["properties"]["tags"]["items"]["properties"]["id"]["format"],
        "int64"
    );
    assert_eq!(
        body["properties"]["status"]["enum"],
        json!(["available", "pending", "sold"])
    );
    assert!(!s.to_string().contains("$ref"));
    assert!(!s.to_string().contains("\"xml\""));
    assert!(!s.to_string().contains("\"example\""));
    assert!(add.description.contains(
        "- `body` (application/json, required): Pet object that needs to be added to the store"
    ));
    assert!(!add.annotations.read_only_hint);
    // updatePet refers to the same request body.
    assert_eq!(b.tool("petstore_updatePet").unwrap().input_schema, *s);
    // UserArray: an array whose items are a $ref to User.
    let users = &b
        .tool("petstore_createUsersWithArrayInput")
        .unwrap()
        .input_schema["properties"]["body"];
    assert_eq!(users["type"], "array");
    assert_eq!(users["description"], "List of user object");
    assert_eq!(
        users["items"]["properties"]["userStatus"],
        json!({"type": "integer", "format": "int32", "description": "User Status"})
    );

    let req = b
        .build_request(
            "petstore_addPet",
            Some(&json!({"body": {"name": "rex", "photoUrls": ["http://x/1.png"]}})),
        )
        .unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path_and_query, "/pet");
    assert_eq!(req.content_type.as_deref(), Some("application/json"));
    let sent: serde_json::Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        sent,
        json!({"name": "rex", "photoUrls": ["http://x/1.png"]})
    );

    let missing = b
        .build_request("petstore_addPet", Some(&json!({"body": {"name": "rex"}})))
        .unwrap_err();
    assert_eq!(
        missing,
        CallError::InvalidArguments("`body.photoUrls`: is required".into())
    );
    let no_body = b.build_request("petstore_addPet", None).unwrap_err();
    assert_eq!(
        no_body,
        CallError::InvalidArguments("`body`: is required".into())
    );
    let bad_enum = b
        .build_request(
            "petstore_addPet",
            Some(&json!({"body": {"name": "rex", "photoUrls": [], "status": "lost"}})),
        )
        .unwrap_err();
    assert_eq!(
        bad_enum,
        CallError::InvalidArguments(
            "`body.status`: must be one of [\"available\",\"pending\",\"sold\"]".into()
        )
    );
}

#[test]
fn api_key_header_is_a_gateway_credential_not_an_argument() {
    let b = common::petstore();
    let del = b.tool("petstore_deletePet").unwrap();
    assert!(del.input_schema["properties"].get("api_key").is_none());
    assert!(
        b.warnings()
            .iter()
            .any(|w| w.starts_with("deletePet: header parameter `api_key`"))
    );
    let err = b
        .build_request(
            "petstore_deletePet",
            Some(&json!({"petId": 1, "api_key": "x"})),
        )
        .unwrap_err();
    assert!(
        matches!(err, CallError::InvalidArguments(m) if m.contains("`api_key`: is not a known property"))
    );
    assert_eq!(
        serde_json::to_value(&del.annotations).unwrap(),
        json!({"readOnlyHint": false, "destructiveHint": true, "idempotentHint": true})
    );
    let put = b.tool("petstore_updatePet").unwrap();
    assert_eq!(put.annotations.idempotent_hint, Some(true));
}

#[test]
fn query_parameters_and_arrays() {
    let b = common::petstore();
    let req = b
        .build_request(
            "petstore_findPetsByTags",
            Some(&json!({"tags": ["big dog", "a&b=c", "ü"]})),
        )
        .unwrap();
    assert_eq!(
        req.path_and_query,
        "/pet/findByTags?tags=big%20dog&tags=a%26b%3Dc&tags=%C3%BC"
    );
    // An array of enum strings: each item is checked, and the array is exploded.
    let req = b
        .build_request(
            "petstore_findPetsByStatus",
            Some(&json!({"status": ["available", "sold"]})),
        )
        .unwrap();
    assert_eq!(
        req.path_and_query,
        "/pet/findByStatus?status=available&status=sold"
    );
    assert_eq!(
        b.build_request(
            "petstore_findPetsByStatus",
            Some(&json!({"status": ["lost"]}))
        ),
        Err(CallError::InvalidArguments(
            "`status[0]`: must be one of [\"available\",\"pending\",\"sold\"]".into()
        ))
    );
    // Two query parameters, in the spec's order, names and values encoded.
    let req = b
        .build_request(
            "petstore_loginUser",
            Some(&json!({"username": "ann", "password": "p&w=1 #x"})),
        )
        .unwrap();
    assert_eq!(
        req.path_and_query,
        "/user/login?username=ann&password=p%26w%3D1%20%23x"
    );
    assert_eq!(
        b.build_request("petstore_loginUser", Some(&json!({"username": "ann"}))),
        Err(CallError::InvalidArguments(
            "`password`: is required".into()
        ))
    );
    // A string path parameter is one encoded segment.
    let req = b
        .build_request(
            "petstore_getUserByName",
            Some(&json!({"username": "../a/b?c"})),
        )
        .unwrap();
    assert_eq!(req.path_and_query, "/user/..%2Fa%2Fb%3Fc");
    // updatePetWithForm's name and status are an x-www-form-urlencoded body.
    let req = b
        .build_request(
            "petstore_updatePetWithForm",
            Some(&json!({"petId": 3, "body": {"name": "x y", "status": "sold"}})),
        )
        .unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path_and_query, "/pet/3");
    assert_eq!(
        req.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(req.body.as_deref(), Some(&b"name=x%20y&status=sold"[..]));
    let req = b.build_request("petstore_logoutUser", None).unwrap();
    assert_eq!(req.path_and_query, "/user/logout");
}

#[test]
fn error_responses_carry_status_and_message() {
    let b = common::petstore();
    let r = b.map_response(
        "petstore_getPetById",
        404,
        Some("application/json"),
        br#"{"code":1,"type":"error","message":"Pet not found"}"#,
    );
    assert_eq!(
        r,
        json!({"content":[{"type":"text","text":"HTTP 404: Pet not found"}],"isError":true})
    );
    let r = b.map_response(
        "petstore_getPetById",
        500,
        Some("text/plain"),
        b"boom\r\nstack trace",
    );
    assert_eq!(r["content"][0]["text"], "HTTP 500: boom stack trace");
    assert_eq!(r["isError"], true);
    let r = b.map_response("petstore_getPetById", 503, None, b"");
    assert_eq!(r["content"][0]["text"], "HTTP 503: Service Unavailable");
    let r = b.map_response(
        "x",
        401,
        Some("application/json"),
        br#"{"error":"invalid_token","error_description":"expired"}"#,
    );
    assert_eq!(r["content"][0]["text"], "HTTP 401: expired");
    let r = b.map_response("x", 302, None, b"");
    assert_eq!(r["isError"], true);
}

#[test]
fn success_responses() {
    let b = common::petstore();
    let r = b.map_response(
        "petstore_loginUser",
        200,
        Some("application/json"),
        br#""token""#,
    );
    assert_eq!(r["structuredContent"], json!({"result": "token"}));
    let r = b.map_response("x", 200, Some("application/xml"), b"<pet/>");
    assert_eq!(r, json!({"content":[{"type":"text","text":"<pet/>"}]}));
    let r = b.map_response("x", 200, Some("application/json; charset=utf-8"), b"[1,2]");
    assert_eq!(r["structuredContent"], json!({"result": [1, 2]}));
    let r = b.map_response("x", 204, None, b"");
    assert_eq!(r["content"][0]["text"], "HTTP 204: No Content");
    let big = format!("[{}1]", "1,".repeat(40_000));
    let r = b.map_response("x", 200, Some("application/json"), big.as_bytes());
    let text = r["content"][0]["text"].as_str().unwrap();
    assert!(text.len() < warden_bridge::MAX_TEXT_BYTES + 100);
    assert!(text.contains("[truncated"));
    assert_eq!(
        r["structuredContent"]["result"].as_array().unwrap().len(),
        40_001
    );
    let huge = vec![b'a'; warden_bridge::MAX_RESPONSE_BYTES + 1];
    let r = b.map_response("x", 200, Some("text/plain"), &huge);
    assert_eq!(r["isError"], true);
    let r = b.map_response("x", 200, Some("image/png"), &[0xff, 0xfe, 0x00]);
    assert_eq!(
        r["content"][0]["text"],
        "(binary response: 3 bytes of image/png)"
    );
}

#[test]
fn include_and_exclude() {
    let only = BridgeOptions {
        include: vec!["getPetById".into(), "addPet".into()],
        exclude: vec!["addPet".into()],
        ..common::opts("p_")
    };
    let b = warden_bridge::load(common::PETSTORE, &only).unwrap();
    let names: Vec<&str> = b.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["p_getPetById"]);
    assert!(
        b.skipped()
            .iter()
            .any(|s| s.operation == "addPet" && s.reason == "in `exclude`")
    );
    assert_eq!(
        b.build_request("p_addPet", None),
        Err(CallError::UnknownTool("p_addPet".into()))
    );
    let typo = BridgeOptions {
        include: vec!["getPetByID".into()],
        ..common::opts("p_")
    };
    let err = warden_bridge::load(common::PETSTORE, &typo).unwrap_err();
    assert!(
        matches!(
            err,
            BridgeError::UnknownOperation {
                list: "include",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn base_url_rules() {
    // Without a configured base_url, the spec's absolute server is used, base path included.
    let own = BridgeOptions {
        base_url: None,
        ..common::opts("p_")
    };
    let b = warden_bridge::load(common::PETSTORE, &own).unwrap();
    assert_eq!(b.base_url(), "http://petstore.swagger.io/v2");
    let req = b
        .build_request("p_getPetById", Some(&json!({"petId": 10})))
        .unwrap();
    assert_eq!(req.path_and_query, "/v2/pet/10");
    let b = warden_bridge::load(common::PETSTORE_31, &own).unwrap();
    assert_eq!(b.base_url(), "http://petstore.swagger.io/v2");

    let cred = BridgeOptions {
        base_url: Some("http://user:pw@127.0.0.1".into()),
        ..common::opts("p_")
    };
    assert!(matches!(
        warden_bridge::load(common::PETSTORE, &cred),
        Err(BridgeError::BaseUrl(_))
    ));
    // A configured base_url replaces an absolute server, path included.
    let nested = BridgeOptions {
        base_url: Some("https://pets.example/api/".into()),
        ..common::opts("p_")
    };
    let b = warden_bridge::load(common::PETSTORE, &nested).unwrap();
    assert_eq!(b.base_url(), "https://pets.example/api");
    let req = b
        .build_request("p_getPetById", Some(&json!({"petId": 10})))
        .unwrap();
    assert_eq!(req.path_and_query, "/api/pet/10");

    // The same document with a relative server (edited in memory; the file stays verbatim).
    let server = r#""url": "http://petstore.swagger.io/v2""#;
    assert_eq!(common::PETSTORE.matches(server).count(), 1);
    let relative = common::PETSTORE.replace(server, r#""url": "/v3""#);
    let err = warden_bridge::load(&relative, &own).unwrap_err();
    assert_eq!(
        err.to_string(),
        "base URL: servers[0].url \"/v3\" is relative and no base_url is configured"
    );
    // `/v3` replaces the configured path.
    let b = warden_bridge::load(&relative, &nested).unwrap();
    assert_eq!(b.base_url(), "https://pets.example/v3");
    let req = b
        .build_request("p_getPetById", Some(&json!({"petId": 10})))
        .unwrap();
    assert_eq!(req.path_and_query, "/v3/pet/10");
}

#[test]
fn bridge_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<warden_bridge::Bridge>();
}
