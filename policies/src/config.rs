//! Configuration types: the `policy:` section of the gateway's YAML, the tools it applies to, and load errors.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What happens when no policy permits a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultDecision {
    /// Nothing is callable unless a rule or a `.cedar` policy permits it (production).
    #[default]
    Deny,
    /// Everything routed is callable unless a rule forbids it (the seed's behaviour).
    Allow,
}

/// The `policy:` section of the gateway's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub default: DefaultDecision,
    #[serde(default)]
    pub rules: Vec<ToolRule>,
    /// Hand-written `.cedar` files; the caller reads them and passes them to [`crate::compile`].
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Decision-test files (`warden policy test`), also replayed on reload to log what changed.
    #[serde(default)]
    pub tests: Vec<PathBuf>,
    /// A candidate policy evaluated beside this one on every call: disagreements are counted
    /// and audited, never enforced.
    #[serde(default)]
    pub shadow: Option<Box<ShadowPolicy>>,
}

/// The `policy.shadow` section: a whole policy (its own default, rules and files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowPolicy {
    #[serde(default)]
    pub default: DefaultDecision,
    #[serde(default)]
    pub rules: Vec<ToolRule>,
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

impl ShadowPolicy {
    /// The shadow as a policy configuration, to compile like the live one.
    pub fn as_policy(&self) -> PolicyConfig {
        PolicyConfig {
            default: self.default,
            rules: self.rules.clone(),
            files: self.files.clone(),
            tests: Vec::new(),
            shadow: None,
        }
    }
}

/// One per-tool rule; translated to Cedar by [`crate::translate`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRule {
    /// Namespaced tool names, matched exactly; empty = every tool matched by `upstream`/`tag`.
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub upstream: Option<String>,
    /// An operator tag (see [`ToolInfo::tags`]).
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub require_scopes: Vec<String>,
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// Forbid the matched tools outright.
    #[serde(default)]
    pub deny: bool,
    /// The text the agent sees when this rule denies (`@reason`).
    #[serde(default)]
    pub reason: Option<String>,
    /// A missing scope answers 403 `insufficient_scope` (re-consent) instead of an `isError` result.
    #[serde(default)]
    pub step_up: bool,
}

/// A routed tool as the policy sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// Namespaced name (`enterprise_ledger_getCustomerPII`).
    pub name: String,
    pub upstream: String,
    /// The upstream's own name for it (`getCustomerPII`).
    pub upstream_name: String,
    /// The upstream's `annotations` (untrusted hints).
    #[serde(default)]
    pub annotations: serde_json::Value,
    /// Operator tags from the configuration.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The tool's `inputSchema`; its scalar properties type `context.arguments`.
    #[serde(default)]
    pub input_schema: serde_json::Value,
}

/// A hand-written policy file: its name (for errors) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    pub name: String,
    pub text: String,
}

/// A policy set that cannot be loaded: where, and Cedar's (or the translator's) message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PolicyError {
    /// The `.cedar` file, `<config>` for translated rules, or `<schema>`.
    pub file: String,
    /// 1-based line in that file (for `<config>`: in the output of `translate`).
    pub line: Option<usize>,
    pub message: String,
}

impl PolicyError {
    pub(crate) fn new(
        file: impl Into<String>,
        line: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            line,
            message: message.into(),
        }
    }
}
