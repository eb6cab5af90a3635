//! The in-memory pieces on their own: the duplex, and the real upstream client over `MemNet`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::SliceMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use serde_json::json;

use super::*;
use crate::snapshot::{Upstream, UpstreamCredential};
use crate::upstream::{Replay, UpBody, UpError, send};

fn upstream(name: &str, timeout: Duration) -> Upstream {
    Upstream {
        id: 7,
        name: name.into(),
        namespace: format!("{name}_"),
        authority: format!("{name}.test"),
        path: "/mcp".into(),
        addrs: Vec::new(),
        tls: None,
        credential: UpstreamCredential::None,
        timeout,
        max_response_bytes: 1 << 20,
        delegation: None,
        bridge: None,
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    runtime().unwrap().block_on(f)
}

#[test]
fn duplex_carries_bytes_both_ways_and_ends_with_eof() {
    run(async {
        let (mut a, mut b) = duplex();
        let (r, _) = a.write_all(b"hello ".to_vec()).await;
        r.unwrap();
        let (r, _) = a.write_all(Box::<[u8]>::from(&b"world"[..])).await;
        r.unwrap();
        // A read into the free tail of a partly filled buffer, as the connection loop does.
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b">");
        let (len, cap) = (buf.len(), buf.capacity());
        let (n, s) = b.read(SliceMut::new(buf, len, cap)).await;
        assert_eq!(n.unwrap(), 11);
        assert_eq!(s.into_inner(), b">hello world");
        // Short reads keep the rest for the next one.
        a.write_all(b"abcdef".to_vec()).await.0.unwrap();
        let (n, small) = b.read(Vec::with_capacity(4)).await;
        assert_eq!(n.unwrap(), 4);
        assert_eq!(small, b"abcd");
        a.close_write();
        assert_eq!(b.read_to_end().await, b"ef");
        // b can still write to a.
        b.write_all(b"back".to_vec()).await.0.unwrap();
        drop(b);
        assert_eq!(a.read_to_end().await, b"back");
        // Writing to a dropped peer fails.
        let (r, _) = a.write_all(b"x".to_vec()).await;
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    });
}

#[test]
fn a_read_waits_for_the_writer() {
    run(async {
        let (mut a, mut b) = duplex();
        let reader = monoio::spawn(async move { b.read_to_end().await });
        monoio::time::sleep(Duration::from_millis(5)).await;
        a.write_all(b"late".to_vec()).await.0.unwrap();
        drop(a);
        assert_eq!(reader.await, b"late");
    });
}

/// A fake MCP-ish upstream: counts requests, answers JSON with keep-alive.
fn counting(hits: Rc<Cell<usize>>) -> Rc<dyn FakeUpstream> {
    Rc::new(move |req: &PeerRequest| {
        hits.set(hits.get() + 1);
        assert_eq!(req.header("host"), Some("up.test"));
        let id = req.json()["id"].clone();
        PeerReply::json(
            200,
            &json!({"jsonrpc":"2.0","id":id,"result":{"n":hits.get()}}),
        )
    })
}

#[test]
fn the_pool_reuses_a_kept_alive_connection() {
    let net = MemNet::new();
    let hits = Rc::new(Cell::new(0));
    net.serve("up", counting(hits.clone()));
    let pool = Pool::with_net(net.clone());
    let up = upstream("up", Duration::from_secs(5));
    run(async {
        for i in 1..=3 {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"ping"}}"#);
            let r = send(
                &pool,
                &up,
                "POST",
                &[],
                body.as_bytes(),
                up.timeout,
                Replay::Safe,
            )
            .await
            .unwrap();
            assert_eq!(r.status, 200);
            let UpBody::Full(b) = r.body else {
                panic!("not a full body")
            };
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["id"], i);
        }
    });
    assert_eq!(hits.get(), 3);
    assert_eq!(net.connections("up"), 1, "one connection, kept alive");
}

#[test]
fn sse_bodies_arrive_event_by_event() {
    let net = MemNet::new();
    net.serve(
        "up",
        Rc::new(|_: &PeerRequest| PeerReply::Sse {
            status: 200,
            headers: Vec::new(),
            events: vec![b"data: one\n\n".to_vec(), b"id: 2\ndata: two\n\n".to_vec()],
            complete: true,
        }),
    );
    let pool = Pool::with_net(net.clone());
    let up = upstream("up", Duration::from_secs(5));
    run(async {
        let r = send(&pool, &up, "POST", &[], b"{}", up.timeout, Replay::Never)
            .await
            .unwrap();
        let UpBody::Sse(mut s) = r.body else {
            panic!("not SSE")
        };
        assert_eq!(s.next_event().await.unwrap().unwrap().data, "one");
        let two = s.next_event().await.unwrap().unwrap();
        assert_eq!((two.id.as_deref(), two.data.as_str()), (Some("2"), "two"));
        assert!(s.next_event().await.unwrap().is_none());
        s.finish(&pool, up.id);
        // The cleanly ended stream's connection went back to the pool.
        send(&pool, &up, "POST", &[], b"{}", up.timeout, Replay::Never)
            .await
            .unwrap();
    });
    assert_eq!(net.connections("up"), 1);
}

