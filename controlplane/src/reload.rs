//! Configuration reload: which files a configuration depends on, what a new file may change
//! at runtime (and what needs a restart), the file watcher, and the status `/admin/config` shows.
//!
//! A reload is validate-then-swap: the control loop (`control.rs`) loads and checks the whole
//! new configuration, prepares every piece of the next snapshot (issuers, upstreams, the
//! compiled policy, listener certificates, session keys) without touching the running one,
//! and only when all of it succeeded publishes one snapshot. Shards adopt it between
//! requests; a request keeps the snapshot it started with to its end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::{Config, ConfigError};

/// Why a reload was refused; the running configuration stays in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The operator's file does not parse or validate (names file, key path and reason).
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// The operator changed something only a restart can apply.
    #[error("restart needed to change {}", .0.join(", "))]
    RestartNeeded(Vec<&'static str>),
    /// A file the configuration names could not be used (policy, certificate, spec, CA).
    #[error("{0}")]
    Prepare(String),
    /// The gateway was started from code, not from a file (tests, `warden demo`).
    #[error("no configuration file to reload (started without one)")]
    NoSource,
    /// The control loop has stopped (shutdown): nothing can be reloaded.
    #[error("the control loop is not running")]
    Stopped,
}

impl ReloadError {
    /// The `result` label of `warden_config_reload_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ReloadError::Invalid(_) | ReloadError::Prepare(_) => "invalid",
            ReloadError::RestartNeeded(_) => "restart_needed",
            ReloadError::NoSource => "no_source",
            ReloadError::Stopped => "stopped",
        }
    }
}

/// What asks the control loop to reload.
#[derive(Debug)]
pub enum Trigger {
    /// SIGHUP, or a watched file changed (the loop compares fingerprints first).
    Signal,
    Files,
    /// `POST /admin/reload`: the caller waits for the outcome.
    Admin(tokio::sync::oneshot::Sender<Result<u64, ReloadError>>),
}

/// What `GET /admin/config` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// The configuration file, when there is one.
    pub path: Option<String>,
    /// Bumped on every successful load (start = 1).
    pub config_generation: u64,
    /// The snapshot generation published with it.
    pub snapshot_generation: u64,
    /// Unix seconds of the last successful load.
    pub loaded_at: i64,
    /// Unix seconds of the last attempt, successful or not.
    pub last_attempt_at: i64,
    /// The last refused reload's reason, until a later one succeeds.
    pub last_error: Option<String>,
    /// Files the running configuration depends on (watched for changes).
    pub watched_files: Vec<String>,
}

pub type StatusCell = Arc<ArcSwap<ReloadStatus>>;

/// Every file the configuration depends on besides itself; a change of any reloads.
pub fn named_files(cfg: &Config) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    v.extend(cfg.policy.files.iter().cloned());
    if let Some(t) = &cfg.gateway.tls {
        v.push(t.cert.clone());
        v.push(t.key.clone());
    }
    for i in &cfg.issuers {
        v.extend(i.ca_file.iter().cloned());
    }
    for u in &cfg.upstreams {
        v.extend(u.ca_file.iter().cloned());
        v.extend(u.spec_file.iter().cloned());
    }
    if let Some(d) = &cfg.delegation {
        v.extend(d.private_key_file.iter().cloned());
    }
    if let Some(k) = &cfg.sessions.keys_file {
        v.push(k.clone());
    }
    v.sort();
    v.dedup();
    v
}

