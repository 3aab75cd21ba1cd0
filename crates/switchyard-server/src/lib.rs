//! The `switchyard` server: a drop-in replacement for configurable-http-proxy (CHP) 5.3.0
//! on the `switchyard` engine, as a library. The binary parses its flags into a [`Cli`]
//! and calls [`run`]; a test or a program of its own calls [`start`] and gets the bound
//! addresses back.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use clap::Parser;
//! use switchyard_server::{Cli, Env};
//!
//! let cli = Cli::try_parse_from(["switchyard", "--port", "0", "--api-port", "0"])?;
//! let running = switchyard_server::start(cli, Env::default()).await?;
//! println!("proxying on {}", running.public_addr());
//! running.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! The pieces: [`cli`](Cli) (the flags), the listeners (four servers on the engine's
//! serving API: the public proxy, the REST API, metrics and the HTTP→HTTPS redirect),
//! the public handler (routing, prefixes, `last_activity`, error pages), the REST API
//! (an axum router), the route stores (memory, Redis) and the metrics.
#![warn(missing_docs)]

mod access_log;
mod acme;
mod api;
mod cli;
mod dashboard;
mod error_pages;
mod image;
mod listeners;
mod logging;
mod metrics;
mod nofile;
mod path;
mod public;
mod reclaim;
mod reload;
mod request_id;
mod route_stats;
mod store;
mod time;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};
use switchyard::TlsConfig;
use switchyard::server::{LocalAddr, Server};
use tokio::signal::unix::{Signal, SignalKind, signal};

pub use crate::cli::{Cli, Env};
pub use crate::image::{AUTH_TOKEN_FILE_ENV, IMAGE_ENV, image_args, image_defaults_on};
pub use crate::logging::init as init_logging;

use crate::cli::StorageBackend;
use crate::error_pages::ErrorPages;
use crate::metrics::{CertListener, Metrics};
use crate::reload::{Reloader, Watched};
use crate::store::memory::MemoryStore;
use crate::store::redis::{RedisConfig, RedisStore};
use crate::store::{RouteStore, Target};

/// Why the server could not start: the message names the flag or the address at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

/// A started server: every listener bound and serving, the default route added.
#[derive(Debug)]
pub struct Running {
    public: Server<LocalAddr>,
    api: Server<LocalAddr>,
    metrics: Option<Server<LocalAddr>>,
    redirect: Option<Server<LocalAddr>>,
    store: Arc<dyn RouteStore>,
    pid_file: Option<std::path::PathBuf>,
    stopping: Arc<AtomicBool>,
    engine: public::Engine,
    /// The SIGUSR1 task of the access log.
    reopen: Option<tokio::task::JoinHandle<()>>,
    reloader: Reloader,
    acme: Option<tokio::task::JoinHandle<()>>,
    /// The dashboard's traffic sampler.
    sampler: Option<tokio::task::JoinHandle<()>>,
}

/// Runs the server until SIGTERM or SIGINT, then stops it gracefully: `/_chp_readyz`
/// answers 503 at once, requests are served as usual for `--shutdown-delay`, then the
/// listeners close and what is in flight drains (see [`Running::stop`]). A second SIGTERM
/// or SIGINT meanwhile returns at once, dropping what is still open.
///
/// # Errors
///
/// [`StartError`] when it cannot start (nothing is served then).
pub async fn run(cli: Cli, env: Env) -> Result<(), StartError> {
    // Installed first: a SIGTERM right after start-up must stop us gracefully.
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| StartError(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| StartError(format!("cannot handle SIGINT: {e}")))?;
    let delay = Duration::from_millis(cli.shutdown_delay);
    let running = start(cli, env).await?;
    // The allocator's free pages go back to the system after a burst.
    tokio::spawn(reclaim::run(running.public.stats().runtimes().to_vec()));
    let stop = wait_for_signal(&mut term, &mut int).await;
    tracing::warn!("{stop}");
    let pid_file = running.pid_file.clone();
    let graceful = async move {
        running.set_not_ready();
        if !delay.is_zero() {
            tracing::info!(
                "Not ready (/_chp_readyz answers 503); serving for {} ms more",
                delay.as_millis()
            );
            tokio::time::sleep(delay).await;
        }
        running.stop().await;
    };
    tokio::select! {
        () = graceful => {}
        again = wait_for_signal(&mut term, &mut int) => {
            tracing::warn!("{again} again: exiting now");
            if let Some(pid_file) = &pid_file {
                let _ = std::fs::remove_file(pid_file);
            }
        }
    }
    Ok(())
}

