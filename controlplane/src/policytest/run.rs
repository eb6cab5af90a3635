//! Running decision tests: one side (a configuration, its policy files, its test files and
//! the catalog they declare) compiled by the same `warden_policy::compile` the gateway uses,
//! each test decided by the same sliced `Engine::decide` a shard calls, and classified by
//! the same `Decision::kind`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;
use warden_policy::{
    Action, Decision, DecisionKind, Engine, PolicyConfig, PolicyFile, PrincipalInput,
    RequestContext, ToolInfo,
};

use super::PolicyToolError;
use super::suite::{self, Claims, Directory, Loaded, PrincipalRef, TestCase};
use crate::Config;
use crate::authz::AuthServerConfig;

/// A configuration made ready for offline decisions.
#[derive(Debug)]
pub struct Side {
    pub cfg: Config,
    /// The authorization server whose users `user:` principals name (the config's own, or the demo's).
    pub auth_server: Option<AuthServerConfig>,
    pub suites: Vec<Loaded>,
    pub engine: Engine,
}

/// A configuration to load: the parsed config, and the directory its relative paths are read from.
#[derive(Debug, Clone)]
pub struct Source {
    pub cfg: Config,
    pub auth_server: Option<AuthServerConfig>,
    /// Relative `policy.files` and `policy.tests` are read from here (the working directory
    /// for a plain `-c`, the tree's root for `policy diff`).
    pub root: PathBuf,
    /// Test files given on the command line instead of `policy.tests`, and in-memory suites (the demo's).
    pub tests: Option<Vec<PathBuf>>,
    pub builtin: Vec<Loaded>,
}

impl Source {
    /// A config file read from the working directory.
    pub fn file(path: &Path) -> Result<Source, PolicyToolError> {
        Source::in_tree(Path::new("."), path)
    }

    /// A config file inside a tree (`root/path`), its relative paths read from `root`.
    pub fn in_tree(root: &Path, path: &Path) -> Result<Source, PolicyToolError> {
        let cfg = Config::load(&root.join(path)).map_err(PolicyToolError::Config)?;
        let auth_server = cfg.authorization_server.clone();
        Ok(Source {
            cfg,
            auth_server,
            root: root.to_owned(),
            tests: None,
            builtin: Vec::new(),
        })
    }
}

/// `p` read from `root` (as written when `root` is the working directory, so reports show it as configured).
fn under(root: &Path, p: &Path) -> PathBuf {
    if root == Path::new(".") {
        p.to_owned()
    } else {
        root.join(p)
    }
}

fn read(root: &Path, p: &Path) -> Result<String, PolicyToolError> {
    let full = under(root, p);
    std::fs::read_to_string(&full).map_err(|e| PolicyToolError::Read {
        path: full,
        message: e.to_string(),
    })
}

/// Read a policy's files (relative to `root`) as the compiler takes them, named as configured.
pub fn policy_files(root: &Path, cfg: &PolicyConfig) -> Result<Vec<PolicyFile>, PolicyToolError> {
    cfg.files
        .iter()
        .map(|p| {
            Ok(PolicyFile {
                name: p.display().to_string(),
                text: read(root, p)?,
            })
        })
        .collect()
}

/// The catalog the suites declare (first declaration of a name wins), with the config's operator tags.
pub fn catalog(cfg: &Config, suites: &[Loaded]) -> Vec<ToolInfo> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for t in suites.iter().flat_map(|s| s.suite.tools.iter()) {
        if !seen.insert(t.name.clone()) {
            continue;
        }
        let mut t = t.clone();
        if let Some(tags) = cfg
            .upstreams
            .iter()
            .find(|u| u.name == t.upstream)
            .and_then(|u| u.tool_tags.get(&t.upstream_name))
        {
            for tag in tags {
                if !t.tags.contains(tag) {
                    t.tags.push(tag.clone());
                }
            }
        }
        out.push(t);
    }
    out
}

