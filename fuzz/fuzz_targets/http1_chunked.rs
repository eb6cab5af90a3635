//! The chunked-body decoder (`http1::parse::ChunkedDecoder::decode`) on arbitrary bytes.
//!
//! Differential: the body fed whole and the same bytes fed in pieces (as reads arrive,
//! driven the way `http1::conn` drives it: decode the buffer, drain what was used) must
//! agree on the decoded body, on where the body ends, and on whether it is refused
//! (with the same status).
#![no_main]

use dataplane::http1::ChunkedDecoder;
use dataplane::http1::HttpError;
use libfuzzer_sys::fuzz_target;

const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Decoded body and the number of input bytes the body occupied.
    Done(Vec<u8>, usize),
    /// Needs more input; the body decoded so far.
    More(Vec<u8>),
    Refused(u16),
}

fn run(input: &[u8], cuts: &[usize]) -> Outcome {
    let mut dec = ChunkedDecoder::default();
    let mut body = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut used_total = 0;
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(fed, input.len());
        buf.extend_from_slice(&input[fed..cut]);
        fed = cut;
        match dec.decode(&buf, &mut body, MAX_BODY) {
            Ok(used) => {
                assert!(used <= buf.len());
                buf.drain(..used);
                used_total += used;
            }
            Err(HttpError { status, .. }) => return Outcome::Refused(status),
        }
        if dec.is_done() {
            return Outcome::Done(body, used_total);
        }
    }
    Outcome::More(body)
}

fuzz_target!(|data: &[u8]| {
    // First bytes choose the split points, the rest is the body.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let ncuts = usize::from(n % 8);
    if rest.len() < ncuts {
        return;
    }
    let (seeds, input) = rest.split_at(ncuts);
    let mut cuts: Vec<usize> = seeds
        .iter()
        .map(|s| usize::from(*s) * input.len() / 255)
        .collect();
    cuts.sort_unstable();
    let whole = run(input, &[]);
    let split = run(input, &cuts);
    match (&whole, &split) {
        // The reason may differ (the first error seen), the status must not.
        (Outcome::Refused(a), Outcome::Refused(b)) => assert_eq!(a, b, "{cuts:?}"),
        _ => assert_eq!(whole, split, "cuts {cuts:?}"),
    }
    // Byte at a time: the worst case of a slow client.
    if input.len() <= 512 {
        let every: Vec<usize> = (1..input.len()).collect();
        let bytewise = run(input, &every);
        match (&whole, &bytewise) {
            (Outcome::Refused(a), Outcome::Refused(b)) => assert_eq!(a, b),
            _ => assert_eq!(whole, bytewise),
        }
    }
});