/// Starts the server: validates the TLS material, loads the routes, binds every listener
/// (port 0: one the system picks, see [`Running::public_addr`]) and serves them. Any
/// failure stops it before a request is served.
///
/// # Errors
///
/// [`StartError`] naming what could not be used or bound.
pub async fn start(cli: Cli, env: Env) -> Result<Running, StartError> {
    warn_at_start(&cli, &env);
    // Before any TLS configuration is built, ours or another crate's.
    switchyard::crypto::install_default();
    let started = (std::time::Instant::now(), time::now_ms());
    // TLS first: a bad certificate must stop us before any port is bound.
    let tls = tls::Listeners::from_cli(&cli, &env).map_err(|e| StartError(e.to_string()))?;
    let metrics = Arc::new(
        Metrics::new().with_timings(cli.metrics_port.is_some() || cli.metrics_socket.is_some()),
    );
    let access_log = open_access_log(&cli)?;
    metrics.watch_access_log(access_log.clone());
    let engine = public::engine(&cli, metrics.clone(), access_log.clone()).map_err(StartError)?;
    metrics.watch_engine(engine.stats());
    let default_target = parse_flag_target("--default-target", cli.default_target.as_deref())?;
    let error_pages = error_pages(&cli)?;
    // The store is ready (every route loaded) before any port is bound or served.
    let store = open_store(&cli, &env).await?;
    metrics.watch_store(store.clone());
    let stopping = Arc::new(AtomicBool::new(false));
    let soft_limit = nofile::raise();
    let max_connections = cli
        .max_connections
        .unwrap_or_else(|| nofile::default_max_connections(soft_limit));
    tracing::info!("Up to {max_connections} connections at once on each public listener");
    // Bind everything; any failure exits non-zero (CHP kept running half up).
    let bound = listeners::Bound::bind(&cli).await.map_err(StartError)?;
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
            .map_err(|e| StartError(e.to_string()))?;
    }
    let (acme, acme_tls, acme_task) = match acme::AcmeConfig::from_cli(&cli) {
        Some(config) => {
            let store = acme_store(&cli, &env).await?;
            metrics.watch_acme();
            let (acme, tls, task) =
                acme::Acme::start(config, store, cli.ssl_protocol.as_deref(), metrics.clone())
                    .await
                    .map_err(StartError)?;
            (Some(acme), Some(tls), Some(task))
        }
        None => (None, None, None),
    };
    let startup_lines = bound.startup_lines(
        &cli,
        (
            tls.public.is_some() || acme_tls.is_some(),
            tls.api.is_some(),
        ),
        default_target.as_ref(),
    );
    let listeners = bound.describe((
        tls.public.is_some() || acme_tls.is_some(),
        tls.api.is_some(),
    ));
    let (public_tls, api_tls, reloader) = certificates(&cli, tls, &engine, &metrics)?;
    let public_tls = public_tls.or(acme_tls);
    let (dashboard, sampler) = if cli.no_dashboard {
        (None, None)
    } else {
        let history = Arc::new(dashboard::History::default());
        let sampler = dashboard::history::Sampler::new(metrics.clone(), history.clone()).spawn();
        let dashboard = dashboard::Dashboard {
            started: started.0,
            started_ms: started.1,
            listeners,
            store_kind: match (&cli.storage_backend, &cli.state_file) {
                (Some(StorageBackend::Redis(_)), _) => "redis",
                (_, Some(_)) => "file",
                _ => "memory",
            },
            store: store.clone(),
            metrics: metrics.clone(),
            history,
            access_log: access_log.is_some(),
        };
        (Some(Arc::new(dashboard)), Some(sampler))
    };
    let served = bound.serve(
        &cli,
        listeners::Shared {
            store: store.clone(),
            metrics,
            engine: engine.clone(),
            error_pages,
            auth_token: env.auth_token,
            public_tls,
            api_tls,
            stopping: stopping.clone(),
            access_log: access_log.clone(),
            acme,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            dashboard,
        },
    );
    listeners::log_startup(startup_lines);
    let reopen = access_log.map(reopen_on_sigusr1).transpose()?;
    if let Some(pid_file) = &cli.pid_file {
        tracing::info!(
            "Writing pid {} to {}",
            std::process::id(),
            pid_file.display()
        );
        std::fs::write(pid_file, std::process::id().to_string()).map_err(|e| {
            StartError(format!("cannot write pid file {}: {e}", pid_file.display()))
        })?;
    }
    if let Some(target) = &default_target {
        tracing::info!("Route added / -> {target}");
    }
    Ok(Running {
        public: served.public,
        api: served.api,
        metrics: served.metrics,
        redirect: served.redirect,
        store,
        pid_file: cli.pid_file,
        stopping,
        engine,
        reopen,
        reloader,
        acme: acme_task,
        sampler,
    })
}

