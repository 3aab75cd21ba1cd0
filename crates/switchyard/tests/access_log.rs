//! reply-from's test disable-request-logging. Alone in its test
//! binary: tracing caches each callsite's interest globally, so a scoped
//! subscriber would race with tests running on other threads.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use switchyard::Proxy;

async fn run(f: switchyard::Forward) {
    let res = within(f.into_future()).await;
    body_bytes(res.into_body()).await;
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::default()).unwrap()
}

/// reply-from's test disable-request-logging: one access log line per call by
/// default, none with `disable_request_logging`.
#[tokio::test]
async fn request_logging_can_be_disabled() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let w = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (b, _) = recording_backend().await;
    let proxy = Proxy::to(&b.url()).unwrap();
    run(proxy.forward(get("/"), "/logged")).await;
    run(proxy.forward(get("/"), "/silent").disable_request_logging()).await;
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(log.matches("switchyard::access").count(), 1, "{log}");
    assert!(
        log.contains("/logged") && log.contains("status=200"),
        "{log}"
    );
    assert!(!log.contains("/silent"), "{log}");
}
