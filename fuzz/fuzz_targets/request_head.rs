//! The request pass on arbitrary heads: hygiene, path join, header pass.
//! It must never panic, and what it lets through must be clean: no
//! hop-by-hop field survives, the path keeps the target's prefix, and the
//! framing headers agree with the body.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard::{Options, Target};

#[derive(Arbitrary, Debug)]
struct Input {
    method: String,
    uri: String,
    version: u8,
    headers: Vec<(String, Vec<u8>)>,
    body_len: Option<u64>,
    target: u8,
    flags: u8,
}

const TARGETS: &[&str] = &[
    "http://127.0.0.1:9000",
    "http://up.test:8080/base?t=1",
    "https://[::1]:8443/x/",
    "unix+http://%2Ftmp%2Fs.sock/p",
];

fuzz_target!(|input: Input| {
    let mut b = http::Request::builder()
        .method(input.method.as_str())
        .uri(input.uri.as_str())
        .version(match input.version % 3 {
            0 => http::Version::HTTP_10,
            1 => http::Version::HTTP_11,
            _ => http::Version::HTTP_2,
        })
        .extension(switchyard::ConnInfo::new(
            ([127, 0, 0, 1], 4000).into(),
            input.flags & 64 != 0,
        ));
    for (name, value) in &input.headers {
        b = b.header(name.as_str(), value.as_slice());
    }
    let Ok(req) = b.body(()) else { return };
    let (mut parts, ()) = req.into_parts();
    let target = Target::parse(TARGETS[usize::from(input.target) % TARGETS.len()]).unwrap();
    let mut opts = Options::default();
    opts.xfwd = input.flags & 1 != 0;
    opts.change_origin = input.flags & 2 != 0;
    opts.prepend_path = input.flags & 4 == 0;
    opts.ignore_path = input.flags & 8 != 0;
    opts.to_proxy = input.flags & 16 != 0;
    let Ok(path) = switchyard::fuzzing::request_head(&mut parts, input.body_len, &target, &opts)
    else {
        return;
    };
    for name in ["connection", "keep-alive", "proxy-connection", "upgrade", "http2-settings"] {
        assert!(!parts.headers.contains_key(name), "{name} survived");
    }
    if opts.prepend_path {
        assert!(path.starts_with(target.path()), "{path} lost the prefix");
    }
    let has_len = parts.headers.contains_key("content-length");
    let chunked = parts.headers.contains_key("transfer-encoding");
    assert!(!(has_len && chunked), "both framings");
    if input.body_len.is_some_and(|n| n > 0) {
        assert!(has_len, "a known body length must be sent");
    }
});