impl Side {
    /// Load the tests and compile the policy for their catalog (plus `extra_tools`, the other
    /// side's catalog in a diff, so both engines know every tool).
    pub fn load(src: Source, extra_tools: &[ToolInfo]) -> Result<Side, PolicyToolError> {
        let mut suites = src.builtin.clone();
        let paths = src.tests.clone().unwrap_or_else(|| {
            src.cfg
                .policy
                .tests
                .iter()
                .map(|p| under(&src.root, p))
                .collect()
        });
        for p in paths {
            suites.push(Loaded {
                suite: suite::load(&p)?,
                path: p,
            });
        }
        let mut tools = catalog(&src.cfg, &suites);
        for t in extra_tools {
            if !tools.iter().any(|x| x.name == t.name) {
                tools.push(t.clone());
            }
        }
        let files = policy_files(&src.root, &src.cfg.policy)?;
        let engine = warden_policy::compile(&src.cfg.policy, &files, &tools, 1)
            .map_err(PolicyToolError::Policy)?;
        Ok(Side {
            cfg: src.cfg,
            auth_server: src.auth_server,
            suites,
            engine,
        })
    }

    pub fn directory(&self) -> Directory<'_> {
        Directory {
            auth_server: self.auth_server.as_ref(),
            default_issuer: self.cfg.issuers.first().map(|i| i.issuer.as_str()),
        }
    }

    /// Every tool the suites declare.
    pub fn tools(&self) -> Vec<ToolInfo> {
        catalog(&self.cfg, &self.suites)
    }
}

/// A request to decide, with the claims it carries.
#[derive(Debug, Clone)]
pub struct Ask {
    pub claims: Claims,
    pub action: Action,
    pub target: String,
    pub arguments: Option<String>,
    pub protocol: String,
    pub now: i64,
}

impl Ask {
    /// The request a test describes; `Err` names what is wrong with it.
    pub fn of(test: &TestCase, suite: &suite::Suite, dir: &Directory<'_>) -> Result<Ask, String> {
        let spec = match &test.principal {
            PrincipalRef::Named(n) => suite
                .principals
                .get(n)
                .ok_or_else(|| format!("principal {n:?} is not defined in `principals`"))?,
            PrincipalRef::Inline(s) => s,
        };
        let claims = dir.resolve(spec)?;
        let (action, target) = match (&test.tool, &test.method, &test.upstream) {
            (Some(t), None, None) => (Action::CallTool, t.clone()),
            (None, Some(m), Some(u)) => (
                match m.as_str() {
                    "resources/read" => Action::ReadResource,
                    "prompts/get" => Action::GetPrompt,
                    "completion/complete" => Action::Complete,
                    other => Action::Other(other.to_owned()),
                },
                u.clone(),
            ),
            _ => return Err("a test names either `tool`, or `method` and `upstream`".into()),
        };
        let arguments = match (&action, &test.arguments) {
            (Action::CallTool, a) => Some(
                a.clone()
                    .unwrap_or_else(|| serde_json::json!({}))
                    .to_string(),
            ),
            _ => None,
        };
        Ok(Ask {
            claims,
            action,
            target,
            arguments,
            protocol: test
                .protocol
                .clone()
                .unwrap_or_else(|| suite::DEFAULT_PROTOCOL.to_owned()),
            now: test.now.unwrap_or(suite::DEFAULT_NOW),
        })
    }

    /// Decide with `engine` exactly as a shard does (sliced), or explain it.
    pub fn decide(&self, engine: &Engine) -> Decision {
        self.with(engine, |e, p, a, t, c| e.decide(p, a, t, c))
    }

    pub fn explain(&self, engine: &Engine) -> warden_policy::Explanation {
        self.with(engine, |e, p, a, t, c| e.explain(p, a, t, c))
    }

    fn with<T>(
        &self,
        engine: &Engine,
        f: impl FnOnce(&Engine, &warden_policy::Principal, Action, Option<&str>, &RequestContext) -> T,
    ) -> T {
        let c = &self.claims;
        let principal = engine.principal(&PrincipalInput {
            iss: &c.iss,
            sub: &c.sub,
            email: c.email.as_deref(),
            groups: &c.groups,
            scopes: &c.scopes,
            client_id: c.client.as_deref(),
            actors: &c.actors,
        });
        let raw: Option<Box<RawValue>> = self
            .arguments
            .as_deref()
            .and_then(|a| RawValue::from_string(a.to_owned()).ok());
        let ctx = RequestContext {
            session: None,
            now_unix: self.now,
            protocol_version: &self.protocol,
            arguments: raw.as_deref(),
            item: None,
        };
        f(
            engine,
            &principal,
            self.action.clone(),
            Some(&self.target),
            &ctx,
        )
    }
}

