//! Policy as code (docs/policy.md, "Policy as code"): decision tests kept in git beside the
//! policies (`warden policy test`, with coverage and JUnit output), explanations of one
//! decision (`warden policy explain`, `warden audit explain`), the decisions a change flips
//! (`warden policy diff`), and what Warden would conclude of a token (`warden token inspect`).
//! Everything decides with the engine, slices and classification the shards use.

pub mod inspect;
pub mod report;
pub mod run;
pub mod suite;

use std::path::{Path, PathBuf};

use dataplane::clock::Clock;
use run::{Ask, Side, Source};
use suite::{Loaded, PrincipalSpec};
use warden_policy::{Action, PolicyError};

use crate::config::ConfigError;

/// The demo's decision tests (`warden policy test` with no configuration): the seed's behaviour, pinned.
pub const DEMO_TESTS: &str = include_str!("../../../policies/demo/seed-tests.yaml");

/// Why a policy command could not run (its tests failing is not an error: see the report).
#[derive(Debug, thiserror::Error)]
pub enum PolicyToolError {
    /// A file named by the configuration or the command line cannot be read.
    #[error("{}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    /// A test file is not in the format (the YAML path and what is wrong).
    #[error("{}: {message}", path.display())]
    TestFile { path: PathBuf, message: String },
    #[error("{0}")]
    Config(ConfigError),
    /// The policy does not compile (file, line, Cedar's message).
    #[error("policy: {0}")]
    Policy(PolicyError),
    /// The command line does not describe a request.
    #[error("{0}")]
    Usage(String),
    #[error("audit: {0}")]
    Audit(String),
    #[error("demo: {0}")]
    Demo(String),
}

/// The demo's configuration, authorization server and tests, as `warden demo` runs them.
pub fn demo_source() -> Result<Source, PolicyToolError> {
    let (cfg, auth_server) =
        crate::demo::offline_config().map_err(|e| PolicyToolError::Demo(e.to_string()))?;
    let path = PathBuf::from("(warden demo) policies/demo/seed-tests.yaml");
    let suite = suite::parse(DEMO_TESTS, &path)?;
    Ok(Source {
        cfg,
        auth_server: Some(auth_server),
        root: PathBuf::from("."),
        tests: None,
        builtin: vec![Loaded { path, suite }],
    })
}

/// `-c CONFIG` or, without one, the demo.
pub fn source(config: Option<&Path>) -> Result<Source, PolicyToolError> {
    match config {
        Some(c) => Source::file(c),
        None => demo_source(),
    }
}

/// What a command line says about the request to explain.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// A JWT: its claims are read **without** verification (see `warden token inspect`).
    pub token: Option<String>,
    /// Claims as YAML/JSON (`{sub: …, scopes: [...]}`, or `{user: …}`).
    pub claims: Option<String>,
    pub user: Option<String>,
    pub tool: Option<String>,
    pub method: Option<String>,
    pub upstream: Option<String>,
    pub arguments: Option<String>,
}

/// Build the request to explain from the command line.
pub fn ask(side: &Side, r: &Request) -> Result<Ask, PolicyToolError> {
    let usage = PolicyToolError::Usage;
    let spec: PrincipalSpec = match (&r.token, &r.claims, &r.user) {
        (Some(t), None, None) => {
            inspect::unverified_claims(t).map_err(|e| usage(format!("--token: {e}")))?
        }
        (None, Some(c), None) => {
            serde_yaml_ng::from_str(c).map_err(|e| usage(format!("--claims: {e}")))?
        }
        (None, None, Some(u)) => PrincipalSpec {
            user: Some(u.clone()),
            ..Default::default()
        },
        _ => return Err(usage("give one of --token, --claims or --user".into())),
    };
    let test = suite::TestCase {
        name: String::new(),
        principal: suite::PrincipalRef::Inline(spec),
        tool: r.tool.clone(),
        method: r.method.clone(),
        upstream: r.upstream.clone(),
        arguments: match &r.arguments {
            Some(a) => Some(
                serde_json::from_str(a).map_err(|e| usage(format!("--args is not JSON: {e}")))?,
            ),
            None => None,
        },
        protocol: None,
        now: None,
        expect: suite::Expect {
            decision: warden_policy::DecisionKind::Allow,
            policies: None,
            reason: None,
        },
    };
    Ask::of(&test, &suite::Suite::default(), &side.directory()).map_err(usage)
}

/// Median time of one sliced, uncached decision (`runs` runs), for `explain`.
pub fn time_decision(side: &Side, ask: &Ask, runs: usize) -> std::time::Duration {
    let clock = Clock::new();
    let mut times: Vec<std::time::Duration> = (0..runs.max(1))
        .map(|_| {
            let t = clock.now();
            std::hint::black_box(ask.decide(&side.engine));
            clock.since(t)
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Every audit record with this request id, oldest first (ids restart with the process, so
/// a directory written across restarts can hold several).
pub fn find_records(
    dir: &Path,
    request_id: &str,
) -> Result<Vec<serde_json::Value>, PolicyToolError> {
    let mut found = Vec::new();
    for_each_record(dir, |v| {
        if v["request_id"].as_str() == Some(request_id) {
            found.push(v);
        }
    })?;
    if found.is_empty() {
        return Err(PolicyToolError::Audit(format!(
            "no record with request id {request_id:?} in {}",
            dir.display()
        )));
    }
    found.sort_by_key(|v| v["time_ms"].as_i64().unwrap_or_default());
    Ok(found)
}

/// The last `n` policy-decided records of an audit directory.
pub fn last_records(dir: &Path, n: usize) -> Result<Vec<serde_json::Value>, PolicyToolError> {
    let mut all = std::collections::VecDeque::new();
    for_each_record(dir, |v| {
        if run::ask_of_record(&v).is_some() {
            all.push_back(v);
            if all.len() > n {
                all.pop_front();
            }
        }
    })?;
    Ok(all.into())
}

fn for_each_record(
    dir: &Path,
    mut f: impl FnMut(serde_json::Value),
) -> Result<(), PolicyToolError> {
    use std::io::BufRead;
    let files = crate::audit::chain_files(dir)
        .map_err(|e| PolicyToolError::Audit(format!("{}: {e}", dir.display())))?;
    for path in files {
        let file = std::fs::File::open(&path).map_err(|e| PolicyToolError::Read {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                f(v);
            }
        }
    }
    Ok(())
}

/// The action a method names, for the command line.
pub fn action_label(a: &Action) -> &str {
    match a {
        Action::CallTool => "tools/call",
        Action::ReadResource => "resources/read",
        Action::GetPrompt => "prompts/get",
        Action::Complete => "completion/complete",
        Action::Other(m) => m,
    }
}
