//! Resources, resource templates and prompts of every upstream: discovered beside its tools
//! (every page of `resources/list`, `resources/templates/list`, `prompts/list`, in the
//! upstream's own revision), merged into the namespaced [`ItemTable`] shards route by, and
//! the capabilities the gateway advertises for them.

use std::collections::HashMap;
use std::sync::Arc;

use dataplane::mcp::items::{self, ItemTable, ListedResource, PromptRoute, UriNaming};
use dataplane::snapshot::Upstream;
use serde_json::Value;

use crate::catalog::{Client, Discovered, Transport, list_pages};

/// What one upstream serves besides tools (each list as the upstream sent it).
#[derive(Debug, Clone, Default)]
pub struct Items {
    pub resources: Vec<Value>,
    pub templates: Vec<Value>,
    pub prompts: Vec<Value>,
}

/// List everything the upstream's capabilities announce. A list that fails is logged and
/// left empty: the upstream's tools are still served.
pub(crate) async fn discover<T: Transport>(
    c: &mut Client<T>,
    meta: Option<Value>,
    caps: &Value,
) -> Items {
    let mut out = Items::default();
    let meta = meta.as_ref();
    let mut list = async |method: &str, key: &str, first_id: i64| match list_pages(
        c, meta, method, key, first_id,
    )
    .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(method, error = ?e.to_string(), "Upstream list failed during discovery; served empty");
            Vec::new()
        }
    };
    if caps.get("resources").is_some() {
        out.resources = list("resources/list", "resources", 1_000).await;
        out.templates = list("resources/templates/list", "resourceTemplates", 2_000).await;
    }
    if caps.get("prompts").is_some() {
        out.prompts = list("prompts/list", "prompts", 3_000).await;
    }
    out
}

/// Merge every upstream's items into one table. Prompts are namespaced like tools (the first
/// upstream in config order keeps a contested name); resource URIs are verbatim while one
/// upstream serves resources and `warden://<upstream>/`-prefixed when several do. Names and
/// URIs are the upstream's text: logged as `Debug` fields (quoted, escaped).
pub fn build_items(upstreams: &[Arc<Upstream>], found: &HashMap<u32, Discovered>) -> ItemTable {
    let mut t = ItemTable::default();
    let of = |up: &Upstream| found.get(&up.id).filter(|_| up.bridge.is_none());
    let serving: Vec<usize> = (upstreams.iter().enumerate())
        .filter(|(_, up)| {
            of(up).is_some_and(|d| !d.items.resources.is_empty() || !d.items.templates.is_empty())
        })
        .map(|(i, _)| i)
        .collect();
    t.naming = match serving.as_slice() {
        [] => UriNaming::Unserved,
        [one] => UriNaming::Verbatim(*one),
        many => {
            let mut by_name = HashMap::new();
            let mut prefixes = HashMap::new();
            for &i in many {
                let name = &upstreams[i].name;
                if !items::valid_prefix_name(name) {
                    tracing::warn!(upstream = ?name, "Resources refused: the upstream name cannot prefix a URI ([A-Za-z0-9._-])");
                    continue;
                }
                by_name.insert(name.clone(), i);
                prefixes.insert(i, items::prefix_for(name));
            }
            UriNaming::Prefixed { by_name, prefixes }
        }
    };
    for (idx, up) in upstreams.iter().enumerate() {
        let Some(d) = of(up) else { continue };
        for p in &d.items.prompts {
            let Some(name) = p.get("name").and_then(Value::as_str) else {
                continue;
            };
            let exposed = format!("{}{}", up.namespace, name);
            if t.prompts.contains_key(&exposed) {
                tracing::error!(upstream = %up.name, prompt = ?exposed, "Prompt name collision refused; the first upstream keeps it");
                continue;
            }
            let mut def = p.clone();
            def["name"] = Value::String(exposed.clone());
            let Ok(definition) = serde_json::value::to_raw_value(&def) else {
                continue;
            };
            t.prompt_order.push(exposed.clone());
            let upstream_name = name.to_owned();
            t.prompts.insert(
                exposed,
                PromptRoute {
                    upstream: idx,
                    upstream_name,
                    definition,
                },
            );
        }
        let prefix = match &t.naming {
            UriNaming::Verbatim(u) if *u == idx => String::new(),
            UriNaming::Prefixed { .. } => match t.uri_prefix(idx) {
                Some(p) => p.to_owned(),
                None => continue,
            },
            _ => continue,
        };
        let listed = |v: &Value, field: &str| -> Option<ListedResource> {
            let uri = format!("{prefix}{}", v.get(field)?.as_str()?);
            let mut def = v.clone();
            def[field] = Value::String(uri.clone());
            Some(ListedResource {
                upstream: idx,
                uri,
                definition: serde_json::value::to_raw_value(&def).ok()?,
            })
        };
        let resources = d.items.resources.iter().filter_map(|r| listed(r, "uri"));
        t.resources.extend(resources);
        let templates = (d.items.templates.iter()).filter_map(|r| listed(r, "uriTemplate"));
        t.templates.extend(templates);
    }
    t
}

