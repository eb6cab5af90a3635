//! Criterion benchmarks of Warden's hot path: its pieces (token verification, JSON-RPC parsing,
//! routing, per-call delegation: minting and the delegation cache, sealed session ids) and the
//! whole pipeline, bytes in and bytes out, through the socket-free harness.
//!
//! Run: `CARGO_TARGET_DIR=/var/tmp/warden-target cargo bench -p bench -- --warm-up-time 1 --measurement-time 3`.
//! Results and their reading: `docs/performance.md`. On a shared 2-core machine compare
//! numbers within one run only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark fixtures"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark times itself on the real clock and mints tokens for the real now"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use controlplane::sts::{DelegationGrant, SigningAlg, SigningKey, Sts, delegation_claims};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::auth::jwt::ValidationPolicy;
use dataplane::auth::{AuthOutcome, IssuerState, TokenCache, jwks, verify_uncached};
use dataplane::clock::Clock;
use dataplane::control::{ControlHandle, DelegateRequest, Delegated, Subject};
use dataplane::delegation::{DelegationCache, Key, Source};
use dataplane::jsonrpc::Message;
use dataplane::snapshot::{ToolRoute, ToolTable};
use dataplane::testing::exchange;
use futures_channel::mpsc::UnboundedReceiver;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use testkit::MemIssuer;

#[path = "../fixtures/pipeline.rs"]
#[allow(
    dead_code,
    reason = "shared with the instruction-count probe, which uses the rest"
)]
mod fixtures;
#[path = "../fixtures/json_bodies.rs"]
#[allow(
    dead_code,
    reason = "shared with the instruction-count probe, which uses the other parsers"
)]
mod json_bodies;
use fixtures::{
    AUD, GATEWAY_CLIENT, ISSUER, LEDGER_AUD, STS_ISSUER, USER, call_body, demo_harness, ping_body,
    session_request,
};

const MAX_TOKEN: usize = 8192;

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Keys generated with aws-lc-rs; tokens signed over `b64url(header).b64url(claims)`.
struct Keys {
    ed: Ed25519KeyPair,
    ec: EcdsaKeyPair,
    rsa: signature::RsaKeyPair,
}

impl Keys {
    fn generate() -> Keys {
        Keys {
            ed: Ed25519KeyPair::generate().unwrap(),
            ec: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            rsa: signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
        }
    }

