//! Audit records and the bounded lock-free queue that carries them off the shards.
//!
//! A tool call reserves its record's slot before anything is forwarded; if no slot can
//! be reserved (queue full, or the sink failing) the call is refused rather than run
//! unaudited. The control plane's writer drains the queue, chains and writes records,
//! and gives slots back only once they are written, so nothing accepted is dropped.
//! Outcomes without a reservation (authentication failures, rejected input) draw on a
//! share of their own, so a flood of garbage can never take the slots of real calls; when
//! that share is full the request is answered "audit unavailable" instead of its outcome,
//! so no answered request goes unrecorded.
//!
//! An answer leaves only once its record is written: [`Reservation::commit`] returns a
//! [`Written`] that the writer's [`Ack`] resolves after the record's `write(2)` (and `fsync`
//! where configured) returned, so a process killed right after answering has the answer's
//! record in its file. The wait is bounded (`answer_wait`): a sink stalled mid-call delays
//! answers by at most that much, and such an answer is counted
//! (`warden_audit_answered_unwritten_total`); its record is still queued, not lost.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use futures_channel::oneshot;
use serde::Serialize;

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Forwarded upstream and answered.
    Allow,
    /// Denied by policy (or hidden/unknown tool).
    Deny,
    /// The bearer token was missing or invalid.
    Unauthenticated,
    /// The request was malformed or not acceptable.
    Rejected,
    /// No delegation token could be obtained; nothing was sent.
    ExchangeFailed,
    /// The upstream failed, timed out or answered garbage.
    UpstreamError,
    /// Over a per-user or per-tool rate limit; nothing was sent.
    RateLimited,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Rejected => "rejected",
            Outcome::ExchangeFailed => "exchange_failed",
            Outcome::UpstreamError => "upstream_error",
            Outcome::RateLimited => "rate_limited",
        }
    }
}

/// The delegation token used for a call (never the token itself).
#[derive(Debug, Clone, Serialize)]
pub struct DelegationRecord {
    pub jti: Option<String>,
    pub aud: String,
    pub scope: String,
    pub exp: i64,
    pub cached: bool,
}

/// What the shadow policy (`policy.shadow`) decided, on a record where it disagreed with the live one.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowRecord {
    /// `allow`, `deny`, `hidden` or `step_up`.
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One audit record. Never holds a token, secret, cookie or raw session id.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Unix time in milliseconds.
    pub time_ms: i64,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The gateway's span (exported over OTLP when configured; the upstream's parent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// SHA-256 (first 16 bytes, hex) of the session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// SHA-256 (first 16 bytes, hex) of the inbound token's `jti`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti_hash: Option<String>,
    /// Whether the inbound token was sender-constrained: DPoP-bound (`cnf.jkt`) and presented
    /// with a valid proof of that key.
    pub sender_constrained: bool,
    /// The RFC 7638 thumbprint of the proof's key (the token's `cnf.jkt`), when constrained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// Actors, outermost first: the gateway, then the inbound token's `act` chain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<String>,
    /// The inbound token's scopes and groups: what policy decided on (so a decision can be
    /// explained and replayed against another policy: `warden audit explain`, `policy diff`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_tool: Option<String>,
    pub decision: Outcome,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who caused a refusal (`agent`, `identity_provider`, `token_service`, `upstream`,
    /// `operator`, `gateway`); absent when the call was served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blame: Option<&'static str>,
    /// Present when the shadow policy decided otherwise than the live one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation: Option<DelegationRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// Time from the gateway's whole handling of the request (reservation to commit).
    pub latency_ms: f64,
    /// Of which the upstream's own time (record format 2): `latency_ms − upstream_ms` is what
    /// the gateway added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    /// The MCP revision the client spoke (`2026-07-28`, or its session's 2025-xx revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The revision the upstream was spoken to in, when the request went to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_protocol: Option<String>,
}

