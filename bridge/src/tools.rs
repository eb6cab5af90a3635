//! Walks the document's paths and names, describes and annotates one tool per operation.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use crate::operation::{self, Credentials, Location, OperationRef, Outcome, Plan};
use crate::{BridgeError, BridgeOptions};

/// Longest tool name MCP clients accept (Claude Desktop rejects the whole list otherwise).
pub const MAX_TOOL_NAME: usize = 64;
/// Longest tool description; longer ones are cut on a character boundary.
pub const MAX_DESCRIPTION: usize = 4096;

const METHODS: [(&str, &str); 8] = [
    ("get", "GET"),
    ("put", "PUT"),
    ("post", "POST"),
    ("delete", "DELETE"),
    ("options", "OPTIONS"),
    ("head", "HEAD"),
    ("patch", "PATCH"),
    ("trace", "TRACE"),
];

/// One MCP tool made from one operation.
#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    /// `namespace` + sanitized operationId.
    pub name: String,
    /// The operationId as the spec spells it.
    #[serde(skip)]
    pub operation_id: String,
    /// The operation's summary, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub description: String,
    #[serde(rename = "inputSchema")]
    pub input_schema: Value,
    pub annotations: ToolAnnotations,
    /// `GET`, `POST`, …
    #[serde(skip)]
    pub method: String,
    /// The path template as the spec spells it (`/pet/{petId}`).
    #[serde(skip)]
    pub path: String,
}

impl Tool {
    /// The tool as a `tools/list` entry.
    pub fn to_mcp(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// MCP tool annotations derived from the HTTP method: untrusted hints for clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolAnnotations {
    pub read_only_hint: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destructive_hint: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotent_hint: Option<bool>,
}

/// An operation that did not become a tool, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The operationId, or `METHOD /path` when there is none.
    pub operation: String,
    pub reason: String,
}

pub(crate) struct Built {
    pub tools: Vec<Tool>,
    pub plans: Vec<Plan>,
    pub skipped: Vec<Skipped>,
    pub warnings: Vec<String>,
}

