//! A raw HTTP/2 client for the flood tests, in clear text with prior knowledge: frames
//! written by hand (a 9-byte header, then the payload), request heads in HPACK with
//! literal fields that are never indexed, and a reader that tells how the server ended
//! the connection.

#![allow(unreachable_pub, reason = "test support code")]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What a client sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// GOAWAY's code for a peer that does too much (RFC 9113 §7).
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// RST_STREAM's code for a stream no longer wanted.
pub const CANCEL: u32 = 0x8;

/// One frame: length (24 bits), type, flags, stream id (31 bits), payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    assert!(len < 1 << 24);
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A `GET` head for `path` in HPACK: `:method GET` and `:scheme http` from the static
/// table, `:path` and `:authority` as literals without indexing under static names.
pub fn get_head(path: &str) -> Vec<u8> {
    let mut out = vec![0x82, 0x86];
    literal_with_name_index(&mut out, 4, path.as_bytes());
    literal_with_name_index(&mut out, 1, b"x");
    out
}

/// A literal field without indexing under a new name; both strings shorter than 127
/// bytes (a one-byte length, no Huffman coding).
pub fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    short_string(out, name);
    short_string(out, value);
}

fn literal_with_name_index(out: &mut Vec<u8>, index: u8, value: &[u8]) {
    assert!(index < 15);
    out.push(index);
    short_string(out, value);
}

fn short_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(u8::try_from(s.len()).ok().filter(|n| *n < 127).unwrap());
    out.extend_from_slice(s);
}

/// A SETTINGS frame changing two settings to their initial values: each such frame
/// must be acknowledged.
pub fn settings() -> Vec<u8> {
    let mut payload = Vec::new();
    // SETTINGS_HEADER_TABLE_SIZE 4096, SETTINGS_INITIAL_WINDOW_SIZE 65535.
    payload.extend_from_slice(&[0, 1, 0, 0, 0x10, 0]);
    payload.extend_from_slice(&[0, 4, 0, 0, 0xff, 0xff]);
    frame(SETTINGS, 0, 0, &payload)
}

/// Connects and sends the preface and an empty SETTINGS frame.
pub fn connect(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(PREFACE).unwrap();
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
    stream
}

/// How the server ended a connection.
#[derive(Debug)]
pub struct Ended {
    /// The code of the GOAWAY it sent, if one arrived.
    pub goaway: Option<u32>,
    /// How reading ended: `UnexpectedEof` for the end of the stream, `ConnectionReset`,
    /// or `WouldBlock`/`TimedOut` when the connection was still open at the limit.
    pub how: ErrorKind,
}

impl Ended {
    /// The connection is closed.
    pub fn closed(&self) -> bool {
        !matches!(self.how, ErrorKind::WouldBlock | ErrorKind::TimedOut)
    }
}

/// Reads frames, dropping them, until the server closes the connection or `limit`
/// passes with nothing read.
pub fn read_to_end(mut stream: TcpStream, limit: Duration) -> Ended {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut goaway = None;
    let mut head = [0; 9];
    let mut payload = Vec::new();
    loop {
        if let Err(e) = stream.read_exact(&mut head) {
            return Ended {
                goaway,
                how: e.kind(),
            };
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        payload.resize(len, 0);
        if let Err(e) = stream.read_exact(&mut payload) {
            return Ended {
                goaway,
                how: e.kind(),
            };
        }
        if head[3] == GOAWAY && goaway.is_none() && len >= 8 {
            goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
    }
}

/// Sends one `GET` for `path` on a new connection and returns the response's status
/// when the server encoded it from the static table (200, 204, 206, 304, 400, 404, 500),
/// or `None` when the connection ended first.
pub fn get(port: u16, path: &str) -> Option<u16> {
    let mut stream = connect(port);
    stream
        .write_all(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1,
            &get_head(path),
        ))
        .unwrap();
    stream.set_read_timeout(Some(crate::IO_TIMEOUT)).unwrap();
    let mut head = [0; 9];
    let mut payload = Vec::new();
    loop {
        stream.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        payload.resize(len, 0);
        stream.read_exact(&mut payload).ok()?;
        let id = u32::from_be_bytes(head[5..9].try_into().unwrap());
        if head[3] == HEADERS && id == 1 {
            // The static table's `:status` entries, indexes 8 to 14.
            let status = [200, 204, 206, 304, 400, 404, 500];
            return payload
                .first()
                .and_then(|b| status.get(usize::from(b.wrapping_sub(0x88))))
                .copied();
        }
    }
}
