//! The `warden` command: serve, validate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod policy_cli;

/// mimalloc instead of glibc malloc: a call allocates and frees a few dozen small objects,
/// many of them (the audit record's strings) freed on the audit writer's thread; glibc spent
/// about a fifth of the gateway's CPU there (docs/performance.md, "Allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "warden",
    version,
    about = "An identity gateway for MCP: OAuth resource server, per-tool policy, delegation"
)]
struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the gateway with a configuration file.
    Serve {
        #[arg(short, long)]
        config: PathBuf,
        /// Number of data-plane shards (default: config, else one per core).
        #[arg(long)]
        shards: Option<usize>,
        /// Where the default state database lives (`warden.db`; created 0700 on first start)
        /// when the config has no `state.url`.
        #[arg(long, default_value = "./warden-data")]
        data_dir: PathBuf,
    },
    /// Run the seed's scenario on loopback: authorization server, Enterprise Ledger, gateway.
    Demo {
        /// The gateway's MCP listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The embedded authorization server.
        #[arg(long, default_value = "127.0.0.1:9000")]
        auth_listen: std::net::SocketAddr,
        /// The admin listener (/metrics, /healthz, /readyz).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: std::net::SocketAddr,
        #[arg(long)]
        shards: Option<usize>,
        /// Directory of the audit trail (default: $TMPDIR/warden-demo-audit).
        #[arg(long)]
        audit_dir: Option<PathBuf>,
        /// Where the state database lives (`warden.db`: signing keys, clients, refresh tokens,
        /// sessions; created 0700 on first start).
        #[arg(long, default_value = "./warden-data")]
        data_dir: PathBuf,
        /// Watch a candidate .cedar file in shadow beside the seed's rules (counted and
        /// audited where it disagrees, never enforced).
        #[arg(long)]
        shadow_policy: Option<PathBuf>,
        /// A YAML list of upstream OpenID Connect IdPs for the authorization server's login
        /// page (`authorization_server.connectors`, see docs/authorization-server.md).
        #[arg(long)]
        connectors: Option<PathBuf>,
        /// Tests only: trust this CA (PEM) for Client ID Metadata Documents and allow their
        /// hosts on loopback/private addresses.
        #[arg(long)]
        cimd_test_ca: Option<PathBuf>,
    },
    /// Per-tool policy: show the generated Cedar, import the seed's Rego shape.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Inspect the audit trail.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Decode a token without trusting it, then say what Warden concludes of it.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Print an argon2id hash of a password read from standard input (for `authorization_server.users`).
    HashPassword,
    /// Check a configuration file without serving.
    Validate {
        #[arg(short, long)]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Print the Cedar generated from the config's rules, then the configured .cedar files,
    /// and check that everything compiles against the schema.
    Show {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Translate Rego of the documented shape (default allow/deny, a rule per tool with a
    /// scope condition, external_message) into Cedar; refuse anything else.
    ImportRego { file: PathBuf },
    /// Run decision tests (the config's `policy.tests`, or the files given; without a config,
    /// the demo's). Exit 1 when a test fails.
    Test {
        #[arg(short, long)]
        config: Option<PathBuf>,
        tests: Vec<PathBuf>,
        /// Also write JUnit XML here.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// List policies no test exercises and tools nobody can call.
        #[arg(long)]
        coverage: bool,
    },
    /// Explain one decision: every policy's part, the Cedar request, the time it took.
    Explain {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// A token whose claims are used (read without verification).
        #[arg(long)]
        token: Option<String>,
        /// Claims as YAML or JSON: `{sub: alice, scopes: [a, b], groups: [g], client: c}`.
        #[arg(long)]
        claims: Option<String>,
        /// A user of the authorization server (the scopes it would grant them).
        #[arg(long)]
        user: Option<String>,
        /// The namespaced tool of a `tools/call`.
        #[arg(long)]
        tool: Option<String>,
        /// Or a method (`resources/read`, …) with `--upstream`.
        #[arg(long)]
        method: Option<String>,
        #[arg(long)]
        upstream: Option<String>,
        /// The call's arguments, JSON.
        #[arg(long)]
        args: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List every decision that changes between two trees (e.g. two git checkouts): both
    /// trees' tests, and optionally the last audit records, replayed against both. Exit 1 when any changes.
    Diff {
        /// The config file's path inside each tree.
        #[arg(short, long)]
        config: PathBuf,
        old: PathBuf,
        new: PathBuf,
        /// Also replay the last `--last` policy-decided records of this audit directory.
        #[arg(long)]
        audit: Option<PathBuf>,
        #[arg(long, default_value_t = 1000)]
        last: usize,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Print the header and claims (never the signature or the raw token), then validate it
    /// against the configured issuers (keys fetched now). Exit 1 when Warden would refuse it.
    Inspect {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The token; `-` or absent: read one line from standard input.
        token: Option<String>,
    },
}

#[expect(clippy::print_stdout, reason = "policy text is this command's output")]
fn policy_cmd(cmd: PolicyCmd) -> ExitCode {
    match cmd {
        PolicyCmd::Show { config } => {
            let cfg = match controlplane::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            println!("{}", warden_policy::translate(&cfg.policy));
            let mut files = Vec::new();
            for f in &cfg.policy.files {
                match std::fs::read_to_string(f) {
                    Ok(t) => {
                        println!("// ---- {} ----\n{t}", f.display());
                        files.push(warden_policy::PolicyFile {
                            name: f.display().to_string(),
                            text: t,
                        });
                    }
                    Err(e) => {
                        eprintln!("error: {}: {e}", f.display());
                        return ExitCode::from(2);
                    }
                }
            }
            // Compiled against an empty catalog: syntax and schema are checked; tool names are
            // checked when the gateway starts and knows its upstreams' tools.
            match warden_policy::compile(&cfg.policy, &files, &[], 0) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        PolicyCmd::Test {
            config,
            tests,
            junit,
            coverage,
        } => policy_cli::test(config.as_deref(), tests, junit.as_deref(), coverage),
        PolicyCmd::Explain {
            config,
            token,
            claims,
            user,
            tool,
            method,
            upstream,
            args,
            json,
        } => {
            let request = controlplane::policytest::Request {
                token,
                claims,
                user,
                tool,
                method,
                upstream,
                arguments: args,
            };
            policy_cli::explain(config.as_deref(), &request, json)
        }
        PolicyCmd::Diff {
            config,
            old,
            new,
            audit,
            last,
        } => policy_cli::diff(&config, &old, &new, audit.as_deref(), last),
        PolicyCmd::ImportRego { file } => match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|t| warden_policy::import_rego(&t))
        {
            Ok(cedar) => {
                println!("{cedar}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
    }
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Verify the hash chain of an audit directory; report the first break.
    Verify { dir: PathBuf },
    /// Show a record and explain its decision under the current policy (`-c`, else the demo's).
    Explain {
        request_id: String,
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The audit directory (default: the config's `audit.dir`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print records (and follow new ones with --follow), optionally filtered.
    Tail {
        dir: PathBuf,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        tool: Option<String>,
        #[arg(long)]
        decision: Option<String>,
        #[arg(short, long)]
        follow: bool,
    },
}

fn audit_cmd(cmd: AuditCmd) -> ExitCode {
    use controlplane::audit::{TailFilter, Verified, chain_files, verify};
    match cmd {
        AuditCmd::Explain {
            request_id,
            config,
            dir,
        } => policy_cli::audit_explain(config.as_deref(), dir.as_deref(), &request_id),
        AuditCmd::Verify { dir } => match verify(&dir) {
            Ok(Verified::Ok { records, files }) => {
                eprintln!(
                    "{}: chain intact: {records} records in {files} files",
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Ok(Verified::Broken {
                file,
                line,
                problem,
            }) => {
                eprintln!("{}:{line}: chain broken: {problem}", file.display());
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        AuditCmd::Tail {
            dir,
            user,
            tool,
            decision,
            follow,
        } => {
            use std::io::{BufRead, Write};
            let filter = TailFilter {
                user,
                tool,
                decision,
            };
            let mut seen: std::collections::HashMap<PathBuf, u64> =
                std::collections::HashMap::new();
            let stdout = std::io::stdout();
            loop {
                let files = match chain_files(&dir) {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!("error: {}: {e}", dir.display());
                        return ExitCode::from(2);
                    }
                };
                for f in files {
                    let Ok(file) = std::fs::File::open(&f) else {
                        continue;
                    };
                    let skip = seen.get(&f).copied().unwrap_or(0);
                    let mut n = 0u64;
                    let mut out = stdout.lock();
                    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
                        n += 1;
                        if n <= skip {
                            continue;
                        }
                        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                            && filter.matches(&v)
                        {
                            let _ = writeln!(out, "{line}");
                        }
                    }
                    seen.insert(f, n);
                }
                if !follow {
                    return ExitCode::SUCCESS;
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
    }
}

/// Logging to standard error; a `WARDEN_LOG` that is not a filter is refused (`logs.rs`).
fn init_logs(format: &str) -> Result<(), controlplane::logs::LogFilterError> {
    let value = std::env::var(controlplane::logs::VAR).ok();
    let filter = controlplane::logs::filter(value.as_deref())?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logs(&cli.log_format) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match cli.cmd {
        Cmd::Audit { cmd } => audit_cmd(cmd),
        Cmd::Policy { cmd } => policy_cmd(cmd),
        Cmd::Token {
            cmd: TokenCmd::Inspect { config, token },
        } => policy_cli::token_inspect(config.as_deref(), token),
        Cmd::HashPassword => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("error: could not read standard input");
                return ExitCode::from(2);
            }
            match controlplane::authz::hash_password(line.trim_end_matches(['\r', '\n'])) {
                Ok(h) => {
                    #[expect(clippy::print_stdout, reason = "the hash is this command's output")]
                    {
                        println!("{h}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Validate { config } => match controlplane::Config::load(&config) {
            Ok(_) => {
                eprintln!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Demo {
            listen,
            auth_listen,
            admin_listen,
            shards,
            audit_dir,
            data_dir,
            shadow_policy,
            connectors,
            cimd_test_ca,
        } => {
            let connectors: Vec<controlplane::authz::settings::ConnectorConfig> = match connectors {
                None => Vec::new(),
                Some(f) => match std::fs::read_to_string(&f)
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_yaml_ng::from_str(&t).map_err(|e| e.to_string()))
                {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("error: {}: {e}", f.display());
                        return ExitCode::from(2);
                    }
                },
            };
            let state = match controlplane::state::StateConfig::or_data_dir(None, &data_dir) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match control_runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async move {
                let mut opts = controlplane::demo::DemoOptions {
                    gateway: listen,
                    auth_server: auth_listen,
                    admin: admin_listen,
                    shards,
                    state: Some(state),
                    shadow_policy,
                    connectors,
                    cimd_test_ca,
                    ..Default::default()
                };
                if let Some(d) = audit_dir {
                    opts.audit_dir = d;
                }
                let demo = match controlplane::demo::start(opts).await {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                eprintln!("{}", controlplane::demo::banner(&demo));
                wait_for_signal().await;
                tracing::info!("Shutting down: draining in-flight requests");
                demo.gateway.shutdown().await;
                ExitCode::SUCCESS
            })
        }
        Cmd::Serve {
            config,
            shards,
            data_dir,
        } => {
            if let Err(e) = controlplane::Config::load(&config) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            let rt = match control_runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async move {
                let running = match controlplane::start_file(&config, shards, &data_dir).await {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                wait_for_signal().await;
                tracing::info!("Shutting down: draining in-flight requests");
                running.shutdown().await;
                ExitCode::SUCCESS
            })
        }
    }
}

/// The control plane: a small tokio runtime on its own threads; shards are separate threads.
fn control_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("warden-control")
        .enable_all()
        .build()
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