/// A queued record, the share its slot came from, and the answer waiting on it.
#[derive(Debug)]
struct Queued {
    record: Record,
    unreserved: bool,
    ack: Ack,
}

/// A record taken by the writer, with what tells its answer that it is written.
#[derive(Debug)]
pub struct Taken {
    pub record: Record,
    pub ack: Ack,
}

/// Resolves the [`Written`] of one record. Send it once the record is written; dropped
/// unsent (the writer stopped), the answer stops waiting.
#[derive(Debug)]
pub struct Ack(oneshot::Sender<()>);

impl Ack {
    /// The record is written: its answer may leave.
    pub fn written(self) {
        let _ = self.0.send(());
    }
}

/// The answer's wait for its record to be written.
#[derive(Debug)]
#[must_use = "an answer waits for its record"]
pub struct Written {
    rx: oneshot::Receiver<()>,
    bound: Duration,
}

impl Written {
    /// Wait until the record is written, at most the queue's `answer_wait`. `false`: it was
    /// not written in time (the record stays queued) and the answer goes anyway, counted.
    pub async fn wait(self) -> bool {
        if self.bound.is_zero() {
            return false;
        }
        let mut rx = self.rx;
        if let Ok(Some(())) = rx.try_recv() {
            return true;
        }
        match crate::deadline::Deadline::after(self.bound).run(rx).await {
            Ok(Ok(())) => true,
            // The writer dropped the ack (it stopped): nothing more to wait for.
            Ok(Err(oneshot::Canceled)) => false,
            Err(crate::deadline::Elapsed) => {
                metrics::counter!("warden_audit_answered_unwritten_total").increment(1);
                false
            }
        }
    }
}

/// The shared queue between shards and the writer.
#[derive(Debug)]
pub struct AuditQueue {
    /// Boxed: a slot is a pointer, not a whole record (~700 bytes), and every slot of the
    /// queue is written when it is made — 80 Ki inline records were 54 MiB resident at start.
    q: ArrayQueue<Box<Queued>>,
    /// Slots not yet promised to a request.
    free: AtomicI64,
    /// Slots of the unreserved share not yet taken.
    free_unreserved: AtomicI64,
    /// Unreserved records popped by the writer and not yet released.
    popped_unreserved: AtomicI64,
    /// False while the sink is failing: calls are refused.
    healthy: AtomicBool,
    /// Requests refused for want of a slot (calls, and outcomes of the unreserved share).
    pub refused: AtomicU64,
    /// Records lost: only a push that found the queue full despite its slot (not expected).
    pub dropped: AtomicU64,
    /// Set at shutdown: the writer drains what is queued, then stops.
    closing: AtomicBool,
    /// How long an answer waits for its record to be written (zero: it does not wait).
    answer_wait: Duration,
    /// The writer's thread, unparked by a commit that finds it parked.
    writer: OnceLock<std::thread::Thread>,
    writer_parked: AtomicBool,
}

/// A promised slot; `commit` fills it. Dropping it uncommitted gives the slot back.
#[derive(Debug)]
pub struct Reservation {
    queue: Arc<AuditQueue>,
    done: bool,
    /// From the unreserved share (given back there).
    unreserved: bool,
}

impl AuditQueue {
    /// A queue with `capacity` slots for calls and, beyond them, a quarter as many for
    /// outcomes without a reservation; answers wait up to `answer_wait` for their records.
    pub fn new(capacity: usize, answer_wait: Duration) -> Arc<AuditQueue> {
        let capacity = capacity.max(16);
        let share = capacity / 4;
        Arc::new(AuditQueue {
            q: ArrayQueue::new(capacity + share),
            free: AtomicI64::new(capacity as i64),
            free_unreserved: AtomicI64::new(share as i64),
            popped_unreserved: AtomicI64::new(0),
            healthy: AtomicBool::new(true),
            refused: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            answer_wait,
            writer: OnceLock::new(),
            writer_parked: AtomicBool::new(false),
        })
    }

