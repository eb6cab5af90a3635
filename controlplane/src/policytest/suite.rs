//! The decision-test format kept in git beside the policies: the tools the tests run
//! against, named principals, and tests with their expected decisions (docs/policy.md,
//! "Decision tests").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use warden_policy::{DecisionKind, ToolInfo};

use super::PolicyToolError;
use crate::authz::AuthServerConfig;

/// The time a test runs at unless it says (`now`): 2026-01-01T00:00:00Z, so runs repeat.
pub const DEFAULT_NOW: i64 = 1_767_225_600;
/// The protocol revision a test runs with unless it says (`protocol`).
pub const DEFAULT_PROTOCOL: &str = "2025-06-18";

/// One test file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// The routed tools the tests (and coverage) see: the catalog the gateway would discover.
    #[serde(default)]
    pub tools: Vec<ToolInfo>,
    /// Principals named once and used by several tests.
    #[serde(default)]
    pub principals: BTreeMap<String, PrincipalSpec>,
    #[serde(default)]
    pub tests: Vec<TestCase>,
}

/// Who calls, as a validated token would say it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSpec {
    /// A user of `authorization_server.users`: issuer, sub, email and groups from there, and
    /// the scopes the authorization server grants that user (every scope their groups allow).
    #[serde(default)]
    pub user: Option<String>,
    /// Default: the authorization server's issuer, else the first trusted issuer.
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// Replaces the granted scopes (e.g. a client that asked for fewer).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// The token's `client_id`.
    #[serde(default)]
    pub client: Option<String>,
    /// The token's `act` chain, outermost first (`principal.actors`).
    #[serde(default)]
    pub act: Option<Vec<String>>,
}

/// A principal by name (from `principals`) or written in place.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PrincipalRef {
    Named(String),
    Inline(PrincipalSpec),
}

/// One decision test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    pub principal: PrincipalRef,
    /// `tools/call` of this namespaced tool.
    #[serde(default)]
    pub tool: Option<String>,
    /// Or another method (`resources/read`, `prompts/get`, `completion/complete`) …
    #[serde(default)]
    pub method: Option<String>,
    /// … on this upstream.
    #[serde(default)]
    pub upstream: Option<String>,
    /// The call's `arguments` (`tools/call`; default `{}`).
    #[serde(default)]
    pub arguments: Option<Value>,
    #[serde(default)]
    pub protocol: Option<String>,
    /// Unix seconds (default [`DEFAULT_NOW`]).
    #[serde(default)]
    pub now: Option<i64>,
    pub expect: Expect,
}

/// What the test expects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `allow`, `deny` (a policy's reason), `hidden` (default deny) or `step_up`.
    pub decision: DecisionKind,
    /// The deciding policy ids, exactly (any order); unchecked when absent.
    #[serde(default)]
    pub policies: Option<Vec<String>>,
    /// The reason the agent reads, exactly; unchecked when absent.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A principal resolved to the claims a token would carry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub email: Option<String>,
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    pub client: Option<String>,
    pub actors: Vec<String>,
}

impl Claims {
    /// One line for reports: `sub (scopes …; groups …)`.
    pub fn describe(&self) -> String {
        let via = if self.actors.is_empty() {
            String::new()
        } else {
            format!(" via [{}]", self.actors.join(" "))
        };
        format!(
            "{} (scopes [{}]; groups [{}]){via}",
            self.sub,
            self.scopes.join(" "),
            self.groups.join(" ")
        )
    }
}

/// Read and parse one test file.
pub fn load(path: &Path) -> Result<Suite, PolicyToolError> {
    let text = std::fs::read_to_string(path).map_err(|e| PolicyToolError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    parse(&text, path)
}

/// Parse test-file text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Suite, PolicyToolError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| PolicyToolError::TestFile {
        path: path.to_owned(),
        message: format!("{}: {}", e.path(), e.inner()),
    })
}

/// Where claims come from: the authorization server's users and scopes, and the default issuer.
#[derive(Debug, Clone, Copy)]
pub struct Directory<'a> {
    pub auth_server: Option<&'a AuthServerConfig>,
    pub default_issuer: Option<&'a str>,
}

impl Directory<'_> {
    /// The claims of a principal, or why it cannot be resolved.
    pub fn resolve(&self, spec: &PrincipalSpec) -> Result<Claims, String> {
        let mut c = Claims {
            iss: String::new(),
            sub: String::new(),
            email: None,
            scopes: Vec::new(),
            groups: Vec::new(),
            client: None,
            actors: Vec::new(),
        };
        if let Some(name) = &spec.user {
            let as_cfg = self
                .auth_server
                .ok_or_else(|| format!("user {name:?}: no authorization_server is configured"))?;
            let user = as_cfg
                .users
                .iter()
                .find(|u| &u.username == name)
                .ok_or_else(|| format!("user {name:?} is not in authorization_server.users"))?;
            c.iss = as_cfg.issuer.clone();
            c.sub = user.username.clone();
            c.email = user.email.clone();
            c.groups = user.groups.clone();
            c.scopes = as_cfg.grantable_scopes(&user.groups);
        } else {
            c.iss = self
                .auth_server
                .map(|a| a.issuer.as_str())
                .or(self.default_issuer)
                .unwrap_or_default()
                .to_owned();
        }
        if let Some(v) = &spec.iss {
            c.iss = v.clone();
        }
        if let Some(v) = &spec.sub {
            c.sub = v.clone();
        }
        if let Some(v) = &spec.email {
            c.email = Some(v.clone());
        }
        if let Some(v) = &spec.scopes {
            c.scopes = v.clone();
        }
        if let Some(v) = &spec.groups {
            c.groups = v.clone();
        }
        c.client = spec.client.clone();
        c.actors = spec.act.clone().unwrap_or_default();
        if c.sub.is_empty() {
            return Err("a principal needs `user` or `sub`".into());
        }
        Ok(c)
    }
}

/// A test file and its place (for reports).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub suite: Suite,
}
