use super::*;

#[test]
fn keep_alive_hint_is_whole_seconds_and_made_once() {
    let a = keep_alive_hint(Duration::from_millis(5_999));
    assert_eq!(a, "timeout=5");
    let b = keep_alive_hint(Duration::from_secs(5));
    assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
    assert_eq!(keep_alive_hint(Duration::from_millis(300)), "timeout=0");
}

#[test]
fn the_hint_goes_only_where_the_connection_stays() {
    let headers = |v: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_str(v).unwrap());
        h
    };
    assert!(keeps_alive(Version::HTTP_11, &HeaderMap::new()));
    assert!(keeps_alive(Version::HTTP_11, &headers("keep-alive")));
    assert!(!keeps_alive(Version::HTTP_11, &headers("Upgrade, Close")));
    assert!(!keeps_alive(Version::HTTP_10, &HeaderMap::new()));
    assert!(!keeps_alive(Version::HTTP_2, &HeaderMap::new()));

    let hint = HeaderValue::from_static("timeout=5");
    let mut ok = Response::new(());
    add_hint(&mut ok, hint.clone());
    assert_eq!(ok.headers()["keep-alive"], "timeout=5");
    let mut closing = Response::new(());
    closing
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    add_hint(&mut closing, hint.clone());
    assert!(!closing.headers().contains_key("keep-alive"));
    let mut switching = Response::new(());
    *switching.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    add_hint(&mut switching, hint);
    assert!(!switching.headers().contains_key("keep-alive"));
}
