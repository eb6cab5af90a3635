//! Bucket logic on plain microsecond numbers and on a mock clock, eviction, the cap, and races.

use super::*;

const S: u64 = 1_000_000;

fn limiter() -> RateLimiter {
    RateLimiter::new(Clock::mock_at(0).0.now())
}

fn owner(n: u64) -> [u8; 32] {
    let mut o = [0u8; 32];
    o[..8].copy_from_slice(&n.to_le_bytes());
    o
}

#[test]
fn quotas_refuse_nonsense() {
    assert!(Quota::new(0.0, 1).is_none());
    assert!(Quota::new(-1.0, 1).is_none());
    assert!(Quota::new(f64::NAN, 1).is_none());
    assert!(Quota::new(f64::INFINITY, 1).is_none());
    assert!(Quota::new(1.0, 0).is_none());
    assert!(
        Quota::new(1e-300, 1).is_some(),
        "tiny rates saturate, not panic"
    );
}

#[test]
fn burst_then_one_token_per_interval() {
    let l = limiter();
    let q = Quota::new(2.0, 3).unwrap(); // a token every 0.5 s, 3 at once
    let k = Key::user(&owner(1));
    let t0 = 10 * S;
    for _ in 0..3 {
        assert_eq!(l.check(k, q, t0, 100), Decision::Allowed);
    }
    let d = l.check(k, q, t0, 100);
    assert_eq!(
        d,
        Decision::Limited {
            retry_after_us: S / 2
        }
    );
    assert_eq!(d.retry_after_secs(), 1, "rounded up");
    // Just before the next token: still limited, and the wait shrinks with time.
    assert_eq!(
        l.check(k, q, t0 + S / 2 - 1, 100),
        Decision::Limited { retry_after_us: 1 }
    );
    assert_eq!(l.check(k, q, t0 + S / 2, 100), Decision::Allowed);
    assert!(matches!(
        l.check(k, q, t0 + S / 2, 100),
        Decision::Limited { .. }
    ));
    // Idle long enough, the bucket is full again: three at once, not more.
    let later = t0 + 100 * S;
    for _ in 0..3 {
        assert_eq!(l.check(k, q, later, 100), Decision::Allowed);
    }
    assert!(matches!(
        l.check(k, q, later, 100),
        Decision::Limited { .. }
    ));
}

#[test]
fn slow_rates_report_whole_seconds() {
    let l = limiter();
    let q = Quota::new(0.1, 1).unwrap(); // one per 10 s
    let k = Key::user(&owner(1));
    assert_eq!(l.check(k, q, 0, 10), Decision::Allowed);
    let d = l.check(k, q, 0, 10);
    assert_eq!(d.retry_after_secs(), 10);
    let d = l.check(k, q, 2_500_000, 10);
    assert_eq!(d.retry_after_secs(), 8, "7.5 s rounds up to 8");
    assert_eq!(l.check(k, q, 10 * S, 10), Decision::Allowed);
}

#[test]
fn users_and_tools_have_their_own_buckets() {
    let l = limiter();
    let q = Quota::new(1.0, 1).unwrap();
    let (a, b) = (owner(1), owner(2));
    let echo = tool_key("up0_echo");
    let whoami = tool_key("up0_whoami");
    assert_ne!(echo, whoami);
    assert_ne!(echo, 0);
    assert_eq!(l.check(Key::user(&a), q, 0, 10), Decision::Allowed);
    assert!(matches!(
        l.check(Key::user(&a), q, 0, 10),
        Decision::Limited { .. }
    ));
    // Another user, and the same user's tool buckets, are untouched.
    assert_eq!(l.check(Key::user(&b), q, 0, 10), Decision::Allowed);
    assert_eq!(l.check(Key::tool(&a, echo), q, 0, 10), Decision::Allowed);
    assert_eq!(l.check(Key::tool(&a, whoami), q, 0, 10), Decision::Allowed);
    assert!(matches!(
        l.check(Key::tool(&a, echo), q, 0, 10),
        Decision::Limited { .. }
    ));
    assert_eq!(l.len(), 4);
}

#[test]
fn sweeping_evicts_only_full_buckets_and_loses_nothing() {
    let l = limiter();
    let q = Quota::new(1.0, 2).unwrap();
    let (busy, idle) = (Key::user(&owner(1)), Key::user(&owner(2)));
    // busy: both tokens taken at t=5 s (TAT 7 s); idle: one taken at t=0 (TAT 1 s).
    assert_eq!(l.check(idle, q, 0, 10), Decision::Allowed);
    assert_eq!(l.check(busy, q, 5 * S, 10), Decision::Allowed);
    assert_eq!(l.check(busy, q, 5 * S, 10), Decision::Allowed);
    assert_eq!(l.sweep(5 * S), 1, "only the full (idle) bucket goes");
    assert_eq!(l.len(), 1);
    // The busy bucket kept its state: still empty at 5 s.
    assert!(matches!(
        l.check(busy, q, 5 * S, 10),
        Decision::Limited { .. }
    ));
    // The evicted one answers as a full bucket would have: two tokens.
    assert_eq!(l.check(idle, q, 5 * S, 10), Decision::Allowed);
    assert_eq!(l.check(idle, q, 5 * S, 10), Decision::Allowed);
    assert!(matches!(
        l.check(idle, q, 5 * S, 10),
        Decision::Limited { .. }
    ));
    assert_eq!(l.sweep(60 * S), 2);
    assert!(l.is_empty());
}

