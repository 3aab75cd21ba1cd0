//! Error responses of the public listener, chosen as CHP chooses them: `--error-target`,
//! `--error-path`, the built-in pages, and the plain-text last resort.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use switchyard::Body;

/// How long an error page may take to arrive from `--error-target` before the plain
/// default is served instead.
const ERROR_TARGET_TIMEOUT: Duration = Duration::from_secs(10);

const PAGE_404: &str = include_str!("error_pages/404.html");
const PAGE_503: &str = include_str!("error_pages/503.html");
const PAGE_ERROR: &str = include_str!("error_pages/error.html");

/// Where error pages come from.
#[derive(Debug)]
pub(crate) struct ErrorPages {
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// CHP's default `--error-path` (its `lib/error` directory), compiled in.
    Builtin,
    /// `--error-path DIR`: `DIR/<code>.html`, else `DIR/error.html`, read per request.
    Dir(PathBuf),
    /// `--error-target URL`: fetched through an engine of its own (default options: no
    /// `X-Forwarded-*`, no custom headers), so `https://` and `http+unix://` error servers
    /// work as targets do.
    Target {
        target: switchyard::Target,
        engine: switchyard::Proxy,
    },
}

// === impl ErrorPages ===

impl ErrorPages {
    /// Built-in pages.
    pub(crate) fn builtin() -> Self {
        Self {
            source: Source::Builtin,
        }
    }

    /// Pages from a directory.
    pub(crate) fn dir(path: PathBuf) -> Self {
        Self {
            source: Source::Dir(path),
        }
    }

    /// Pages fetched from an error server (`GET <target>/<code>?url=<request url>`).
    pub(crate) fn target(target: switchyard::Target) -> Result<Self, switchyard::ConfigError> {
        let engine = switchyard::Proxy::builder().build()?;
        Ok(Self {
            source: Source::Target { target, engine },
        })
    }

    /// The error response for `status` on a request whose original URL was `req_url`.
    pub(crate) async fn respond(&self, status: StatusCode, req_url: &str) -> Response<Body> {
        match &self.source {
            Source::Builtin => {
                let page = match status.as_u16() {
                    404 => PAGE_404,
                    503 => PAGE_503,
                    _ => PAGE_ERROR,
                };
                html(status, Body::from(page))
            }
            Source::Dir(dir) => {
                for name in [format!("{}.html", status.as_u16()), "error.html".to_owned()] {
                    let path = dir.join(&name);
                    match tokio::fs::read(&path).await {
                        Ok(bytes) => return html(status, Body::from(bytes)),
                        Err(_) => tracing::debug!("No error file {}", path.display()),
                    }
                }
                plain(status)
            }
            Source::Target { target, engine } => {
                let path = error_target_path(status.as_u16(), req_url);
                tracing::debug!("Requesting custom error page: {target} {path}");
                match fetch_error_target(engine, target, path).await {
                    Ok(upstream) => {
                        let (parts, body) = upstream.into_parts();
                        let mut response = Response::new(body);
                        *response.status_mut() = status;
                        for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
                            if let Some(v) = parts.headers.get(&name) {
                                response.headers_mut().insert(name, v.clone());
                            }
                        }
                        response
                    }
                    Err(e) => {
                        tracing::error!("Failed to get custom error page: {e}");
                        plain(status)
                    }
                }
            }
        }
    }
}

/// `/<code>?url=<URLSearchParams-encoded original url>`, joined to the error target's own
/// path by the engine.
pub(crate) fn error_target_path(code: u16, req_url: &str) -> String {
    let mut url = format!("/{code}?url=");
    for &b in req_url.as_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                url.push(char::from(b))
            }
            b' ' => url.push('+'),
            _ => {
                let _ = std::fmt::Write::write_fmt(&mut url, format_args!("%{b:02X}"));
            }
        }
    }
    url
}

/// Fetches an error page: a bodiless GET of `path` on the error target, through the engine.
async fn fetch_error_target(
    engine: &switchyard::Proxy,
    target: &switchyard::Target,
    path: String,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let request = Request::get(path).body(Body::empty())?;
    let response = tokio::time::timeout(
        ERROR_TARGET_TIMEOUT,
        engine.try_web(request, switchyard::Call::new().target(target)),
    )
    .await
    .map_err(|_| "timed out")?
    .map_err(|e| switchyard::error_chain(&e))?;
    Ok(response)
}

fn html(status: StatusCode, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
}

/// Status line text as the whole body, no `Content-Type` (Node's `http.STATUS_CODES`).
pub(crate) fn plain(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::from(status.canonical_reason().unwrap_or("Error")));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_target_path_is_url_search_params_encoded() {
        assert_eq!(
            error_target_path(404, "/foo/bar?a=b&c=%20d"),
            "/404?url=%2Ffoo%2Fbar%3Fa%3Db%26c%3D%2520d"
        );
        assert_eq!(error_target_path(503, "/a b~"), "/503?url=%2Fa+b%7E");
    }

    #[tokio::test]
    async fn builtin_and_plain_pages() {
        let pages = ErrorPages::builtin();
        let r = pages.respond(StatusCode::NOT_FOUND, "/x").await;
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/html");
        let r = ErrorPages::dir("/nonexistent-dir".into())
            .respond(StatusCode::SERVICE_UNAVAILABLE, "/x")
            .await;
        assert_eq!(r.status(), 503);
        assert!(r.headers().get(header::CONTENT_TYPE).is_none());
    }
}
