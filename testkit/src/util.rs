//! Shared plumbing for the test servers: binding, serving until dropped, locking and randomness.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running axum server; it stops when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Wake handlers parked on the shutdown signal (hanging JWKS, slow tools, streams),
        // then stop accepting; live connections close gracefully once their request ends.
        self.shutdown.send_replace(true);
        self.task.abort();
    }
}

/// Binds 127.0.0.1:`port` (0 picks a free port). Panics if the port cannot be bound: test setup.
pub(crate) async fn bind(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("testkit: cannot bind 127.0.0.1:{port}: {e}"))
}

/// A shutdown pair: the sender goes to [`serve`], receivers to handlers that may wait.
pub(crate) fn shutdown_pair() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

/// Serves `router` on `listener` in a background task until the returned [`Server`] is dropped.
pub(crate) fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: watch::Sender<bool>,
) -> Server {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("testkit: listener has no local address: {e}"));
    let mut rx = shutdown.subscribe();
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(signal)
            .await;
    });
    Server {
        addr,
        shutdown,
        task,
    }
}

/// Resolves once shutdown was signalled (or the server is gone).
pub(crate) async fn stopped(rx: &watch::Receiver<bool>) {
    let mut rx = rx.clone();
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Sleeps for `dur`; returns false if the server stopped first.
pub(crate) async fn sleep_unless_stopped(dur: Duration, rx: &watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(dur) => true,
        () = stopped(rx) => false,
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test must not cascade into other tests).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `n` random bytes from the system CSPRNG.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut buf).unwrap_or_else(|e| panic!("testkit: rng failed: {e}"));
    buf
}

/// `n` random bytes as lower-case hex.
pub(crate) fn random_hex(n: usize) -> String {
    use std::fmt::Write as _;
    random_bytes(n)
        .iter()
        .fold(String::with_capacity(n * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Unpadded base64url, as JOSE wants it.
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
