//! The SSE reader's pure parser (`upstream::take_event`) on arbitrary bytes.
//!
//! Differential: events taken from the stream received whole equal the events taken when
//! the same bytes arrive in pieces (each read appended, then every complete event taken),
//! as `SseStream::next_event` does; and what is left unparsed is the same bytes.
#![no_main]

use dataplane::upstream::{SseEvent, take_event};
use libfuzzer_sys::fuzz_target;

fn run(input: &[u8], cuts: &[usize]) -> (Vec<SseEvent>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut events = Vec::new();
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(fed, input.len());
        buf.extend_from_slice(&input[fed..cut]);
        fed = cut;
        while let Some(ev) = take_event(&mut buf) {
            events.push(ev);
        }
    }
    (events, buf)
}

fuzz_target!(|data: &[u8]| {
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
    assert_eq!(whole, split, "cuts {cuts:?}");
    if input.len() <= 512 {
        let every: Vec<usize> = (1..input.len()).collect();
        let bytewise = run(input, &every);
        assert_eq!(whole, bytewise);
    }
});
