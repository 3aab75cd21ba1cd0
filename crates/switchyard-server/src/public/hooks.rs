//! The engine the public listener calls, built from the flags, and the server's hooks
//! on it: `last_activity` and the WebSocket counts, the metrics and the access log at
//! each request's end.

use std::sync::Arc;
use std::time::Duration;

use crate::access_log::{AccessLog, Ended, Facts};
use crate::cli::Cli;
use crate::metrics::Metrics;
use crate::store::Route;

use super::{Engine, error_status, touch};

/// Builds the engine straight from the flags: its request options, and its upstream
/// connections, whose TLS configuration (`--client-ssl-*`, `--insecure`) the engine
/// builds once. The message names the flags at fault.
pub(crate) fn engine(
    cli: &Cli,
    metrics: Arc<Metrics>,
    access_log: Option<Arc<AccessLog>>,
) -> Result<Engine, String> {
    let to_usize = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    switchyard::Proxy::builder()
        .configure(|o| {
            o.xfwd = cli.x_forward;
            o.prepend_path = cli.prepend_path;
            o.change_origin = cli.change_origin;
            o.auto_rewrite = cli.auto_rewrite;
            o.public_hosts.clone_from(&cli.public_host);
            o.protocol_rewrite.clone_from(&cli.protocol_rewrite);
            for (name, value) in &cli.custom_header {
                o.headers.append(name.clone(), value.clone());
            }
            o.timeout = unless_zero(cli.timeout);
            o.proxy_timeout = unless_zero(cli.proxy_timeout);
            o.body_timeout = unless_zero(Some(cli.body_idle_timeout));
            o.request_body_timeout = o.body_timeout;
            o.ws = true;
        })
        .configure_client(|c| {
            c.secure = !cli.insecure;
            c.ca = cli.client_ssl_ca.clone().map(switchyard::Pem::File);
            c.client_cert = cli
                .client_ssl_cert
                .clone()
                .zip(cli.client_ssl_key.clone())
                .map(|(cert, key)| (switchyard::Pem::File(cert), switchyard::Pem::File(key)));
            c.max_response_header_size = to_usize(cli.max_response_header_size);
            c.max_response_headers = to_usize(cli.max_response_headers);
            c.pool_idle_timeout = Some(cli.pool_idle_timeout());
        })
        .hooks(ActivityHooks {
            // Timing each request to its end costs a little; only a metrics server and the
            // dashboard show it.
            observes_end: access_log.is_some()
                || cli.metrics_port.is_some()
                || cli.metrics_socket.is_some()
                || !cli.no_dashboard,
            // Open tunnels are counted per route only when their end is seen.
            counts_tunnels: !cli.no_dashboard,
            metrics,
            access_log,
        })
        .build()
        .map_err(|e| match e {
            switchyard::ConfigError::Tls(_) => {
                format!("https targets (--client-ssl-ca, --client-ssl-cert, --client-ssl-key): {e}")
            }
            _ => e.to_string(),
        })
}

/// A timeout flag in milliseconds, where 0 means none, as when the flag is absent (CHP
/// tests `--timeout` and `--proxy-timeout` for truth).
fn unless_zero(ms: Option<u64>) -> Option<Duration> {
    ms.filter(|ms| *ms > 0).map(Duration::from_millis)
}

/// Records WebSocket activity on the route the request was routed to, and writes the
/// access log entry of each request the engine ends.
#[derive(Debug)]
pub(crate) struct ActivityHooks {
    /// Whether the end of each request is watched (for the access log, the metrics or
    /// the dashboard).
    observes_end: bool,
    /// Whether each route's open WebSockets are counted (for the dashboard).
    counts_tunnels: bool,
    metrics: Arc<Metrics>,
    access_log: Option<Arc<AccessLog>>,
}

/// What the hooks keep of a request.
#[derive(Debug, Default)]
pub(crate) struct RequestCtx {
    /// The route, for a WebSocket's activity.
    route: Option<Arc<Route>>,
    /// The access log's facts, when there is an access log.
    facts: Option<Arc<Facts>>,
    /// The HTTP version the client spoke.
    version: http::Version,
    /// A tunnel opened and was counted in its route's stats.
    tunnel_counted: bool,
}

/// The route of a request, carried to the hooks in its extensions.
#[derive(Clone)]
pub(super) struct RouteOf(pub(super) Arc<Route>);

impl switchyard::Hooks for ActivityHooks {
    type Ctx = RequestCtx;

    fn new_ctx(&self) -> Self::Ctx {
        RequestCtx::default()
    }

    fn on_start(
        &self,
        ctx: &mut Self::Ctx,
        req: &http::request::Parts,
        _target: &switchyard::Target,
    ) -> switchyard::Flow {
        ctx.route = req.extensions.get::<RouteOf>().map(|r| r.0.clone());
        ctx.version = req.version;
        if self.access_log.is_some() {
            ctx.facts = req.extensions.get::<Arc<Facts>>().cloned();
        }
        switchyard::Flow::Continue
    }

    fn observes_end(&self) -> bool {
        self.observes_end
    }

    fn on_open(&self, ctx: &mut Self::Ctx) {
        if self.counts_tunnels
            && let Some(route) = &ctx.route
        {
            route.stats().tunnel_opened();
            ctx.tunnel_counted = true;
        }
    }

    fn on_end(&self, ctx: Self::Ctx, outcome: &switchyard::Outcome<'_>) {
        if ctx.tunnel_counted
            && let Some(route) = &ctx.route
        {
            route.stats().tunnel_closed();
        }
        // A failure the server answers with an error page is logged by `handle`, with
        // the status the client got, which is the one timed here.
        let answered = match outcome.proxy_error() {
            Some(e) if outcome.status.is_none() && e.status().is_some() => {
                Some(error_status(e).as_u16())
            }
            _ => None,
        };
        self.metrics.traffic.record(
            crate::metrics::Protocol::of(ctx.version, outcome),
            outcome,
            answered,
        );
        if let (Some(log), Some(facts), None) = (&self.access_log, ctx.facts, answered) {
            log.record(&facts, &Ended::from_outcome(outcome));
        }
    }

    fn on_tunnel_data(&self, ctx: &Self::Ctx, from_client: bool, _n: usize) {
        if from_client && let Some(route) = &ctx.route {
            touch(route, &self.metrics);
        }
    }
}
