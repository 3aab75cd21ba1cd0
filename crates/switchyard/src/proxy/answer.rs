//! Stage 3 of a call: the upstream's response head as the client gets it.
//!
//! An upgrade's answer goes to the tunnel ([`upgrade`]); any other loses its
//! hop-by-hop fields, goes through `on_proxy_response` and the `Location` and
//! cookie rewrites, and its body gets the call's timers, the balancer's lease
//! and `on_end`.

use std::time::Duration;

use http::header::HeaderValue;
use http::{Response, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::end::{self, Ending};
use super::{Proxy, headers, rewrite, upgrade};
use crate::balance::{Lease, Picked};
use crate::body::{Body, BodyIdleTimeout};
use crate::error::ProxyError;
use crate::hooks::{Flow, Hooks};
use crate::options::Options;

/// What preparation leaves for the answer.
pub(super) struct Answering {
    /// The client's half of a WebSocket upgrade.
    pub(super) on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The Host the client used, for `auto_rewrite`.
    pub(super) client_host: Option<HeaderValue>,
}

// === impl Proxy ===

impl<H: Hooks> Proxy<H> {
    /// The client's response to a call whose upstream answered `res`, from
    /// the prepared call's parts (taken where they are: moving the whole call
    /// would copy it).
    pub(super) fn answer(
        &self,
        (mut ctx, ending): (H::Ctx, Option<Ending>),
        res: Response<Incoming>,
        picked: &mut Picked,
        answering: &mut Answering,
        deadline: Option<(Instant, Duration)>,
        opts: &Options,
    ) -> Response<Body> {
        if let Some(on_upgrade) = answering.on_upgrade.take() {
            let pending = upgrade::Pending {
                on_upgrade,
                response: res,
            };
            return upgrade::finish(&self.inner, ctx, ending, pending);
        }
        let (mut head, body) = res.into_parts();
        headers::response_headers(&mut head.headers, false);
        // The upstream's HTTP version is a property of that hop: the client
        // gets the version of its own connection (an HTTP/1.0 origin must not
        // turn the client's keep-alive connection into a 1.0 one).
        head.version = Version::HTTP_11;
        let mut res = Response::from_parts(head, Body::from(body));
        if let Flow::Respond(res) = self.inner.hooks.on_proxy_response(&mut ctx, &mut res) {
            return end::watch_response(&self.inner, res, ctx, ending);
        }
        if !opts.self_handle_response {
            let status = res.status();
            let target = &picked.target;
            let client_host = answering.client_host.as_ref();
            rewrite::location(res.headers_mut(), status, target, client_host, opts);
            rewrite::cookies(
                res.headers_mut(),
                &opts.cookie_domain_rewrite,
                &opts.cookie_path_rewrite,
            );
        }
        self.finish_body(res, (ctx, ending), opts, deadline, picked.take_lease())
    }

    /// The body's timers (`proxy_timeout` and `body_timeout` as idle limits,
    /// `total_timeout` as a deadline), the lease, and the end's watch.
    fn finish_body(
        &self,
        res: Response<Body>,
        (ctx, ending): (H::Ctx, Option<Ending>),
        opts: &Options,
        deadline: Option<(Instant, Duration)>,
        lease: Option<Lease>,
    ) -> Response<Body> {
        let (head, mut body) = res.into_parts();
        for limit in [opts.proxy_timeout, opts.body_timeout]
            .into_iter()
            .flatten()
        {
            body = body.with_idle_timeout(limit, |d| Box::new(BodyIdleTimeout(d)));
        }
        if let Some((at, limit)) = deadline {
            body = body.with_deadline(at, limit, |d| Box::new(ProxyError::TotalTimeout(d)));
        }
        if let Some(lease) = lease {
            // In flight (for least-outstanding balancing) until the body ends.
            body = body.on_end(move |_| drop(lease));
        }
        end::watch_response(&self.inner, Response::from_parts(head, body), ctx, ending)
    }
}
