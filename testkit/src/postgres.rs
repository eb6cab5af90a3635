//! A real PostgreSQL server for tests: `initdb` into a temp dir, `postgres` on a free loopback port, stopped on Drop.
//!
//! initdb refuses to run as root, so as root the server runs as the `postgres` user (Debian's
//! package creates it; otherwise a `warden-test-pg` system user is created) through `setpriv`.
//! Binaries come from `$WARDEN_PG_BIN`, then `pg_config --bindir`, then the newest
//! `/usr/lib/postgresql/*/bin` (Debian keeps them off `PATH`), then `PATH`.

// A test peer: a failure to start the server is the test's failure, with the reason.
#![allow(clippy::expect_used)]

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password of the `warden` superuser in test clusters.
pub const PASSWORD: &str = "warden-test-pw";

/// A running PostgreSQL server; dropping it stops the server and removes its files.
#[derive(Debug)]
pub struct Postgres {
    child: Option<Child>,
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("WARDEN_PG_BIN") {
        return d.into();
    }
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output()
        && o.status.success()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if d.join("initdb").exists() {
            return d;
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let b = e.path().join("bin");
            b.join("initdb").exists().then_some((v, b))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).unwrap_or_default()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The unprivileged user to run as when we are root (created if missing).
fn run_as_user() -> String {
    for u in ["postgres", "warden-test-pg"] {
        if Command::new("id")
            .arg("-u")
            .arg(u)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return u.to_owned();
        }
    }
    let ok = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "warden-test-pg",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "testkit::postgres: cannot create the user warden-test-pg to run PostgreSQL as (initdb refuses root)"
    );
    "warden-test-pg".to_owned()
}

fn command(bin: &Path, prog: &str, user: Option<&str>) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--init-groups",
                "--",
            ])
            .arg(bin.join(prog));
            c
        }
        None => Command::new(bin.join(prog)),
    }
}

impl Postgres {
    /// Start a fresh cluster (database `postgres`, superuser `warden` / [`PASSWORD`]).
    pub fn start() -> Postgres {
        let bin = bin_dir();
        assert!(
            bin.join("initdb").exists(),
            "testkit::postgres: initdb not found (install Debian's `postgresql`, or set WARDEN_PG_BIN); looked in {}",
            bin.display()
        );
        let user = is_root().then(run_as_user);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("warden-pg-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("sock")).expect("create the cluster directory");
        std::fs::write(dir.join("pwfile"), PASSWORD).expect("write the password file");
        if let Some(u) = &user {
            let ok = Command::new("chown")
                .arg("-R")
                .arg(format!("{u}:"))
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "testkit::postgres: chown {} to {u} failed",
                dir.display()
            );
        }
        let out = command(&bin, "initdb", user.as_deref())
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "warden",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", dir.join("pwfile").display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::stable_port();
        let log = std::fs::File::create(dir.join("server.log")).expect("server log");
        if let Some(u) = &user {
            let _ = Command::new("chown")
                .arg(format!("{u}:"))
                .arg(dir.join("server.log"))
                .status();
        }
        let child = command(&bin, "postgres", user.as_deref())
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .arg("-k")
            .arg(dir.join("sock"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let pg = Postgres {
            child: Some(child),
            dir,
            bin,
            port,
        };
        pg.wait_ready();
        pg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "warden",
                    "-d",
                    "postgres",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not become ready; log:\n{}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` database.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://warden:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// The URL of `db` through the server's Unix socket (percent-encoded directory as host).
    pub fn socket_url_for(&self, db: &str) -> String {
        let sock = self
            .dir
            .join("sock")
            .display()
            .to_string()
            .replace('/', "%2F");
        format!("postgres://warden:{PASSWORD}@{sock}:{}/{db}", self.port)
    }

    /// Create database `db` and return its URL.
    pub fn create_database(&self, db: &str) -> String {
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "warden",
                db,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {db} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url_for(db)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT = fast shutdown: the postmaster stops its children and exits.
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `(url, guard)`: the server lives as long as the guard.
pub fn start() -> (String, Postgres) {
    let pg = Postgres::start();
    (pg.url(), pg)
}
