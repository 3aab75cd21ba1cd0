//! Certificate reload without a restart: on SIGHUP, and when a certificate file changes
//! on disk, the TLS configurations of the public and API listeners (`--ssl-*`,
//! `--api-ssl-*`) and of the connections to https targets (`--client-ssl-*`) are built
//! again from the same flags and swapped in through the engine's handles
//! ([`TlsConfig::replace`], [`UpstreamTls::reload`]). Handshakes from then on use the new
//! certificate; connections already open keep theirs.
//!
//! The directories of the files are watched (inotify), not the files: an editor's or
//! `mv`'s atomic rename replaces the file's inode, and Kubernetes updates a mounted
//! secret by swapping the directory's `..data` symlink, neither of which a watch on the
//! file itself would see. Any change in a directory leads to reading the files again; a
//! set whose bytes are those already served is left alone.
//!
//! A set that does not load (bad PEM, a key that is not the certificate's, an expired
//! certificate) is refused with an error line naming the file and the reason, and the
//! configuration served before stays. After a change on disk a failure is first taken
//! for a pair caught half written (the key renamed in, the certificate not yet): the set
//! is read again once the files have been quiet for [`RETRY_AFTER`], and only refused if
//! it still fails with the same bytes. SIGHUP refuses at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use switchyard::{TlsConfig, UpstreamTls};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::{CertListener, Metrics};
use crate::tls::{self, ServerTls};

/// How long the files must be quiet after a change before they are read: a writer that
/// writes the key and then the certificate is usually done by then.
const SETTLE: Duration = Duration::from_millis(100);

/// How long after a change that left a set unloadable it is read again before it is
/// refused.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The running reloader; dropping it stops it (and the file watch).
#[derive(Debug)]
pub(crate) struct Reloader {
    task: JoinHandle<()>,
}

/// One set of files and the configuration built from them.
pub(crate) struct Watched {
    listener: CertListener,
    files: Vec<PathBuf>,
    target: Target,
    /// The files' bytes as last loaded (`None`: a file that could not be read).
    loaded: Option<Contents>,
    /// Bytes refused and logged: not read again until they change.
    refused: Option<Contents>,
    /// Bytes that failed after a change, to be read once more before refusing them.
    suspect: Option<Contents>,
}

type Contents = Vec<Option<Vec<u8>>>;

/// What a set's configuration is swapped into.
enum Target {
    Server {
        flags: ServerTls,
        handle: TlsConfig,
    },
    Client {
        handle: UpstreamTls,
        cert: Option<PathBuf>,
    },
}

/// What started a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    Change,
    Retry,
}

/// How a check ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Loaded,
    /// Failed after a change: read again after [`RETRY_AFTER`].
    Pending,
    Refused,
}

// === impl Watched ===

impl Watched {
    /// A listener's set, served through `handle`.
    pub(crate) fn server(listener: CertListener, flags: ServerTls, handle: TlsConfig) -> Self {
        Self::new(listener, flags.files(), Target::Server { flags, handle })
    }

    /// The `--client-ssl-*` set, used by the engine's connections to https targets.
    pub(crate) fn client(files: Vec<PathBuf>, cert: Option<PathBuf>, handle: UpstreamTls) -> Self {
        Self::new(CertListener::Client, files, Target::Client { handle, cert })
    }

    fn new(listener: CertListener, files: Vec<PathBuf>, target: Target) -> Self {
        let loaded = Some(read_all(&files));
        Self {
            listener,
            files,
            target,
            loaded,
            refused: None,
            suspect: None,
        }
    }

    fn check(&mut self, trigger: Trigger, metrics: &Metrics) -> Outcome {
        let contents = read_all(&self.files);
        if trigger != Trigger::Signal
            && (self.loaded.as_ref() == Some(&contents) || self.refused.as_ref() == Some(&contents))
        {
            return Outcome::Unchanged;
        }
        match self.build() {
            Ok(leaf) => {
                tracing::info!(
                    "TLS: {} certificate reloaded from {} (expires {})",
                    self.listener.as_str(),
                    self.names(),
                    leaf.map_or_else(|| "-".to_owned(), |l| l.not_after_text()),
                );
                if leaf.is_some() {
                    metrics.set_certificate(self.listener, leaf);
                }
                self.loaded = Some(contents);
                self.refused = None;
                self.suspect = None;
                Outcome::Loaded
            }
            Err(reason) => {
                let settling = match trigger {
                    Trigger::Signal => false,
                    Trigger::Change => true,
                    Trigger::Retry => self.suspect.as_ref() != Some(&contents),
                };
                if settling {
                    tracing::debug!("TLS: {reason}; reading the files again shortly");
                    self.suspect = Some(contents);
                    return Outcome::Pending;
                }
                tracing::error!(
                    "TLS reload refused: {reason}; the {} listener keeps the certificate it served",
                    self.listener.as_str()
                );
                self.refused = Some(contents);
                self.suspect = None;
                Outcome::Refused
            }
        }
    }

