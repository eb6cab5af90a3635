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
        sender_constrained: false,
        jkt: None,
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
        upstream_ms: None,
        protocol: None,
        upstream_protocol: None,
    }
}

/// An answer's wait, on a shard-like runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn an_answer_is_released_only_once_its_line_is_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        sink: SinkKind::File,
        dir: Some(dir.path().into()),
        ..Default::default()
    };
    let q = AuditQueue::new(64, Duration::from_secs(30));
    let h = spawn_writer(q.clone(), cfg, None, Clock::new()).unwrap();
    let file_text = || -> String {
        chain_files(dir.path())
            .unwrap()
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect()
    };
    for i in 0..20 {
        let written = q.reserve().unwrap().commit(rec(i, &format!("tool-{i}")));
        assert!(
            block_on(written.wait()),
            "record {i} written within the bound"
        );
        // What a process killed right now would leave: the record is already in the file.
        assert!(
            file_text().contains(&format!("\"tool\":\"tool-{i}\"")),
            "record {i} is in the file when its answer is released"
        );
    }
    drop(q);
    h.join().unwrap();
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
    let q = AuditQueue::new(64, Duration::ZERO);
    let h = spawn_writer(q.clone(), cfg.clone(), None, Clock::new()).unwrap();
    for i in 0..10 {
        let _ = q.reserve().unwrap().commit(rec(i, "a\"b\n\u{1}tool ✓"));
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
    let q = AuditQueue::new(64, Duration::ZERO);
    let h = spawn_writer(q.clone(), cfg, None, Clock::new()).unwrap();
    let _ = q.reserve().unwrap().commit(rec(11, "x"));
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
        path: None,
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

/// Record format 2 (inbound `scopes`, `upstream_ms`) continues a chain of format-1 lines:
/// the chain hashes raw line bytes, so `warden audit verify` accepts both; and each
/// written record's link points at its line on disk, which the console re-checks.
#[test]
fn format_two_records_continue_a_format_one_chain_and_links_find_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    // Two lines exactly as the format-1 writer wrote them (no scopes, no upstream_ms).
    let l1 = format!(
        r#"{{"time_ms":1,"request_id":"r1","iss":"iss","sub":"alice","method":"tools/call","upstream":"up","tool":"t","decision":"allow","upstream_status":200,"latency_ms":1.0,"seq":1,"prev":"{ZERO}"}}"#
    );
    let l2 = format!(
        r#"{{"time_ms":2,"request_id":"r2","iss":"iss","sub":"alice","method":"tools/call","decision":"deny","reason":"no","latency_ms":0.5,"seq":2,"prev":"{}"}}"#,
        sha_hex(l1.as_bytes())
    );
    std::fs::write(dir.path().join(file_name(1)), format!("{l1}\n{l2}\n")).unwrap();
    let cfg = AuditConfig {
        sink: SinkKind::File,
        dir: Some(dir.path().into()),
        ..Default::default()
    };
    let links = std::sync::Arc::new(std::sync::RwLock::new(Vec::<Link>::new()));
    let seen = links.clone();
    let obs: ChainObserver = Arc::new(move |_r: Record, l: &Link| {
        seen.write().unwrap().push(l.clone());
    });
    let q = AuditQueue::new(64, Duration::ZERO);
    let h = spawn_writer(q.clone(), cfg, Some(obs), Clock::new()).unwrap();
    let mut r = rec(3, "t");
    r.scopes = vec!["mcp:tools".into()];
    r.upstream_ms = Some(0.25);
    let _ = q.reserve().unwrap().commit(r);
    let _ = q.reserve().unwrap().commit(rec(4, "t"));
    wait_drained(&q);
    drop(q);
    h.join().unwrap();
    assert_eq!(
        verify(dir.path()).unwrap(),
        Verified::Ok {
            records: 4,
            files: 2
        },
        "a restarted writer opens a new file; the chain runs on"
    );
    let text = std::fs::read_to_string(dir.path().join(file_name(3))).unwrap();
    let third: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(third["scopes"], serde_json::json!(["mcp:tools"]));
    assert_eq!(third["upstream_ms"], 0.25);
    let links = links.read().unwrap().clone();
    assert_eq!(links.len(), 2);
    assert_eq!(
        (links[0].seq, links[0].prev.as_str()),
        (3, sha_hex(l2.as_bytes()).as_str())
    );
    assert_eq!(links[1].prev, links[0].hash, "consecutive links chain");
    for l in &links {
        check_link(l).unwrap();
    }
    // Altering the third line on disk: its link no longer checks, the fourth's still does.
    std::fs::write(
        dir.path().join(file_name(3)),
        text.replacen("mcp:tools", "mcp:admin", 1),
    )
    .unwrap();
    let e = check_link(&links[0]).unwrap_err();
    assert!(e.contains("altered"), "{e}");
    check_link(&links[1]).unwrap();
    // Stdout records have no line to re-check.
    let mut l = links[0].clone();
    l.at = None;
    assert!(check_link(&l).unwrap_err().contains("standard output"));
}
