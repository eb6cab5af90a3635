//! Typed errors: `BridgeError` when a spec cannot become tools, `CallError` when a call cannot become a request.

/// Why an OpenAPI document could not be turned into tools. Always caused by the
/// configured spec or options (the operator), never by an agent.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("OpenAPI document is not valid JSON or YAML: {0}")]
    Parse(String),
    #[error("OpenAPI document is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("unsupported OpenAPI version {0:?}: 3.0.x and 3.1.x are supported")]
    Version(String),
    /// A structural problem at a JSON pointer (`#/paths/~1pet/get/parameters/0`).
    #[error("{pointer}: {reason}")]
    Invalid { pointer: String, reason: String },
    #[error("operation {operation}: {reason}")]
    Operation { operation: String, reason: String },
    #[error("operations {first} and {second} both become tool {name:?}")]
    NameCollision {
        name: String,
        first: String,
        second: String,
    },
    #[error("operation {operation}: tool name {name:?} is {len} characters; the limit is 64")]
    NameTooLong {
        operation: String,
        name: String,
        len: usize,
    },
    #[error("namespace {0:?} may only contain A-Z, a-z, 0-9, '_' and '-'")]
    Namespace(String),
    #[error("`{list}` names operationId {id:?}, which the document does not define")]
    UnknownOperation { list: &'static str, id: String },
    #[error("base URL: {0}")]
    BaseUrl(String),
}

/// Why a tool call could not become an HTTP request. Caused by the agent (its
/// arguments or tool name); nothing was sent upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The same answer as for a tool hidden by policy, so names cannot be probed.
    #[error("unknown tool {0:?}")]
    UnknownTool(String),
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
}

impl CallError {
    /// The JSON-RPC error code the caller answers with: both are "invalid params".
    pub fn json_rpc_code(&self) -> i64 {
        -32602
    }
}