    /// Builds the configuration from the files and swaps it in; the leaf's facts.
    fn build(&self) -> Result<Option<tls::Leaf>, String> {
        match &self.target {
            Target::Server { flags, handle } => {
                let loaded = tls::server_config(flags)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{}-key/{}-cert: not given", flags.flag, flags.flag))?;
                if loaded.leaf.expired() {
                    return Err(format!(
                        "{}-cert {}: the certificate expired at {}",
                        flags.flag,
                        flags.cert.as_deref().unwrap_or(Path::new("")).display(),
                        loaded.leaf.not_after_text()
                    ));
                }
                handle.replace(loaded.config);
                Ok(Some(loaded.leaf))
            }
            Target::Client { handle, cert } => {
                let leaf = match cert {
                    Some(path) => {
                        let leaf = tls::leaf_of_file(path, "--client-ssl-cert")
                            .map_err(|e| e.to_string())?;
                        if leaf.expired() {
                            return Err(format!(
                                "--client-ssl-cert {}: the certificate expired at {}",
                                path.display(),
                                leaf.not_after_text()
                            ));
                        }
                        Some(leaf)
                    }
                    None => None,
                };
                handle
                    .reload()
                    .map_err(|e| format!("--client-ssl-* ({}): {e}", self.names()))?;
                Ok(leaf)
            }
        }
    }

    fn names(&self) -> String {
        self.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn read_all(files: &[PathBuf]) -> Contents {
    files.iter().map(|f| std::fs::read(f).ok()).collect()
}

// === impl Reloader ===

impl Reloader {
    /// Starts watching the sets' directories and SIGHUP.
    ///
    /// # Errors
    ///
    /// When SIGHUP cannot be handled. A directory that cannot be watched is logged, and
    /// SIGHUP still reloads.
    pub(crate) fn spawn(sets: Vec<Watched>, metrics: Arc<Metrics>) -> Result<Self, String> {
        let hup = signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
        // One pending wake-up is enough: every check reads all the files.
        let (tx, rx) = mpsc::channel(1);
        let watcher = watch(&sets, tx);
        let task = tokio::spawn(run(sets, metrics, hup, rx, watcher));
        Ok(Self { task })
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A watch on every directory holding a file of `sets` (and the directory its symlink
/// leads to); `None` when there is nothing to watch or the watch cannot be set up.
fn watch(sets: &[Watched], tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in sets.iter().flat_map(|s| &s.files) {
        let canonical = std::fs::canonicalize(file).ok();
        for path in std::iter::once(file.as_path()).chain(canonical.as_deref()) {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            };
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    if dirs.is_empty() {
        return None;
    }
    let handler = move |event: notify::Result<notify::Event>| {
        // Our own reads are access events: they must not wake us.
        if event.is_ok_and(|e| !matches!(e.kind, EventKind::Access(_))) {
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("TLS: cannot watch the certificate files ({e}); SIGHUP reloads them");
            return None;
        }
    };
    for dir in &dirs {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(
                "TLS: cannot watch {} ({e}); SIGHUP reloads its files",
                dir.display()
            );
        }
    }
    Some(watcher)
}

async fn run(
    mut sets: Vec<Watched>,
    metrics: Arc<Metrics>,
    mut hup: tokio::signal::unix::Signal,
    mut changes: mpsc::Receiver<()>,
    // Kept alive as long as the loop runs.
    _watcher: Option<notify::RecommendedWatcher>,
) {
    let mut settle: Option<Instant> = None;
    let mut retry: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(86_400);
    loop {
        tokio::select! {
            Some(()) = hup.recv() => {
                if sets.is_empty() {
                    tracing::info!("SIGHUP: no certificate files to reload");
                } else {
                    tracing::info!("SIGHUP: reloading the certificates");
                }
                for set in &mut sets {
                    set.check(Trigger::Signal, &metrics);
                }
            }
            Some(()) = changes.recv() => settle = Some(Instant::now() + SETTLE),
            () = tokio::time::sleep_until(settle.unwrap_or_else(far)), if settle.is_some() => {
                settle = None;
                for set in &mut sets {
                    if set.check(Trigger::Change, &metrics) == Outcome::Pending {
                        retry = Some(Instant::now() + RETRY_AFTER);
                    }
                }
            }
            () = tokio::time::sleep_until(retry.unwrap_or_else(far)), if retry.is_some() && settle.is_none() => {
                retry = None;
                for set in &mut sets {
                    if set.check(Trigger::Retry, &metrics) == Outcome::Pending {
                        retry = Some(Instant::now() + RETRY_AFTER);
                    }
                }
            }
        }
    }
}