    fn jwks(&self) -> Vec<u8> {
        let ec_pub = self.ec.public_key().as_ref(); // 0x04 || X || Y
        assert_eq!(ec_pub.len(), 65);
        let rsa_pub = self.rsa.public_key();
        json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA", "use": "sig", "x": b64(self.ed.public_key().as_ref())},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES256", "use": "sig", "x": b64(&ec_pub[1..33]), "y": b64(&ec_pub[33..])},
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig",
             "n": b64(rsa_pub.modulus().big_endian_without_leading_zero()),
             "e": b64(rsa_pub.exponent().big_endian_without_leading_zero())},
        ]})
        .to_string()
        .into_bytes()
    }

    fn token(&self, alg: &str, kid: &str) -> String {
        let t = now();
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": kid});
        let claims = json!({
            "iss": ISSUER, "sub": "user-1234", "aud": AUD, "exp": t + 3600, "iat": t,
            "jti": "7f3c1b9e-5f64-4a57-a1c2-bench", "scope": "mcp:tools mcp:resources",
            "client_id": "bench-agent", "email": "bench@example.com", "groups": ["eng", "oncall"],
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match alg {
            "EdDSA" => self.ed.sign(input.as_bytes()).as_ref().to_vec(),
            "ES256" => self
                .ec
                .sign(&rng, input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            "RS256" => {
                let mut s = vec![0u8; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(&signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut s)
                    .unwrap();
                s
            }
            _ => unreachable!(),
        };
        format!("{input}.{}", b64(&sig))
    }
}

fn issuers(keys: &Keys) -> Vec<Arc<IssuerState>> {
    let set = jwks::parse_jwks(
        &keys.jwks(),
        &[Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256],
    )
    .unwrap();
    assert_eq!(set.len(), 3, "refused: {:?}", set.refused);
    vec![Arc::new(IssuerState {
        policy: ValidationPolicy {
            issuer: ISSUER.to_owned(),
            audiences: vec![AUD.to_owned()],
            leeway_secs: 30,
            max_lifetime_secs: 86_400,
            token_types: vec!["at+jwt".to_owned()],
        },
        dpop: Default::default(),
        keys: Arc::new(set),
        keys_generation: 1,
        usable: true,
    })]
}

fn token_verify(c: &mut Criterion) {
    let keys = Keys::generate();
    let iss = issuers(&keys);
    let mut g = c.benchmark_group("token_verify");
    for (alg, kid) in [("EdDSA", "ed"), ("ES256", "ec"), ("RS256", "rsa")] {
        let tok = keys.token(alg, kid);
        let (out, _) = verify_uncached(&tok, &iss, MAX_TOKEN, now());
        assert!(matches!(out, AuthOutcome::Valid(_)), "{alg}: {out:?}");
        g.bench_function(format!("cold/{alg}"), |b| {
            let n = now();
            b.iter(|| verify_uncached(black_box(&tok), &iss, MAX_TOKEN, n))
        });
    }
    let tok = keys.token("EdDSA", "ed");
    let mut cache = TokenCache::new(1024);
    let n = now();
    let _ = cache.authenticate(&tok, &iss, MAX_TOKEN, n);
    let (out, hit) = cache.authenticate(&tok, &iss, MAX_TOKEN, n);
    assert!(hit && matches!(out, AuthOutcome::Valid(_)));
    g.bench_function("cached/EdDSA", |b| {
        b.iter(|| {
            let (o, hit) = cache.authenticate(black_box(&tok), &iss, MAX_TOKEN, n);
            debug_assert!(hit);
            o
        })
    });
    g.finish();
}

/// A realistic `tools/call` of exactly 318 bytes.
fn small_body() -> Vec<u8> {
    let make = |pad: usize| {
        json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {
            "name": "bench_search_issues",
            "arguments": {"repo": "acme/widgets", "query": "is:open label:bug sort:updated-desc", "limit": 25,
                          "fields": ["title", "state", "labels", "assignee", "updated_at"], "note": "x".repeat(pad)},
            "_meta": {"progressToken": "progress-42"}}})
        .to_string()
    };
    let base = make(0).len();
    assert!(base <= 318, "base body is {base} bytes");
    let s = make(318 - base);
    assert_eq!(s.len(), 318);
    s.into_bytes()
}

/// A `tools/call` with a large arguments object (~19 KiB): 60 documents with text and numbers.
fn large_body() -> Vec<u8> {
    let docs: Vec<_> = (0..60)
        .map(|i| json!({
            "id": format!("doc-{i:04}"), "title": format!("Quarterly report section {i}"),
            "score": (i as f64) * 0.731, "tags": ["finance", "q3", "draft"], "published": i % 2 == 0,
            "body": "Revenue grew in every region; costs rose less than planned. \"Escapes\" \\ and unicode \u{e9}t\u{e9}. ".repeat(2),
        }))
        .collect();
    let s = json!({"jsonrpc": "2.0", "id": "req-7", "method": "tools/call", "params": {
        "name": "bench_index_documents", "arguments": {"collection": "reports", "documents": docs, "upsert": true}}})
    .to_string();
    assert!(
        (18 * 1024..20 * 1024).contains(&s.len()),
        "large body is {} bytes",
        s.len()
    );
    s.into_bytes()
}

/// The same envelope as `dataplane::jsonrpc::Message`, for simd-json's serde (no `RawValue` there).
#[derive(Debug, Deserialize)]
#[allow(dead_code, reason = "fields exist to be parsed")]
// simd-json's BorrowedValue<'v> deserializes only from exactly 'v: tie the lifetimes.
#[serde(bound(deserialize = "'a: 'de"))]
struct SimdMessage<'a> {
    #[serde(borrow)]
    jsonrpc: Option<&'a str>,
    #[serde(borrow, default)]
    id: Option<simd_json::BorrowedValue<'a>>,
    #[serde(borrow, default)]
    method: Option<&'a str>,
    #[serde(borrow, default)]
    params: Option<simd_json::BorrowedValue<'a>>,
    #[serde(borrow, default)]
    result: Option<simd_json::BorrowedValue<'a>>,
    #[serde(borrow, default)]
    error: Option<simd_json::BorrowedValue<'a>>,
}

