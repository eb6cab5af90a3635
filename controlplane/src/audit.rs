//! The audit sink: drains the shards' queue, chains records with SHA-256, writes JSON Lines
//! with size/time rotation (or to stdout), and verifies or tails what was written.
//!
//! Chain: every line is a JSON object ending in `"seq":N,"prev":"<hex>"}` where `prev` is
//! the SHA-256 of the previous line's bytes (64 zeros for the first). The chain continues
//! across rotated files. A failing sink keeps its records in memory (nothing accepted is
//! dropped), marks the queue unhealthy so shards refuse new tool calls, and retries.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dataplane::audit::{AuditQueue, Record};
use dataplane::clock::{Clock, Instant};
use serde::Deserialize;

/// The `audit:` block of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default)]
    pub sink: SinkKind,
    /// Directory of the JSON Lines files (file sink).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(default = "default_max_bytes")]
    pub max_file_bytes: u64,
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_file_age: Duration,
    #[serde(default)]
    pub fsync: Fsync,
    /// Records that may wait for the writer; beyond it tool calls are refused.
    #[serde(default = "default_capacity")]
    pub queue_capacity: usize,
    /// How long an answer waits for its record to be written before it leaves anyway (the
    /// record stays queued). `0s`: answers do not wait, and a process killed just after
    /// answering can lose the records of its last answers.
    #[serde(default = "default_answer_wait", with = "humantime_serde")]
    pub answer_wait: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sink: SinkKind::Stdout,
            dir: None,
            max_file_bytes: default_max_bytes(),
            max_file_age: default_max_age(),
            fsync: Fsync::Never,
            queue_capacity: default_capacity(),
            answer_wait: default_answer_wait(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// JSON Lines on standard output (containers).
    #[default]
    Stdout,
    /// Rotated JSON Lines files under `dir`.
    File,
}

/// When written batches are forced to disk.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Written with `write(2)` per batch: survives a process kill, not a power loss.
    #[default]
    Never,
    /// `fsync` after every batch: survives a power loss, costs a disk flush per batch.
    Batch,
}

fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_age() -> Duration {
    Duration::from_secs(3600)
}
fn default_answer_wait() -> Duration {
    Duration::from_secs(1)
}
fn default_capacity() -> usize {
    65_536
}

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn sha_hex(b: &[u8]) -> String {
    dataplane::audit::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
}

/// Append one chained line (and its newline) to `buf`; returns the line's hash.
/// Written in place: no per-record string is built. Public for the instruction-count probe
/// (`bench/examples/instructions.rs`), which measures what the writer does per record.
pub fn chain_into(
    buf: &mut Vec<u8>,
    rec: &Record,
    seq: u64,
    prev: &str,
) -> Result<String, serde_json::Error> {
    let start = buf.len();
    if let Err(e) = serde_json::to_writer(&mut *buf, rec) {
        buf.truncate(start);
        return Err(e);
    }
    // The record is a JSON object: append the chain fields before its closing brace.
    buf.pop();
    buf.extend_from_slice(b",\"seq\":");
    buf.extend_from_slice(seq.to_string().as_bytes());
    buf.extend_from_slice(b",\"prev\":\"");
    buf.extend_from_slice(prev.as_bytes());
    buf.extend_from_slice(b"\"}");
    let h = sha_hex(&buf[start..]);
    buf.push(b'\n');
    Ok(h)
}

fn file_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

/// Files of a directory in chain order.
pub fn chain_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    v.sort();
    Ok(v)
}

#[derive(Debug, Deserialize)]
struct ChainFields {
    seq: u64,
    prev: String,
}

