//! The audit queue behind a blocked writer: every answered request has exactly one record,
//! or its answer says the audit trail is unavailable.

use std::collections::HashSet;

use dataplane::audit::Outcome;
use dataplane::testing::{HttpRequest, HttpResponse};
use serde_json::json;

use crate::env::Env;

/// A soak found it (`audit_sink_slow`: the stdout sink's pipe full, the writer blocked): once
/// the share for records without a reservation was full, the records of 401s, 400s and 413s
/// were dropped while the clients got their ordinary answers, so requests were answered
/// with no record. Such a request is now answered "audit unavailable" (-32003), as a call
/// refused for want of a slot is, and every other answer has its record.
#[test]
fn with_the_writer_blocked_every_answer_has_its_record_or_says_so() {
    // queue_capacity 16: 16 slots for calls, 4 for outcomes without a reservation.
    let env = Env::start_edited(1, Default::default(), "", |y| {
        format!("{y}audit:\n  queue_capacity: 16\n  answer_wait: 20ms\n")
    });
    let alice = env.token("alice");
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "up0_echo", "arguments": {}}});
    env.stall_audit(true);
    let mut recorded = HashSet::new();
    let mut told = 0;
    let mut answer = |r: HttpResponse, usual: u16| {
        let rid = r.header("x-request-id").map(str::to_owned);
        if r.status == 200 && r.json()["error"]["code"] == -32003 {
            told += 1;
        } else {
            assert_eq!(r.status, usual, "{}", r.text());
            // The 413 is answered before the request id is known: counted, not named.
            let n = recorded.len();
            recorded.insert(rid.unwrap_or_else(|| format!("413-{n}")));
        }
    };
    for _ in 0..6 {
        answer(env.post(None, None, &call), 401);
        answer(env.post(Some(&alice), None, &json!([])), 400);
        let oversize = HttpRequest::new("POST", "/mcp")
            .header("host", env.host())
            .header("content-type", "application/json")
            .header("content-length", "100000");
        let raw = env.request(&oversize.to_bytes());
        let r = HttpResponse::parse_all(&raw).unwrap();
        answer(r.into_iter().next().expect("an answer"), 413);
    }
    assert_eq!(recorded.len(), 4, "the share holds four records");
    assert_eq!(told, 14, "the others were told, not answered unrecorded");

    // The writer resumes: exactly the answered requests are on record, once each.
    env.stall_audit(false);
    let recs = env.take_audit();
    assert_eq!(recs.len(), recorded.len(), "{recs:?}");
    assert!(
        recs.iter()
            .all(|r| matches!(r.decision, Outcome::Unauthenticated | Outcome::Rejected))
    );
    // And refusals are answered as usual again.
    assert_eq!(env.post(None, None, &call).status, 401);
    assert_eq!(env.take_audit().len(), 1);
}
