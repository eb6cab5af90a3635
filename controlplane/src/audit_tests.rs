//! The audit writer: chains, rotation by size and by age (on a mock clock), resume, tampering.

use super::*;
use dataplane::audit::Outcome;

fn rec(i: u64, tool: &str) -> Record {
    Record {
        time_ms: i as i64,
        request_id: format!("r{i}"),
        trace_id: None,
        span_id: None,
        parent_span_id: None,
        session: None,
        iss: Some("iss".into()),
        sub: Some("alice".into()),
        client_id: None,
        jti_hash: None,
        actors: vec![],
        scopes: vec![],
        groups: vec![],
        shadow: None,
        method: "tools/call".into(),
        upstream: Some("up".into()),
        tool: Some(tool.into()),
        upstream_tool: None,
        decision: Outcome::Allow,
        policy_ids: vec![],
        reason: None,
        blame: None,
        delegation: None,
        upstream_status: Some(200),
        latency_ms: 1.0,
    }
}

fn wait_drained(q: &AuditQueue) {
    for _ in 0..500 {
        if q.depth() == 0 {
            std::thread::sleep(Duration::from_millis(30));
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("writer did not drain");
}

#[test]
fn chains_rotate_resume_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        sink: SinkKind::File,
        dir: Some(dir.path().into()),
        max_file_bytes: 600,
        ..Default::default()
    };
    let q = AuditQueue::new(64);
    let h = spawn_writer(q.clone(), cfg.clone(), None, Clock::new()).unwrap();
    for i in 0..10 {
        q.reserve().unwrap().commit(rec(i, "a\"b\n\u{1}tool ✓"));
        std::thread::sleep(Duration::from_millis(8));
    }
    wait_drained(&q);
    drop(q);
    h.join().unwrap();
    let files = chain_files(dir.path()).unwrap();
    assert!(files.len() > 1, "rotated by size: {files:?}");
    assert_eq!(
        verify(dir.path()).unwrap(),
        Verified::Ok {
            records: 10,
            files: files.len()
        }
    );
    // Every line is valid JSON whatever the tool name held.
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["tool"], "a\"b\n\u{1}tool ✓");

    // A restarted writer continues the same chain.
    let q = AuditQueue::new(64);
    let h = spawn_writer(q.clone(), cfg, None, Clock::new()).unwrap();
    q.reserve().unwrap().commit(rec(11, "x"));
    wait_drained(&q);
    drop(q);
    h.join().unwrap();
    assert!(matches!(
        verify(dir.path()).unwrap(),
        Verified::Ok { records: 11, .. }
    ));

    // Tampering is found, with file and line.
    let files = chain_files(dir.path()).unwrap();
    let t = std::fs::read_to_string(&files[0])
        .unwrap()
        .replacen("alice", "mallory", 1);
    std::fs::write(&files[0], t).unwrap();
    match verify(dir.path()).unwrap() {
        Verified::Broken { file, line, .. } => {
            assert_eq!(file, files[0]);
            assert_eq!(
                line, 2,
                "the record after the altered one no longer matches"
            );
        }
        other => panic!("tampering not detected: {other:?}"),
    }
}

#[test]
fn files_rotate_by_age_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, mock) = Clock::mock();
    let mut sink = FileSink {
        dir: dir.path().into(),
        cfg: AuditConfig {
            max_file_age: Duration::from_secs(3600),
            ..Default::default()
        },
        file: None,
        clock,
    };
    sink.write(b"one\n", 1).unwrap();
    mock.advance(Duration::from_secs(3599));
    sink.write(b"two\n", 2).unwrap();
    assert_eq!(
        chain_files(dir.path()).unwrap().len(),
        1,
        "younger than an hour"
    );
    mock.advance(Duration::from_secs(1));
    sink.write(b"three\n", 3).unwrap();
    let files = chain_files(dir.path()).unwrap();
    assert_eq!(files.len(), 2, "an hour old: a new file");
    assert_eq!(std::fs::read_to_string(&files[1]).unwrap(), "three\n");
}

#[test]
fn filters_for_tail() {
    let v = serde_json::json!({"sub": "alice", "tool": "t", "decision": "deny"});
    assert!(
        TailFilter {
            user: Some("alice".into()),
            ..Default::default()
        }
        .matches(&v)
    );
    assert!(
        !TailFilter {
            decision: Some("allow".into()),
            ..Default::default()
        }
        .matches(&v)
    );
}