#[test]
fn faults_map_to_upstream_errors() {
    let net = MemNet::new();
    net.serve("hangup", Rc::new(|_: &PeerRequest| PeerReply::HangUp));
    net.serve(
        "garbage",
        Rc::new(|_: &PeerRequest| PeerReply::Raw(b"<<garbage>>\r\n\r\n".to_vec())),
    );
    net.serve(
        "slow",
        Rc::new(|_: &PeerRequest| {
            PeerReply::After(Duration::from_secs(5), Box::new(PeerReply::status(200)))
        }),
    );
    let pool = Pool::with_net(net.clone());
    let short = Duration::from_millis(50);
    run(async {
        let go = |name: &'static str| {
            let up = upstream(name, short);
            let pool = &pool;
            async move {
                send(pool, &up, "POST", &[], b"{}", short, Replay::Safe)
                    .await
                    .map(|r| r.status)
            }
        };
        assert_eq!(go("hangup").await, Err(UpError::Unanswered));
        assert_eq!(go("garbage").await, Err(UpError::BadResponse));
        assert_eq!(go("slow").await, Err(UpError::Timeout));
        assert_eq!(go("nobody").await, Err(UpError::Connect));
    });
    assert_eq!(
        net.connections("hangup"),
        1,
        "a fresh connection is not retried"
    );
}

#[test]
fn a_reused_connection_closed_unanswered_is_resent_only_when_safe() {
    // First request answered (the connection is pooled), then every request hung up on.
    let net = MemNet::new();
    let n = Rc::new(Cell::new(0));
    let seen = n.clone();
    net.serve(
        "up",
        Rc::new(move |_: &PeerRequest| {
            seen.set(seen.get() + 1);
            if seen.get() == 1 {
                PeerReply::status(200)
            } else {
                PeerReply::HangUp
            }
        }),
    );
    let pool = Pool::with_net(net.clone());
    let up = upstream("up", Duration::from_secs(5));
    run(async {
        let t = up.timeout;
        assert_eq!(
            send(&pool, &up, "POST", &[], b"{}", t, Replay::Never)
                .await
                .unwrap()
                .status,
            200
        );
        // Never: sent once on the pooled connection, reported unanswered.
        let r = send(&pool, &up, "POST", &[], b"{}", t, Replay::Never).await;
        assert_eq!(r.map(|r| r.status), Err(UpError::Unanswered));
        assert_eq!(n.get(), 2, "not sent again");
    });
    // Safe: the pooled connection hangs up, then one resend on a fresh connection.
    let net2 = MemNet::new();
    let m = Rc::new(Cell::new(0));
    let seen = m.clone();
    net2.serve(
        "up",
        Rc::new(move |_: &PeerRequest| {
            seen.set(seen.get() + 1);
            match seen.get() {
                2 => PeerReply::HangUp,
                _ => PeerReply::status(200),
            }
        }),
    );
    let pool = Pool::with_net(net2.clone());
    run(async {
        let t = up.timeout;
        for _ in 0..2 {
            let r = send(&pool, &up, "POST", &[], b"{}", t, Replay::Safe).await;
            assert_eq!(r.map(|r| r.status), Ok(200));
        }
    });
    assert_eq!(
        m.get(),
        3,
        "the safe request ran twice: hung up, then answered"
    );
    assert_eq!(net2.connections("up"), 2);
}

#[test]
fn responses_read_back_from_bytes() {
    let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\na\r\ndata: {}\n\n\r\n0\r\n\r\nHTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot";
    let rs = HttpResponse::parse_all(raw).unwrap();
    assert_eq!(rs.len(), 3);
    assert_eq!(rs[0].json()["a"], 1);
    assert!(rs[1].is_sse() && rs[1].complete);
    assert_eq!(rs[1].message(), json!({}));
    assert_eq!((rs[2].status, rs[2].complete), (404, false));
    let req = HttpRequest::new("POST", "/mcp")
        .bearer("t")
        .json(&json!({"a": 1}))
        .to_bytes();
    assert_eq!(
        String::from_utf8(req).unwrap(),
        "POST /mcp HTTP/1.1\r\nauthorization: Bearer t\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
    );
}
