//! What a pooled HTTP/1 connection records of the request in flight, so that
//! a request the target closed the connection under can be sent again.
//!
//! The connection's [`Stream`](super::connect::Stream) notes, as bytes pass,
//! whether an answer has begun since the request was written and, when the
//! pool asks for it, the bytes of the request. It hands both over when it is
//! dropped, which happens as the connection ends. Per request, one flag is
//! shared and a few hundred bytes copied; a copy of each request made in case
//! (a `HeaderMap` clone, and its drop) costs about a thousand instructions,
//! more than the proxy's whole header pass.

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// The most bytes of a request kept to send it again (its head, and a body
/// held in memory); past it, the request is not sent again.
const KEEP_LIMIT: usize = 256 * 1024;

/// The pool's side of a recorded connection.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    /// Keep the bytes of the next request written.
    keeping: AtomicBool,
    ended: Mutex<Option<Ended>>,
    dropped: Notify,
}

/// What a connection recorded when it ended.
#[derive(Debug)]
pub(crate) struct Ended {
    /// A byte came in after the last request was written.
    pub(crate) answered: bool,
    /// That request's bytes, if they were kept whole; else empty.
    pub(crate) request: Vec<u8>,
}

/// The stream's side: kept in the stream, no lock on the way.
#[derive(Debug)]
pub(crate) struct Record {
    wire: Arc<Wire>,
    answered: bool,
    keep: bool,
    kept: Vec<u8>,
}

// === impl Wire ===

impl Wire {
    /// Before a request goes out: whether its bytes are to be kept.
    pub(crate) fn keep_next(&self, keep: bool) {
        self.keeping.store(keep, Ordering::Relaxed);
    }

    /// What the connection recorded, once its stream is dropped.
    pub(crate) async fn ended(&self) -> Ended {
        loop {
            let dropped = self.dropped.notified();
            if let Some(ended) = self.lock().take() {
                return ended;
            }
            dropped.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Ended>> {
        self.ended.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Record ===

impl Record {
    /// A record for a new connection, and the pool's handle on it.
    pub(crate) fn new() -> (Self, Arc<Wire>) {
        let wire = Arc::new(Wire::default());
        let record = Self {
            wire: wire.clone(),
            answered: false,
            keep: false,
            kept: Vec::new(),
        };
        (record, wire)
    }

    /// Bytes were read.
    #[inline]
    pub(crate) fn read(&mut self) {
        self.answered = true;
    }

    /// The first `n` bytes of `bufs` were written. The first write after an
    /// answer begins the next request (HTTP/1 does not pipeline here); the
    /// first request of a connection is never sent again, so never kept.
    #[inline]
    pub(crate) fn wrote(&mut self, bufs: &[IoSlice<'_>], n: usize) {
        if self.answered {
            self.answered = false;
            self.kept.clear();
            self.keep = self.wire.keeping.load(Ordering::Relaxed);
        }
        if self.keep {
            self.keep_bytes(bufs, n);
        }
    }

    fn keep_bytes(&mut self, bufs: &[IoSlice<'_>], mut n: usize) {
        if self.kept.len() + n > KEEP_LIMIT {
            self.keep = false;
            self.kept = Vec::new();
            return;
        }
        for buf in bufs {
            let take = n.min(buf.len());
            self.kept.extend_from_slice(&buf[..take]);
            n -= take;
            if n == 0 {
                break;
            }
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let request = if self.keep {
            std::mem::take(&mut self.kept)
        } else {
            Vec::new()
        };
        *self.wire.lock() = Some(Ended {
            answered: self.answered,
            request,
        });
        self.wire.dropped.notify_one();
    }
}
