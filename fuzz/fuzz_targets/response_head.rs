//! The response pass on arbitrary heads: Location and Set-Cookie rewriting
//! never panic, and never turn one Set-Cookie line into another count.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard::{CookieRewrite, Options, Target};

#[derive(Arbitrary, Debug)]
struct Input {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    client_host: Vec<u8>,
    domain: String,
    path: String,
    flags: u8,
}

fuzz_target!(|input: Input| {
    let Ok(status) = http::StatusCode::from_u16(input.status) else { return };
    let mut headers = http::HeaderMap::new();
    for (name, value) in &input.headers {
        let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        headers.append(n, v);
    }
    let cookies_before = headers.get_all("set-cookie").iter().count();
    let target = Target::parse("http://127.0.0.1:9000/").unwrap();
    let mut opts = Options::default();
    opts.auto_rewrite = input.flags & 1 != 0;
    if input.flags & 2 != 0 {
        opts.host_rewrite = Some("front.test:8443".into());
    }
    if input.flags & 4 != 0 {
        opts.protocol_rewrite = Some("https".into());
    }
    opts.cookie_domain_rewrite = CookieRewrite::map([(input.domain.clone(), "d.test".to_owned())]);
    opts.cookie_path_rewrite = CookieRewrite::all(input.path.clone());
    let client_host = http::HeaderValue::from_bytes(&input.client_host).ok();
    switchyard::fuzzing::response_head(&mut headers, status, &target, client_host.as_ref(), &opts);
    assert_eq!(headers.get_all("set-cookie").iter().count(), cookies_before);
});
