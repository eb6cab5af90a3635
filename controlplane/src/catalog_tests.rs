//! The discovery exchange over a scripted transport: the revision asked for and adopted, an
//! answer in a revision Warden does not speak, and the page and item limits of every list.

use serde_json::{Value, json};

use super::*;

/// One request discovery sent: its JSON body, session and `MCP-Protocol-Version`.
#[derive(Debug, Clone)]
struct Sent {
    body: Value,
    session: Option<String>,
    version: String,
}

/// A transport answering each request with `answer(method, params)`: a JSON-RPC result, or
/// `Err(status)` for an HTTP error. Records what it was sent and which sessions it ended.
struct Scripted<F> {
    answer: F,
    sent: Vec<Sent>,
    deleted: Vec<String>,
}

impl<F: FnMut(&str, &Value) -> Result<Value, u16>> Scripted<F> {
    fn new(answer: F) -> Self {
        Scripted {
            answer,
            sent: Vec::new(),
            deleted: Vec::new(),
        }
    }
}

impl<F: FnMut(&str, &Value) -> Result<Value, u16>> Transport for &mut Scripted<F> {
    async fn post(
        &mut self,
        body: String,
        session: Option<&str>,
        version: &str,
        _method: Option<&str>,
    ) -> Result<Answer, DiscoveryError> {
        let v: Value = serde_json::from_str(&body).unwrap();
        self.sent.push(Sent {
            body: v.clone(),
            session: session.map(str::to_owned),
            version: version.to_owned(),
        });
        let method = v["method"].as_str().unwrap_or_default().to_owned();
        let (status, body) = match v.get("id") {
            None => (202, String::new()),
            Some(id) => match (self.answer)(&method, &v["params"]) {
                Ok(r) => (200, json!({"jsonrpc":"2.0","id":id,"result":r}).to_string()),
                Err(status) => (status, String::new()),
            },
        };
        Ok(Answer {
            status,
            content_type: "application/json".into(),
            session: (method == "initialize").then(|| "s-1".to_owned()),
            body,
        })
    }

    async fn delete(&mut self, session: &str, _version: &str) {
        self.deleted.push(session.to_owned());
    }
}

fn run<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// A 2025-era upstream answering `initialize` with `version` (`None`: no version at all).
fn legacy(version: Option<&'static str>) -> impl FnMut(&str, &Value) -> Result<Value, u16> {
    move |method, _| match method {
        "server/discover" => Err(400),
        "initialize" => Ok(match version {
            Some(v) => json!({"protocolVersion": v, "capabilities": {"tools": {}}}),
            None => json!({"capabilities": {"tools": {}}}),
        }),
        "tools/list" => Ok(json!({"tools": [{"name": "t"}]})),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn discovery_asks_for_the_newest_2025_revision_and_adopts_a_supported_answer() {
    let mut t = Scripted::new(legacy(Some("2025-03-26")));
    let d = run(discover_with(&mut t)).unwrap();
    assert_eq!(d.protocol_version, "2025-03-26");
    assert_eq!(d.tools, [json!({"name": "t"})]);
    let init = t.sent.iter().find(|s| s.body["method"] == "initialize");
    assert_eq!(
        init.unwrap().body["params"]["protocolVersion"],
        "2025-11-25"
    );
    let list = t.sent.iter().find(|s| s.body["method"] == "tools/list");
    let list = list.unwrap();
    assert_eq!(
        (list.version.as_str(), list.session.as_deref()),
        ("2025-03-26", Some("s-1"))
    );
    assert_eq!(t.deleted, ["s-1"], "the discovery session is ended");
}

#[test]
fn an_answer_in_a_revision_warden_does_not_speak_fails_discovery() {
    for answered in [Some("1999-01-01"), None] {
        let mut t = Scripted::new(legacy(answered));
        let e = run(discover_with(&mut t)).unwrap_err();
        let DiscoveryError::Answer(m) = &e else {
            panic!("{e:?}")
        };
        assert!(m.contains("2025-11-25, 2025-06-18"), "{m}");
        if let Some(v) = answered {
            assert!(m.contains(v), "{m}");
        }
        // Nothing is listed in it, and the session it opened is ended.
        assert!(!t.sent.iter().any(|s| s.body["method"] == "tools/list"));
        assert_eq!(t.deleted, ["s-1"]);
    }
}

/// Discovery of an upstream whose `tools/list` pages are `page(n)` for page `n`, under the
/// log capture: what it found, the pages it asked for, and what it logged.
fn paged(page: impl Fn(usize) -> Value) -> (Vec<Value>, usize, String) {
    let mut out = (Vec::new(), 0);
    let log = crate::testlog::captured(|| {
        let mut n = 0;
        let mut t = Scripted::new(|method: &str, _: &Value| match method {
            "tools/list" => {
                n += 1;
                Ok(page(n - 1))
            }
            other => legacy(Some("2025-11-25"))(other, &Value::Null),
        });
        let d = run(discover_with(&mut t)).unwrap();
        let pages = (t.sent.iter())
            .filter(|s| s.body["method"] == "tools/list")
            .count();
        out = (d.tools, pages);
    });
    (out.0, out.1, log)
}

#[test]
fn a_list_that_pages_forever_stops_at_the_page_limit_and_says_so() {
    let (tools, pages, log) =
        paged(|n| json!({"tools": [{"name": format!("t{n}")}], "nextCursor": format!("c{n}")}));
    assert_eq!(pages, MAX_PAGES);
    assert_eq!(tools.len(), MAX_PAGES);
    assert!(log.contains("page limit reached"), "{log}");
    assert!(log.contains("tools/list"), "{log}");
    // A list that ends before either limit is not logged.
    let (tools, pages, log) = paged(|n| match n {
        0 => json!({"tools": [{"name": "a"}], "nextCursor": "x"}),
        _ => json!({"tools": [{"name": "b"}]}),
    });
    assert_eq!((tools.len(), pages), (2, 2));
    assert!(!log.contains("truncated"), "{log}");
}

#[test]
fn a_list_over_the_item_limit_is_cut_at_it_and_says_so() {
    let page = |n: usize| {
        let tools: Vec<Value> = (0..3_000)
            .map(|i| json!({"name": format!("t{n}_{i}")}))
            .collect();
        json!({"tools": tools, "nextCursor": format!("c{n}")})
    };
    let (tools, pages, log) = paged(page);
    assert_eq!(tools.len(), MAX_ITEMS);
    assert_eq!(pages, 4, "no page is asked for once the limit is reached");
    assert_eq!(tools[MAX_ITEMS - 1]["name"], "t3_999");
    assert!(log.contains("item limit reached"), "{log}");
}