fn jsonrpc_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("jsonrpc_parse");
    for (label, body) in [("318B", small_body()), ("19KiB", large_body())] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        assert!(Message::parse(&body).is_ok());
        assert!(simd_json::to_borrowed_value(&mut body.clone()).is_ok());
        assert!(
            simd_json::serde::from_slice::<SimdMessage<'_>>(&mut body.clone())
                .unwrap()
                .method
                == Some("tools/call")
        );
        g.bench_function(format!("serde_json_raw/{label}"), |b| {
            b.iter(|| Message::parse(black_box(&body)).is_ok())
        });
        // simd-json parses in place: each iteration gets a fresh copy, made outside the timing.
        g.bench_function(format!("simd_borrowed_value/{label}"), |b| {
            b.iter_batched_ref(
                || body.clone(),
                |buf| simd_json::to_borrowed_value(buf).is_ok(),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("simd_serde_struct/{label}"), |b| {
            b.iter_batched_ref(
                || body.clone(),
                |buf| simd_json::serde::from_slice::<SimdMessage<'_>>(buf).is_ok(),
                BatchSize::SmallInput,
            )
        });
        // What a gateway that must still forward the original bytes would pay: copy + parse.
        g.bench_function(format!("simd_serde_struct_with_copy/{label}"), |b| {
            b.iter(|| {
                let mut buf = black_box(&body).clone();
                simd_json::serde::from_slice::<SimdMessage<'_>>(&mut buf).is_ok()
            })
        });
    }
    g.finish();
}

/// The structural checks by body size: the serde_json path against the simd-json tape
/// (`Message::parse_with`), on a large-`arguments` call and a large `result`, 256 B to 256 KiB.
fn jsonrpc_sizes(c: &mut Criterion) {
    let mut g = c.benchmark_group("jsonrpc_sizes");
    for (kind, make) in [
        ("call", json_bodies::call_of_size as fn(usize) -> Vec<u8>),
        ("result", json_bodies::result_of_size),
    ] {
        for bytes in [256, 1024, 2048, 4096, 16 * 1024, 64 * 1024, 256 * 1024] {
            let body = make(bytes);
            g.throughput(Throughput::Bytes(body.len() as u64));
            for (name, p) in [
                ("serde", json_bodies::Parser::Serde),
                ("tape", json_bodies::Parser::Tape),
            ] {
                let mut scratch = json_bodies::Scratch::default();
                assert!(json_bodies::parse(p, &body, &mut scratch));
                g.bench_function(format!("{name}/{kind}/{bytes}"), |b| {
                    b.iter(|| json_bodies::parse(p, black_box(&body), &mut scratch))
                });
            }
        }
    }
    g.finish();
}

