//! Criterion benchmarks of Warden's hot-path pieces: token verification, JSON-RPC parsing, routing.
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

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::auth::jwt::ValidationPolicy;
use dataplane::auth::{AuthOutcome, IssuerState, TokenCache, jwks, verify_uncached};
use dataplane::jsonrpc::Message;
use dataplane::snapshot::{ToolRoute, ToolTable};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

const ISSUER: &str = "https://issuer.bench.example";
const AUD: &str = "http://127.0.0.1/mcp";
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

criterion_group!(benches, token_verify, jsonrpc_parse, routing);
criterion_main!(benches);
