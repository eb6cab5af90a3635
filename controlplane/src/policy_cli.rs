//! The `warden policy test|explain|diff`, `warden audit explain` and `warden token inspect`
//! commands: argument handling and output around `controlplane::policytest`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use controlplane::policytest::{self, PolicyToolError, report, run};

/// Write to standard output; a closed pipe (`| head`) ends the output, never the process with a panic.
fn out(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

macro_rules! outln {
    ($($arg:tt)*) => { out(&format!("{}\n", format_args!($($arg)*))) };
}

fn fail(e: &PolicyToolError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// `warden policy test`: exit 0 when every test passes, 1 when one fails, 2 when the tests cannot run.
pub fn test(
    config: Option<&Path>,
    tests: Vec<PathBuf>,
    junit: Option<&Path>,
    coverage: bool,
) -> ExitCode {
    let mut src = match policytest::source(config) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if !tests.is_empty() {
        src.tests = Some(tests);
        src.builtin.clear();
    }
    let side = match run::Side::load(src, &[]) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let outcomes = run::run(&side);
    out(&report::text(&outcomes));
    if coverage {
        out(&report::coverage(&run::coverage(&side, &outcomes)));
    }
    if let Some(path) = junit
        && let Err(e) = std::fs::write(path, report::junit(&outcomes))
    {
        eprintln!("error: {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if outcomes.is_empty() {
        eprintln!("error: no tests (list test files under policy.tests or on the command line)");
        return ExitCode::from(2);
    }
    if outcomes.iter().all(run::Outcome::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `warden policy explain`.
pub fn explain(config: Option<&Path>, request: &policytest::Request, json: bool) -> ExitCode {
    let side = match policytest::source(config).and_then(|s| run::Side::load(s, &[])) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let ask = match policytest::ask(&side, request) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    if request.token.is_some() {
        eprintln!(
            "note: the token's claims were read without verification (`warden token inspect` checks it)"
        );
    }
    let e = ask.explain(&side.engine);
    if json {
        outln!("{}", serde_json::to_string_pretty(&e).unwrap_or_default());
    } else {
        out(&report::explanation(&e));
        let t = policytest::time_decision(&side, &ask, 1001);
        outln!(
            "decided in {:.1} µs (median of 1001 sliced, uncached decisions)",
            t.as_secs_f64() * 1e6
        );
    }
    ExitCode::SUCCESS
}

/// `warden policy diff`: exit 0 when no decision changes, 1 when some do.
pub fn diff(config: &Path, old: &Path, new: &Path, audit: Option<&Path>, last: usize) -> ExitCode {
    let load = |root: &Path, extra: &[warden_policy::ToolInfo]| {
        run::Source::in_tree(root, config).and_then(|s| run::Side::load(s, extra))
    };
    // Each side first alone (to learn its catalog), then both with the union of the catalogs.
    let (a, b) = match (load(old, &[]), load(new, &[])) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return fail(&e),
    };
    let (a, b) = match (load(old, &b.tools()), load(new, &a.tools())) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return fail(&e),
    };
    let changed_tools = b.engine.changed_tools(&a.engine);
    outln!(
        "tools whose policies changed: {}",
        if changed_tools.is_empty() {
            "none".to_owned()
        } else {
            changed_tools.join(", ")
        }
    );
    let mut changes = run::diff_tests(&a, &b);
    if let Some(dir) = audit {
        match policytest::last_records(dir, last) {
            Ok(records) => {
                outln!(
                    "replayed {} audit records from {}",
                    records.len(),
                    dir.display()
                );
                changes.extend(run::diff_records(&a.engine, &b.engine, &records));
            }
            Err(e) => return fail(&e),
        }
    }
    out(&report::changes(&changes));
    if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `warden audit explain`: the record, then its decision explained under the current policy.
pub fn audit_explain(config: Option<&Path>, dir: Option<&Path>, request_id: &str) -> ExitCode {
    let src = match policytest::source(config) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let Some(dir) = dir
        .map(Path::to_owned)
        .or_else(|| src.cfg.audit.dir.clone())
    else {
        eprintln!("error: no audit directory: give --dir or configure audit.dir");
        return ExitCode::from(2);
    };
    let side = match run::Side::load(src, &[]) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let records = match policytest::find_records(&dir, request_id) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if records.len() > 1 {
        outln!(
            "{} records have request id {request_id} (ids restart with the process); each in turn, oldest first",
            records.len()
        );
    }
    for record in &records {
        explain_record(&side, record);
    }
    ExitCode::SUCCESS
}

fn explain_record(side: &run::Side, record: &serde_json::Value) {
    outln!(
        "record: {}",
        serde_json::to_string(record).unwrap_or_default()
    );
    let Some(ask) = run::ask_of_record(record) else {
        outln!(
            "this request was refused before policy decided it (decision {}, reason {})",
            record["decision"],
            record["reason"]
        );
        return;
    };
    let e = ask.explain(&side.engine);
    let now = e.kind.as_str();
    let then = record["decision"].as_str().unwrap_or("?");
    outln!(
        "recorded decision: {then} [{}]; under the current policy: {now}",
        record["policy_ids"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    if side.engine.context_sensitive(&ask.target) {
        outln!(
            "note: this tool's policies read the context; the record has no arguments, so it is explained with {{}}"
        );
    }
    out(&report::explanation(&e));
}

/// `warden token inspect`: exit 0 when Warden would accept the token, 1 when not.
pub fn token_inspect(config: Option<&Path>, token: Option<String>) -> ExitCode {
    let src = match policytest::source(config) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let token = match token.filter(|t| t != "-") {
        Some(t) => t,
        None => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("error: could not read the token from standard input");
                return ExitCode::from(2);
            }
            line
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let clock = dataplane::clock::Clock::new();
    let found = rt.block_on(policytest::inspect::inspect(&src.cfg, token.trim(), &clock));
    out(&found.text);
    if found.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
