//! The state store's two backends through the same checks: SQLite (a file, two instances on it)
//! and a real PostgreSQL server started by the test (two instances on one database).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use controlplane::Clock;
use controlplane::state::{KeyCipher, Kind, Location, StateError, StateStore};
use controlplane::sts::{SigningAlg, Sts};

/// Where a check's database lives.
enum Db<'a> {
    Sqlite(&'a std::path::Path),
    Pg(&'a testkit::postgres::Postgres),
}

impl Db<'_> {
    /// A new, empty database named `name`.
    fn fresh(&self, name: &str) -> Location {
        match self {
            Db::Sqlite(dir) => Location::SqliteFile(dir.join(format!("{name}.db"))),
            Db::Pg(pg) => Location::Postgres(pg.create_database(name)),
        }
    }
}

async fn open(loc: &Location) -> StateStore {
    StateStore::open(loc.clone(), None, Clock::new())
        .await
        .unwrap()
}

fn now() -> i64 {
    Clock::new().unix_secs()
}

async fn records_and_caps(db: &Db<'_>) {
    let s = open(&db.fresh("records")).await;
    let t = now();
    assert!(
        s.insert_record(Kind::Code, "h1", "v1", t + 60, 4)
            .await
            .unwrap()
    );
    // A live key is never overwritten (a jti replay, a collision).
    assert!(
        !s.insert_record(Kind::Code, "h1", "other", t + 60, 4)
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_record(Kind::Code, "h1").await.unwrap(),
        Some(("v1".into(), 0))
    );
    // Kinds are separate namespaces.
    assert_eq!(s.get_record(Kind::Session, "h1").await.unwrap(), None);
    assert!(s.update_record(Kind::Code, "h1", "v2").await.unwrap());
    assert_eq!(s.bump_record(Kind::Code, "h1").await.unwrap(), Some(1));
    assert_eq!(s.bump_record(Kind::Code, "h1").await.unwrap(), Some(2));
    assert_eq!(
        s.get_record(Kind::Code, "h1").await.unwrap(),
        Some(("v2".into(), 2))
    );
    assert_eq!(
        s.take_record(Kind::Code, "h1").await.unwrap(),
        Some("v2".into())
    );
    assert_eq!(s.take_record(Kind::Code, "h1").await.unwrap(), None);
    // An expired row is invisible, and may be replaced by a new one with the same key.
    assert!(s.insert_record(Kind::Jti, "j", "", t - 1, 4).await.unwrap());
    assert_eq!(s.get_record(Kind::Jti, "j").await.unwrap(), None);
    assert!(
        s.insert_record(Kind::Jti, "j", "", t + 60, 4)
            .await
            .unwrap()
    );
    // The cap: live rows beyond it are refused; expired ones are purged first.
    for i in 0..4 {
        s.insert_record(Kind::Pending, &format!("old{i}"), "x", t - 1, 4)
            .await
            .unwrap();
    }
    for i in 0..4 {
        assert!(
            s.insert_record(Kind::Pending, &format!("p{i}"), "x", t + 60, 4)
                .await
                .unwrap()
        );
    }
    match s.insert_record(Kind::Pending, "p4", "x", t + 60, 4).await {
        Err(StateError::Full(_)) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(s.count_records(Kind::Pending).await.unwrap(), 4);
    // Periodic purge removes what expired.
    assert!(
        s.insert_record(Kind::Session, "s", "x", t + 5, 10)
            .await
            .unwrap()
    );
    assert!(s.purge_expired(t + 100).await.unwrap() >= 5);
    assert_eq!(s.count_records(Kind::Pending).await.unwrap(), 0);
}

/// Codes and refresh tokens are single-use across two store instances on one database.
async fn single_use_across_instances(db: &Db<'_>) {
    let loc = db.fresh("single_use");
    let a = open(&loc).await;
    let b = open(&loc).await;
    let t = now();
    for i in 0..20 {
        let key = format!("code{i}");
        assert!(
            a.insert_record(Kind::Code, &key, "grant", t + 60, 100)
                .await
                .unwrap()
        );
        let (x, y) = tokio::join!(
            a.take_record(Kind::Code, &key),
            b.take_record(Kind::Code, &key)
        );
        let winners = [x.unwrap(), y.unwrap()]
            .iter()
            .filter(|v| v.is_some())
            .count();
        assert_eq!(winners, 1, "code {i} redeemed {winners} times");

        let rt = format!("rt{i}");
        a.insert_refresh(&rt, "fam", "{}", t + 60).await.unwrap();
        let (x, y) = tokio::join!(a.spend_refresh(&rt), b.spend_refresh(&rt));
        assert_eq!(
            u8::from(x.unwrap()) + u8::from(y.unwrap()),
            1,
            "refresh token {i} spent twice"
        );
        let row = b.get_refresh(&rt).await.unwrap().unwrap();
        assert!(row.used && !row.family_revoked);
    }
    a.revoke_family("fam", t + 60).await.unwrap();
    assert!(b.family_revoked("fam").await.unwrap());
    assert!(b.get_refresh("rt0").await.unwrap().unwrap().family_revoked);
    assert!(!b.family_revoked("other").await.unwrap());
}

async fn session_revocations(db: &Db<'_>) {
    let loc = db.fresh("revocations");
    let a = open(&loc).await;
    let b = open(&loc).await;
    let t = now();
    let (l, c0) = b.session_revocations_since(0).await.unwrap();
    assert!(l.is_empty());
    a.revoke_session([1; 32], t + 60).await.unwrap();
    a.revoke_session([2; 32], t + 5).await.unwrap();
    a.revoke_session([1; 32], t + 60).await.unwrap(); // twice: recorded once
    let (l, c1) = b.session_revocations_since(c0).await.unwrap();
    assert_eq!(l, vec![([1; 32], t + 60), ([2; 32], t + 5)]);
    assert!(c1 > c0);
    let (l, c2) = b.session_revocations_since(c1).await.unwrap();
    assert!(l.is_empty());
    assert_eq!(c2, c1);
    b.revoke_session([3; 32], t + 60).await.unwrap();
    let (l, c3) = a.session_revocations_since(c1).await.unwrap();
    assert_eq!(l, vec![([3; 32], t + 60)]);
    // Expired revocations are purged; the cursor keeps working.
    a.purge_expired(t + 10).await.unwrap();
    let (l, _) = a.session_revocations_since(0).await.unwrap();
    assert_eq!(l.iter().map(|x| x.0[0]).collect::<Vec<_>>(), vec![1, 3]);
    let (l, c4) = a.session_revocations_since(c3).await.unwrap();
    assert!(l.is_empty() && c4 == c3);
}

/// Two STS instances on one database: one initial key, one new key per simultaneous rotation,
/// the same JWKS everywhere.
async fn key_ring_across_instances(db: &Db<'_>) {
    let loc = db.fresh("keys");
    let (a, b) = tokio::join!(
        Sts::open(open(&loc).await, "http://127.0.0.1:9", SigningAlg::EdDSA),
        Sts::open(open(&loc).await, "http://127.0.0.1:9", SigningAlg::EdDSA)
    );
    let (a, b) = (Arc::new(a.unwrap()), Arc::new(b.unwrap()));
    assert_eq!(
        a.current_kid(),
        b.current_kid(),
        "both replicas start on one key"
    );
    let first = a.current_kid();
    for round in 0..5 {
        let before = a.store().unwrap().load_keys().await.unwrap()[0].generation;
        let (x, y) = tokio::join!(a.rotate(), b.rotate());
        x.unwrap();
        y.unwrap();
        let keys = a.store().unwrap().load_keys().await.unwrap();
        assert_eq!(
            keys[0].generation,
            before + 1,
            "round {round}: exactly one new key"
        );
        assert_eq!(a.current_kid(), b.current_kid());
        assert_eq!(a.jwks(), b.jwks());
        assert_eq!(a.kids(), vec![keys[0].kid.clone(), keys[1].kid.clone()]);
    }
    assert!(!a.kids().contains(&first), "retired keys leave the JWKS");
    // A third instance opened later (a restart) continues the ring.
    let c = Sts::open(open(&loc).await, "http://127.0.0.1:9", SigningAlg::EdDSA)
        .await
        .unwrap();
    assert_eq!(c.kids(), a.kids());
    // An instance that missed a rotation picks it up on reload.
    c.rotate().await.unwrap();
    assert_ne!(a.current_kid(), c.current_kid());
    assert!(a.reload().await.unwrap());
    assert_eq!(a.kids(), c.kids());
}

async fn newer_schema_is_refused(db: &Db<'_>) {
    let loc = db.fresh("schema");
    let s = open(&loc).await;
    assert_eq!(s.schema_version().await.unwrap(), 1);
    s.force_schema_version(99).await.unwrap();
    drop(s);
    match StateStore::open(loc, None, Clock::new()).await {
        Err(e @ StateError::SchemaTooNew { found: 99, .. }) => {
            assert!(
                e.to_string().contains("newer than this binary supports"),
                "{e}"
            );
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

async fn encrypted_keys(db: &Db<'_>) {
    let loc = db.fresh("sealed");
    let key = || Some(KeyCipher::from_bytes(&[42u8; 32]).unwrap());
    let s = StateStore::open(loc.clone(), key(), Clock::new())
        .await
        .unwrap();
    let sts = Sts::open(s.clone(), "http://127.0.0.1:9", SigningAlg::ES256)
        .await
        .unwrap();
    let kid = sts.current_kid();
    let pkcs8 = s.load_keys().await.unwrap()[0].pkcs8.clone();
    if let Location::SqliteFile(p) = &loc {
        // What is on disk (file and WAL) holds no private key bytes in clear.
        let mut bytes = std::fs::read(p).unwrap();
        bytes.extend(std::fs::read(p.with_extension("db-wal")).unwrap_or_default());
        assert!(!bytes.windows(pkcs8.len()).any(|w| w == pkcs8.as_slice()));
        assert!(
            bytes.windows(kid.len()).any(|w| w == kid.as_bytes()),
            "the row is there"
        );
    }
    drop((sts, s));
    // The right key opens it again; a wrong key or none refuses to start.
    let again = StateStore::open(loc.clone(), key(), Clock::new())
        .await
        .unwrap();
    assert_eq!(again.load_keys().await.unwrap()[0].pkcs8, pkcs8);
    drop(again);
    let wrong = StateStore::open(
        loc.clone(),
        Some(KeyCipher::from_bytes(&[1u8; 32]).unwrap()),
        Clock::new(),
    )
    .await;
    match wrong {
        Err(StateError::Key(m)) => assert!(m.contains("cannot be decrypted"), "{m}"),
        other => panic!("expected a key error, got {other:?}"),
    }
    let none = StateStore::open(loc.clone(), None, Clock::new())
        .await
        .unwrap();
    assert!(matches!(none.load_keys().await, Err(StateError::Key(_))));
    assert!(
        Sts::open(none, "http://127.0.0.1:9", SigningAlg::ES256)
            .await
            .is_err()
    );
    // Keys stored in plaintext earlier are sealed once a key is configured.
    let plain = db.fresh("plain");
    let s = open(&plain).await;
    let sts = Sts::open(s.clone(), "http://127.0.0.1:9", SigningAlg::EdDSA)
        .await
        .unwrap();
    drop((sts, s));
    let sealed = StateStore::open(plain.clone(), key(), Clock::new())
        .await
        .unwrap();
    drop(sealed);
    let none = StateStore::open(plain, None, Clock::new()).await.unwrap();
    assert!(matches!(none.load_keys().await, Err(StateError::Key(_))));
}

async fn all(db: Db<'_>) {
    records_and_caps(&db).await;
    single_use_across_instances(&db).await;
    session_revocations(&db).await;
    key_ring_across_instances(&db).await;
    newer_schema_is_refused(&db).await;
    encrypted_keys(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend() {
    let dir = tempfile::tempdir().unwrap();
    all(Db::Sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend() {
    let pg = tokio::task::spawn_blocking(testkit::postgres::Postgres::start)
        .await
        .unwrap();
    all(Db::Pg(&pg)).await;
    // The Unix-socket form of the URL (documented for a database on the same host).
    let s = StateStore::open(
        Location::Postgres(pg.socket_url_for("postgres")),
        None,
        Clock::new(),
    )
    .await
    .unwrap();
    assert_eq!(s.schema_version().await.unwrap(), 1);
}

#[tokio::test]
async fn memory_backend_is_sqlite_in_memory() {
    let s = StateStore::memory(Clock::new()).await.unwrap();
    assert_eq!(*s.location(), Location::Memory);
    assert!(
        s.insert_record(Kind::Client, "c", "{}", i64::MAX, 10)
            .await
            .unwrap()
    );
    assert_eq!(s.count_records(Kind::Client).await.unwrap(), 1);
}

#[test]
fn locations_parse() {
    assert_eq!(Location::parse("memory").unwrap(), Location::Memory);
    assert_eq!(
        Location::parse("sqlite:/var/lib/warden/warden.db").unwrap(),
        Location::SqliteFile("/var/lib/warden/warden.db".into())
    );
    let pg = Location::parse("postgres://u:secret@db:5432/warden").unwrap();
    assert!(
        !format!("{pg:?}").contains("secret"),
        "the password is never printed"
    );
    assert!(Location::parse("mysql://x").is_err());
    assert!(Location::parse("sqlite:").is_err());
}

/// The schedule follows the stored key's age: a ring whose current key is older than the
/// period rotates within a reload interval of start, once, on both replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_rotation_follows_the_stored_age() {
    let dir = tempfile::tempdir().unwrap();
    let loc = Location::SqliteFile(dir.path().join("age.db"));
    let s = open(&loc).await;
    let old = controlplane::state::StoredKey {
        generation: 1,
        kid: "warden-old".into(),
        alg: "EdDSA".into(),
        created_at: now() - 7200,
        pkcs8: controlplane::sts::SigningKey::generate_pkcs8(SigningAlg::EdDSA).unwrap(),
    };
    assert!(s.insert_key(&old).await.unwrap());
    let a = Arc::new(
        Sts::open(s, "http://127.0.0.1:9", SigningAlg::EdDSA)
            .await
            .unwrap(),
    );
    let b = Arc::new(
        Sts::open(open(&loc).await, "http://127.0.0.1:9", SigningAlg::EdDSA)
            .await
            .unwrap(),
    );
    assert_eq!(
        a.current_kid(),
        "warden-old",
        "a restart does not rotate by itself"
    );
    let hour = std::time::Duration::from_secs(3600);
    let ta = tokio::spawn(a.clone().maintain(hour));
    let tb = tokio::spawn(b.clone().maintain(hour));
    let rotated = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while !(a.current_kid() != "warden-old" && a.kids() == b.kids()) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(rotated.is_ok(), "no rotation");
    ta.abort();
    tb.abort();
    let keys = open(&loc).await.load_keys().await.unwrap();
    assert_eq!(keys[0].generation, 2, "one rotation for both replicas");
    assert_eq!(
        a.kids(),
        vec![keys[0].kid.clone(), "warden-old".to_string()]
    );
    // A key younger than the period is kept.
    let c = Arc::new(
        Sts::open(open(&loc).await, "http://127.0.0.1:9", SigningAlg::EdDSA)
            .await
            .unwrap(),
    );
    assert_eq!(c.current_kid(), keys[0].kid);
    // An algorithm change rotates at start.
    let d = Sts::open(open(&loc).await, "http://127.0.0.1:9", SigningAlg::ES256)
        .await
        .unwrap();
    assert_eq!(d.jwks()["keys"][0]["alg"], "ES256");
    assert_eq!(d.jwks()["keys"][1]["kid"], keys[0].kid.as_str());
}

#[test]
fn state_block_errors_name_the_key() {
    let base = "gateway:\n  listen: 127.0.0.1:0\n  public_url: http://127.0.0.1/mcp\n  authentication: false\n";
    let e =
        controlplane::Config::parse(&format!("{base}state:\n  bogus: 1\n"), "c.yaml").unwrap_err();
    assert!(
        e.to_string().contains("state") && e.to_string().contains("bogus"),
        "{e}"
    );
    let e = controlplane::Config::parse(
        &format!("{base}state:\n  url: memory\n  url_env: X\n"),
        "c.yaml",
    )
    .unwrap_err();
    assert_eq!(e.path, "state.url_env", "{e}");
    let e = controlplane::Config::parse(&format!("{base}state:\n  url: mysql://db\n"), "c.yaml")
        .unwrap_err();
    assert_eq!(e.path, "state.url", "{e}");
    let e = controlplane::Config::parse(
        &format!("{base}state:\n  encryption_key_file: /k\n  encryption_key_env: K\n"),
        "c.yaml",
    )
    .unwrap_err();
    assert_eq!(e.path, "state.encryption_key_env", "{e}");
    let ok = controlplane::Config::parse(
        &format!("{base}state:\n  url: postgres://u:p@db/warden\n"),
        "c.yaml",
    )
    .unwrap();
    let st = ok.state.unwrap();
    assert!(st.url.is_some());
    let dbg = format!("{st:?}");
    assert!(
        !dbg.contains("u:p@") && dbg.contains("db/warden"),
        "no password in Debug: {dbg}"
    );
    // A key file that is not 32 bytes of base64 is refused with the key's name.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k");
    std::fs::write(&f, "dG9vIHNob3J0").unwrap();
    let cfg = controlplane::state::StateConfig {
        encryption_key_file: Some(f),
        ..Default::default()
    };
    let e = cfg.cipher().unwrap_err().to_string();
    assert!(
        e.starts_with("state.encryption_key_file") && e.contains("32 bytes"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_session_key_ring_is_made_once_shared_and_sealed_when_a_key_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let loc = Location::SqliteFile(dir.path().join("w.db"));
    let (a, b) = (open(&loc).await, open(&loc).await);
    let (ka, kb) = tokio::join!(a.default_session_keys(), b.default_session_keys());
    let (ka, kb) = (ka.unwrap(), kb.unwrap());
    assert_eq!(ka, kb, "two instances on one database adopt one ring");
    assert!(dataplane::session::SessionKeys::parse(&ka).is_ok());
    assert_eq!(open(&loc).await.default_session_keys().await.unwrap(), ka);
    // A key configured later seals the stored ring; the plaintext is gone from the row.
    let cipher = || KeyCipher::from_bytes(&[9u8; 32]).unwrap();
    let sealed = StateStore::open(loc.clone(), Some(cipher()), Clock::new())
        .await
        .unwrap();
    assert_eq!(sealed.default_session_keys().await.unwrap(), ka);
    let (row, _) = sealed
        .get_record(Kind::SessionKey, "default")
        .await
        .unwrap()
        .unwrap();
    let secret = ka.split_once(':').unwrap().1;
    assert!(
        row.starts_with("aes256gcm:") && !row.contains(secret),
        "{row}"
    );
    // Without the key it is refused, not replaced by a new ring.
    let e = open(&loc).await.default_session_keys().await.unwrap_err();
    assert!(matches!(e, StateError::Key(_)), "{e}");
}