/// One test's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub file: PathBuf,
    pub name: String,
    pub claims: Option<Claims>,
    pub target: String,
    /// `None` when the test itself is malformed (`problem` says why).
    pub got: Option<Decision>,
    pub kind: Option<DecisionKind>,
    /// Empty when the test passed.
    pub failures: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Run every test of `side`.
pub fn run(side: &Side) -> Vec<Outcome> {
    let dir = side.directory();
    let mut out = Vec::new();
    for loaded in &side.suites {
        for test in &loaded.suite.tests {
            out.push(run_one(side, &dir, loaded, test));
        }
    }
    out
}

fn run_one(side: &Side, dir: &Directory<'_>, loaded: &Loaded, test: &TestCase) -> Outcome {
    let mut o = Outcome {
        file: loaded.path.clone(),
        name: test.name.clone(),
        claims: None,
        target: test
            .tool
            .clone()
            .or_else(|| test.upstream.clone())
            .unwrap_or_default(),
        got: None,
        kind: None,
        failures: Vec::new(),
    };
    let ask = match Ask::of(test, &loaded.suite, dir) {
        Ok(a) => a,
        Err(e) => {
            o.failures.push(format!("malformed test: {e}"));
            return o;
        }
    };
    let d = ask.decide(&side.engine);
    let kind = d.kind(true);
    let e = &test.expect;
    if kind != e.decision {
        o.failures.push(format!(
            "decision: expected {}, got {}",
            e.decision.as_str(),
            kind.as_str()
        ));
    }
    if let Some(want) = &e.policies {
        let mut want = want.clone();
        want.sort();
        if want != d.policy_ids {
            o.failures.push(format!(
                "deciding policies: expected [{}], got [{}]",
                want.join(", "),
                d.policy_ids.join(", ")
            ));
        }
    }
    if let Some(want) = &e.reason
        && d.reason.as_deref() != Some(want.as_str())
    {
        o.failures.push(format!(
            "reason: expected {want:?}, got {:?}",
            d.reason.as_deref().unwrap_or("(none)")
        ));
    }
    o.claims = Some(ask.claims);
    o.kind = Some(kind);
    o.got = Some(d);
    o
}

/// What no test reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Policies that decided no test.
    pub unexercised_policies: Vec<String>,
    /// Tools no permit can reach: nobody can call them.
    pub unreachable_tools: Vec<String>,
    /// Tools of the catalog no test calls.
    pub untested_tools: Vec<String>,
}

pub fn coverage(side: &Side, outcomes: &[Outcome]) -> Coverage {
    let decided: BTreeSet<&String> = outcomes
        .iter()
        .filter_map(|o| o.got.as_ref())
        .flat_map(|d| d.policy_ids.iter())
        .collect();
    let called: BTreeSet<&String> = outcomes.iter().map(|o| &o.target).collect();
    Coverage {
        unexercised_policies: side
            .engine
            .policy_ids()
            .into_iter()
            .filter(|id| !decided.contains(id))
            .collect(),
        unreachable_tools: side.engine.unreachable_tools(),
        untested_tools: side
            .engine
            .tool_names()
            .into_iter()
            .filter(|t| !called.contains(t))
            .collect(),
    }
}

/// A decision that differs between two policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The test (`file: name`) or audit record (`request <id>`) it came from.
    pub source: String,
    pub who: String,
    pub target: String,
    pub old: String,
    pub new: String,
    /// The record's tool reads `context` in either policy: replayed without its arguments.
    pub approximate: bool,
}

fn summary(d: &Decision) -> String {
    let kind = d.kind(true).as_str();
    if d.policy_ids.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} [{}]", d.policy_ids.join(", "))
    }
}

