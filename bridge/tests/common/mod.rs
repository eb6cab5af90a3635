//! Shared helpers for the bridge's integration tests.
#![allow(
    dead_code,
    reason = "each test crate uses a different subset of the helpers"
)]
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a broken fixture should fail the test loudly"
)]

use warden_bridge::{Bridge, BridgeOptions};

/// Swagger Petstore as shipped by the npm package `@readme/oas-examples` 8.2.2 (see the NOTICE).
pub const PETSTORE: &str = include_str!("../data/petstore/petstore-3.0.json");
/// The same API written as OpenAPI 3.1, from the same package.
pub const PETSTORE_31: &str = include_str!("../data/petstore/petstore-3.1.json");
pub const EDGE: &str = include_str!("../data/edge/openapi.yaml");

pub fn opts(namespace: &str) -> BridgeOptions {
    BridgeOptions {
        namespace: namespace.into(),
        base_url: Some("http://127.0.0.1:8080".into()),
        ..BridgeOptions::default()
    }
}

pub fn petstore() -> Bridge {
    warden_bridge::load(PETSTORE, &opts("petstore_")).unwrap()
}

pub fn petstore_31() -> Bridge {
    warden_bridge::load(PETSTORE_31, &opts("petstore_")).unwrap()
}

pub fn edge() -> Bridge {
    warden_bridge::load(
        EDGE,
        &BridgeOptions {
            namespace: "edge_".into(),
            ..BridgeOptions::default()
        },
    )
    .unwrap()
}
