//! The rings: classes kept apart, windows, quantiles, constant memory under any rate.

use super::*;

fn s(class: Class, ms: f64, delegation: Option<bool>) -> Sample {
    Sample {
        class,
        added_ms: ms,
        delegation,
    }
}

#[test]
fn denies_and_errors_are_different_classes() {
    assert_eq!(Class::of(Outcome::Deny), Class::Deny);
    assert_eq!(Class::of(Outcome::RateLimited), Class::Deny);
    assert_eq!(Class::of(Outcome::Unauthenticated), Class::Deny);
    assert_eq!(Class::of(Outcome::Rejected), Class::Deny);
    assert_eq!(Class::of(Outcome::UpstreamError), Class::Error);
    assert_eq!(Class::of(Outcome::ExchangeFailed), Class::Error);
    assert_eq!(Class::of(Outcome::Allow), Class::Allow);
}

#[test]
fn fifteen_minutes_of_one_call_per_millisecond_in_constant_memory() {
    let mut r = Ring::new(900, 1);
    let t0 = 1_700_000_000_000i64;
    // 20 minutes, one call a millisecond: every 10th a deny, every 100th an error.
    for i in 0..1_200_000i64 {
        let class = if i % 100 == 0 {
            Class::Error
        } else if i % 10 == 0 {
            Class::Deny
        } else {
            Class::Allow
        };
        r.add(t0 + i, s(class, 1.0, None));
    }
    assert_eq!(r.buckets.len(), 900, "the ring never grows");
    let now = t0 + 1_200_000;
    let pts = r.points(now, 0);
    assert_eq!(pts.len(), 900, "15 minutes of completed seconds");
    assert!(pts.iter().all(|p| p.allow + p.deny + p.error == 1000));
    assert!(
        pts.iter().all(|p| p.error == 10 && p.deny == 90),
        "{:?}",
        pts[0]
    );
    let m = r.sum(now - 1, 60);
    assert_eq!(m.calls(), 60_000);
    assert_eq!(m.n, [54_000, 5_400, 600]);
    // Incremental: only seconds after `since`.
    let last = pts.last().unwrap().t;
    assert!(r.points(now, last).is_empty());
    assert_eq!(
        r.points(now + 3000, last).len(),
        3,
        "idle seconds are zeros"
    );
    assert_eq!(r.points(now + 3000, last)[2].allow, 0);
    // Long idle: everything aged out.
    assert_eq!(r.sum(now + 3_600_000, 900).calls(), 0);
}

#[test]
fn quantiles_and_cache_hit_rate() {
    let mut r = Ring::new(60, 1);
    let t = 5_000;
    for i in 0..100 {
        // 98 fast calls at 0.3 ms, two slow at 40 ms; half the tokens from the cache.
        let ms = if i < 98 { 0.3 } else { 40.0 };
        r.add(t, s(Class::Allow, ms, Some(i % 2 == 0)));
    }
    let p = &r.points(t + 1000, 0)[..];
    let last = p.last().unwrap();
    let p50 = last.p50_ms.unwrap();
    let p99 = last.p99_ms.unwrap();
    assert!((0.25..=0.5).contains(&p50), "p50 {p50}");
    assert!((25.0..=50.0).contains(&p99), "p99 {p99}");
    assert_eq!(last.cache_hit, Some(0.5));
    assert_eq!(Counts::default().quantile(0.5), None);
}

#[test]
fn wide_buckets_for_the_tool_table() {
    let mut r = Ring::new(15, 60);
    for m in 0..30i64 {
        r.add(m * 60_000, s(Class::Deny, 1.0, None));
    }
    // At minute 29: the last 15 minutes hold 15 denies.
    assert_eq!(r.sum(29 * 60_000, 900).n, [0, 15, 0]);
}

#[test]
fn a_bucket_is_184_bytes_so_a_15_minute_ring_is_166_kb() {
    // The figure docs/operations.md gives for the console's memory bound.
    assert_eq!(std::mem::size_of::<(i64, Counts)>(), 184);
    let r = Ring::new(900, 1);
    assert_eq!(
        r.buckets.len() * std::mem::size_of::<(i64, Counts)>(),
        165_600
    );
}
