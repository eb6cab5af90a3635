//! Sessions: bound to the user, ended by DELETE, unknown ids 404, and lifetimes on the fake
//! clock (moved from `tests/proxy.rs`, plus what only a fake clock can show).

use std::time::Duration;

use serde_json::json;

use crate::env::Env;

#[test]
fn sessions_are_bound_and_end() {
    let env = Env::start(1);
    let alice = env.token("alice");
    let bob = env.token("bob");
    let sid = env.session(&alice);
    // Another user's valid token with alice's session → 404.
    let r = env.post(
        Some(&bob),
        Some(&sid),
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
    );
    assert_eq!(r.status, 404);
    // No token → 401 even with a valid session.
    let r = env.post(
        None,
        Some(&sid),
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
    );
    assert_eq!(r.status, 401);
    // Missing session → 400.
    let r = env.post(
        Some(&alice),
        None,
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
    );
    assert_eq!(r.status, 400);
    // DELETE ends it; afterwards 404.
    let r = env.delete(Some(&alice), &sid);
    assert_eq!(r.status, 200);
    let r = env.post(
        Some(&alice),
        Some(&sid),
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
    );
    assert_eq!(r.status, 404);
    // GET: authenticated first, then the session (its stream: see tests/streams.rs), then
    // an Accept that allows the stream.
    let r = env.get(None, None);
    assert_eq!(r.status, 401);
    let r = env.get(Some(&alice), None);
    assert_eq!(r.status, 400);
    let r = env.get(Some(&alice), Some(&sid));
    assert_eq!(r.status, 404);
    let sid2 = env.session(&alice);
    let r = env.send(
        env.mcp("GET")
            .header("accept", "application/json")
            .bearer(&alice)
            .header("mcp-session-id", &sid2),
    );
    assert_eq!(r.status, 406);
}

#[test]
fn delete_reports_the_end_and_closes_upstream_sessions() {
    let env = Env::start(1);
    let alice = env.token("alice");
    let sid = env.session(&alice);
    // The upstream session is opened lazily, by the first call that needs it.
    let _ = env.call(&alice, &sid, json!(1), "up0_echo", json!({}));
    let open = env.upstreams[0].sessions().len();
    assert!(open >= 1, "an upstream session is open");
    // Discovery ended its own session already.
    let deletes = env.upstreams[0].count("DELETE");
    assert_eq!(env.delete(Some(&alice), &sid).status, 200);
    assert_eq!(env.sessions_ended(), 1, "the control plane was told");
    assert_eq!(
        env.upstreams[0].count("DELETE"),
        deletes + 1,
        "the upstream session was ended"
    );
    assert_eq!(env.upstreams[0].sessions().len(), open - 1);
    // Unknown and garbage ids: 404, the same as an ended one.
    for bad in [sid.as_str(), "not-a-session", "AAAA"] {
        let r = env.post(
            Some(&alice),
            Some(bad),
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
        );
        assert_eq!(r.status, 404, "{bad}");
    }
}

#[test]
fn an_idle_session_expires_on_the_shard_clock() {
    // Idle timeout 60 s; the token is re-minted so only the session's age matters.
    let env = Env::start_with(1, Default::default(), "  session_idle_timeout: 60s\n");
    let sid = env.session(&env.token("alice"));
    env.advance(Duration::from_secs(30));
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    let tok = fresh(&env, "alice");
    assert_eq!(env.post(Some(&tok), Some(&sid), &list).status, 200);
    // Used 30 s in: idle from there, so 45 s later it is still alive...
    env.advance(Duration::from_secs(45));
    let tok = fresh(&env, "alice");
    assert_eq!(env.post(Some(&tok), Some(&sid), &list).status, 200);
    // ...and 61 s of silence ends it.
    env.advance(Duration::from_secs(61));
    let tok = fresh(&env, "alice");
    assert_eq!(env.post(Some(&tok), Some(&sid), &list).status, 404);
}

/// A token valid at the shard's (fake) time.
fn fresh(env: &Env, sub: &str) -> String {
    let now = env.now_secs();
    let mut c = env.issuer.claims(sub, crate::env::AUD, "mcp:tools");
    c["iat"] = json!(now);
    c["nbf"] = json!(now);
    c["exp"] = json!(now + 300);
    env.issuer.mint(&c)
}

#[test]
fn records_name_the_session_by_the_hash_of_its_id_whether_it_was_found_or_not() {
    let env = Env::start(1);
    let alice = env.token("alice");
    let sid = env.session(&alice);
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"up0_echo","arguments":{}}});
    assert_eq!(env.post(Some(&alice), Some(&sid), &call).status, 200);
    // An id this gateway never issued is refused, and still named by its hash.
    let forged = format!("{sid}x");
    assert_eq!(env.post(Some(&alice), Some(&forged), &call).status, 404);
    let recs = env.take_audit();
    let sessions: Vec<Option<&str>> = (recs.iter())
        .filter(|r| r.method == "tools/call")
        .map(|r| r.session.as_deref())
        .collect();
    let (found, refused) = (
        dataplane::audit::short_hash(&sid),
        dataplane::audit::short_hash(&forged),
    );
    assert_eq!(
        sessions,
        [Some(found.as_str()), Some(refused.as_str())],
        "{recs:#?}"
    );
}
