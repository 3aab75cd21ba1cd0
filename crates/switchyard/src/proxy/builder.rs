//! [`ProxyBuilder`]: options, connection options, hooks, upstreams, retries.

use std::sync::Arc;

use http::{Response, request};

use super::{Inner, Proxy};
use crate::balance::Upstreams;
use crate::body::Body;
use crate::drain::Drain;
use crate::error::ConfigError;
use crate::hooks::{FnHooks, Hooks};
use crate::options::{ClientOptions, Options};
use crate::retry::Retry;
use crate::target::Target;
use crate::upstream::Upstream;

/// Builds a [`Proxy`].
#[derive(Debug)]
pub struct ProxyBuilder<H = FnHooks> {
    options: Options,
    client: ClientOptions,
    hooks: H,
    upstreams: Option<Upstreams>,
    retry: Option<Retry>,
}

// === impl ProxyBuilder ===

impl<H: Hooks> ProxyBuilder<H> {
    pub(super) fn new(options: Options, client: ClientOptions, hooks: H) -> Self {
        Self {
            options,
            client,
            hooks,
            upstreams: None,
            retry: None,
        }
    }

    /// Replaces all request options.
    #[must_use]
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Changes request options in place.
    #[must_use]
    pub fn configure(mut self, f: impl FnOnce(&mut Options)) -> Self {
        f(&mut self.options);
        self
    }

    /// Replaces all connection options.
    #[must_use]
    pub fn client_options(mut self, client: ClientOptions) -> Self {
        self.client = client;
        self
    }

    /// Changes connection options in place.
    #[must_use]
    pub fn configure_client(mut self, f: impl FnOnce(&mut ClientOptions)) -> Self {
        f(&mut self.client);
        self
    }

    /// The default target.
    #[must_use]
    pub fn target(mut self, target: Target) -> Self {
        self.options.target = Some(target);
        self
    }

    /// Several upstreams, used when a request names no target (neither the
    /// call nor the options): see [`Upstreams`].
    #[must_use]
    pub fn upstreams(mut self, upstreams: Upstreams) -> Self {
        self.upstreams = Some(upstreams);
        self
    }

    /// Retries for every request (none by default); a
    /// [`Forward`](crate::Forward) call may set its own.
    #[must_use]
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Uses these hooks (replacing any closures set before).
    pub fn hooks<H2: Hooks>(self, hooks: H2) -> ProxyBuilder<H2> {
        ProxyBuilder {
            options: self.options,
            client: self.client,
            hooks,
            upstreams: self.upstreams,
            retry: self.retry,
        }
    }

    /// Builds the proxy.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for invalid options or unreadable TLS material.
    pub fn build(self) -> Result<Proxy<H>, ConfigError> {
        self.options.validate()?;
        let upstream = Upstream::new(&self.client)?;
        if let Some(pool) = &self.upstreams {
            pool.ensure_health_checks(&upstream);
        }
        Ok(Proxy {
            inner: Arc::new(Inner {
                options: Arc::new(self.options),
                upstream,
                hooks: self.hooks,
                upstreams: self.upstreams,
                retry: self.retry.map(Arc::new),
                tunnels: Drain::new(),
            }),
        })
    }
}

impl ProxyBuilder<FnHooks> {
    /// `proxyReq`: edit each outgoing request head.
    #[must_use]
    pub fn on_proxy_request(
        mut self,
        f: impl Fn(&mut request::Parts) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.proxy_request = Some(Arc::new(f));
        self
    }

    /// `proxyReqWs`: edit each outgoing WebSocket upgrade head.
    #[must_use]
    pub fn on_proxy_request_ws(
        mut self,
        f: impl Fn(&mut request::Parts) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.proxy_request_ws = Some(Arc::new(f));
        self
    }

    /// `proxyRes`: edit each upstream response before it is rewritten and sent.
    #[must_use]
    pub fn on_proxy_response(
        mut self,
        f: impl Fn(&mut Response<Body>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.proxy_response = Some(Arc::new(f));
        self
    }

    /// [`Hooks::on_end`]: called once when each request is over, with its
    /// [`Outcome`](crate::Outcome).
    #[must_use]
    pub fn on_end(mut self, f: impl Fn(&crate::Outcome<'_>) + Send + Sync + 'static) -> Self {
        self.hooks.end = Some(Arc::new(f));
        self
    }
}