    /// Called once by the writer's thread: commits wake it when it waits for records.
    pub fn register_writer(&self) {
        let _ = self.writer.set(std::thread::current());
    }

    /// Writer side: sleep until a record is committed, or `timeout` passed.
    pub fn park_writer(&self, timeout: Duration) {
        self.writer_parked.store(true, Ordering::SeqCst);
        // A commit between the writer's last pop and this store saw no parked writer: look again.
        if self.q.is_empty() && !self.is_closing() {
            std::thread::park_timeout(timeout);
        }
        self.writer_parked.store(false, Ordering::SeqCst);
    }

    /// Wake the writer if it is parked (one futex wake; none while it is busy).
    fn wake_writer(&self) {
        if self.writer_parked.load(Ordering::SeqCst)
            && self.writer_parked.swap(false, Ordering::SeqCst)
            && let Some(t) = self.writer.get()
        {
            t.unpark();
        }
    }

    /// Ask the writer to stop once everything queued is written.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Records waiting for the writer.
    pub fn depth(&self) -> usize {
        self.q.len()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Set by the writer when the sink fails or recovers.
    pub fn set_healthy(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Release);
    }

    /// Promise a slot for a record, or `None` (queue full or sink failing).
    pub fn reserve(self: &Arc<Self>) -> Option<Reservation> {
        if !self.is_healthy() {
            return None;
        }
        self.take_slot(false)
    }

    /// Record an outcome that had no reservation (authentication failures, rejected input),
    /// in the unreserved share only: unauthenticated traffic never takes a call's slot.
    /// `None` when the share is full: nothing was queued, and the caller must not give the
    /// outcome's answer (the request would be answered with no record) but say the audit
    /// trail is unavailable. The answer waits on the [`Written`].
    #[must_use]
    pub fn record(self: &Arc<Self>, r: Record) -> Option<Written> {
        Some(self.take_slot(true)?.commit(r))
    }

    fn counter(&self, unreserved: bool) -> &AtomicI64 {
        if unreserved {
            &self.free_unreserved
        } else {
            &self.free
        }
    }

    /// A slot of one share, whatever the sink's health (`record`: the outcome already
    /// happened; record it if possible).
    fn take_slot(self: &Arc<Self>, unreserved: bool) -> Option<Reservation> {
        let free = self.counter(unreserved);
        if free.fetch_sub(1, Ordering::AcqRel) <= 0 {
            free.fetch_add(1, Ordering::AcqRel);
            return None;
        }
        Some(Reservation {
            queue: self.clone(),
            done: false,
            unreserved,
        })
    }

    /// Take records for writing (writer side). Slots stay promised until `release`; each
    /// record's [`Ack`] is sent once it is written.
    pub fn pop(&self) -> Option<Taken> {
        let q = *self.q.pop()?;
        if q.unreserved {
            self.popped_unreserved.fetch_add(1, Ordering::AcqRel);
        }
        Some(Taken {
            record: q.record,
            ack: q.ack,
        })
    }

    /// The writer wrote the `n` records it popped since the last release: their slots are
    /// free again, each in its own share.
    pub fn release(&self, n: usize) {
        let n = n as i64;
        let mut u = self.popped_unreserved.load(Ordering::Acquire);
        loop {
            let take = u.min(n);
            match self.popped_unreserved.compare_exchange(
                u,
                u - take,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.free_unreserved.fetch_add(take, Ordering::AcqRel);
                    self.free.fetch_add(n - take, Ordering::AcqRel);
                    return;
                }
                Err(now) => u = now,
            }
        }
    }
}

