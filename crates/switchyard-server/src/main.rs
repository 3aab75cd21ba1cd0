//! `switchyard`: a drop-in replacement for configurable-http-proxy (CHP) 5.3.0.
//!
//! Wiring only: parse flags, build the store, TLS, error pages and metrics, bind every
//! listener (any failure exits non-zero before serving), serve, stop on SIGTERM/SIGINT.

mod api;
mod cli;
mod error_pages;
mod logging;
mod metrics;
mod path;
mod public;
mod store;
mod time;
mod tls;

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::{Map, Value};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::api::ApiState;

/// mimalloc instead of glibc's malloc: a proxied request allocates and frees
/// a few dozen blocks (hyper's 8 KiB read buffers among them, past glibc's
/// per-thread cache), and glibc's general path was a tenth of the process's
/// instructions per request (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use crate::cli::{Cli, Env, StorageBackend};
use crate::error_pages::ErrorPages;
use crate::metrics::Metrics;
use crate::public::{ForwardOptions, PublicState};
use crate::store::memory::MemoryStore;
use crate::store::redis::{RedisConfig, RedisStore};
use crate::store::{RouteStore, Target};
use switchyard::TlsConfig;
use switchyard::server::{ListenOptions, Listener, LocalAddr, Server, serve};

/// Exit code for invalid usage and start-up failures (CHP uses 1 for both).
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_FAILURE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(message) = cli.validate() {
        eprintln!("error: {message}");
        return ExitCode::from(EXIT_FAILURE);
    }
    logging::init(cli.log_level);
    let runtime = match build_runtime(cli.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The runtime: one thread per core by default; with one worker thread a current-thread
/// runtime, which serves everything on the main thread with no work-stealing between threads.
/// A timeout flag in milliseconds, where 0 means none, as when the flag is absent (CHP
/// tests `--timeout` and `--proxy-timeout` for truth).
fn unless_zero(ms: Option<u64>) -> Option<Duration> {
    ms.filter(|ms| *ms > 0).map(Duration::from_millis)
}

fn build_runtime(worker_threads: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(n));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

async fn run(cli: Cli) -> Result<(), String> {
    // Install the handlers first: a SIGTERM right after start-up must stop us gracefully.
    let term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    let env = Env::from_process();
    if env.auth_token.is_none() {
        tracing::warn!("REST API is not authenticated.");
    }
    if cli.ip.as_deref() == Some("*") {
        tracing::warn!(
            "Interpreting ip='*' as all-interfaces. Preferred usage is 0.0.0.0 for all IPv4 or '' for all-interfaces."
        );
    }

    // TLS first: a bad certificate must stop us before any port is bound.
    tls::warn_ignored(&cli);
    let protocol = cli.ssl_protocol.as_deref();
    let public_tls = tls::server_config(
        &tls::ServerTls {
            flag: "--ssl",
            key: cli.ssl_key.as_deref(),
            cert: cli.ssl_cert.as_deref(),
            ca: cli.ssl_ca.as_deref(),
            request_cert: cli.ssl_request_cert,
            reject_unauthorized: cli.ssl_reject_unauthorized,
            passphrase: env.ssl_key_passphrase.is_some(),
        },
        protocol,
    )
    .map_err(|e| e.to_string())?;
    let api_tls = tls::server_config(
        &tls::ServerTls {
            flag: "--api-ssl",
            key: cli.api_ssl_key.as_deref(),
            cert: cli.api_ssl_cert.as_deref(),
            ca: cli.api_ssl_ca.as_deref(),
            request_cert: cli.api_ssl_request_cert,
            reject_unauthorized: cli.api_ssl_reject_unauthorized,
            passphrase: env.api_ssl_key_passphrase.is_some(),
        },
        protocol,
    )
    .map_err(|e| e.to_string())?;
    // Validates the --client-ssl-* and --insecure flags before any port is bound;
    // the engine builds its own upstream TLS from the same files.
    tls::client_config(&cli).map_err(|e| e.to_string())?;
    if cli.auto_rewrite {
        tracing::info!("AutoRewrite of Location headers enabled.");
    } else if !cli.public_host.is_empty() {
        tracing::warn!("--public-host has no effect without --auto-rewrite");
    }
    if cli.change_origin {
        tracing::info!("Change Origin of host headers enabled.");
    }
    if let Some(proto) = &cli.protocol_rewrite {
        tracing::info!("ProtocolRewrite enabled. Rewriting to {proto}");
    }

    let metrics = Arc::new(Metrics::new());
    // The store is ready (every route loaded) before any port is bound or served.
    let store: Arc<dyn RouteStore> = match &cli.storage_backend {
        Some(StorageBackend::Redis(url)) => {
            let config = RedisConfig {
                url: url.clone(),
                prefix: cli.redis_key_prefix.clone(),
                password: env.redis_password.clone(),
            };
            tracing::info!(
                "Route store: Redis at {} (key prefix {:?})",
                store::redis::redact(url),
                config.prefix
            );
            Arc::new(RedisStore::connect(&config).await?)
        }
        _ => match &cli.state_file {
            Some(path) => Arc::new(MemoryStore::with_state_file(path.clone())?),
            None => Arc::new(MemoryStore::new()),
        },
    };
    let default_target = match &cli.default_target {
        Some(t) => Some(Target::parse(t).map_err(|e| format!("--default-target {t}: {e}"))?),
        None => None,
    };
    let error_pages = match (&cli.error_target, &cli.error_path) {
        (Some(target), _) => {
            let parsed =
                Target::parse(target).map_err(|e| format!("--error-target {target}: {e}"))?;
            ErrorPages::target(parsed.engine().clone())
                .map_err(|e| format!("--error-target {target}: {e}"))?
        }
        (None, Some(dir)) => ErrorPages::dir(dir.clone()),
        (None, None) => ErrorPages::builtin(),
    };

    // Bind everything; any failure exits non-zero (CHP kept running half up).
    let public_listener = match &cli.socket {
        Some(path) => Listener::bind_unix(path).await,
        None => bind_tcp(cli.public_ip(), cli.public_port()).await,
    }
    .map_err(|e| format!("cannot listen on the public address: {e}"))?;
    let api_listener = match &cli.api_socket {
        Some(path) => Listener::bind_unix(path).await,
        None => {
            bind_tcp(
                Some(&cli.api_ip)
                    .filter(|ip| !ip.is_empty())
                    .map(String::as_str),
                cli.api_port(),
            )
            .await
        }
    }
    .map_err(|e| format!("cannot listen on the API address: {e}"))?;
    let metrics_listener = match (&cli.metrics_socket, cli.metrics_port) {
        (Some(path), _) => Some(Listener::bind_unix(path).await),
        (None, Some(port)) => Some(
            bind_tcp(
                Some(&cli.metrics_ip)
                    .filter(|ip| !ip.is_empty())
                    .map(String::as_str),
                port,
            )
            .await,
        ),
        (None, None) => None,
    }
    .transpose()
    .map_err(|e| format!("cannot listen on the metrics address: {e}"))?;
    let https_port = cli.redirect_to.unwrap_or(cli.public_port());
    let redirect_listener = match cli.redirect_port {
        Some(port) if cli.socket.is_none() && cli.public_port() != 80 => Some(
            bind_tcp(None, port)
                .await
                .map_err(|e| format!("cannot listen on the redirect port: {e}"))?,
        ),
        _ => None,
    };

    if let Some(target) = &default_target {
        tracing::info!("Adding route / -> {target}");
        let mut data = Map::new();
        data.insert(
            "target".to_owned(),
            Value::String(target.as_str().to_owned()),
        );
        store
            .add("/", target.clone(), data)
            .await
            .map_err(|e| e.to_string())?;
    }
    tracing::info!(
        "Proxying {} to {}",
        public_listener.local_addr().url(public_tls.is_some()),
        default_target
            .as_ref()
            .map_or("(no default)", Target::as_str)
    );
    tracing::info!(
        "Proxy API at {}/api/routes",
        api_listener.local_addr().url(api_tls.is_some())
    );
    if let Some(l) = &metrics_listener {
        tracing::info!("Serve metrics at {}/metrics", l.local_addr().url(false));
    }

    let mut servers: Vec<Server<LocalAddr>> = Vec::new();
    let to_usize = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    let limits = ListenOptions::default()
        .max_header_size(to_usize(cli.max_header_size))
        .max_uri_length(to_usize(cli.max_uri_length))
        .max_headers(to_usize(cli.max_headers))
        .shutdown_timeout(Duration::from_millis(cli.shutdown_timeout));
    // The API, metrics and redirect servers speak HTTP/1.1 only, with Node's 5 s
    // keep-alive timeout (CHP sets it on the public server alone).
    let api_options = limits
        .clone()
        .http2(false)
        .keep_alive_timeout(Duration::from_secs(5))
        .request_head_timeout(Duration::from_secs(5));
    // The public port also speaks HTTP/2 (not in CHP): ALPN `h2` over TLS, prior
    // knowledge in clear text. WebSockets stay on HTTP/1.1.
    let public_options = limits
        .keep_alive_timeout(cli.keep_alive_timeout())
        .request_head_timeout(cli.keep_alive_timeout());

    let forward_options = ForwardOptions {
        x_forward: cli.x_forward,
        prepend_path: cli.prepend_path,
        change_origin: cli.change_origin,
        auto_rewrite: cli.auto_rewrite,
        public_hosts: cli.public_host.clone(),
        protocol_rewrite: cli.protocol_rewrite.clone(),
        custom_headers: cli.custom_header.clone(),
        insecure: cli.insecure,
        client_ca: cli.client_ssl_ca.clone(),
        client_cert: cli.client_ssl_cert.clone().zip(cli.client_ssl_key.clone()),
        timeout: unless_zero(cli.timeout),
        proxy_timeout: unless_zero(cli.proxy_timeout),
        body_idle_timeout: unless_zero(Some(cli.body_idle_timeout)),
        max_response_header_size: to_usize(cli.max_response_header_size),
        max_response_headers: to_usize(cli.max_response_headers),
    };
    let engine = public::engine(&forward_options, metrics.clone()).map_err(|e| e.to_string())?;
    let public_state = Arc::new(PublicState {
        store: store.clone(),
        host_routing: cli.host_routing,
        include_prefix: cli.include_prefix,
        error_pages,
        metrics: metrics.clone(),
        engine,
    });
    servers.push(serve(
        public_listener,
        move |conn| {
            let state = public_state.clone();
            tower::service_fn(move |req| public::handle(state.clone(), req, conn))
        },
        public_options.clone().tls(public_tls.map(TlsConfig::new)),
    ));

    let api_router = api::router(Arc::new(ApiState {
        store: store.clone(),
        auth_token: env.auth_token.clone(),
        host_routing: cli.host_routing,
        metrics: metrics.clone(),
    }));
    servers.push(serve(
        api_listener,
        move |_conn| api_router.clone(),
        api_options.clone().tls(api_tls.map(TlsConfig::new)),
    ));

    if let Some(listener) = metrics_listener {
        let metrics = metrics.clone();
        servers.push(serve(
            listener,
            move |_conn| {
                let metrics = metrics.clone();
                tower::service_fn(move |req| {
                    let response = metrics_response(&metrics, &req);
                    async move { Ok::<_, Infallible>(response) }
                })
            },
            api_options,
        ));
    }
    if let Some(listener) = redirect_listener {
        tracing::info!(
            "Added HTTP to HTTPS redirection from {} to {https_port}",
            listener.local_addr().url(false)
        );
        servers.push(serve(
            listener,
            move |_conn| {
                tower::service_fn(move |req| {
                    let response = public::redirect(&req, https_port);
                    async move { Ok::<_, Infallible>(response) }
                })
            },
            public_options.http2(false),
        ));
    }

    if let Some(pid_file) = &cli.pid_file {
        tracing::info!(
            "Writing pid {} to {}",
            std::process::id(),
            pid_file.display()
        );
        std::fs::write(pid_file, std::process::id().to_string())
            .map_err(|e| format!("cannot write pid file {}: {e}", pid_file.display()))?;
    }
    if let Some(target) = &default_target {
        tracing::info!("Route added / -> {target}");
    }

    let stop = wait_for_signal(term, int).await;
    tracing::warn!("{stop}");
    futures_util::future::join_all(servers.into_iter().map(Server::shutdown)).await;
    if let Err(e) = store.close().await {
        tracing::warn!("route store: {e}");
    }
    if let Some(pid_file) = &cli.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    Ok(())
}

/// Waits for SIGTERM or SIGINT; returns CHP's log word for it.
async fn wait_for_signal(mut term: Signal, mut int: Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "Terminated",
        _ = int.recv() => "Interrupted",
    }
}

/// `GET /metrics` exactly (a query string is 404, as in CHP); anything else 404.
fn metrics_response<B>(
    metrics: &Metrics,
    req: &http::Request<B>,
) -> http::Response<axum::body::Body> {
    let is_metrics = req
        .uri()
        .path_and_query()
        .map(http::uri::PathAndQuery::as_str)
        == Some("/metrics");
    if !is_metrics || (req.method() != http::Method::GET && req.method() != http::Method::HEAD) {
        return error_pages::plain(http::StatusCode::NOT_FOUND);
    }
    let mut response = http::Response::new(axum::body::Body::from(metrics.render()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

/// Binds `host:port`; no host means all interfaces (IPv6 dual-stack, else IPv4), and
/// `localhost` prefers 127.0.0.1, as Node resolved it for CHP.
async fn bind_tcp(host: Option<&str>, port: u16) -> std::io::Result<Listener> {
    let candidates: Vec<std::net::SocketAddr> = match host {
        None => vec![
            std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
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