/// The access log of `--access-log`, started; `None` when it is off.
fn open_access_log(cli: &Cli) -> Result<Option<Arc<access_log::AccessLog>>, StartError> {
    if cli.access_log == access_log::Destination::Off {
        return Ok(None);
    }
    let redact = cli
        .access_log_redact
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    access_log::AccessLog::start(
        cli.access_log.clone(),
        cli.access_log_format,
        cli.access_log_status.clone(),
        redact,
    )
    .map(Some)
    .map_err(|e| StartError(format!("--access-log: {e}")))
}

/// Reopens the access log file on each SIGUSR1 (logrotate's `postrotate`).
fn reopen_on_sigusr1(
    log: Arc<access_log::AccessLog>,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let mut usr1 = signal(SignalKind::user_defined1())
        .map_err(|e| StartError(format!("cannot handle SIGUSR1: {e}")))?;
    Ok(tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            log.reopen();
        }
    }))
}

/// Where the ACME account and certificate live: Redis with the routes, else memory
/// (and the file beside `--state-file`).
async fn acme_store(cli: &Cli, env: &Env) -> Result<acme::store::AcmeStore, StartError> {
    match &cli.storage_backend {
        Some(StorageBackend::Redis(url)) => {
            let config = RedisConfig {
                url: url.clone(),
                prefix: cli.redis_key_prefix.clone(),
                password: env.redis_password.clone(),
            };
            let client = config.client().map_err(StartError)?;
            acme::store::AcmeStore::redis(client, &cli.redis_key_prefix)
                .await
                .map_err(StartError)
        }
        _ => {
            if cli.state_file.is_none() {
                tracing::warn!(
                    "ACME: without --state-file or Redis the certificate is kept in memory only: \
                     a restart orders a new one (mind the ACME server's rate limits)"
                );
            }
            acme::store::AcmeStore::memory(cli.state_file.as_deref()).map_err(StartError)
        }
    }
}