/// SHA-256 over the contents of `files` (a missing file counts as its own state), so a
/// watcher event that changed nothing (an editor's touch, a Kubernetes symlink swap of
/// identical content) does not reload.
pub fn fingerprint(files: &[PathBuf]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for f in files {
        ctx.update(f.as_os_str().as_encoded_bytes());
        ctx.update(&[0]);
        match std::fs::read(f) {
            Ok(b) => {
                ctx.update(&(b.len() as u64).to_le_bytes());
                ctx.update(&b);
            }
            Err(_) => ctx.update(b"\xffmissing"),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Fingerprint of one upstream's or issuer's own files (spec, CA): part of "unchanged".
pub fn files_fingerprint(files: impl IntoIterator<Item = PathBuf>) -> [u8; 32] {
    fingerprint(&files.into_iter().collect::<Vec<_>>())
}

/// The settings a running process cannot change, named as in the file.
pub fn restart_needed(
    old: &Config,
    new: &Config,
    old_raw: &serde_yaml_ng::Value,
    new_raw: &serde_yaml_ng::Value,
) -> Vec<&'static str> {
    let mut v = Vec::new();
    let (o, n) = (&old.gateway, &new.gateway);
    if o.listen != n.listen {
        v.push("gateway.listen");
    }
    if o.shards != n.shards {
        v.push("gateway.shards");
    }
    if o.io_driver != n.io_driver {
        v.push("gateway.io_driver");
    }
    if o.tls.is_some() != n.tls.is_some() {
        v.push("gateway.tls (on/off; certificates themselves reload)");
    }
    if old.admin.listen != new.admin.listen {
        v.push("admin.listen");
    }
    // The console's access rule (and its credential file) is read once, at start.
    let console =
        |raw: &serde_yaml_ng::Value| raw.get("admin").and_then(|a| a.get("console")).cloned();
    if console(old_raw) != console(new_raw) {
        v.push("admin.console");
    }
    // Blocks owned by long-lived tasks started once: the audit writer, the span exporter,
    // the authorization server's listener and store, the delegation engine.
    for (key, label) in [
        ("audit", "audit"),
        ("telemetry", "telemetry"),
        ("authorization_server", "authorization_server"),
        ("state", "state"),
    ] {
        if old_raw.get(key) != new_raw.get(key) {
            v.push(label);
        }
    }
    // The delegation engine is rebuilt on reload; what the embedded STS and its rotation
    // task were started with is not.
    match (&old.delegation, &new.delegation) {
        (None, None) => {}
        (Some(o), Some(n)) => {
            if o.mode != n.mode {
                v.push("delegation.mode");
            }
            if o.issuer != n.issuer {
                v.push("delegation.issuer");
            }
            if o.signing_alg != n.signing_alg {
                v.push("delegation.signing_alg");
            }
            if o.key_rotation != n.key_rotation {
                v.push("delegation.key_rotation");
            }
        }
        _ => v.push("delegation (added or removed)"),
    }
    v
}

/// The directories to watch: each file's parent. Watching directories, not file inodes,
/// sees editors that replace files and Kubernetes ConfigMap updates, which swap a `..data`
/// symlink inside the mounted directory rather than writing the files.
pub fn watch_dirs(config_path: &Path, files: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::iter::once(config_path)
        .chain(files.iter().map(PathBuf::as_path))
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Watches `dirs` and sends [`Trigger::Files`] (debounced) on any change in them. The
/// returned watcher must be kept alive. The control loop also re-checks fingerprints on
/// its own timer, so an event the platform loses delays a reload, never prevents it.
pub fn spawn_watcher(
    dirs: &[PathBuf],
    tx: tokio::sync::mpsc::Sender<Trigger>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    use notify::Watcher as _;
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = raw_tx.send(());
        }
    })?;
    for d in dirs {
        w.watch(d, notify::RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        // Debounce: a save is several events (create, write, rename, chmod).
        while raw_rx.recv().await.is_some() {
            tokio::time::sleep(Duration::from_millis(150)).await;
            while raw_rx.try_recv().is_ok() {}
            if tx.send(Trigger::Files).await.is_err() {
                return;
            }
        }
    });
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "gateway:\n  listen: 127.0.0.1:0\n  public_url: http://127.0.0.1:8080/mcp\n  authentication: false\n";

    fn parse(t: &str) -> (Config, serde_yaml_ng::Value) {
        (
            Config::parse(t, "t.yaml").unwrap(),
            serde_yaml_ng::from_str(t).unwrap(),
        )
    }

    #[test]
    fn restart_only_settings_are_named() {
        let (a, ar) = parse(BASE);
        let (b, br) = parse(&BASE.replace("127.0.0.1:0", "127.0.0.1:1"));
        assert_eq!(restart_needed(&a, &b, &ar, &br), vec!["gateway.listen"]);
        let with_audit = format!("{BASE}audit:\n  sink: stdout\n  queue_capacity: 10\n");
        let (c, cr) = parse(&with_audit);
        assert_eq!(restart_needed(&a, &c, &ar, &cr), vec!["audit"]);
        let with_console = format!("{BASE}admin:\n  console:\n    require_auth: true\n");
        let (e, er) = parse(&with_console);
        assert_eq!(restart_needed(&a, &e, &ar, &er), vec!["admin.console"]);
        // Policy and upstream changes are not restart-only.
        let with_policy = format!("{BASE}policy:\n  default: allow\n");
        let (d, dr) = parse(&with_policy);
        assert!(restart_needed(&a, &d, &ar, &dr).is_empty());
    }

    #[test]
    fn fingerprints_follow_content_not_touches() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.cedar");
        std::fs::write(&f, "permit(principal, action, resource);").unwrap();
        let a = fingerprint(std::slice::from_ref(&f));
        std::fs::write(&f, "permit(principal, action, resource);").unwrap();
        assert_eq!(a, fingerprint(std::slice::from_ref(&f)));
        std::fs::write(&f, "forbid(principal, action, resource);").unwrap();
        assert_ne!(a, fingerprint(std::slice::from_ref(&f)));
        std::fs::remove_file(&f).unwrap();
        assert_ne!(a, fingerprint(&[f]));
    }

    #[test]
    fn watch_dirs_are_parents() {
        let mut d = watch_dirs(
            Path::new("/etc/warden/config/warden.yaml"),
            &[
                PathBuf::from("/etc/warden/config/p.cedar"),
                PathBuf::from("/etc/warden/tls/cert.pem"),
                PathBuf::from("rel.cedar"),
            ],
        );
        d.sort_by_key(|p| p.display().to_string());
        assert_eq!(
            d,
            vec![
                PathBuf::from("."),
                PathBuf::from("/etc/warden/config"),
                PathBuf::from("/etc/warden/tls")
            ]
        );
    }
}
