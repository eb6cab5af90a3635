//! The real `warden` binary as a child process: config file in a temp dir, fixed free ports,
//! ready once `/healthz` answers, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port outside the kernel's ephemeral range ([`testkit::stable_port`]): a
/// port from `bind(0)` can be handed to any outgoing connection on the machine once released,
/// which made a restart on the same port fail with "Address already in use" in CI.
pub fn free_port() -> u16 {
    testkit::stable_port()
}

pub struct WardenProc {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl WardenProc {
    /// Start `warden serve -c <dir>/warden.yaml` with `yaml`, whose `gateway.listen` and
    /// `admin.listen` are rewritten to the given ports.
    pub async fn start(dir: &Path, yaml: &str, port: u16, admin_port: u16) -> WardenProc {
        let config = dir.join("warden.yaml");
        std::fs::write(&config, with_ports(yaml, port, admin_port)).unwrap();
        Self::spawn(config, port, admin_port, &[]).await
    }

    /// [`WardenProc::start`] with the gateway's standard output on a pipe (`child.stdout`),
    /// for the `stdout` audit sink: the test reads it, or leaves it full.
    pub async fn start_piped(dir: &Path, yaml: &str, port: u16, admin_port: u16) -> WardenProc {
        let config = dir.join("warden.yaml");
        std::fs::write(&config, with_ports(yaml, port, admin_port)).unwrap();
        Self::spawn_to(config, port, admin_port, &[], Stdio::piped()).await
    }

    /// Start the binary on an existing config file (restarts), with extra arguments.
    pub async fn spawn(config: PathBuf, port: u16, admin_port: u16, extra: &[&str]) -> WardenProc {
        Self::spawn_to(config, port, admin_port, extra, Stdio::null()).await
    }

    async fn spawn_to(
        config: PathBuf,
        port: u16,
        admin_port: u16,
        extra: &[&str],
        stdout: Stdio,
    ) -> WardenProc {
        let log = config.with_extension(format!("{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
        cmd.args(["serve", "-c"]).arg(&config).args(extra);
        // The default state file goes beside the config, never into the working directory.
        if !extra.contains(&"--data-dir") {
            cmd.arg("--data-dir").arg(config.with_file_name("data"));
        }
        let child = cmd
            .env("WARDEN_LOG", "info")
            .stdout(stdout)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let p = WardenProc {
            child,
            port,
            admin_port,
            config,
            log,
        };
        p.wait_ready().await;
        p
    }

    async fn wait_ready(&self) {
        let t0 = Instant::now();
        let c = reqwest::Client::new();
        loop {
            if let Ok(r) = c.get(self.admin("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "warden did not become ready; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Stop at once (SIGKILL) and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WardenProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Rewrite the listen addresses of a config produced by `common::config_yaml`.
pub fn with_ports(yaml: &str, port: u16, admin_port: u16) -> String {
    yaml.replacen(
        "listen: 127.0.0.1:0\n  public_url",
        &format!("listen: 127.0.0.1:{port}\n  public_url"),
        1,
    )
    .replacen(
        "admin:\n  listen: 127.0.0.1:0",
        &format!("admin:\n  listen: 127.0.0.1:{admin_port}"),
        1,
    )
}