fn tool_table(n: usize, target: &str) -> ToolTable {
    let mut routes = HashMap::with_capacity(n);
    let mut order = Vec::with_capacity(n);
    for i in 0..n {
        let upstream_name = if i == n / 2 {
            target.to_owned()
        } else {
            format!("tool_{i:04}")
        };
        let name = format!("bench_{upstream_name}");
        let definition = RawValue::from_string(
            json!({"name": name, "description": "a tool", "inputSchema": {"type": "object"}})
                .to_string(),
        )
        .unwrap();
        routes.insert(
            name.clone(),
            ToolRoute {
                upstream: 0,
                upstream_name,
                definition,
                param_headers: Vec::new(),
            },
        );
        order.push(name);
    }
    ToolTable { routes, order }
}

fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("routing");
    let small = small_body();
    let large = large_body();
    for (label, body, tool) in [
        ("318B", &small, "search_issues"),
        ("19KiB", &large, "index_documents"),
    ] {
        let msg = Message::parse(body).unwrap();
        for n in [10usize, 1000] {
            let table = tool_table(n, tool);
            let (route, params) = dataplane::mcp::tools_call_params(msg.params, &table).unwrap();
            assert_eq!(route.upstream_name, tool);
            assert!(params.contains(&format!("\"name\":\"{tool}\"")));
            g.bench_function(format!("tools_call_params/{n}_tools/{label}"), |b| {
                b.iter(|| {
                    dataplane::mcp::tools_call_params(black_box(msg.params), &table)
                        .map(|(r, s)| (r.upstream, s.len()))
                })
            });
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Per-call delegation.

/// What the embedded mint does per token (`controlplane/src/delegate.rs`): a fresh `jti`
/// and the claims of one 5-second, one-scope delegation token.
fn mint_claims(scopes: &[String]) -> serde_json::Value {
    let g = DelegationGrant {
        subject: USER,
        subject_act: None,
        actor: GATEWAY_CLIENT,
        audience: LEDGER_AUD,
        scopes,
        ttl_secs: 5,
        email: Some(USER),
    };
    delegation_claims(STS_ISSUER, &g, now(), &Sts::new_jti().unwrap())
}

fn delegation_mint(c: &mut Criterion) {
    let scopes = vec!["ledger:ListAccounts".to_owned()];
    let mut g = c.benchmark_group("delegation_mint");
    for (label, alg, jwt_alg) in [
        ("EdDSA", SigningAlg::EdDSA, Algorithm::EdDSA),
        ("ES256", SigningAlg::ES256, Algorithm::ES256),
    ] {
        // What the gateway runs: `Sts::sign(delegation_claims(..))`, key parsed once at start.
        let sts = Sts::new(STS_ISSUER, alg, Clock::new()).unwrap();
        assert_eq!(
            sts.sign(&mint_claims(&scopes)).unwrap().split('.').count(),
            3
        );
        g.bench_function(format!("sts_sign/{label}"), |b| {
            b.iter(|| sts.sign(&mint_claims(black_box(&scopes))).unwrap())
        });

        // The same PKCS#8 document, signed by aws-lc-rs (parsed once) and by jsonwebtoken.
        let der = SigningKey::generate_pkcs8(alg).unwrap();
        let key = SigningKey::from_pkcs8(&der, "bench-kid").unwrap();
        let enc = match alg {
            SigningAlg::EdDSA => EncodingKey::from_ed_der(&der),
            SigningAlg::ES256 => EncodingKey::from_ec_der(&der),
        };
        let mut header = Header::new(jwt_alg);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some("bench-kid".to_owned());
        // Both must produce tokens the dataplane verifies against the key's JWK.
        let set = jwks::parse_jwks(
            json!({"keys": [key.public_jwk]}).to_string().as_bytes(),
            &[Algorithm::EdDSA, Algorithm::ES256],
        )
        .unwrap();
        let policy = ValidationPolicy {
            issuer: STS_ISSUER.to_owned(),
            audiences: vec![LEDGER_AUD.to_owned()],
            leeway_secs: 5,
            max_lifetime_secs: 60,
            token_types: vec!["at+jwt".to_owned()],
        };
        for tok in [
            key.sign(&mint_claims(&scopes), "at+jwt").unwrap(),
            jsonwebtoken::encode(&header, &mint_claims(&scopes), &enc).unwrap(),
        ] {
            let d = dataplane::auth::jwt::decode(&tok, MAX_TOKEN, &policy.token_types).unwrap();
            let cl = dataplane::auth::jwt::verify(&d, &set, &policy, now()).unwrap();
            assert_eq!(cl.sub, USER);
        }
        g.bench_function(format!("aws_lc_rs_same_pkcs8/{label}"), |b| {
            b.iter(|| {
                key.sign(&mint_claims(black_box(&scopes)), "at+jwt")
                    .unwrap()
            })
        });
        g.bench_function(format!("jsonwebtoken_encode/{label}"), |b| {
            b.iter(|| {
                jsonwebtoken::encode(&header, &mint_claims(black_box(&scopes)), &enc).unwrap()
            })
        });
        // What jsonwebtoken repeats on every signature: parsing the PKCS#8 document.
        g.bench_function(format!("pkcs8_parse_only/{label}"), |b| match alg {
            SigningAlg::EdDSA => b.iter(|| Ed25519KeyPair::from_pkcs8(black_box(&der)).is_ok()),
            SigningAlg::ES256 => b.iter(|| {
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    black_box(&der),
                )
                .is_ok()
            }),
        });
    }
    g.finish();
}

/// A monoio runtime like a shard's (legacy driver: no io_uring needed in the bench).
fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
}

