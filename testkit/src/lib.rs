//! Real test peers for Warden's tests: a token issuer with a JWKS and an MCP upstream that records what it receives,
//! over sockets or, for the socket-free harness, in memory (`mem`).
// Test peers, not the gateway: a std Mutex around their recorded state is fine here.
#![allow(clippy::disallowed_types)]
// Test peers stand for remote systems (an identity provider, upstreams, a database) with clocks
// of their own: they read the real one, whatever mock the gateway under test runs on.
#![allow(clippy::disallowed_methods)]
#![forbid(unsafe_code)]

pub mod dpop;
mod dropping;
pub mod issuer;
mod keys;
#[cfg(feature = "mem")]
pub mod mem;
// The items both upstreams serve (no in-memory dependency: the socket upstream needs them too).
pub mod mem_items;
#[cfg(feature = "mem")]
mod mem_modern;
pub mod postgres;
pub mod upstream;
mod util;

pub use dpop::DpopKey;
pub use dropping::{DROPPING_TOOL, DroppingUpstream};
pub use issuer::{JwksMode, KeyAlg, TestIssuer};
#[cfg(feature = "mem")]
pub use mem::{MemIssuer, MemUpstream};
pub use upstream::{Recorded, TestUpstream, UpstreamMode, UpstreamOptions, UpstreamStats};

/// A loopback port that is free now and outside Linux's ephemeral range (32768–60999), so no
/// outgoing connection takes it between now and a process (re)binding it — a restarted
/// server keeps its port. Random in 20000–32767, retried while taken.
pub fn stable_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut b = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut b);
        let n = u64::from_le_bytes(b) ^ SEQ.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (n % 12_768) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
