//! A login's argon2 memory (19 MiB) does not stay resident: RSS after hashing and verifying
//! passwords, in a process of its own with the `warden` binary's allocator (mimalloc).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test")]

use controlplane::authz::{hash_password, verify_password};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `(RssAnon, VmHWM)` of this process in KiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("RssAnon:"), field("VmHWM:"))
}

#[test]
fn logins_leave_no_argon2_memory_resident() {
    // One test in this file: no other test's allocations in the figures.
    let (anon0, hwm0) = rss();
    let phc = hash_password("correct horse battery staple").unwrap();
    let (anon1, hwm1) = rss();
    // The memory was used (argon2id with m = 19,456 KiB touches all of it) ...
    assert!(hwm1 - hwm0 >= 15 * 1024, "peak grew {} KiB", hwm1 - hwm0);
    // ... and is gone once the hash is made.
    assert!(
        anon1.saturating_sub(anon0) < 4 * 1024,
        "RssAnon {anon0} -> {anon1} KiB after hashing"
    );
    for i in 0..3 {
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("wrong", &phc));
        let (anon, _) = rss();
        assert!(
            anon.saturating_sub(anon0) < 4 * 1024,
            "RssAnon {anon0} -> {anon} KiB after {} logins",
            2 * (i + 1)
        );
    }
    // Several at once (the blocking pool verifies logins in parallel): still returned.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| assert!(verify_password("correct horse battery staple", &phc)));
        }
    });
    let (anon, _) = rss();
    assert!(
        anon.saturating_sub(anon0) < 4 * 1024,
        "RssAnon {anon0} -> {anon} KiB after parallel logins"
    );
}