#[test]
fn a_full_map_shares_one_overflow_bucket_per_scope() {
    let l = limiter();
    let q = Quota::new(1.0, 2).unwrap();
    for n in 0..3 {
        assert_eq!(l.check(Key::user(&owner(n)), q, 0, 3), Decision::Allowed);
    }
    assert_eq!(l.len(), 3);
    // Newcomers share one bucket: two tokens between them, then limited.
    assert_eq!(l.check(Key::user(&owner(10)), q, 0, 3), Decision::Allowed);
    assert_eq!(l.check(Key::user(&owner(11)), q, 0, 3), Decision::Allowed);
    assert!(matches!(
        l.check(Key::user(&owner(12)), q, 0, 3),
        Decision::Limited { .. }
    ));
    // Another scope has its own overflow bucket.
    let t = tool_key("x");
    assert_eq!(
        l.check(Key::tool(&owner(13), t), q, 0, 3),
        Decision::Allowed
    );
    assert_eq!(l.len(), 3, "the cap holds");
    // Users with a bucket keep it.
    assert_eq!(l.check(Key::user(&owner(0)), q, 0, 3), Decision::Allowed);
    // Once buckets are evicted there is room again.
    l.sweep(10 * S);
    assert!(l.is_empty());
    assert_eq!(
        l.check(Key::user(&owner(12)), q, 10 * S, 3),
        Decision::Allowed
    );
    assert_eq!(l.len(), 1);
}

#[test]
fn a_million_distinct_users_stay_within_the_cap() {
    let l = limiter();
    let q = Quota::new(1.0, 1).unwrap();
    let cap = 10_000;
    let mut allowed = 0u64;
    for n in 0..1_000_000u64 {
        if l.check(Key::user(&owner(n)), q, 0, cap) == Decision::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(l.len(), cap);
    // Each bucketed user got its token; all the others shared one bucket (burst 1).
    assert_eq!(allowed, cap as u64 + 1);
    // The table's allocation follows the cap (hash tables round up to powers of two, per
    // map shard), not the million keys seen.
    assert!(l.capacity() <= 4 * cap, "capacity {}", l.capacity());
    // After the flood drains, the memory goes back.
    l.sweep(10 * S);
    assert!(l.is_empty());
    assert!(l.capacity() <= 4096 + 1024, "capacity {}", l.capacity());
}

#[test]
fn concurrent_takes_never_exceed_the_burst() {
    let l = std::sync::Arc::new(limiter());
    let q = Quota::new(1.0, 1000).unwrap();
    let k = Key::user(&owner(7));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || {
                (0..5_000)
                    .filter(|_| l.check(k, q, 0, 10) == Decision::Allowed)
                    .count()
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 1000, "exactly the burst, whatever the interleaving");
}

#[test]
fn the_timeline_follows_the_clock() {
    let (clock, mock) = Clock::mock_at(0);
    let l = RateLimiter::new(clock.now());
    mock.advance(Duration::from_millis(1500));
    assert_eq!(l.micros(clock.now()), 1_500_000);
}

#[test]
fn a_limited_user_is_admitted_again_once_the_mock_passes_retry_after() {
    let (clock, mock) = Clock::mock();
    let l = RateLimiter::new(clock.now());
    let q = Quota::new(1.0, 2).unwrap();
    let k = Key::user(&owner(7));
    let now = || l.micros(clock.now());
    assert_eq!(l.check(k, q, now(), 100), Decision::Allowed);
    assert_eq!(l.check(k, q, now(), 100), Decision::Allowed);
    let Decision::Limited { retry_after_us } = l.check(k, q, now(), 100) else {
        panic!("a third call inside the burst's second passed");
    };
    assert_eq!(retry_after_us, S);
    mock.advance(Duration::from_micros(retry_after_us - 1));
    assert!(matches!(
        l.check(k, q, now(), 100),
        Decision::Limited { .. }
    ));
    mock.advance(Duration::from_micros(1));
    assert_eq!(l.check(k, q, now(), 100), Decision::Allowed);
    // Idle for long on the mock, the bucket is full and the sweep evicts it.
    mock.advance(Duration::from_secs(10));
    assert_eq!(l.sweep(now()), 1);
    assert!(l.is_empty());
}