/// The demo's cache key for one user and one tool (as `call_auth` builds it).
fn delegation_key(claims: &dataplane::auth::jwt::Claims, tool: &str, scope: &str) -> Key {
    Key {
        issuer: claims.iss.clone(),
        subject: claims.sub.clone(),
        client: claims.client_id.clone().unwrap_or_default(),
        act: claims
            .act
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        upstream: 0,
        tool: tool.to_owned(),
        scopes: vec![scope.to_owned()],
    }
}

fn user_subject(claims: &dataplane::auth::jwt::Claims) -> Subject {
    Subject::User {
        sub: claims.sub.clone(),
        email: claims.email.clone(),
        act: claims.act.clone(),
        subject_token: None,
    }
}

/// Fill `cache` for `key` through the public API: `obtain` misses, asks the control queue,
/// and this answers with a token valid for an hour (so no refresh-ahead fires while measuring).
fn fill(
    rt: &mut monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>,
    cache: &Rc<DelegationCache>,
    control: &ControlHandle,
    delegate_rx: &mut UnboundedReceiver<DelegateRequest>,
    key: Key,
    subject: Subject,
) {
    rt.block_on(async {
        let (c, ctl) = (cache.clone(), control.clone());
        let task = monoio::spawn(async move {
            c.obtain(&ctl, key, subject, LEDGER_AUD, 5, Duration::from_secs(5))
                .await
        });
        let req = loop {
            if let Ok(r) = delegate_rx.try_recv() {
                break r;
            }
            monoio::time::sleep(Duration::from_millis(1)).await;
        };
        req.reply
            .send(Ok(Delegated {
                token: Arc::<str>::from("eyJhbGciOiJFZERTQSJ9.bench.sig").into(),
                jti: Some("bench-jti".to_owned()),
                exp: now() + 3600,
                scope: req.scopes.join(" "),
            }))
            .unwrap();
        let (_, src) = task.await.unwrap();
        assert_eq!(src, Source::Fresh);
    });
}

