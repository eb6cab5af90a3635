//! Test helper: run a closure under the `warden` binary's text log format and return what it wrote.

use std::io;
use std::sync::mpsc::{Sender, channel};

/// A writer that hands each write to a channel (no lock on the logging path).
#[derive(Clone)]
struct ToChannel(Sender<Vec<u8>>);

impl io::Write for ToChannel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ToChannel {
    type Writer = ToChannel;
    fn make_writer(&'a self) -> ToChannel {
        self.clone()
    }
}

/// Everything `f` logged, formatted as `warden` formats text logs (no colours).
pub fn captured(f: impl FnOnce()) -> String {
    let (tx, rx) = channel();
    let sub = tracing_subscriber::fmt()
        .with_writer(ToChannel(tx))
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    tracing::subscriber::with_default(sub, f);
    let bytes: Vec<u8> = rx.try_iter().flatten().collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
