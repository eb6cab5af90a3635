//! [`MemUpstream`] speaking MCP 2026-07-28 only (`UpstreamOptions::modern`): stateless, as
//! a 2026-only server behind Warden would be. It validates what the revision makes a server
//! validate (the `_meta` version, `MCP-Protocol-Version` and `Mcp-Method`/`Mcp-Name` against
//! the body: `-32020` on a mismatch), refuses `initialize`, answers `server/discover`, and has
//! three tools of its own beside the shared catalogue: `ask` (MRTR: an `input_required`
//! result with an elicitation and a `requestState`, completed by the retry), `sample` (HTTP
//! 400 `-32021` unless the client declared `sampling`) and `locate` (its `region` argument
//! mirrored in `Mcp-Param-Region`).

use dataplane::testing::{PeerReply, PeerRequest};
use serde_json::{Value, json};

use crate::mem::{MemUpstream, rpc_result};
use crate::upstream::tools::list_result;

/// The revision served.
pub const VERSION: &str = "2026-07-28";
/// The `requestState` `ask` hands out and takes back.
pub const ASK_STATE: &str = "mem-ask-state-1";

fn modern_error(status: u16, id: &Value, code: i64, message: &str) -> PeerReply {
    PeerReply::json(
        status,
        &json!({"jsonrpc":"2.0","id":id,"error":{"code":code,"message":message}}),
    )
}

fn complete(id: &Value, mut result: Value) -> PeerReply {
    result["resultType"] = json!("complete");
    result["_meta"] =
        json!({"io.modelcontextprotocol/serverInfo": {"name": "mem-modern", "version": "1"}});
    rpc_result(id, &result)
}

impl MemUpstream {
    pub(crate) fn post_modern(
        &self,
        req: &PeerRequest,
        id: Option<Value>,
        method: &str,
        params: &Value,
    ) -> PeerReply {
        let id = id.unwrap_or(Value::Null);
        if method == "initialize" {
            return modern_error(
                400,
                &id,
                -32022,
                "Unsupported protocol version: this server speaks 2026-07-28 only",
            );
        }
        let version = params
            .pointer("/_meta/io.modelcontextprotocol~1protocolVersion")
            .and_then(Value::as_str);
        if version != Some(VERSION) {
            return modern_error(400, &id, -32602, "missing _meta protocolVersion");
        }
        if req.header("mcp-protocol-version") != Some(VERSION) {
            return modern_error(400, &id, -32020, "MCP-Protocol-Version mismatch");
        }
        if req.header("mcp-method") != Some(method) {
            return modern_error(400, &id, -32020, "Mcp-Method mismatch");
        }
        let name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(Value::as_str);
        if matches!(method, "tools/call" | "prompts/get" | "resources/read")
            && req.header("mcp-name") != name
        {
            return modern_error(400, &id, -32020, "Mcp-Name mismatch");
        }
        if self.items
            && let Some(r) = crate::mem_items::answer(method, params, self.page_size)
        {
            return match r {
                Ok(r) => complete(&id, r),
                // This revision has no -32002: an unknown resource is invalid params.
                Err((_, m)) => modern_error(200, &id, -32602, &m),
            };
        }
        match method {
            "subscriptions/listen" => self.listen(&id, params),
            "server/discover" => {
                let mut caps = json!({"tools": {}});
                if self.items {
                    crate::mem_items::capabilities(&mut caps);
                }
                complete(
                    &id,
                    json!({"supportedVersions": [VERSION], "capabilities": caps, "instructions": "Modern test upstream."}),
                )
            }
            "tools/list" => match list_result(self.tools, 0, params) {
                Ok(mut r) => {
                    self.add_link_tool(&mut r);
                    if let Some(t) = r.get_mut("tools").and_then(Value::as_array_mut) {
                        t.push(json!({"name": "ask", "description": "Asks the user a question (MRTR).", "inputSchema": {"type": "object"}}));
                        t.push(json!({"name": "sample", "description": "Needs the client's sampling capability.", "inputSchema": {"type": "object"}}));
                        t.push(json!({"name": "locate", "description": "Echoes its region.", "inputSchema": {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}}));
                    }
                    r["ttlMs"] = json!(5000);
                    r["cacheScope"] = json!("public");
                    complete(&id, r)
                }
                Err(m) => modern_error(200, &id, -32602, m),
            },
            "tools/call" => {
                self.count_call(params);
                match name.unwrap_or("") {
                    "ask" => ask(&id, params),
                    "sample" => {
                        let caps = params
                            .pointer("/_meta/io.modelcontextprotocol~1clientCapabilities/sampling");
                        match caps {
                            Some(_) => complete(
                                &id,
                                json!({"content": [{"type": "text", "text": "sampled"}]}),
                            ),
                            None => PeerReply::json(
                                400,
                                &json!({"jsonrpc":"2.0","id":id,"error":{"code":-32021,
                                    "message":"sampling capability required",
                                    "data":{"requiredCapabilities":{"sampling":{}}}}}),
                            ),
                        }
                    }
                    "link" if self.items => complete(&id, crate::mem_items::link_result()),
                    "locate" => {
                        let region = params.pointer("/arguments/region").and_then(Value::as_str);
                        if req.header("mcp-param-region") != region {
                            return modern_error(400, &id, -32020, "Mcp-Param-Region mismatch");
                        }
                        complete(
                            &id,
                            json!({"content": [{"type": "text", "text": region.unwrap_or("")}]}),
                        )
                    }
                    _ => match self.call(req, id.clone(), params) {
                        PeerReply::Full {
                            status,
                            headers,
                            body,
                        } => {
                            let mut v: Value = serde_json::from_slice(&body).unwrap_or_default();
                            if let Some(r) = v.get_mut("result") {
                                r["resultType"] = json!("complete");
                            }
                            PeerReply::Full {
                                status,
                                headers,
                                body: serde_json::to_vec(&v).unwrap_or_default(),
                            }
                        }
                        other => other,
                    },
                }
            }
            other => modern_error(404, &id, -32601, &format!("method not found: {other}")),
        }
    }
}

/// `ask`: without `requestState`, ask for a name; with this server's state and an answer,
/// greet; with any other state, refuse.
fn ask(id: &Value, params: &Value) -> PeerReply {
    match params.get("requestState").and_then(Value::as_str) {
        None => rpc_result(
            id,
            &json!({
                "resultType": "input_required",
                "inputRequests": {"who": {"method": "elicitation/create", "params": {
                    "mode": "form", "message": "Your name?",
                    "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}
                }}},
                "requestState": ASK_STATE,
            }),
        ),
        Some(ASK_STATE) => {
            let who = params
                .pointer("/inputResponses/who/content/name")
                .and_then(Value::as_str)
                .unwrap_or("nobody");
            complete(
                id,
                json!({"content": [{"type": "text", "text": format!("hello {who}")}]}),
            )
        }
        Some(_) => modern_error(200, id, -32602, "unknown requestState"),
    }
}