/// The upstreams (by name, in config order) that serve something of `t`: each is decided
/// by an upstream policy slice of its own, whether or not it also lists tools.
pub fn serving_upstreams(upstreams: &[Arc<Upstream>], t: &ItemTable) -> Vec<String> {
    let mut idx: Vec<usize> = (t.prompts.values().map(|p| p.upstream))
        .chain(t.resources.iter().map(|r| r.upstream))
        .chain(t.templates.iter().map(|r| r.upstream))
        .collect();
    idx.sort_unstable();
    idx.dedup();
    (idx.into_iter())
        .filter_map(|i| upstreams.get(i).map(|u| u.name.clone()))
        .collect()
}

/// The `resources`, `prompts` and `completions` capabilities: present when any upstream
/// serves them; `resources.subscribe` when one of those announces it (subscriptions are
/// routed like reads). `listChanged` on both: the lists are the catalog's, refreshed on
/// reload and on an upstream's own list change (rediscovery), and the client streams tell
/// each caller when what it may see of them changed (`dataplane::mcp::stream`).
pub fn capabilities(
    caps: &mut Value,
    upstreams: &[Arc<Upstream>],
    found: &HashMap<u32, Discovered>,
) {
    let all = || {
        upstreams
            .iter()
            .filter(|u| u.bridge.is_none())
            .filter_map(|u| found.get(&u.id))
    };
    let serving =
        || all().filter(|d| !d.items.resources.is_empty() || !d.items.templates.is_empty());
    if serving().next().is_some() {
        caps["resources"] = serde_json::json!({"listChanged": true});
        let subscribe = |d: &Discovered| {
            d.capabilities.pointer("/resources/subscribe") == Some(&Value::Bool(true))
        };
        if serving().any(subscribe) {
            caps["resources"]["subscribe"] = Value::Bool(true);
        }
    }
    if all().any(|d| !d.items.prompts.is_empty()) {
        caps["prompts"] = serde_json::json!({"listChanged": true});
    }
    if all().any(|d| d.capabilities.get("completions").is_some()) {
        caps["completions"] = serde_json::json!({});
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dataplane::snapshot::UpstreamCredential;
    use serde_json::json;

    use super::*;

    fn upstream(id: u32, name: &str, namespace: &str) -> Arc<Upstream> {
        Arc::new(Upstream {
            id,
            name: name.into(),
            namespace: namespace.into(),
            authority: "127.0.0.1:1".into(),
            path: "/mcp".into(),
            addrs: Vec::new(),
            tls: None,
            credential: UpstreamCredential::None,
            timeout: Duration::from_secs(1),
            max_response_bytes: 1024,
            delegation: None,
            bridge: None,
        })
    }

    fn serving(prompts: &[&str], uris: &[&str]) -> Discovered {
        Discovered {
            items: Items {
                resources: uris.iter().map(|u| json!({"uri": u, "name": u})).collect(),
                templates: Vec::new(),
                prompts: prompts.iter().map(|p| json!({"name": p})).collect(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn contested_prompts_go_to_the_first_upstream_and_uris_are_prefixed_or_refused() {
        // Both without a namespace: the same prompt name twice. `bad name` cannot prefix a URI.
        let ups = [
            upstream(0, "a", ""),
            upstream(1, "b", ""),
            upstream(2, "bad name", "c_"),
        ];
        let found = HashMap::from([
            (0, serving(&["greet"], &["mem://x"])),
            (1, serving(&["greet", "other"], &["mem://x"])),
            (2, serving(&[], &["mem://y"])),
        ]);
        let t = build_items(&ups, &found);
        assert_eq!(t.prompt_order, ["greet", "other"]);
        assert_eq!(t.prompts["greet"].upstream, 0);
        assert_eq!(t.prompts["other"].upstream_name, "other");
        let uris: Vec<&str> = t.resources.iter().map(|r| r.uri.as_str()).collect();
        assert_eq!(uris, ["warden://a/mem://x", "warden://b/mem://x"]);
        assert_eq!(
            t.route_uri("warden://b/mem://x"),
            Some((1, "mem://x".into()))
        );
        assert_eq!(t.route_uri("warden://bad name/mem://y"), None);

        // One resource upstream: verbatim, and the listed definition keeps its URI.
        let t = build_items(&ups[..1], &found);
        assert_eq!(t.resources[0].uri, "mem://x");
        assert!(
            t.resources[0]
                .definition
                .get()
                .contains(r#""uri":"mem://x""#)
        );
        assert_eq!(
            t.route_uri("anything:/at/all"),
            Some((0, "anything:/at/all".into()))
        );
    }
}
