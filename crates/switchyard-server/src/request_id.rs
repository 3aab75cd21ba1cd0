//! Request IDs (`--request-id-header`, `--no-request-id`): a client's ID is kept when it
//! is a sane token, else replaced; a request without one gets one. The ID goes to the
//! target with the request, back to the client with the answer, and into the access log
//! and the error lines.
//!
//! A made ID is a per-process random prefix and a counter, in hex (32 characters): no
//! system call and no lock per request, unique within the process and, by the prefix,
//! across processes and restarts.

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The longest client ID kept.
pub(crate) const MAX_LEN: usize = 128;

/// The server's request ID rules.
#[derive(Debug)]
pub(crate) struct RequestIds {
    header: HeaderName,
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new(header: HeaderName) -> Self {
        // std's RandomState is seeded from the system's random source once per process.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Self {
            header,
            prefix: h.finish(),
            next: AtomicU64::new(0),
        }
    }

    /// The header the IDs travel in.
    pub(crate) fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The request's ID: the client's when it sent exactly one sane one, else a new one,
    /// put in `headers` in place of whatever the client sent.
    pub(crate) fn take(&self, headers: &mut HeaderMap) -> HeaderValue {
        let mut sent = headers.get_all(&self.header).iter();
        if let (Some(v), None) = (sent.next(), sent.next())
            && is_sane(v.as_bytes())
        {
            return v.clone();
        }
        let id = self.make();
        headers.insert(self.header.clone(), id.clone());
        id
    }

    fn make(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 32];
        hex(&mut buf[..16], self.prefix);
        hex(&mut buf[16..], n);
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// 1 to 128 bytes of an RFC 9110 token (`tchar`: letters, digits and
/// ``!#$%&'*+-.^_`|~``): nothing that could split a log line, a header or a quoted field.
pub(crate) fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn hex(out: &mut [u8], n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 60 - 4 * i;
        *slot = DIGITS[((n >> shift) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_others_replaced() {
        let ids = RequestIds::new(HeaderName::from_static("x-request-id"));
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123_XYZ.7"));
        assert_eq!(ids.take(&mut h), "abc-123_XYZ.7");
        for bad in ["", "has space", "quote\"", "a,b", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert("x-request-id", HeaderValue::from_str(bad).unwrap());
            let id = ids.take(&mut h);
            assert_ne!(id, bad);
            assert_eq!(h["x-request-id"], id);
            assert!(is_sane(id.as_bytes()));
        }
        let mut two = HeaderMap::new();
        two.append("x-request-id", HeaderValue::from_static("a"));
        two.append("x-request-id", HeaderValue::from_static("b"));
        let id = ids.take(&mut two);
        assert_eq!(two.get_all("x-request-id").iter().count(), 1);
        assert_eq!(id.len(), 32);
    }

    #[test]
    fn made_ids_differ() {
        let ids = RequestIds::new(HeaderName::from_static("x-request-id"));
        let a = ids.take(&mut HeaderMap::new());
        let b = ids.take(&mut HeaderMap::new());
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[..16], b.as_bytes()[..16]);
    }
}
