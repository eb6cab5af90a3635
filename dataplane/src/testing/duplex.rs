//! An in-memory, single-threaded byte pipe with monoio's rent-based I/O traits, in safe code.
//!
//! monoio's buffer traits hand out raw pointers (`IoBufMut::write_ptr`, `IoBuf::read_ptr`), so
//! a stream usually needs `unsafe` to fill or drain them. This one does not:
//! - reads copy through monoio's own `impl AsyncReadRent for &[u8]`, which fills any
//!   `IoBufMut` (and `IoVecBufMut`) safely on our behalf;
//! - writes find the bytes of the buffer they are given by downcasting it (every `IoBuf` is
//!   `'static`) to the buffer types Warden writes: `Vec<u8>`, `Box<[u8]>`, static slices and
//!   `Slice`/`SliceMut` views of those (`write_all` wraps its buffer in a `Slice`). Any other
//!   buffer type is refused with `ErrorKind::Unsupported`, which a test surfaces at once;
//!   `writev` is refused the same way (nothing on the request path uses it).

use std::any::Any;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, Slice, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};

/// One direction of a duplex: bytes written by one end, not yet read by the other.
#[derive(Debug, Default)]
struct Pipe {
    buf: Vec<u8>,
    /// The writing end shut down or was dropped: reads see EOF once `buf` is drained.
    closed: bool,
    /// The reading end was dropped: writes fail with `BrokenPipe`.
    reader_gone: bool,
    /// The reader waiting for bytes or EOF.
    waker: Option<Waker>,
}

impl Pipe {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// One end of an in-memory connection (see [`duplex`]). `!Send`: both ends live on one
/// monoio thread. Unbounded: a write never waits, which suits tests, not production.
#[derive(Debug)]
pub struct MemStream {
    rx: Rc<RefCell<Pipe>>,
    tx: Rc<RefCell<Pipe>>,
}

/// Two connected ends: what one writes, the other reads.
pub fn duplex() -> (MemStream, MemStream) {
    let a = Rc::new(RefCell::new(Pipe::default()));
    let b = Rc::new(RefCell::new(Pipe::default()));
    (
        MemStream {
            rx: a.clone(),
            tx: b.clone(),
        },
        MemStream { rx: b, tx: a },
    )
}

impl MemStream {
    /// Stop writing (a TCP half-close): the peer reads EOF after what was already written.
    pub fn close_write(&self) {
        let mut tx = self.tx.borrow_mut();
        tx.closed = true;
        tx.wake();
    }

    /// Whether an idle connection still looks usable: nothing unread, the peer still there.
    /// (What `upstream::Conn::is_idle_open` asks of a socket with `MSG_PEEK`.)
    pub fn is_idle_open(&self) -> bool {
        let rx = self.rx.borrow();
        rx.buf.is_empty() && !rx.closed && !self.tx.borrow().reader_gone
    }

    /// Everything readable now, without waiting (the peer may still write more).
    pub fn take_available(&self) -> Vec<u8> {
        std::mem::take(&mut self.rx.borrow_mut().buf)
    }

    /// Read until the peer closes its end.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            self.readable().await;
            let mut rx = self.rx.borrow_mut();
            if rx.buf.is_empty() && rx.closed {
                return out;
            }
            out.append(&mut rx.buf);
        }
    }

    /// Wait until there are bytes to read or the peer closed its end.
    async fn readable(&self) {
        poll_fn(|cx| {
            let mut rx = self.rx.borrow_mut();
            if !rx.buf.is_empty() || rx.closed {
                Poll::Ready(())
            } else {
                rx.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    /// Append `bytes` for the peer to read.
    fn push(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut tx = self.tx.borrow_mut();
        if tx.reader_gone || tx.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "in-memory peer closed",
            ));
        }
        tx.buf.extend_from_slice(bytes);
        tx.wake();
        Ok(bytes.len())
    }

    /// Hand the unread bytes to monoio's `&[u8]` reader, then keep what it did not take.
    fn refill(&self, data: Vec<u8>, used: usize) {
        let mut rx = self.rx.borrow_mut();
        if used < data.len() {
            let mut rest = data[used..].to_vec();
            rest.append(&mut rx.buf);
            rx.buf = rest;
        }
    }
}

impl Drop for MemStream {
    fn drop(&mut self) {
        self.close_write();
        let mut rx = self.rx.borrow_mut();
        rx.reader_gone = true;
        rx.buf.clear();
    }
}

impl AsyncReadRent for MemStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.readable().await;
        let data = std::mem::take(&mut self.rx.borrow_mut().buf);
        let mut src: &[u8] = &data;
        // Completes at once: monoio's slice reader copies synchronously.
        let (res, buf) = src.read(buf).await;
        self.refill(data, *res.as_ref().unwrap_or(&0));
        (res, buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.readable().await;
        let data = std::mem::take(&mut self.rx.borrow_mut().buf);
        let mut src: &[u8] = &data;
        let (res, buf) = src.readv(buf).await;
        self.refill(data, *res.as_ref().unwrap_or(&0));
        (res, buf)
    }
}

impl AsyncWriteRent for MemStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let res = match bytes_of(&buf) {
            Some(b) => self.push(b),
            None => Err(unsupported()),
        };
        (res, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf_vec: T) -> BufResult<usize, T> {
        (Err(unsupported()), buf_vec)
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.close_write();
        Ok(())
    }
}

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "MemStream cannot read this buffer type safely (see testing::duplex)",
    )
}

/// The initialised bytes of `buf`, for the buffer types Warden writes.
fn bytes_of<T: IoBuf>(buf: &T) -> Option<&[u8]> {
    let any: &dyn Any = buf;
    if let Some(b) = plain(any) {
        return Some(b);
    }
    if let Some(s) = any.downcast_ref::<SliceMut<Vec<u8>>>() {
        return Some(s);
    }
    if let Some(s) = any.downcast_ref::<Slice<Vec<u8>>>() {
        return s.get_ref().get(s.begin()..s.end());
    }
    if let Some(s) = any.downcast_ref::<Slice<Box<[u8]>>>() {
        return s.get_ref().get(s.begin()..s.end());
    }
    if let Some(s) = any.downcast_ref::<Slice<&'static [u8]>>() {
        return s.get_ref().get(s.begin()..s.end());
    }
    None
}

fn plain(any: &dyn Any) -> Option<&[u8]> {
    if let Some(v) = any.downcast_ref::<Vec<u8>>() {
        return Some(v);
    }
    if let Some(b) = any.downcast_ref::<Box<[u8]>>() {
        return Some(b);
    }
    if let Some(s) = any.downcast_ref::<&'static [u8]>() {
        return Some(s);
    }
    if let Some(s) = any.downcast_ref::<&'static str>() {
        return Some(s.as_bytes());
    }
    None
}
