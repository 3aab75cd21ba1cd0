//! One error type for everything that can go wrong while proxying a request,
//! and one place that maps it to a status code ([`ProxyError::status`]).
//! The table of kinds and statuses is in the crate docs.

use std::time::Duration;

use http::StatusCode;

/// A boxed error, as used for sources and body errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Which side of the proxy an error came from, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSide {
    /// The client (downstream) side.
    Downstream,
    /// The upstream server side.
    Upstream,
    /// The proxy itself or its configuration.
    Internal,
}

/// An error while proxying one request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Neither `target` nor `forward` was configured.
    #[error("must set target or forward")]
    NoTarget,
    /// The request cannot be forwarded as sent.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request target is longer than the listener allows
    /// ([`HeadLimits::max_uri_length`](crate::HeadLimits)).
    #[error("request target longer than {limit} bytes")]
    UriTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request head (request line and header fields) is larger than the
    /// listener allows ([`HeadLimits::max_header_size`](crate::HeadLimits)).
    #[error("request head larger than {limit} bytes")]
    HeadersTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Connecting to the upstream failed (refused, unreachable, DNS, TLS).
    #[error("connect to upstream {target} failed")]
    UpstreamConnect {
        /// The upstream, as `scheme://authority` (never shown to clients).
        target: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The connection to the upstream was not established in time.
    #[error("connect to upstream timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The upstream sent no response head in time (`proxy_timeout` or
    /// `headers_timeout`).
    #[error("upstream timed out after {0:?}")]
    UpstreamTimeout(Duration),
    /// The whole exchange took longer than `total_timeout`. Before the
    /// response head this is the error of the call; after it, the response
    /// body fails with it.
    #[error("request not complete after {0:?}")]
    TotalTimeout(Duration),
    /// The upstream closed or reset the connection before answering.
    #[error("upstream connection closed before a response")]
    UpstreamReset(#[source] BoxError),
    /// The upstream's answer was not valid HTTP.
    #[error("malformed upstream response")]
    UpstreamMalformed(#[source] BoxError),
    /// The upstream's response head is larger than
    /// [`ClientOptions::max_response_header_size`](crate::ClientOptions) (or
    /// has more header fields than the client accepts).
    #[error("upstream response head too large")]
    UpstreamHeadTooLarge(#[source] BoxError),
    /// The protocol switch with the upstream failed.
    #[error("protocol upgrade failed")]
    Upgrade(#[source] BoxError),
    /// The request asks for an upgrade that the target's protocol cannot carry.
    #[error("upgrade not supported to this target")]
    UnsupportedUpgrade,
    /// The client was idle for longer than the incoming `timeout`.
    #[error("client idle for more than {0:?}")]
    ClientTimeout(Duration),
    /// The client went away before the response could be written.
    #[error("client disconnected")]
    ClientGone,
    /// The call's own options cannot work together (a replacement body on
    /// a GET or HEAD, for instance): a bug in the calling code.
    #[error("invalid call: {0}")]
    InvalidCall(&'static str),
    /// Something that should not happen.
    #[error("internal proxy error")]
    Internal(#[source] BoxError),
}

// === impl ProxyError ===

impl ProxyError {
    /// The status code a client gets for this error, or `None` when nothing
    /// should be written (the client is gone or timed out).
    pub fn status(&self) -> Option<StatusCode> {
        Some(match self {
            Self::NoTarget | Self::InvalidCall(_) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UpstreamConnect { .. }
            | Self::UpstreamReset(_)
            | Self::UpstreamMalformed(_)
            | Self::UpstreamHeadTooLarge(_)
            | Self::Upgrade(_) => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout(_) | Self::UpstreamTimeout(_) | Self::TotalTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::UnsupportedUpgrade => StatusCode::NOT_IMPLEMENTED,
            Self::ClientTimeout(_) | Self::ClientGone => return None,
        })
    }

    /// Which side caused the error.
    pub fn side(&self) -> ErrorSide {
        match self {
            Self::BadRequest(_)
            | Self::UriTooLong { .. }
            | Self::HeadersTooLarge { .. }
            | Self::ClientTimeout(_)
            | Self::ClientGone => ErrorSide::Downstream,
            Self::UpstreamConnect { .. }
            | Self::ConnectTimeout(_)
            | Self::UpstreamTimeout(_)
            | Self::TotalTimeout(_)
            | Self::UpstreamReset(_)
            | Self::UpstreamMalformed(_)
            | Self::UpstreamHeadTooLarge(_)
            | Self::Upgrade(_) => ErrorSide::Upstream,
            Self::NoTarget
            | Self::UnsupportedUpgrade
            | Self::InvalidCall(_)
            | Self::Internal(_) => ErrorSide::Internal,
        }
    }

    /// True for the errors that mean the upstream could not be reached at all
    /// (nothing was sent), which are always safe to retry.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::UpstreamConnect { .. } | Self::ConnectTimeout(_))
    }

    /// True for timeouts of any kind.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::ConnectTimeout(_)
                | Self::UpstreamTimeout(_)
                | Self::TotalTimeout(_)
                | Self::ClientTimeout(_)
        )
    }

    /// The short, generic text sent to clients for this error. It never
    /// contains addresses or the upstream's own words.
    pub fn public_message(&self) -> &'static str {
        match self.status() {
            Some(StatusCode::BAD_REQUEST) => "Bad Request",
            Some(StatusCode::URI_TOO_LONG) => "URI Too Long",
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE) => "Request Header Fields Too Large",
            Some(StatusCode::BAD_GATEWAY) => "Bad Gateway",
            Some(StatusCode::GATEWAY_TIMEOUT) => "Gateway Timeout",
            Some(StatusCode::NOT_IMPLEMENTED) => "Not Implemented",
            _ => "Internal Server Error",
        }
    }
}

/// An error and its causes on one line: `a: b: c`, with repeated texts
/// (hyper-util repeats its source's message) said once.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = e.source();
    }
    out
}