impl Reservation {
    /// Fill the promised slot. Cannot fail: the slot was reserved. The answer waits on the
    /// returned [`Written`].
    pub fn commit(mut self, r: Record) -> Written {
        self.done = true;
        let (tx, rx) = oneshot::channel();
        let queued = Queued {
            record: r,
            unreserved: self.unreserved,
            ack: Ack(tx),
        };
        if self.queue.q.push(Box::new(queued)).is_err() {
            // Unreachable while every push holds a reservation; count it if it ever happens.
            self.queue.dropped.fetch_add(1, Ordering::Relaxed);
            self.queue
                .counter(self.unreserved)
                .fetch_add(1, Ordering::AcqRel);
        }
        self.queue.wake_writer();
        Written {
            rx,
            bound: self.queue.answer_wait,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.queue
                .counter(self.unreserved)
                .fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Hex of the first 16 bytes of SHA-256: enough to correlate, useless to replay.
pub fn short_hash(data: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data.as_bytes());
    hex(&d.as_ref()[..16])
}

/// Lower-case hex, without a formatter per byte (this runs once or twice per call).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
    // Only ASCII hex digits were pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// The actor chain of an inbound `act` claim, outermost first.
pub fn actors(gateway: Option<&str>, act: Option<&serde_json::Value>) -> Vec<String> {
    let mut out: Vec<String> = gateway.map(str::to_owned).into_iter().collect();
    let mut cur = act;
    while let Some(a) = cur {
        match a.get("sub").and_then(|s| s.as_str()) {
            Some(s) if out.len() < 16 => out.push(s.to_owned()),
            _ => break,
        }
        cur = a.get("act");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        Record {
            time_ms: 0,
            request_id: "r".into(),
            trace_id: None,
            span_id: None,
            parent_span_id: None,
            session: None,
            iss: None,
            sub: None,
            client_id: None,
            jti_hash: None,
            sender_constrained: false,
            jkt: None,
            actors: vec![],
            scopes: vec![],
            groups: vec![],
            shadow: None,
            method: "tools/call".into(),
            upstream: None,
            tool: None,
            upstream_tool: None,
            decision: Outcome::Allow,
            policy_ids: vec![],
            reason: None,
            blame: None,
            delegation: None,
            upstream_status: None,
            latency_ms: 0.0,
            upstream_ms: None,
            protocol: None,
            upstream_protocol: None,
        }
    }

    #[test]
    fn reservations_bound_the_queue_and_nothing_is_lost() {
        let q = AuditQueue::new(16, Duration::ZERO);
        let rs: Vec<_> = (0..16).map(|_| q.reserve().unwrap()).collect();
        assert!(q.reserve().is_none(), "full: refuse");
        for r in rs {
            let _ = r.commit(rec());
        }
        assert_eq!(q.depth(), 16);
        assert!(
            q.reserve().is_none(),
            "written records hold their slots until released"
        );
        let mut n = 0;
        while q.pop().is_some() {
            n += 1;
        }
        q.release(n);
        assert!(q.reserve().is_some());
        q.set_healthy(false);
        assert!(q.reserve().is_none(), "sink failing: refuse");
        // Outcomes with no reservation are still recorded while a slot is free.
        assert!(q.record(rec()).is_some());
        assert_eq!(q.depth(), 1);
        assert_eq!(q.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn unauthenticated_floods_cannot_take_the_slots_of_calls() {
        let q = AuditQueue::new(16, Duration::ZERO);
        // The sink is slow: nothing is written while garbage floods in.
        let queued = (0..1000).filter(|_| q.record(rec()).is_some()).count();
        assert_eq!(
            (queued, q.depth()),
            (4, 4),
            "the unreserved share is a quarter of the queue"
        );
        assert_eq!(
            q.dropped.load(Ordering::Relaxed),
            0,
            "beyond it: refused (the caller says so), not queued and lost"
        );
        let calls: Vec<_> = (0..16).map(|_| q.reserve()).collect();
        assert!(
            calls.iter().all(Option::is_some),
            "every call slot is still free"
        );
        assert!(q.reserve().is_none());
        for r in calls.into_iter().flatten() {
            let _ = r.commit(rec());
        }
        // The writer catches up: each share gets its own slots back.
        let mut n = 0;
        while q.pop().is_some() {
            n += 1;
        }
        assert_eq!(n, 20);
        q.release(n);
        assert_eq!(q.free.load(Ordering::Relaxed), 16);
        assert_eq!(q.free_unreserved.load(Ordering::Relaxed), 4);
        assert!(q.record(rec()).is_some());
        assert_eq!(q.depth(), 1);
    }

    use crate::deadline::block_on;

    #[test]
    fn an_answer_waits_until_the_writer_says_its_record_is_written() {
        let clock = crate::clock::Clock::new();
        let q = AuditQueue::new(16, Duration::from_secs(60));
        let written = q.reserve().unwrap().commit(rec());
        // The writer, on its own thread: takes the record, writes it, then acknowledges.
        let (wq, wclock) = (q.clone(), clock.clone());
        let writer = std::thread::spawn(move || {
            let t = loop {
                match wq.pop() {
                    Some(t) => break t,
                    None => std::thread::yield_now(),
                }
            };
            std::thread::sleep(Duration::from_millis(50));
            let at = wclock.now();
            t.ack.written();
            at
        });
        let waited = block_on(async { (written.wait().await, clock.now()) });
        let acked_at = writer.join().unwrap();
        assert!(waited.0, "written within the bound");
        assert!(
            waited.1 >= acked_at,
            "the answer went only after the acknowledgement"
        );
    }

    #[test]
    fn the_wait_is_bounded_and_a_dropped_ack_ends_it() {
        let clock = crate::clock::Clock::new();
        let q = AuditQueue::new(16, Duration::from_millis(20));
        // A stalled writer: nothing is taken; the answer goes after the bound, unwritten.
        let w = q.reserve().unwrap().commit(rec());
        let t0 = clock.now();
        assert!(!block_on(w.wait()));
        assert!(clock.since(t0) >= Duration::from_millis(20));
        assert_eq!(q.depth(), 1, "the record stays queued, not lost");
        // A writer that stops (drops the ack unsent) ends the wait at once.
        let q2 = AuditQueue::new(16, Duration::from_secs(60));
        let w2 = q2.reserve().unwrap().commit(rec());
        drop(q2.pop());
        let t0 = clock.now();
        assert!(!block_on(w2.wait()));
        assert!(clock.since(t0) < Duration::from_secs(30));
        // With no bound (`answer_wait: 0s`) nothing waits.
        let q0 = AuditQueue::new(16, Duration::ZERO);
        let w0 = q0.reserve().unwrap().commit(rec());
        assert!(!block_on(w0.wait()));
        assert_eq!(q0.depth(), 1);
    }

    #[test]
    fn a_commit_wakes_a_parked_writer() {
        let q = AuditQueue::new(16, Duration::ZERO);
        let (wq, clock) = (q.clone(), crate::clock::Clock::new());
        let writer = std::thread::spawn(move || {
            wq.register_writer();
            let t0 = clock.now();
            while wq.depth() == 0 {
                wq.park_writer(Duration::from_secs(30));
            }
            clock.since(t0)
        });
        std::thread::sleep(Duration::from_millis(50));
        let _ = q.reserve().unwrap().commit(rec());
        let slept = writer.join().unwrap();
        assert!(
            slept < Duration::from_secs(10),
            "woken by the commit, not by the timeout: {slept:?}"
        );
    }

    #[test]
    fn actor_chains_and_hashes() {
        let act = serde_json::json!({"sub": "agent", "act": {"sub": "orchestrator"}});
        assert_eq!(
            actors(Some("warden"), Some(&act)),
            vec!["warden", "agent", "orchestrator"]
        );
        assert_eq!(short_hash("x").len(), 32);
        assert_ne!(short_hash("x"), short_hash("y"));
    }
}
