//! The four listeners (public proxy, REST API, metrics, HTTP→HTTPS redirect): bound
//! from the flags, logged with the addresses they got, and served on the engine's
//! serving API.

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use switchyard::TlsConfig;
use switchyard::server::{ListenOptions, Listener, LocalAddr, Server, serve, service_fn};

use crate::acme::Acme;
use crate::api::{self, ApiState};
use crate::cli::Cli;
use crate::error_pages::{self, ErrorPages};
use crate::metrics::{self, ConnProtocol, Metrics};
use crate::public::{self, Engine, PublicState};
use crate::store::{RouteStore, Target};

/// The keep-alive timeout of the API, metrics and redirect servers: Node's default (CHP
/// sets `--keep-alive-timeout` on the public server alone).
const NODE_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Every listener, bound, before anything is served.
#[derive(Debug)]
pub(crate) struct Bound {
    public: Listener,
    api: Listener,
    metrics: Option<Listener>,
    redirect: Option<Listener>,
}

/// What the servers share.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn RouteStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) engine: Engine,
    pub(crate) error_pages: ErrorPages,
    pub(crate) auth_token: Option<String>,
    /// The public and API listeners' TLS handles (none: plain HTTP).
    pub(crate) public_tls: Option<TlsConfig>,
    pub(crate) api_tls: Option<TlsConfig>,
    pub(crate) stopping: Arc<AtomicBool>,
    pub(crate) access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// Automatic HTTPS: the HTTP-01 challenges the redirect port answers.
    pub(crate) acme: Option<Acme>,
    /// `--max-connections`, or its default from the open-files limit.
    pub(crate) max_connections: usize,
    pub(crate) dashboard: Option<Arc<crate::dashboard::Dashboard>>,
}

/// The servers, serving.
pub(crate) struct Served {
    pub(crate) public: Server<LocalAddr>,
    pub(crate) api: Server<LocalAddr>,
    pub(crate) metrics: Option<Server<LocalAddr>>,
    pub(crate) redirect: Option<Server<LocalAddr>>,
}

// === impl Bound ===

impl Bound {
    /// Binds every listener the flags ask for; the message names the one that failed.
    pub(crate) async fn bind(cli: &Cli) -> Result<Self, String> {
        let public = match &cli.socket {
            Some(path) => Listener::bind_unix(path).await,
            None => bind_tcp(cli.public_ip(), cli.public_port()).await,
        }
        .map_err(|e| format!("cannot listen on the public address: {e}"))?;
        let api = match &cli.api_socket {
            Some(path) => Listener::bind_unix(path).await,
            None => bind_tcp(non_empty(&cli.api_ip), cli.api_port()).await,
        }
        .map_err(|e| format!("cannot listen on the API address: {e}"))?;
        let metrics = match (&cli.metrics_socket, cli.metrics_port) {
            (Some(path), _) => Some(Listener::bind_unix(path).await),
            (None, Some(port)) => Some(bind_tcp(non_empty(&cli.metrics_ip), port).await),
            (None, None) => None,
        }
        .transpose()
        .map_err(|e| format!("cannot listen on the metrics address: {e}"))?;
        let redirect = match cli.redirect_port {
            Some(port) if cli.socket.is_none() && cli.public_port() != 80 => Some(
                bind_tcp(None, port)
                    .await
                    .map_err(|e| format!("cannot listen on the redirect port: {e}"))?,
            ),
            _ => None,
        };
        Ok(Self {
            public,
            api,
            metrics,
            redirect,
        })
    }

    /// CHP's start-up lines, with the addresses as bound (the port the system chose for
    /// port 0).
    /// Written once every listener is served (its threads started), so that a reader of
    /// the lines finds the process as it stays.
    pub(crate) fn startup_lines(
        &self,
        cli: &Cli,
        (public_tls, api_tls): (bool, bool),
        default_target: Option<&Target>,
    ) -> Vec<String> {
        let mut lines = vec![
            format!(
                "Proxying {} to {}",
                self.public.local_addr().url(public_tls),
                default_target.map_or("(no default)", Target::as_str)
            ),
            format!(
                "Proxy API at {}/api/routes",
                self.api.local_addr().url(api_tls)
            ),
        ];
        if let Some(l) = &self.metrics {
            lines.push(format!(
                "Serve metrics at {}/metrics",
                l.local_addr().url(false)
            ));
        }
        if let Some(l) = &self.redirect {
            lines.push(format!(
                "Added HTTP to HTTPS redirection from {} to {}",
                l.local_addr().url(false),
                self.https_port(cli)
            ));
        }
        // Not in CHP: how many threads serve (`--worker-threads`, or the CPUs by default).
        lines.push(match crate::workers(cli) {
            1 => "Serving on one thread".to_owned(),
            n => format!("Serving on {n} worker threads"),
        });
        lines
    }

