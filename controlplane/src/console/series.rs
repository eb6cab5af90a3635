//! Fixed rings of time buckets (calls by class, added latency, delegation cache use): memory
//! is set when the ring is made, whatever the call rate; old buckets are overwritten in place.

use dataplane::audit::Outcome;
use serde::Serialize;

/// Upper bounds (ms) of the latency histogram's buckets; one more bucket is open-ended.
pub const LAT_BOUNDS_MS: [f64; 16] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
    5000.0,
];
const NLAT: usize = LAT_BOUNDS_MS.len() + 1;

/// A deny is policy working, an error is something failing: they are never counted together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Allow,
    /// Refused on purpose: policy, rate limit, a bad token, malformed input.
    Deny,
    /// Something failed: the token exchange or the upstream.
    Error,
}

impl Class {
    pub fn of(o: Outcome) -> Class {
        match o {
            Outcome::Allow => Class::Allow,
            Outcome::Deny | Outcome::RateLimited | Outcome::Unauthenticated | Outcome::Rejected => {
                Class::Deny
            }
            Outcome::ExchangeFailed | Outcome::UpstreamError => Class::Error,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Class::Allow => "allow",
            Class::Deny => "deny",
            Class::Error => "error",
        }
    }
}

/// Counts of one bucket (or a sum of buckets).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// By [`Class`]: allow, deny, error.
    pub n: [u64; 3],
    /// Calls that carried a delegation token, and of those, tokens from the shard cache.
    pub delegated: u64,
    pub cached: u64,
    lat: [u64; NLAT],
}

impl Counts {
    pub fn calls(&self) -> u64 {
        self.n.iter().sum()
    }

    /// The `q`-quantile of added latency (ms), interpolated inside its bucket; `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.lat.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, &c) in self.lat.iter().enumerate() {
            if c > 0 && (seen + c) as f64 >= rank {
                let lo = if i == 0 { 0.0 } else { LAT_BOUNDS_MS[i - 1] };
                let hi = LAT_BOUNDS_MS.get(i).copied().unwrap_or(lo * 2.0);
                let within = (rank - seen as f64) / c as f64;
                return Some(lo + (hi - lo) * within.clamp(0.0, 1.0));
            }
            seen += c;
        }
        None
    }

    fn add(&mut self, o: &Counts) {
        for i in 0..3 {
            self.n[i] += o.n[i];
        }
        self.delegated += o.delegated;
        self.cached += o.cached;
        for i in 0..NLAT {
            self.lat[i] += o.lat[i];
        }
    }
}

/// One observation: its class, the latency the gateway added, and its delegation token
/// (`Some(cached)`) if it had one.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub class: Class,
    pub added_ms: f64,
    pub delegation: Option<bool>,
}

/// `len` buckets of `width` seconds each.
#[derive(Debug, Clone)]
pub struct Ring {
    width: i64,
    /// (bucket number, counts); bucket number = unix second / width.
    buckets: Vec<(i64, Counts)>,
}

/// One completed second (or bucket) for the charts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// Unix seconds at the bucket's start.
    pub t: i64,
    pub allow: u64,
    pub deny: u64,
    pub error: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Share of delegation tokens from the shard cache, 0..1; `None` without delegated calls.
    pub cache_hit: Option<f64>,
}

impl Ring {
    pub fn new(len: usize, width_secs: i64) -> Ring {
        Ring {
            width: width_secs.max(1),
            buckets: vec![(i64::MIN, Counts::default()); len.max(1)],
        }
    }

    fn slot(&self, n: i64) -> usize {
        n.rem_euclid(self.buckets.len() as i64) as usize
    }

    pub fn add(&mut self, unix_ms: i64, s: Sample) {
        let n = unix_ms.div_euclid(1000).div_euclid(self.width);
        let i = self.slot(n);
        let b = &mut self.buckets[i];
        if b.0 != n {
            *b = (n, Counts::default());
        }
        let c = &mut b.1;
        c.n[s.class as usize] += 1;
        if let Some(cached) = s.delegation {
            c.delegated += 1;
            c.cached += u64::from(cached);
        }
        let li = LAT_BOUNDS_MS
            .iter()
            .position(|&hi| s.added_ms <= hi)
            .unwrap_or(NLAT - 1);
        c.lat[li] += 1;
    }

    /// The counts of the bucket numbered `n`, if the ring still holds it.
    fn get(&self, n: i64) -> Option<&Counts> {
        let b = &self.buckets[self.slot(n)];
        (b.0 == n).then_some(&b.1)
    }

    /// Sum over the buckets that end within the last `secs` seconds before `now_ms`,
    /// the current bucket included.
    pub fn sum(&self, now_ms: i64, secs: i64) -> Counts {
        let now = now_ms.div_euclid(1000).div_euclid(self.width);
        let span = (secs / self.width).clamp(1, self.buckets.len() as i64);
        let mut out = Counts::default();
        for n in (now - span + 1)..=now {
            if let Some(c) = self.get(n) {
                out.add(c);
            }
        }
        out
    }

    /// Completed buckets after `since` (unix seconds, exclusive) up to the one before
    /// `now_ms`'s, empty ones as zeros, at most the ring's length.
    pub fn points(&self, now_ms: i64, since: i64) -> Vec<Point> {
        let now = now_ms.div_euclid(1000).div_euclid(self.width);
        let first = (now - self.buckets.len() as i64).max(since.div_euclid(self.width) + 1);
        (first..now)
            .map(|n| {
                let c = self.get(n).copied().unwrap_or_default();
                Point {
                    t: n * self.width,
                    allow: c.n[0],
                    deny: c.n[1],
                    error: c.n[2],
                    p50_ms: c.quantile(0.5),
                    p99_ms: c.quantile(0.99),
                    cache_hit: (c.delegated > 0).then(|| c.cached as f64 / c.delegated as f64),
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "series_tests.rs"]
mod tests;
