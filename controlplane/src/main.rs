//! The `warden` command: serve, validate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    },
    /// Print an argon2id hash of a password read from standard input (for `authorization_server.users`).
    HashPassword,
    /// Check a configuration file without serving.
    Validate {
        #[arg(short, long)]
        config: PathBuf,
    },
}

fn init_logs(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG").unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    match cli.cmd {
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
        } => {
            let rt = match control_runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async move {
                let opts = controlplane::demo::DemoOptions {
                    gateway: listen,
                    auth_server: auth_listen,
                    admin: admin_listen,
                    shards,
                    ..Default::default()
                };
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
        Cmd::Serve { config, shards } => {
            let cfg = match controlplane::Config::load(&config) {
                Ok(c) => c,
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
                let running = match controlplane::start(cfg, shards).await {
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
