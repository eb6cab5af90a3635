//! Socket-free test support (cargo feature `testing`): in-memory connections, fake upstreams
//! and a test shard, so the real request path runs as bytes in, bytes out.
//!
//! Nothing here opens a socket or starts a thread; it needs a current-thread monoio runtime
//! with its timer enabled (see [`runtime`]). The YAML-to-snapshot side is the control
//! plane's: `controlplane::testing::Harness` builds on these pieces (`docs/testing.md`).

mod duplex;
mod http;
mod peer;

use std::rc::Rc;
use std::time::Duration;

pub use duplex::{MemStream, duplex};
pub use http::{HttpRequest, HttpResponse, ResponseError};
pub use peer::{FakeUpstream, MemNet, PeerReply, PeerRequest};

use monoio::io::AsyncWriteRentExt;

use crate::clock::Clock;
use crate::http1::conn;
use crate::shard::{Shard, Shared};
use crate::upstream::Pool;

/// The runtime a test shard runs on: monoio's epoll driver (an epoll descriptor, no
/// socket) on the calling thread, with timers for the gateway's deadlines.
pub type Runtime = monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>;

/// A current-thread runtime for a test shard.
pub fn runtime() -> std::io::Result<Runtime> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
}

/// A fake clock: a [`Clock`] at wall time `start_unix_ms`, and the handle that moves it
/// (every clone of the clock sees the same time).
pub fn mock_clock(start_unix_ms: i64) -> (Clock, FakeClock) {
    Clock::mock_at(start_unix_ms)
}

/// Moves a [`mock_clock`].
pub type FakeClock = crate::clock::MockClock;

/// Shard 0 on `shared`, with `clock`, whose upstream connections go to `net`.
pub fn shard(shared: Shared, clock: Clock, net: MemNet) -> Rc<Shard> {
    shard_n(0, shared, clock, net)
}

/// Shard `id` on `shared`: with another id, a sibling of the same process — the same
/// snapshot, sessions, rate limits and DPoP replay set; its own token cache and pool.
pub fn shard_n(id: u16, shared: Shared, clock: Clock, net: MemNet) -> Rc<Shard> {
    Rc::new(Shard::new(id, shared, clock, Pool::with_net(net)))
}

/// Serve one connection whose client writes `request` and then half-closes: every
/// response the gateway writes before it closes, as bytes. Pipelined requests in `request`
/// are answered in order on the same connection. Must run inside the shard's runtime.
pub async fn exchange(shard: &Rc<Shard>, request: &[u8]) -> Vec<u8> {
    let (mut client, server) = duplex();
    let limits = shard.shared.snapshot.load().settings.limits;
    let handler = crate::mcp::Gateway {
        shard: shard.clone(),
    };
    let (written, _) = client.write_all(request.to_vec()).await;
    if written.is_err() {
        return Vec::new();
    }
    client.close_write();
    // A gateway that hangs gives the test what it wrote so far instead of hanging it too. The
    // connection's future is boxed, as a spawned connection's task is, so it is not moved
    // (copied) again by the timeout: it is tens of KB.
    let serving = Box::pin(conn::serve(server, &handler, limits));
    let _ = monoio::time::timeout(EXCHANGE_TIMEOUT, serving).await;
    client.read_to_end().await
}

/// How long [`exchange`] waits for the gateway to finish a connection.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
