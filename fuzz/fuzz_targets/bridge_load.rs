//! OpenAPI bridge spec loading (`warden_bridge::load`) on arbitrary text: YAML or JSON,
//! `$ref` resolution with its cycle, depth and size bounds, tool building. An operator's
//! spec is trusted more than a request, but a fetched one may be hostile: never panic, hang
//! or blow up. A loaded bridge must index every tool it lists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_bridge::{BridgeOptions, load};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let opts = BridgeOptions {
        namespace: "ns_".to_owned(),
        base_url: Some("https://api.example/v1".to_owned()),
        ..BridgeOptions::default()
    };
    let Ok(bridge) = load(text, &opts) else {
        return;
    };
    for t in bridge.tools() {
        assert!(
            bridge.tool(&t.name).is_some(),
            "tool {:?} not indexed",
            t.name
        );
        let _ = t.to_mcp();
    }
});
