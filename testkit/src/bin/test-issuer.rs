//! Starts a `TestIssuer`, prints `{"issuer": ..., "token": ...}` on one line, then serves until killed.
//! With `--tokens-file PATH --count N` it first writes N tokens for the distinct subjects
//! `<sub>-0` … `<sub>-(N-1)`, one per line (for load tests of per-user limits).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, reason = "this CLI's output is its stdout line")]

use std::io::Write as _;
use std::process::ExitCode;

use testkit::TestIssuer;

const USAGE: &str = "usage: test-issuer [--aud URL] [--sub NAME] [--scope \"a b\"] [--ttl-secs N] [--port N] [--tokens-file PATH --count N]";

struct Args {
    aud: String,
    sub: String,
    scope: String,
    ttl_secs: u64,
    port: u16,
    tokens_file: Option<std::path::PathBuf>,
    count: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        aud: "http://127.0.0.1/mcp".to_owned(),
        sub: "load-test".to_owned(),
        scope: String::new(),
        ttl_secs: 3600,
        port: 0,
        tokens_file: None,
        count: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value:?}: {e}");
        match flag.as_str() {
            "--aud" => args.aud = value,
            "--sub" => args.sub = value,
            "--scope" => args.scope = value,
            "--ttl-secs" => args.ttl_secs = value.parse().map_err(bad)?,
            "--port" => args.port = value.parse().map_err(bad)?,
            "--tokens-file" => args.tokens_file = Some(value.into()),
            "--count" => args.count = value.parse().map_err(bad)?,
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let issuer = TestIssuer::start_on(args.port).await;
    let mut claims = issuer.claims(&args.sub, &args.aud, &args.scope);
    claims["exp"] = (testkit::issuer::now_secs() + args.ttl_secs).into();
    let token = issuer.mint(&claims);
    if let Some(path) = &args.tokens_file {
        let mut text = String::with_capacity(args.count * 700);
        for i in 0..args.count {
            let mut c = issuer.claims(&format!("{}-{i}", args.sub), &args.aud, &args.scope);
            c["exp"] = (testkit::issuer::now_secs() + args.ttl_secs).into();
            text.push_str(&issuer.mint(&c));
            text.push('\n');
        }
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let line = serde_json::json!({ "issuer": issuer.issuer(), "token": token });
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    drop(out);
    std::future::pending::<()>().await;
    drop(issuer);
    ExitCode::SUCCESS
}
