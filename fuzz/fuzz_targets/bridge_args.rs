//! OpenAPI bridge argument validation and request building (`Bridge::build_request`) on
//! arbitrary JSON arguments, against the committed Petstore 3.1 and edge-case specs.
//! Arguments come from the agent: never panic; a built request stays on the spec's server.
//!
//! Input: first byte picks the spec and the tool, the rest is the `arguments` JSON.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use warden_bridge::{Bridge, BridgeOptions, load};

fn bridges() -> &'static [Bridge; 2] {
    static B: OnceLock<[Bridge; 2]> = OnceLock::new();
    B.get_or_init(|| {
        let opts = BridgeOptions {
            namespace: "ns_".to_owned(),
            base_url: Some("https://api.example/v1".to_owned()),
            ..BridgeOptions::default()
        };
        let pet = include_str!("../../bridge/tests/data/petstore/petstore-3.1.json");
        let edge = include_str!("../../bridge/tests/data/edge/openapi.yaml");
        [
            load(pet, &opts).expect("petstore loads"),
            load(edge, &opts).expect("edge spec loads"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(args) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let b = &bridges()[usize::from(pick & 1)];
    let tools = b.tools();
    if tools.is_empty() {
        return;
    }
    let tool = &tools[usize::from(pick >> 1) % tools.len()];
    let Ok(req) = b.build_request(&tool.name, Some(&args)) else {
        return;
    };
    // Agent-supplied values can never leave the base path, add a dot-segment, or split
    // the request head.
    let path = req.path_and_query.split('?').next().unwrap_or_default();
    assert!(path == "/v1" || path.starts_with("/v1/"), "{path:?}");
    assert!(
        !path.split('/').any(|seg| seg == "." || seg == ".."),
        "dot-segment in {path:?}"
    );
    assert!(
        !req.path_and_query.contains([' ', '\r', '\n', '#']),
        "{:?}",
        req.path_and_query
    );
    for (n, v) in &req.headers {
        assert!(
            !n.contains(['\r', '\n', ':']) && !v.contains(['\r', '\n']),
            "{n:?}: {v:?}"
        );
    }
});
