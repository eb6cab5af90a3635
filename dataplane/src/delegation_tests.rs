//! Cache rules on fixed times, and `obtain` on a mock clock against an in-process token service.

use super::*;
use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use futures_channel::mpsc::UnboundedReceiver;

use crate::clock::MockClock;
use crate::control::DelegateRequest;

fn key(sub: &str) -> Key {
    Key {
        issuer: "i".into(),
        subject: sub.into(),
        client: "c".into(),
        act: String::new(),
        upstream: 0,
        tool: "t".into(),
        scopes: vec!["s".into()],
    }
}

fn tok(exp: i64) -> Delegated {
    Delegated {
        token: Arc::<str>::from("x").into(),
        jti: None,
        exp,
        scope: "s".into(),
    }
}

#[test]
fn reuse_only_comfortably_before_expiry() {
    let c = DelegationCache::new(Clock::mock_at(0).0);
    c.store(key("alice"), tok(100), 95_000);
    // ttl 5 s → margin 1 s.
    assert!(c.lookup(&key("alice"), 95_000, 5).is_some());
    assert!(c.lookup(&key("alice"), 98_900, 5).is_some());
    assert!(c.lookup(&key("alice"), 99_000, 5).is_none());
    assert!(c.lookup(&key("alice"), 100_500, 5).is_none());
    // Another user never sees alice's token.
    assert!(c.lookup(&key("bob"), 95_000, 5).is_none());
    // Refresh-ahead once past half the lifetime.
    assert!(!c.lookup(&key("alice"), 96_000, 5).unwrap().1);
    assert!(c.lookup(&key("alice"), 98_000, 5).unwrap().1);
}

fn block_on<F: Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f)
}

/// The control plane's part, on the shard's own thread: every token lives `ttl_secs` from the
/// clock's now, and is numbered by how many were asked for.
async fn token_service(
    clock: Clock,
    mut rx: UnboundedReceiver<DelegateRequest>,
    asked: Rc<Cell<u32>>,
) {
    while let Ok(req) = rx.recv().await {
        asked.set(asked.get() + 1);
        let _ = req.reply.send(Ok(Delegated {
            token: Arc::<str>::from(format!("t{}", asked.get())).into(),
            jti: Some(format!("j{}", asked.get())),
            exp: clock.unix_secs() + req.ttl_secs,
            scope: req.scopes.join(" "),
        }));
    }
}

/// Let spawned tasks (a refresh-ahead and the token service) run to completion.
async fn settle(cache: &DelegationCache) {
    for _ in 0..1000 {
        if cache.in_flight.borrow().is_empty() {
            return;
        }
        // A yield: monoio runs a task that wakes itself again at once, so wait on a new task
        // queued behind the others instead.
        monoio::spawn(async {}).await;
    }
    panic!("a delegation never finished");
}

struct Harness {
    cache: Rc<DelegationCache>,
    handle: ControlHandle,
    asked: Rc<Cell<u32>>,
    mock: MockClock,
}

impl Harness {
    /// A cache and a token service on one mock clock (call inside the runtime).
    fn start() -> Harness {
        let (clock, mock) = Clock::mock_at(1_700_000_000_000);
        let (handle, _commands, rx) = ControlHandle::new();
        let asked = Rc::new(Cell::new(0));
        monoio::spawn(token_service(clock.clone(), rx, asked.clone()));
        Harness {
            cache: Rc::new(DelegationCache::new(clock)),
            handle,
            asked,
            mock,
        }
    }

    /// A 5-second token for alice (margin 1 s, refresh-ahead past 2.5 s): (token, source).
    async fn obtain(&self) -> (String, Source) {
        let (d, src) = self
            .cache
            .obtain(
                &self.handle,
                key("alice"),
                Subject::Gateway,
                "https://up.example",
                5,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        settle(&self.cache).await;
        (d.token.expose().to_string(), src)
    }

    fn advance_ms(&self, ms: u64) {
        self.mock.advance(Duration::from_millis(ms));
    }
}

#[test]
fn a_token_is_reused_until_ttl_minus_margin_then_asked_for_again() {
    block_on(async {
        let h = Harness::start();
        assert_eq!(h.obtain().await, ("t1".into(), Source::Fresh));
        h.advance_ms(2_000);
        assert_eq!(h.obtain().await, ("t1".into(), Source::Cache));
        assert_eq!(h.asked.get(), 1, "no refresh before half the lifetime");
        // 4 s into a 5 s token: 1 s left is within the margin, so it is not handed out.
        h.advance_ms(2_000);
        assert_eq!(h.obtain().await, ("t2".into(), Source::Fresh));
        assert_eq!(h.asked.get(), 2);
        // Long past expiry: a fresh one again, never the stale one.
        h.advance_ms(60_000);
        assert_eq!(h.obtain().await, ("t3".into(), Source::Fresh));
    });
}

#[test]
fn a_hot_token_is_refreshed_ahead_on_the_mock_clock() {
    block_on(async {
        let h = Harness::start();
        assert_eq!(h.obtain().await, ("t1".into(), Source::Fresh));
        // 3.9 s in: still usable (1.1 s left), past half its life, so the next one is fetched
        // in the background while this call gets the cached token.
        h.advance_ms(3_900);
        assert_eq!(h.obtain().await, ("t1".into(), Source::Cache));
        assert_eq!(h.asked.get(), 2, "one refresh-ahead");
        // At 4 s t1 would be refused; t2 (minted at 3.9 s) is served from the cache.
        h.advance_ms(100);
        assert_eq!(h.obtain().await, ("t2".into(), Source::Cache));
        assert_eq!(h.asked.get(), 2);
    });
}
