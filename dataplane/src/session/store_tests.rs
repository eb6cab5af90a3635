use super::*;

const LIFE: Lifetimes = Lifetimes {
    idle_secs: 3600,
    max_secs: 86_400,
};

fn keys() -> SessionKeys {
    SessionKeys::parse("k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE").unwrap()
}

#[test]
fn sessions_are_bound_and_end() {
    let (k, store) = (keys(), SessionStore::new());
    let alice = owner_of("iss", "alice");
    let bob = owner_of("iss", "bob");
    let id = store
        .create(&k, alice, "2025-06-18".into(), None, 100)
        .unwrap();
    assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    assert!(store.get(&k, &id, &alice, 101, LIFE).is_ok());
    assert_eq!(
        store.get(&k, &id, &bob, 101, LIFE).unwrap_err(),
        SessionError::NotFound
    );
    assert_eq!(
        store.remove(&k, &id, &bob, 101, LIFE).unwrap_err(),
        SessionError::NotFound
    );
    let (_, hash, until) = store.remove(&k, &id, &alice, 101, LIFE).unwrap();
    assert_eq!((hash, until), (id_hash(&id), 100 + LIFE.max_secs));
    // Ended: refused, although the sealed id still opens.
    assert_eq!(
        store.get(&k, &id, &alice, 102, LIFE).unwrap_err(),
        SessionError::NotFound
    );
    // Issuer and subject are separated: ("ab","c") is not ("a","bc").
    assert_ne!(owner_of("ab", "c"), owner_of("a", "bc"));
}

#[test]
fn another_replica_adopts_a_sealed_id_and_learns_of_its_end() {
    let k = keys();
    let (here, there) = (SessionStore::new(), SessionStore::new());
    let o = owner_of("i", "s");
    let init = r#"{"clientInfo":{"name":"c","version":"1"}}"#.to_owned();
    let id = here
        .create(&k, o, "2025-11-25".into(), Some(init.clone()), 10)
        .unwrap();
    let s = there.get(&k, &id, &o, 11, LIFE).unwrap();
    assert_eq!(s.protocol_version, "2025-11-25");
    assert_eq!(s.client_init.as_deref(), Some(init.as_str()));
    assert_eq!(s.issued_at, 10);
    // The same state is kept for later requests on that replica.
    assert!(Arc::ptr_eq(&s, &there.get(&k, &id, &o, 12, LIFE).unwrap()));
    // Another user cannot adopt it either.
    assert!(there.get(&k, &id, &owner_of("i", "x"), 12, LIFE).is_err());
    // Ended here; the shared store tells the other replica.
    let (_, hash, until) = here.remove(&k, &id, &o, 13, LIFE).unwrap();
    there.revoke_hash(hash, until);
    assert_eq!(
        there.get(&k, &id, &o, 14, LIFE).unwrap_err(),
        SessionError::NotFound
    );
    // A third replica that never saw it refuses it too once told.
    let third = SessionStore::new();
    third.revoke_hash(hash, until);
    assert!(third.get(&k, &id, &o, 14, LIFE).is_err());
    // Keys from another ring: not ours.
    let other = SessionKeys::generate("k1").unwrap();
    assert!(SessionStore::new().get(&other, &id, &o, 14, LIFE).is_err());
}

#[test]
fn idle_and_absolute_lifetimes_are_enforced() {
    let (k, store) = (keys(), SessionStore::new());
    let life = Lifetimes {
        idle_secs: 100,
        max_secs: 1000,
    };
    let o = owner_of("i", "s");
    let id = store.create(&k, o, "2025-06-18".into(), None, 0).unwrap();
    assert!(store.get(&k, &id, &o, 10, life).is_ok());
    assert!(store.get(&k, &id, &o, 200, life).is_err(), "idle");
    // Used steadily, it still ends at its absolute lifetime, here and on a new replica.
    let id = store.create(&k, o, "2025-06-18".into(), None, 0).unwrap();
    for t in (50..=1000).step_by(50) {
        assert!(store.get(&k, &id, &o, t, life).is_ok(), "t={t}");
    }
    assert!(store.get(&k, &id, &o, 1001, life).is_err());
    assert!(SessionStore::new().get(&k, &id, &o, 1001, life).is_err());
    // expire() forgets idle state and ended ids past their lifetime.
    let id = store
        .create(&k, o, "2025-06-18".into(), None, 2000)
        .unwrap();
    let _ = store.remove(&k, &id, &o, 2001, life).unwrap();
    let _ = store
        .create(&k, o, "2025-06-18".into(), None, 2000)
        .unwrap();
    assert_eq!(store.revoked_len(), 1);
    assert_eq!(store.expire(2200, life), 1);
    assert!(store.is_empty());
    store.expire(3001, life);
    assert_eq!(store.revoked_len(), 0);
}
