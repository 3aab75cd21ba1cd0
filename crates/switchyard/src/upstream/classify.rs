//! Error classification: what an upstream failure means for the client
//! (which [`ProxyError`] kind, hence which status).

use super::connect::ConnectError;
use super::{SendError, h1};
use crate::body::ClientBodyError;
use crate::error::{BoxError, ProxyError};

/// Maps a client error to one [`ProxyError`] kind.
pub(crate) fn classify(err: SendError, target: &str) -> ProxyError {
    match err {
        SendError::Client(err) => classify_client(err, target),
        SendError::Head(err) => *err,
        SendError::H1(h1::H1Error::Connect(ConnectError::Timeout(d))) => {
            ProxyError::ConnectTimeout(d)
        }
        SendError::H1(err @ (h1::H1Error::Connect(_) | h1::H1Error::Uri)) => {
            ProxyError::UpstreamConnect {
                target: target.to_owned(),
                source: Box::new(err),
            }
        }
        SendError::H1(err) => classify_exchange(Box::new(err)),
    }
}

fn classify_client(err: hyper_util::client::legacy::Error, target: &str) -> ProxyError {
    if err.is_connect() {
        let source = std::error::Error::source(&err);
        if let Some(ConnectError::Timeout(d)) =
            source.and_then(|s| s.downcast_ref::<ConnectError>())
        {
            return ProxyError::ConnectTimeout(*d);
        }
        return ProxyError::UpstreamConnect {
            target: target.to_owned(),
            source: Box::new(err),
        };
    }
    classify_exchange(Box::new(err))
}

/// Sorts a failure after the connection was made: the client's request body,
/// an oversized or malformed response head, or else a reset.
fn classify_exchange(err: BoxError) -> ProxyError {
    // A failure of the request body is the client's doing.
    let chain = || {
        std::iter::successors(Some(&*err as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
    };
    if let Some(c) = chain().find_map(|e| e.downcast_ref::<ClientBodyError>()) {
        return c.to_proxy_error();
    }
    for h in chain().filter_map(|e| e.downcast_ref::<hyper::Error>()) {
        if h.is_parse_too_large() {
            return ProxyError::UpstreamHeadTooLarge(err);
        }
        if h.is_parse() || h.is_parse_status() {
            return ProxyError::UpstreamMalformed(err);
        }
    }
    ProxyError::UpstreamReset(err)
}