/// Why the audit trail on disk cannot be read (to resume or to verify its chain).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The last line of the newest file is not a chained record: the chain cannot continue.
    #[error("{}: last line: {source}", path.display())]
    LastLine {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where the chain stands: next sequence number and the last line's hash.
fn resume(dir: &Path) -> Result<(u64, String), AuditError> {
    if !dir.exists() {
        return Ok((1, ZERO.into()));
    }
    let files = chain_files(dir).map_err(io_error(dir))?;
    let Some(last) = files.last() else {
        return Ok((1, ZERO.into()));
    };
    let f = File::open(last).map_err(io_error(last))?;
    let mut last_line = None;
    for line in BufReader::new(f).lines() {
        let line = line.map_err(io_error(last))?;
        if !line.is_empty() {
            last_line = Some(line);
        }
    }
    match last_line {
        None => Ok((1, ZERO.into())),
        Some(l) => {
            let c: ChainFields =
                serde_json::from_str(&l).map_err(|source| AuditError::LastLine {
                    path: last.clone(),
                    source,
                })?;
            let _ = c.prev;
            Ok((c.seq + 1, sha_hex(l.as_bytes())))
        }
    }
}

struct FileSink {
    dir: PathBuf,
    cfg: AuditConfig,
    file: Option<(File, u64, Instant)>,
    /// The open file's path (shared with the console's chain links).
    path: Option<Arc<Path>>,
    /// File age (`max_file_age`) is judged by it.
    clock: Clock,
}

impl FileSink {
    /// Append `lines`; returns the file and the offset the first line starts at.
    fn write(&mut self, lines: &[u8], first_seq: u64) -> std::io::Result<(Arc<Path>, u64)> {
        let rotate = match &self.file {
            None => true,
            Some((_, size, opened)) => {
                *size >= self.cfg.max_file_bytes
                    || self.clock.since(*opened) >= self.cfg.max_file_age
            }
        };
        if rotate {
            fs::create_dir_all(&self.dir)?;
            let path = self.dir.join(file_name(first_seq));
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some((f, size, self.clock.now()));
            self.path = Some(Arc::from(path.as_path()));
        }
        let (Some((f, size, _)), Some(path)) = (self.file.as_mut(), self.path.clone()) else {
            return Err(std::io::Error::other("no audit file"));
        };
        let good = *size;
        let written = f.write_all(lines).and_then(|_| {
            if self.cfg.fsync == Fsync::Batch {
                f.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Cut any torn line so the chain stays verifiable; the batch is retried whole.
            if let Err(t) = f.set_len(good) {
                tracing::error!(error = %t, "Could not cut a partial audit write; starting a new file");
            }
            self.file = None;
            return Err(e);
        }
        let start = *size;
        *size += lines.len() as u64;
        Ok((path, start))
    }
}

/// Called with each record as written (library callers, tests).
pub type Observer = Arc<dyn Fn(&Record) + Send + Sync>;

/// A written record's place in the hash chain, and where its line is (file sink).
#[derive(Debug, Clone)]
pub struct Link {
    pub seq: u64,
    /// The previous line's hash (the record's `prev`).
    pub prev: String,
    /// SHA-256 of this line's bytes (the next record's `prev`).
    pub hash: String,
    /// The file, the line's byte offset in it and its length (no newline); `None` on stdout.
    pub at: Option<(Arc<Path>, u64, usize)>,
}

/// Called with each record and its chain link once written (the console). The record is
/// handed over, not lent: the console keeps the latest ones, so it moves them in, never clones.
pub type ChainObserver = Arc<dyn Fn(Record, &Link) + Send + Sync>;

/// Whether the line at `link.at` still hashes to `link.hash` and carries `link.seq` and
/// `link.prev` (blocking file I/O: call from a blocking thread).
pub fn check_link(link: &Link) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let Some((path, offset, len)) = &link.at else {
        return Err("written to standard output: not on disk to re-check".into());
    };
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(*offset))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut line = vec![0u8; *len];
    f.read_exact(&mut line)
        .map_err(|e| format!("{}: line at byte {offset}: {e}", path.display()))?;
    if sha_hex(&line) != link.hash {
        return Err(format!(
            "{} byte {offset}: the line no longer hashes to the value written (altered)",
            path.display()
        ));
    }
    let c: ChainFields = serde_json::from_slice(&line)
        .map_err(|e| format!("{} byte {offset}: {e}", path.display()))?;
    if c.seq != link.seq || c.prev != link.prev {
        return Err(format!(
            "{} byte {offset}: another record's line",
            path.display()
        ));
    }
    Ok(())
}

/// Start the writer on its own thread (file I/O never runs on a shard or a tokio worker).
/// It stops once every other holder of the queue is gone and the queue is drained.
pub fn spawn_writer(
    queue: Arc<AuditQueue>,
    cfg: AuditConfig,
    observer: Option<ChainObserver>,
    clock: Clock,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("warden-audit".into())
        .spawn(move || run_writer(queue, cfg, observer, clock))
}

/// The writer loop. Never drops an accepted record.
fn run_writer(
    queue: Arc<AuditQueue>,
    cfg: AuditConfig,
    observer: Option<ChainObserver>,
    clock: Clock,
) {
    let mut file = match (cfg.sink, &cfg.dir) {
        (SinkKind::File, Some(d)) => Some(FileSink {
            dir: d.clone(),
            cfg: cfg.clone(),
            file: None,
            path: None,
            clock,
        }),
        _ => None,
    };
    let (mut seq, mut prev) = match &file {
        // Never start a second chain over an unreadable one: refuse calls until it can be read.
        Some(f) => loop {
            match resume(&f.dir) {
                Ok(state) => break state,
                Err(e) => {
                    tracing::error!(error = %e, "Audit chain cannot be resumed; refusing tool calls until it can");
                    queue.set_healthy(false);
                    if queue.is_closing() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        },
        None => (1, ZERO.into()),
    };
    queue.register_writer();
    let mut pending: Vec<Record> = Vec::new();
    // The answers waiting on the pending records, told once these are written.
    let mut acks: Vec<dataplane::audit::Ack> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    // (offset in buf, length, seq, prev, hash) of each line, for the observer.
    let mut links: Vec<(usize, usize, u64, String, String)> = Vec::new();
    loop {
        while pending.len() < 4096 {
            match queue.pop() {
                Some(t) => {
                    pending.push(t.record);
                    acks.push(t.ack);
                }
                None => break,
            }
        }
        metrics::gauge!("warden_audit_queue_depth").set((queue.depth() + pending.len()) as f64);
        metrics::counter!("warden_audit_records_dropped_total")
            .absolute(queue.dropped.load(std::sync::atomic::Ordering::Relaxed));
        if pending.is_empty() {
            if Arc::strong_count(&queue) == 1 || (queue.is_closing() && queue.depth() == 0) {
                return;
            }
            // Until a commit wakes it; the timeout only refreshes the gauges.
            queue.park_writer(Duration::from_millis(100));
            continue;
        }
        buf.clear();
        links.clear();
        let (mut s, mut p) = (seq, prev.clone());
        let mut ok = true;
        for r in &pending {
            let start = buf.len();
            match chain_into(&mut buf, r, s, &p) {
                Ok(h) => {
                    if observer.is_some() {
                        links.push((start, buf.len() - 1 - start, s, p.clone(), h.clone()));
                    }
                    s += 1;
                    p = h;
                }
                Err(e) => {
                    tracing::error!(error = %e, "Audit record not serializable");
                    ok = false;
                    break;
                }
            }
        }
        let written: Option<Option<(Arc<Path>, u64)>> = if !ok {
            None
        } else {
            match file.as_mut() {
                Some(f) => {
                    let first = seq;
                    f.write(&buf, first).map_err(|e| tracing::error!(error = %e, "Audit sink failed; refusing tool calls until it recovers")).ok().map(Some)
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&buf)
                        .and_then(|_| out.flush())
                        .ok()
                        .map(|_| None)
                }
            }
        };
        if let Some(at) = written {
            if !queue.is_healthy() {
                tracing::info!("Audit sink recovered");
            }
            queue.set_healthy(true);
            // Written (and synced, where configured): the waiting answers may leave.
            acks.drain(..).for_each(dataplane::audit::Ack::written);
            let written_n = pending.len();
            if let Some(o) = &observer {
                for (r, (start, len, seq, prev, hash)) in pending.drain(..).zip(links.drain(..)) {
                    let link = Link {
                        seq,
                        prev,
                        hash,
                        at: at
                            .as_ref()
                            .map(|(path, base)| (path.clone(), base + start as u64, len)),
                    };
                    o(r, &link);
                }
            }
            metrics::counter!("warden_audit_records_written_total").increment(written_n as u64);
            queue.release(written_n);
            pending.clear();
            seq = s;
            prev = p;
        } else {
            queue.set_healthy(false);
            metrics::counter!("warden_audit_sink_failures_total").increment(1);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The result of verifying a directory's chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    Ok {
        records: u64,
        files: usize,
    },
    Broken {
        file: PathBuf,
        line: usize,
        problem: String,
    },
}

/// Check every file in order: valid JSON, consecutive `seq`, `prev` = hash of the previous line.
pub fn verify(dir: &Path) -> Result<Verified, AuditError> {
    let files = chain_files(dir).map_err(io_error(dir))?;
    let mut prev = ZERO.to_string();
    let mut expect_seq: Option<u64> = None;
    let mut n = 0;
    for f in &files {
        let file = File::open(f).map_err(io_error(f))?;
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io_error(f))?;
            let broken = |problem: String| {
                Ok(Verified::Broken {
                    file: f.clone(),
                    line: i + 1,
                    problem,
                })
            };
            let c: ChainFields = match serde_json::from_str(&line) {
                Ok(c) => c,
                Err(e) => return broken(format!("not a chained JSON record: {e}")),
            };
            if let Some(s) = expect_seq
                && c.seq != s
            {
                return broken(format!(
                    "sequence {} where {s} was expected (records missing or reordered)",
                    c.seq
                ));
            }
            if c.prev != prev {
                return broken(
                    "prev hash does not match the previous record (altered, inserted or removed)"
                        .into(),
                );
            }
            prev = sha_hex(line.as_bytes());
            expect_seq = Some(c.seq + 1);
            n += 1;
        }
    }
    Ok(Verified::Ok {
        records: n,
        files: files.len(),
    })
}

/// Filters of `warden audit tail`.
#[derive(Debug, Default, Clone)]
pub struct TailFilter {
    pub user: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<String>,
}

impl TailFilter {
    pub fn matches(&self, v: &serde_json::Value) -> bool {
        let eq = |k: &str, want: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| v.get(k).and_then(|x| x.as_str()) == Some(w.as_str()))
        };
        eq("sub", &self.user) && eq("tool", &self.tool) && eq("decision", &self.decision)
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
