//! Warden's OpenAPI bridge, sans-IO: OpenAPI operations become MCP tools, tool calls become HTTP requests, HTTP responses become tool results.
#![forbid(unsafe_code)]

mod base;
mod error;
mod openapi;
mod operation;
mod request;
mod response;
mod schema;
mod tools;
mod validate;

use std::collections::HashMap;

use serde_json::Value;

pub use error::{BridgeError, CallError};
pub use openapi::{MAX_NESTING, MAX_REF_DEPTH, MAX_RESOLVED_NODES, MAX_SPEC_BYTES};
pub use request::HttpRequest;
pub use response::{MAX_RESPONSE_BYTES, MAX_TEXT_BYTES};
pub use tools::{MAX_DESCRIPTION, MAX_TOOL_NAME, Skipped, Tool, ToolAnnotations, sanitize};

/// What to bridge from a spec, and where to send it.
#[derive(Debug, Clone, Default)]
pub struct BridgeOptions {
    /// Prefix of every tool name, e.g. `employee_directory_`.
    pub namespace: String,
    /// operationIds to bridge; empty bridges all.
    pub include: Vec<String>,
    /// operationIds never bridged.
    pub exclude: Vec<String>,
    /// Overrides `servers[0].url`; a relative server URL is resolved against it.
    pub base_url: Option<String>,
}

/// The tools of one spec and how to call them. Immutable once loaded; share it across
/// shards behind an `Arc`.
#[derive(Debug)]
pub struct Bridge {
    tools: Vec<Tool>,
    plans: Vec<operation::Plan>,
    index: HashMap<String, usize>,
    base_url: String,
    base_path: String,
    skipped: Vec<Skipped>,
    warnings: Vec<String>,
    patterns: validate::Patterns,
}

/// Parses an OpenAPI 3.0 or 3.1 document (YAML or JSON text), resolves local `$ref`s
/// (with cycle detection and depth and size bounds) and builds the tool list.
pub fn load(spec_text: &str, opts: &BridgeOptions) -> Result<Bridge, BridgeError> {
    let doc = openapi::parse(spec_text)?;
    let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
    if !(version.starts_with("3.0") || version.starts_with("3.1")) {
        let shown = doc
            .get("openapi")
            .or_else(|| doc.get("swagger"))
            .map_or_else(
                || "(missing)".to_owned(),
                |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            );
        return Err(BridgeError::Version(shown));
    }
    let (base_url, base_path) = base::resolve(&doc, opts.base_url.as_deref())?;
    let built = tools::build(&doc, opts)?;
    let mut warnings = built.warnings;
    let mut patterns = validate::Patterns::new();
    let mut failed = Vec::new();
    for tool in &built.tools {
        validate::collect_patterns(&tool.input_schema, &mut patterns, &mut failed);
    }
    warnings.extend(
        failed.into_iter().map(|p| {
            format!("pattern {p:?} is not supported by the validator and is not enforced")
        }),
    );
    let index = built
        .tools
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    Ok(Bridge {
        tools: built.tools,
        plans: built.plans,
        index,
        base_url,
        base_path,
        skipped: built.skipped,
        warnings,
        patterns,
    })
}

impl Bridge {
    /// The tools, in the document's path order (serde_json's `preserve_order` is on
    /// workspace-wide), then by method in get/put/post/delete/options/head/patch order.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// One tool by its full (namespaced) name.
    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.index.get(name).map(|&i| &self.tools[i])
    }

    /// The resolved server URL (`scheme://authority[/base/path]`, no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Operations that did not become tools, with the reason.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Things the operator should know: dropped parameters, unenforced patterns.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Validates `arguments` against the tool's input schema, then builds exactly one
    /// request. Nothing is built for arguments that do not validate.
    pub fn build_request(
        &self,
        tool: &str,
        arguments: Option<&Value>,
    ) -> Result<HttpRequest, CallError> {
        let Some(&i) = self.index.get(tool) else {
            return Err(CallError::UnknownTool(tool.to_owned()));
        };
        let empty = Value::Object(serde_json::Map::new());
        let args = arguments.unwrap_or(&empty);
        let Value::Object(map) = args else {
            return Err(CallError::InvalidArguments(
                "arguments must be a JSON object".into(),
            ));
        };
        validate::validate(&self.tools[i].input_schema, args, &self.patterns)
            .map_err(CallError::InvalidArguments)?;
        request::build(&self.plans[i], &self.base_path, map)
    }

    /// Maps an HTTP response to an MCP tool result (the JSON-RPC `result` object).
    /// `tool` is unused today; it is there so per-operation response handling can be
    /// added without changing callers.
    pub fn map_response(
        &self,
        tool: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Value {
        let _ = tool;
        response::map(status, content_type, body)
    }
}