/// An error in the proxy's configuration, found when it is built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A target URL could not be used.
    #[error("invalid target {input:?}: {reason}")]
    Target {
        /// The text that was given.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A TLS setting could not be used.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// An option has a value that cannot work.
    #[error("invalid option {name}: {reason}")]
    Option {
        /// The option's name.
        name: &'static str,
        /// Why it was rejected.
        reason: String,
    },
}

/// An error of the stand-alone server (`listen`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address that was asked for.
        addr: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The TLS settings of the listener are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> BoxError {
        Box::new(std::io::Error::from(kind))
    }

    #[test]
    fn every_kind_maps_to_one_status() {
        let d = Duration::from_secs(1);
        let cases: Vec<(ProxyError, Option<u16>)> = vec![
            (ProxyError::NoTarget, Some(500)),
            (ProxyError::BadRequest("x"), Some(400)),
            (ProxyError::UriTooLong { limit: 1 }, Some(414)),
            (ProxyError::HeadersTooLarge { limit: 1 }, Some(431)),
            (
                ProxyError::UpstreamConnect {
                    target: "http://10.0.0.1:1".into(),
                    source: io(std::io::ErrorKind::ConnectionRefused),
                },
                Some(502),
            ),
            (ProxyError::ConnectTimeout(d), Some(504)),
            (ProxyError::UpstreamTimeout(d), Some(504)),
            (ProxyError::TotalTimeout(d), Some(504)),
            (ProxyError::InvalidCall("x"), Some(500)),
            (
                ProxyError::UpstreamReset(io(std::io::ErrorKind::ConnectionReset)),
                Some(502),
            ),
            (
                ProxyError::UpstreamMalformed(io(std::io::ErrorKind::InvalidData)),
                Some(502),
            ),
            (
                ProxyError::UpstreamHeadTooLarge(io(std::io::ErrorKind::InvalidData)),
                Some(502),
            ),
            (
                ProxyError::Upgrade(io(std::io::ErrorKind::Other)),
                Some(502),
            ),
            (ProxyError::UnsupportedUpgrade, Some(501)),
            (ProxyError::ClientTimeout(d), None),
            (ProxyError::ClientGone, None),
            (
                ProxyError::Internal(io(std::io::ErrorKind::Other)),
                Some(500),
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.status().map(|s| s.as_u16()), want, "{err:?}");
        }
    }

    #[test]
    fn public_message_never_contains_the_target() {
        let err = ProxyError::UpstreamConnect {
            target: "http://10.1.2.3:8080".into(),
            source: io(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(!err.public_message().contains("10.1.2.3"));
        assert_eq!(err.side(), ErrorSide::Upstream);
        assert!(err.is_connect());
    }
}