/// The listeners' TLS handles, their certificates in the metrics, and the reloader
/// that swaps new certificates in (SIGHUP, a change of the files).
fn certificates(
    cli: &Cli,
    tls: tls::Listeners,
    engine: &public::Engine,
    metrics: &Arc<Metrics>,
) -> Result<(Option<TlsConfig>, Option<TlsConfig>, Reloader), StartError> {
    let mut sets = Vec::new();
    let mut handle = |loaded: Option<tls::Loaded>, flags: tls::ServerTls, listener| {
        loaded.map(|loaded| {
            metrics.set_certificate(listener, Some(loaded.leaf));
            let handle = TlsConfig::new(loaded.config);
            sets.push(Watched::server(listener, flags, handle.clone()));
            handle
        })
    };
    let public_tls = handle(tls.public, tls.public_flags, CertListener::Public);
    let api_tls = handle(tls.api, tls.api_flags, CertListener::Api);
    let client_files: Vec<_> = [
        &cli.client_ssl_ca,
        &cli.client_ssl_cert,
        &cli.client_ssl_key,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    if !client_files.is_empty() {
        if let Some(cert) = &cli.client_ssl_cert {
            let leaf = tls::leaf_of_file(cert, "--client-ssl-cert")
                .map_err(|e| StartError(e.to_string()))?;
            metrics.set_certificate(CertListener::Client, Some(leaf));
        }
        sets.push(Watched::client(
            client_files,
            cli.client_ssl_cert.clone(),
            engine.upstream_tls(),
        ));
    }
    let reloader = Reloader::spawn(sets, metrics.clone()).map_err(StartError)?;
    Ok((public_tls, api_tls, reloader))
}

/// The main thread's tokio runtime, a current-thread one. It runs the REST API, the
/// metrics and redirect servers, the route store and the certificates, and the public
/// listener too when `--worker-threads` (or the CPU count) is one; with more, the
/// public listener is served by that many threads of its own, each with a
/// current-thread runtime (`ListenOptions::threads`).
///
/// # Errors
///
/// When the runtime cannot be built.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The threads that serve the public listener: `--worker-threads`, else one per CPU.
pub(crate) fn workers(cli: &Cli) -> usize {
    cli.worker_threads.map_or_else(
        || default_workers(std::env::var("TOKIO_WORKER_THREADS").ok()),
        usize::from,
    )
}

/// The worker threads without `--worker-threads`: `TOKIO_WORKER_THREADS` (`env`) when it
/// is a number above 0, else the CPUs this process may run on (its affinity mask and
/// cgroup CPU quota, as the standard library reads them: a container limited to one CPU
/// gets one), as tokio itself would choose.
fn default_workers(env: Option<String>) -> usize {
    env.and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

// === impl Running ===

impl Running {
    /// Where the public proxy listens (the port the system chose, for `--port 0`).
    pub fn public_addr(&self) -> LocalAddr {
        self.public.local_addr()
    }

    /// Where the REST API listens.
    pub fn api_addr(&self) -> LocalAddr {
        self.api.local_addr()
    }

    /// Where the metrics server listens, if there is one.
    pub fn metrics_addr(&self) -> Option<LocalAddr> {
        self.metrics.as_ref().map(Server::local_addr)
    }

    /// Where the HTTP→HTTPS redirect server listens, if there is one.
    pub fn redirect_addr(&self) -> Option<LocalAddr> {
        self.redirect.as_ref().map(Server::local_addr)
    }

    /// Makes `/_chp_readyz` answer 503 from now on (the first step of a stop, so that load
    /// balancers take this replica out while it still serves).
    pub fn set_not_ready(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Stops every listener at once, lets in-flight requests finish (up to
    /// `--shutdown-timeout`), closes what is left, then closes the WebSocket tunnels with
    /// a close frame 1001 ("going away") to both sides, writes out what the route store
    /// still holds, and removes the pid file.
    pub async fn stop(self) {
        self.set_not_ready();
        drop(self.reloader);
        if let Some(task) = &self.acme {
            task.abort();
        }
        if let Some(task) = &self.sampler {
            task.abort();
        }
        let servers = [
            Some(self.public),
            Some(self.api),
            self.metrics,
            self.redirect,
        ];
        futures_util::future::join_all(servers.into_iter().flatten().map(Server::shutdown)).await;
        let tunnels = self.engine.tunnels();
        if tunnels > 0 {
            tracing::info!("Closing {tunnels} WebSocket connections (1001 going away)");
        }
        self.engine.close_tunnels().await;
        if let Err(e) = self.store.close().await {
            tracing::warn!("route store: {e}");
        }
        if let Some(pid_file) = &self.pid_file {
            let _ = std::fs::remove_file(pid_file);
        }
        if let Some(task) = self.reopen {
            task.abort();
        }
    }
}

/// The start-up warnings CHP gives, and the notes on what rustls ignores.
fn warn_at_start(cli: &Cli, env: &Env) {
    if env.auth_token.is_none() {
        tracing::warn!("REST API is not authenticated.");
    }
    if cli.ip.as_deref() == Some("*") {
        tracing::warn!(
            "Interpreting ip='*' as all-interfaces. Preferred usage is 0.0.0.0 for all IPv4 or '' for all-interfaces."
        );
    }
    tls::warn_ignored(cli);
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
}

fn parse_flag_target(flag: &str, value: Option<&str>) -> Result<Option<Target>, StartError> {
    value
        .map(|t| Target::parse(t).map_err(|e| StartError(format!("{flag} {t}: {e}"))))
        .transpose()
}

fn error_pages(cli: &Cli) -> Result<ErrorPages, StartError> {
    Ok(match (&cli.error_target, &cli.error_path) {
        (Some(target), _) => {
            let parsed = parse_flag_target("--error-target", Some(target))?
                .ok_or_else(|| StartError("--error-target: no target".to_owned()))?;
            ErrorPages::target(parsed.engine().clone())
                .map_err(|e| StartError(format!("--error-target {target}: {e}")))?
        }
        (None, Some(dir)) => ErrorPages::dir(dir.clone()),
        (None, None) => ErrorPages::builtin(),
    })
}

async fn open_store(cli: &Cli, env: &Env) -> Result<Arc<dyn RouteStore>, StartError> {
    Ok(match &cli.storage_backend {
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
            Arc::new(RedisStore::connect(&config).await.map_err(StartError)?)
        }
        _ => match &cli.state_file {
            Some(path) => Arc::new(MemoryStore::with_state_file(path.clone()).map_err(StartError)?),
            None => Arc::new(MemoryStore::new()),
        },
    })
}

/// Waits for SIGTERM or SIGINT; returns CHP's log word for it.
async fn wait_for_signal(term: &mut Signal, int: &mut Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "Terminated",
        _ = int.recv() => "Interrupted",
    }
}

/// The handlers without sockets, for the in-process tests and the fuzz targets in
/// `fuzz/`. Not part of the public API.
#[doc(hidden)]
pub mod in_process {
    use std::sync::Arc;

    use crate::api::{self, ApiState};
    use crate::metrics::Metrics;
    use crate::store::memory::MemoryStore;

    /// The REST API's axum router, as the API port serves it, over an empty in-memory
    /// route table (path routing), with `token` as the API token (none: open).
    pub fn api_router(token: Option<&str>) -> axum::Router {
        api::router(Arc::new(ApiState {
            store: Arc::new(MemoryStore::new()),
            auth_token: token.map(str::to_owned),
            host_routing: false,
            metrics: Arc::new(Metrics::new()),
            dashboard: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::default_workers;

    #[test]
    fn the_default_workers_are_tokio_worker_threads_else_the_cpus() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(default_workers(None), cpus);
        assert_eq!(default_workers(Some("3".to_owned())), 3);
        assert_eq!(default_workers(Some(" 2\n".to_owned())), 2);
        for ignored in ["0", "", "many", "-1"] {
            assert_eq!(
                default_workers(Some(ignored.to_owned())),
                cpus,
                "{ignored:?}"
            );
        }
    }
}