/// Decide with both engines (`old_ask` resolved in the old tree, `new_ask` in the new one: a
/// test's `user:` gets each tree's granted scopes); `Some` when the kind or the deciding
/// policies differ.
pub fn compare(
    old: &Engine,
    new: &Engine,
    old_ask: &Ask,
    new_ask: &Ask,
    source: String,
) -> Option<Change> {
    let (a, b) = (old_ask.decide(old), new_ask.decide(new));
    if a.kind(true) == b.kind(true) && a.policy_ids == b.policy_ids {
        return None;
    }
    let who = if old_ask.claims == new_ask.claims {
        old_ask.claims.describe()
    } else {
        format!(
            "{} → {}",
            old_ask.claims.describe(),
            new_ask.claims.describe()
        )
    };
    Some(Change {
        source,
        who,
        target: new_ask.target.clone(),
        old: summary(&a),
        new: summary(&b),
        approximate: false,
    })
}

/// Replay both sides' tests against both trees (each test once, by file and name): the old
/// tree's policy and principals against the new tree's.
pub fn diff_tests(old: &Side, new: &Side) -> Vec<Change> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let (old_dir, new_dir) = (old.directory(), new.directory());
    for loaded in old.suites.iter().chain(new.suites.iter()) {
        let file = loaded
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        for test in &loaded.suite.tests {
            if !seen.insert((file.clone(), test.name.clone())) {
                continue;
            }
            if let (Ok(a), Ok(b)) = (
                Ask::of(test, &loaded.suite, &old_dir),
                Ask::of(test, &loaded.suite, &new_dir),
            ) && let Some(c) = compare(
                &old.engine,
                &new.engine,
                &a,
                &b,
                format!("{file}: {}", test.name),
            ) {
                out.push(c);
            }
        }
    }
    out
}

/// Replay audit records (JSON lines) against both policies. Records carry the claims policy
/// read (iss, sub, client, scopes, groups) but never arguments: a tool whose policies read
/// `context` is replayed with `{}` and its change marked approximate.
pub fn diff_records(old: &Engine, new: &Engine, records: &[serde_json::Value]) -> Vec<Change> {
    let mut out = Vec::new();
    for r in records {
        let Some(ask) = ask_of_record(r) else {
            continue;
        };
        let id = r["request_id"].as_str().unwrap_or("?");
        if let Some(mut c) = compare(old, new, &ask, &ask, format!("request {id}")) {
            c.approximate =
                old.context_sensitive(&ask.target) || new.context_sensitive(&ask.target);
            out.push(c);
        }
    }
    out
}

/// The request an audit record describes, when it reached a policy decision.
pub fn ask_of_record(r: &serde_json::Value) -> Option<Ask> {
    let strings = |k: &str| -> Vec<String> {
        r[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let method = r["method"].as_str()?;
    let (action, target) = match method {
        "tools/call" => (Action::CallTool, r["tool"].as_str()?),
        m => (Action::of_method(m)?, r["upstream"].as_str()?),
    };
    let decided = matches!(
        r["decision"].as_str(),
        Some("allow" | "deny" | "upstream_error" | "exchange_failed")
    );
    if !decided {
        return None;
    }
    Some(Ask {
        claims: Claims {
            iss: r["iss"].as_str()?.to_owned(),
            sub: r["sub"].as_str()?.to_owned(),
            email: None,
            scopes: strings("scopes"),
            groups: strings("groups"),
            client: r["client_id"].as_str().map(str::to_owned),
            // The record's actors start with the gateway when it delegated the call.
            actors: {
                let mut a = strings("actors");
                if !r["delegation"].is_null() && !a.is_empty() {
                    a.remove(0);
                }
                a
            },
        },
        arguments: matches!(action, Action::CallTool).then(|| "{}".to_owned()),
        action,
        target: target.to_owned(),
        protocol: suite::DEFAULT_PROTOCOL.to_owned(),
        now: r["time_ms"]
            .as_i64()
            .map_or(suite::DEFAULT_NOW, |ms| ms / 1000),
    })
}

/// Count outcomes by file, for the report's footer.
pub fn by_file(outcomes: &[Outcome]) -> BTreeMap<&Path, (usize, usize)> {
    let mut m: BTreeMap<&Path, (usize, usize)> = BTreeMap::new();
    for o in outcomes {
        let e = m.entry(o.file.as_path()).or_default();
        e.0 += 1;
        if o.passed() {
            e.1 += 1;
        }
    }
    m
}