    /// The listeners as the dashboard lists them: name, address as bound, TLS or not.
    pub(crate) fn describe(
        &self,
        (public_tls, api_tls): (bool, bool),
    ) -> Vec<crate::dashboard::ListenerInfo> {
        let info = |name, listener: &Listener, tls| crate::dashboard::ListenerInfo {
            name,
            address: match listener.local_addr() {
                LocalAddr::Tcp(_) => listener.local_addr().url(tls),
                unix => unix.to_string(),
            },
            tls,
        };
        let mut all = vec![
            info("public", &self.public, public_tls),
            info("api", &self.api, api_tls),
        ];
        all.extend(self.metrics.iter().map(|l| info("metrics", l, false)));
        all.extend(self.redirect.iter().map(|l| info("redirect", l, false)));
        all
    }

    /// Where redirects go: `--redirect-to`, else the public port as bound.
    fn https_port(&self, cli: &Cli) -> u16 {
        cli.redirect_to
            .or_else(|| self.public.local_addr().tcp().map(|a| a.port()))
            .unwrap_or(cli.public_port())
    }

    /// Serves every listener.
    pub(crate) fn serve(self, cli: &Cli, shared: Shared) -> Served {
        let limits = limits(cli);
        // The public port also speaks HTTP/2 (not in CHP): ALPN `h2` over TLS, prior
        // knowledge in clear text. WebSockets stay on HTTP/1.1.
        // The public listeners (and the redirect one) are the ones anyone can fill: each
        // has `--max-connections`; the API and metrics ports stay reachable when they
        // are full.
        // With more than one worker, threads of their own serve the public port (each a
        // current-thread runtime with its own share of the target pool); with one, the
        // main thread does.
        let workers = NonZeroUsize::new(crate::workers(cli)).filter(|n| n.get() > 1);
        let public_options = limits
            .clone()
            .keep_alive_timeout(cli.keep_alive_timeout())
            .max_connections(shared.max_connections)
            .threads(workers);
        // The API, metrics and redirect servers speak HTTP/1.1 only, as in CHP.
        let api_options = limits.http2(false).keep_alive_timeout(NODE_KEEP_ALIVE);
        let https_port = self.https_port(cli);
        let redirect = self.redirect.map(|listener| {
            serve_redirect(
                listener,
                https_port,
                shared.acme.clone(),
                public_options.clone().http2(false),
            )
        });
        let api = serve_api(
            self.api,
            ApiState {
                store: shared.store.clone(),
                auth_token: shared.auth_token,
                host_routing: cli.host_routing,
                metrics: shared.metrics.clone(),
                dashboard: shared.dashboard,
            },
            api_options.clone().tls(shared.api_tls),
        );
        let public = serve_public(
            self.public,
            PublicState {
                store: shared.store,
                host_routing: cli.host_routing,
                include_prefix: cli.include_prefix,
                error_pages: shared.error_pages,
                metrics: shared.metrics.clone(),
                engine: shared.engine,
                stopping: shared.stopping,
                access_log: shared.access_log,
                route_stats: !cli.no_dashboard,
                request_ids: (!cli.no_request_id)
                    .then(|| crate::request_id::RequestIds::new(cli.request_id_header.clone())),
            },
            public_options.tls(shared.public_tls),
        );
        // Before the metrics server, whose first scrape shows the public connections.
        shared.metrics.watch_public(public.stats());
        let metrics = self
            .metrics
            .map(|listener| serve_metrics(listener, shared.metrics.clone(), api_options));
        Served {
            public,
            api,
            metrics,
            redirect,
        }
    }
}

