//! The structural checks of a large JSON-RPC body (nesting, repeated member names) in one
//! simd-json pass, instead of serde_json's byte scan and second full parse; any doubt falls
//! back to those, so both paths refuse and accept the same bodies.
//!
//! Why and from which size: `docs/performance.md`, "serde_json vs simd-json".

use std::cell::RefCell;

use simd_json::{Node, StaticNode};

use super::{MAX_DEPTH, Names};

/// Bodies of at least this many bytes take the simd-json checks: from 473 bytes on the tape
/// was ahead in instructions (0.68×) and in CPU time in every round; at 113–160 bytes the
/// two were within noise of each other (`docs/performance.md`, "serde_json vs simd-json by
/// size").
pub const THRESHOLD: usize = 512;

/// Depth from which the serde_json path decides instead: its byte scan refuses beyond
/// `MAX_DEPTH` and its duplicate walk stops at serde_json's recursion limit, so bodies near
/// those are left to the path that defines the behaviour (this also bounds the walk's
/// recursion).
const FALLBACK_DEPTH: usize = MAX_DEPTH - 28;

/// Reused per thread (a shard's): the copy simd-json parses in place, and its buffers.
/// Larger than this, they are dropped after use rather than kept for the next body.
const KEEP_BYTES: usize = 1024 * 1024;

thread_local! {
    static SCRATCH: RefCell<(Vec<u8>, simd_json::Buffers)> = RefCell::new(Default::default());
}

/// What the one pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Valid JSON, nested well within [`MAX_DEPTH`], no object repeating a member name
    /// (outside the envelope's `result`/`error`).
    Clean,
    /// The same, except that an object repeats a member name.
    Duplicate,
    /// Not decided here (invalid JSON for simd-json, a depth near the limit, a number or a
    /// surrogate escape serde_json could refuse): the serde_json path must decide.
    Unsure,
}

/// Whether `body` may hold a `\uD800`–`\uDFFF` escape: simd-json accepts a lone surrogate
/// that serde_json refuses, so such bodies are left to serde_json (a false positive, e.g. an
/// escaped backslash before `ud800`, only costs the fallback).
fn surrogate_escape(body: &[u8]) -> bool {
    memchr::memmem::find_iter(body, b"\\u").any(|i| {
        matches!(body.get(i + 2), Some(b'd' | b'D'))
            && matches!(
                body.get(i + 3),
                Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
            )
    })
}

/// One simd-json pass over `body` (a copy of it: simd-json parses in place).
pub fn check(body: &[u8]) -> Checked {
    if surrogate_escape(body) {
        return Checked::Unsure;
    }
    SCRATCH.with(|cell| {
        let Ok(mut guard) = cell.try_borrow_mut() else {
            return Checked::Unsure;
        };
        let (copy, buffers) = &mut *guard;
        copy.clear();
        copy.extend_from_slice(body);
        let out = match simd_json::to_tape_with_buffers(copy, buffers) {
            Ok(tape) => {
                let mut walk = Walk {
                    nodes: &tape.0,
                    at: 0,
                    duplicate: false,
                };
                match walk.value(1, true, true) {
                    Ok(()) if walk.at != walk.nodes.len() => Checked::Unsure,
                    Ok(()) if walk.duplicate => Checked::Duplicate,
                    Ok(()) => Checked::Clean,
                    Err(Unsure) => Checked::Unsure,
                }
            }
            Err(_) => Checked::Unsure,
        };
        if copy.capacity() > KEEP_BYTES {
            *guard = Default::default();
        }
        out
    })
}

/// The walk stopped: the serde_json path decides.
struct Unsure;

/// A cursor over the tape. A repeated name does not stop it: a body both repeating a name
/// and nested too deep must be refused for its depth, as the serde_json path does.
struct Walk<'t, 'input> {
    nodes: &'t [Node<'input>],
    at: usize,
    duplicate: bool,
}

impl Walk<'_, '_> {
    /// The value at the cursor, `depth` being the depth a container there would have;
    /// `names` whether its objects' member names are checked; `top` the envelope.
    fn value(&mut self, depth: usize, names: bool, top: bool) -> Result<(), Unsure> {
        let node = self.nodes.get(self.at).ok_or(Unsure)?;
        self.at += 1;
        match *node {
            Node::String(_) | Node::Static(StaticNode::Null | StaticNode::Bool(_)) => Ok(()),
            Node::Static(StaticNode::I64(_) | StaticNode::U64(_)) => Ok(()),
            // serde_json refuses a number that overflows an f64; simd-json may not.
            Node::Static(StaticNode::F64(f)) if f.is_finite() => Ok(()),
            Node::Static(_) => Err(Unsure),
            Node::Array { len, .. } => {
                self.enter(depth)?;
                for _ in 0..len {
                    self.value(depth + 1, names, false)?;
                }
                Ok(())
            }
            Node::Object { len, .. } => {
                self.enter(depth)?;
                let mut seen = Names::default();
                for _ in 0..len {
                    let Some(Node::String(k)) = self.nodes.get(self.at) else {
                        return Err(Unsure);
                    };
                    let k: &str = k;
                    self.at += 1;
                    let relayed = top && (k == "result" || k == "error");
                    if names && !seen.insert(k.into()) {
                        self.duplicate = true;
                    }
                    self.value(depth + 1, names && !relayed, false)?;
                }
                Ok(())
            }
        }
    }

    fn enter(&self, depth: usize) -> Result<(), Unsure> {
        if depth >= FALLBACK_DEPTH {
            Err(Unsure)
        } else {
            Ok(())
        }
    }
}