fn delegation_cache_hit(c: &mut Criterion) {
    let keys = Keys::generate();
    let iss = issuers(&keys);
    let tok = keys.token("EdDSA", "ed");
    let (AuthOutcome::Valid(claims), _) = verify_uncached(&tok, &iss, MAX_TOKEN, now()) else {
        panic!("token does not verify");
    };
    let mut rt = runtime();
    let cache = Rc::new(DelegationCache::new(Clock::new()));
    let (control, _cmd_rx, mut delegate_rx) = ControlHandle::new();
    let key = delegation_key(&claims, "listAccounts", "ledger:ListAccounts");
    fill(
        &mut rt,
        &cache,
        &control,
        &mut delegate_rx,
        key.clone(),
        user_subject(&claims),
    );
    assert_eq!(cache.len(), 1);
    let mut g = c.benchmark_group("delegation_cache_hit");
    // One iteration = one `obtain` that hits: the key, the subject and the audience are built
    // by the caller as `call_auth` does, then the lookup and the clone of the cached token.
    g.bench_function("obtain_hit_with_key_build", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let k =
                        delegation_key(black_box(&claims), "listAccounts", "ledger:ListAccounts");
                    let (d, src) = cache
                        .obtain(
                            &control,
                            k,
                            user_subject(&claims),
                            LEDGER_AUD,
                            5,
                            Duration::from_secs(5),
                        )
                        .await
                        .unwrap();
                    debug_assert_eq!(src, Source::Cache);
                    black_box(d);
                }
                start.elapsed()
            })
        })
    });
    // The lookup alone: key and subject cloned from prepared values.
    g.bench_function("obtain_hit_prebuilt_key", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let subject = user_subject(&claims);
                let start = Instant::now();
                for _ in 0..iters {
                    let (d, src) = cache
                        .obtain(
                            &control,
                            black_box(&key).clone(),
                            subject.clone(),
                            LEDGER_AUD,
                            5,
                            Duration::from_secs(5),
                        )
                        .await
                        .unwrap();
                    debug_assert_eq!(src, Source::Cache);
                    black_box(d);
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    assert!(
        delegate_rx.try_recv().is_err(),
        "a hit must not ask the control plane"
    );
}

/// The real request path, bytes in and bytes out (`controlplane::testing::Harness`): one HTTP/1.1
/// request on a fresh in-memory connection, through `http1::conn::serve` and the whole MCP
/// pipeline, to a response. The fake clock stands still, so the token and delegation caches hit
/// on every iteration after the first. Audit records are drained as the writer would.
fn pipeline(c: &mut Criterion) {
    let issuer = Rc::new(MemIssuer::new(ISSUER));
    let h = demo_harness(&issuer);
    let tok = issuer.mint(&issuer.claims(USER, AUD, "mcp:tools"));
    let sid = h.session(&tok);
    let call = session_request(&h, &sid, &tok, &call_body());
    let ping = session_request(&h, &sid, &tok, &ping_body());
    // Sanity: both are answered as the gateway answers them.
    let shard = h.shard();
    for (raw, needle) in [(&call, "ACC-1001"), (&ping, "\"result\":{}")] {
        let out = String::from_utf8(h.block_on(exchange(&shard, raw))).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200") && out.contains(needle),
            "{out}"
        );
    }
    let mut g = c.benchmark_group("pipeline");
    for (label, raw) in [
        ("tools_call_delegated/listAccounts", &call),
        ("ping", &ping),
    ] {
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                h.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(exchange(&shard, black_box(raw)).await);
                        let audit = &shard.shared.audit;
                        let mut n = 0;
                        while audit.pop().is_some() {
                            n += 1;
                        }
                        audit.release(n);
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

/// Sealed session ids (`dataplane::session`): what every request with `Mcp-Session-Id` pays.
/// `open` is the work of a replica that has not seen the id yet (then it is cached);
/// `get (cached)` is every later request on that replica.
fn session_seal_open(c: &mut Criterion) {
    use dataplane::session::{Lifetimes, Sealed, SessionKeys, SessionStore, owner_of};
    let old = SessionKeys::new_key_text().unwrap();
    let new = SessionKeys::new_key_text().unwrap();
    let keys = SessionKeys::parse(&format!("k2:{new}\nk1:{old}")).unwrap();
    let owner = owner_of(ISSUER, "alice@example.com");
    let init = r#"{"protocolVersion":"2025-06-18","capabilities":{"roots":{"listChanged":true},"sampling":{}},"clientInfo":{"name":"claude-code","version":"2.1.0"}}"#;
    let sealed = Sealed {
        owner,
        issued_at: now(),
        protocol_version: "2025-06-18".into(),
        client_init: Some(init.into()),
    };
    let id = keys.seal(&sealed).unwrap();
    let life = Lifetimes {
        idle_secs: 3600,
        max_secs: 86_400,
    };
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seal", |b| {
        b.iter(|| keys.seal(black_box(&sealed)).unwrap())
    });
    g.bench_function("open", |b| b.iter(|| keys.open(black_box(&id)).unwrap()));
    let store = SessionStore::new();
    store.get(&keys, &id, &owner, now(), life).unwrap();
    g.bench_function("get (cached)", |b| {
        b.iter(|| {
            store
                .get(&keys, black_box(&id), &owner, now(), life)
                .unwrap()
        })
    });
    g.bench_function("get (first time on this replica)", |b| {
        b.iter_batched(
            SessionStore::new,
            |s| s.get(&keys, black_box(&id), &owner, now(), life).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// DPoP (RFC 9449 §4.3) at the gateway: the whole proof check per request (ES256, EdDSA;
/// its signature is the cost, and it cannot be cached), the RFC 7638 thumbprint alone, and the
/// process-wide replay set's insert.
fn dpop(c: &mut Criterion) {
    use dataplane::auth::dpop::{self, DpopPolicy, Request};
    use dataplane::auth::replay::ReplaySet;
    use testkit::DpopKey;
    const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJjbmYiOnsiamt0IjoieCJ9fQ.c2ln";
    let policy = DpopPolicy::default();
    let uris = vec![dpop::normalize_htu(AUD).unwrap()];
    let mut g = c.benchmark_group("dpop");
    for key in [DpopKey::es256(), DpopKey::ed25519()] {
        let t = now();
        let proof = key.proof("POST", AUD, t, Some(TOKEN));
        let req = Request {
            method: "POST",
            uris: &uris,
            access_token: Some(TOKEN),
            now: t,
        };
        g.bench_function(format!("verify proof {}", key.alg()), |b| {
            b.iter(|| dpop::verify(black_box(&proof), &policy, &req).unwrap())
        });
        g.bench_function(format!("jwk parse + thumbprint {}", key.alg()), |b| {
            b.iter(|| dpop::thumbprint_of(black_box(&key.jwk)).unwrap())
        });
    }
    // Inserts of fresh keys, timed alone: a new set every 500,000 keys (the set's capacity
    // is finite, and building and dropping sets is not what is measured).
    let t = now();
    let mut n: u64 = 0;
    g.bench_function("replay set: first use", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(500_000);
                let set = ReplaySet::new(600_000);
                let keys: Vec<[u8; 32]> = (0..chunk)
                    .map(|_| {
                        n += 1;
                        let mut k = [0u8; 32];
                        k[..8].copy_from_slice(&n.to_le_bytes());
                        k
                    })
                    .collect();
                let start = Instant::now();
                for k in keys {
                    set.first_use(black_box(k), t + 300, t).unwrap();
                }
                spent += start.elapsed();
                left -= chunk;
            }
            spent
        })
    });
    let set = ReplaySet::new(10);
    let mut k = [0u8; 32];
    k[0] = 0xff;
    set.first_use(k, t + 300, t).unwrap();
    g.bench_function("replay set: replay refused", |b| {
        b.iter(|| set.first_use(black_box(k), t + 300, t).unwrap_err())
    });
    g.finish();
}

criterion_group!(
    benches,
    dpop,
    token_verify,
    jsonrpc_parse,
    jsonrpc_sizes,
    routing,
    delegation_mint,
    delegation_cache_hit,
    pipeline,
    session_seal_open
);

criterion_main!(benches);
