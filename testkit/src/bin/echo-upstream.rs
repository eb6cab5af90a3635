//! Runs a default `TestUpstream` (recording off) on `--port N`, prints `{"url": ...}`, then serves until killed.
//! `GET /stats` answers `{"tool_calls":N,"call_ids":M,"duplicate_call_ids":D}`: the `tools/call`
//! requests it executed and the distinct / repeated `arguments.call_id` values among them.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;

use testkit::{TestUpstream, UpstreamOptions};

fn parse_port() -> Result<u16, String> {
    let mut port = 0;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--port" => {
                let v = it.next().ok_or("--port needs a value")?;
                port = v.parse().map_err(|e| format!("--port {v:?}: {e}"))?;
            }
            _ => {
                return Err(format!(
                    "unknown argument {flag}\nusage: echo-upstream [--port N]"
                ));
            }
        }
    }
    Ok(port)
}

#[tokio::main]
async fn main() -> ExitCode {
    let port = match parse_port() {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let upstream = TestUpstream::start_on(UpstreamOptions::default(), port).await;
    // Load tests send millions of requests: keep memory flat.
    upstream.set_recording(false);
    let line = serde_json::json!({ "url": upstream.url() });
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    drop(out);
    std::future::pending::<()>().await;
    drop(upstream);
    ExitCode::SUCCESS
}
