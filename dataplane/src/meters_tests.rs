//! Each series is registered once per shard and every increment reaches it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use super::Meters;

/// Counts registrations per key and keeps each counter's value.
#[derive(Default)]
struct Counting {
    registered: RefCell<HashMap<String, (usize, Arc<AtomicU64>)>>,
}

impl Counting {
    fn of(&self, key: &str) -> (usize, u64) {
        let m = self.registered.borrow();
        m.get(key)
            .map_or((0, 0), |(n, v)| (*n, v.load(Ordering::Relaxed)))
    }
}

impl Recorder for Counting {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut m = self.registered.borrow_mut();
        let e = m
            .entry(name)
            .or_insert_with(|| (0, Arc::new(AtomicU64::new(0))));
        e.0 += 1;
        Counter::from_arc(e.1.clone())
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn fixed_label_series_are_registered_once_and_counted_every_time() {
    let rec = Counting::default();
    let m = Meters::default();
    metrics::with_local_recorder(&rec, || {
        for _ in 0..3 {
            m.http_request("POST", "200");
            m.token_cache_lookup(true);
            m.delegation_token("cache");
        }
        m.http_request("POST", "202");
        m.http_request("GET", "200");
        m.token_cache_lookup(false);
        m.delegation_token("fresh");
    });
    assert_eq!(
        rec.of("warden_http_requests_total{method=POST,status=200}"),
        (1, 3)
    );
    assert_eq!(
        rec.of("warden_http_requests_total{method=POST,status=202}"),
        (1, 1)
    );
    assert_eq!(
        rec.of("warden_http_requests_total{method=GET,status=200}"),
        (1, 1)
    );
    assert_eq!(
        rec.of("warden_token_cache_lookups_total{result=hit}"),
        (1, 3)
    );
    assert_eq!(
        rec.of("warden_token_cache_lookups_total{result=miss}"),
        (1, 1)
    );
    assert_eq!(
        rec.of("warden_delegation_tokens_total{source=cache}"),
        (1, 3)
    );
    assert_eq!(
        rec.of("warden_delegation_tokens_total{source=fresh}"),
        (1, 1)
    );
}