pub(crate) fn build(doc: &Value, opts: &BridgeOptions) -> Result<Built, BridgeError> {
    if !opts.namespace.bytes().all(is_name_byte) {
        return Err(BridgeError::Namespace(opts.namespace.clone()));
    }
    let creds = Credentials::from_doc(doc);
    let mut built = Built {
        tools: Vec::new(),
        plans: Vec::new(),
        skipped: Vec::new(),
        warnings: Vec::new(),
    };
    let mut ids: HashMap<String, String> = HashMap::new(); // operationId → "METHOD /path"
    let mut names: HashMap<String, String> = HashMap::new(); // tool name → operationId
    let empty = serde_json::Map::new();
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (path, item) in paths {
        let item_ptr = format!("#/paths/{}", crate::openapi::escape_token(path));
        // Only the path item's own `$ref` is followed here; read() resolves what it uses,
        // so responses (often the bulk of a spec) never count against the size bound.
        let item = match item.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix('#')
                .and_then(|p| doc.pointer(p))
                .ok_or_else(|| {
                    crate::openapi::invalid(
                        &format!("{item_ptr}/$ref"),
                        format!("$ref {r:?} points at nothing (only local #/... references)"),
                    )
                })?,
            None => item,
        };
        for (key, method) in METHODS {
            let Some(op) = item.get(key) else { continue };
            let label = format!("{method} {path}");
            let Some(id) = op.get("operationId").and_then(Value::as_str) else {
                built.skipped.push(Skipped {
                    operation: label,
                    reason: "no operationId".into(),
                });
                continue;
            };
            if let Some(other) = ids.insert(id.to_owned(), label.clone()) {
                return Err(BridgeError::Operation {
                    operation: format!("{id} ({label})"),
                    reason: format!("operationId is also used by {other}"),
                });
            }
            let skip = |reason: &str| Skipped {
                operation: id.to_owned(),
                reason: reason.to_owned(),
            };
            if !opts.include.is_empty() && !opts.include.iter().any(|i| i == id) {
                built.skipped.push(skip("not in `include`"));
                continue;
            }
            if opts.exclude.iter().any(|e| e == id) {
                built.skipped.push(skip("in `exclude`"));
                continue;
            }
            if method == "TRACE" {
                built.skipped.push(skip("TRACE operations are not bridged"));
                continue;
            }
            let o = OperationRef {
                path,
                method,
                pointer: operation::pointer(path, key),
                item_params: item.get("parameters"),
                op,
            };
            let (plan, input_schema, notes) = match operation::read(doc, &o, &creds)? {
                Outcome::Ready {
                    plan,
                    input_schema,
                    notes,
                } => (*plan, input_schema, notes),
                Outcome::Skip(reason) => {
                    built.skipped.push(skip(&reason));
                    continue;
                }
            };
            let name = format!("{}{}", opts.namespace, sanitize(id));
            let len = name.chars().count();
            if len > MAX_TOOL_NAME || name.is_empty() {
                return Err(BridgeError::NameTooLong {
                    operation: format!("{id} ({label})"),
                    name,
                    len,
                });
            }
            if let Some(first) = names.insert(name.clone(), id.to_owned()) {
                return Err(BridgeError::NameCollision {
                    name,
                    first,
                    second: id.to_owned(),
                });
            }
            built
                .warnings
                .extend(notes.into_iter().map(|n| format!("{id}: {n}")));
            built.tools.push(Tool {
                name,
                operation_id: id.to_owned(),
                title: Some(text(op, "summary")).filter(|s| !s.is_empty()),
                description: describe(op, &plan),
                input_schema,
                annotations: annotations(method),
                method: method.to_owned(),
                path: path.to_owned(),
            });
            built.plans.push(plan);
        }
    }
    let known: HashSet<&str> = ids.keys().map(String::as_str).collect();
    for (list, entries) in [("include", &opts.include), ("exclude", &opts.exclude)] {
        if let Some(id) = entries.iter().find(|e| !known.contains(e.as_str())) {
            return Err(BridgeError::UnknownOperation {
                list,
                id: id.clone(),
            });
        }
    }
    Ok(built)
}

/// Every character outside `[A-Za-z0-9_-]` becomes `_`.
pub fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii() && is_name_byte(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn annotations(method: &str) -> ToolAnnotations {
    let mut a = ToolAnnotations::default();
    match method {
        "GET" | "HEAD" | "OPTIONS" => a.read_only_hint = true,
        "PUT" => a.idempotent_hint = Some(true),
        "DELETE" => {
            a.destructive_hint = Some(true);
            a.idempotent_hint = Some(true);
        }
        _ => {}
    }
    a
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Summary, description, then one line per argument: a model reading only the
/// description still learns what each argument is for.
fn describe(op: &Value, plan: &Plan) -> String {
    let summary = text(op, "summary");
    let description = text(op, "description");
    let mut out = String::new();
    if op.get("deprecated").and_then(Value::as_bool) == Some(true) {
        out.push_str("Deprecated. ");
    }
    out.push_str(&summary);
    if !description.is_empty() && description != summary {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&description);
    }
    if out.is_empty() {
        out = format!("{} {}", plan.method, plan.path);
    }
    let mut lines = Vec::new();
    for p in &plan.params {
        let where_ = match p.location {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
        };
        let req = if p.required { ", required" } else { "" };
        let note = if p.description.is_empty() {
            String::new()
        } else {
            format!(": {}", p.description)
        };
        lines.push(format!("- `{}` ({where_}{req}){note}", p.name));
    }
    if let Some(b) = &plan.body {
        let req = if b.required { ", required" } else { "" };
        let note = if b.description.is_empty() {
            String::new()
        } else {
            format!(": {}", b.description)
        };
        lines.push(format!("- `body` ({}{req}){note}", b.content_type));
    }
    if !lines.is_empty() {
        out.push_str("\n\nArguments:\n");
        out.push_str(&lines.join("\n"));
    }
    if out.len() > MAX_DESCRIPTION {
        let mut cut = MAX_DESCRIPTION - 3;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}