/// Writes [`Bound::startup_lines`]. From this module: a quiet `--log-level` still lets
/// its info lines through, the ports among them.
pub(crate) fn log_startup(lines: Vec<String>) {
    for line in lines {
        tracing::info!("{line}");
    }
}

/// What every listener shares: the head limits and timeout, the `Keep-Alive` hint (as
/// Node's servers send it), the drain deadline.
fn limits(cli: &Cli) -> ListenOptions {
    let to_usize = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    ListenOptions::default()
        .request_head_timeout(cli.request_head_timeout())
        .keep_alive_header(true)
        .max_header_size(to_usize(cli.max_header_size))
        .max_uri_length(to_usize(cli.max_uri_length))
        .max_headers(to_usize(cli.max_headers))
        // A client that stops reading is dropped as a silent body is.
        .send_timeout(cli.body_idle_timeout())
        .shutdown_timeout(Duration::from_millis(cli.shutdown_timeout))
}

fn serve_public(
    listener: Listener,
    state: PublicState,
    options: ListenOptions,
) -> Server<LocalAddr> {
    let state = Arc::new(state);
    serve(
        listener,
        move |conn| {
            let state = state.clone();
            // Dropped with the connection's service: its protocol's count goes down.
            let mark = Arc::new(ConnProtocol::new(state.metrics.clone()));
            service_fn(move |req: http::Request<hyper::body::Incoming>| {
                mark.saw(req.version());
                public::handle(state.clone(), req, conn)
            })
        },
        options,
    )
}

fn serve_api(listener: Listener, state: ApiState, options: ListenOptions) -> Server<LocalAddr> {
    let router = api::router(Arc::new(state));
    serve(listener, move |_conn| router.clone(), options)
}

fn serve_metrics(
    listener: Listener,
    metrics: Arc<Metrics>,
    options: ListenOptions,
) -> Server<LocalAddr> {
    serve(
        listener,
        move |_conn| {
            let metrics = metrics.clone();
            service_fn(move |req| {
                let response = metrics_response(&metrics, &req);
                async move { Ok::<_, Infallible>(response) }
            })
        },
        options,
    )
}

/// The HTTP→HTTPS redirect; with ACME's HTTP-01, its challenges are answered first.
fn serve_redirect(
    listener: Listener,
    https_port: u16,
    acme: Option<Acme>,
    options: ListenOptions,
) -> Server<LocalAddr> {
    serve(
        listener,
        move |_conn| {
            let acme = acme.clone();
            service_fn(move |req| {
                let acme = acme.clone();
                async move {
                    if let Some(acme) = &acme
                        && let Some(answer) = acme.http01(&req).await
                    {
                        return Ok::<_, Infallible>(answer);
                    }
                    Ok(public::redirect(&req, https_port))
                }
            })
        },
        options,
    )
}

/// `GET /metrics` exactly (a query string is 404, as in CHP); anything else 404.
fn metrics_response<B>(
    metrics: &Metrics,
    req: &http::Request<B>,
) -> http::Response<switchyard::Body> {
    let is_metrics = req
        .uri()
        .path_and_query()
        .map(http::uri::PathAndQuery::as_str)
        == Some("/metrics");
    if !is_metrics || (req.method() != http::Method::GET && req.method() != http::Method::HEAD) {
        return error_pages::plain(http::StatusCode::NOT_FOUND);
    }
    let mut response = http::Response::new(switchyard::Body::from(metrics.render()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

fn non_empty(ip: &str) -> Option<&str> {
    Some(ip).filter(|ip| !ip.is_empty())
}

/// Binds `host:port`; no host means all interfaces (IPv6 dual-stack, else IPv4), and
/// `localhost` prefers 127.0.0.1, as Node resolved it for CHP. Port 0: one the system
/// picks.
async fn bind_tcp(host: Option<&str>, port: u16) -> std::io::Result<Listener> {
    let candidates: Vec<SocketAddr> = match host {
        None => vec![
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        ],
        Some(h) => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            let mut addrs: Vec<_> = tokio::net::lookup_host((h, port)).await?.collect();
            addrs.sort_by_key(|a| !a.is_ipv4());
            addrs
        }
    };
    Listener::bind(&candidates[..]).await
}
