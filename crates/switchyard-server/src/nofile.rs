//! The process's open-files limit (`RLIMIT_NOFILE`): raised from its soft value to its
//! hard one at start, as nginx's `worker_rlimit_nofile` lets an operator do, and the
//! default connection limit of each public listener derived from it.

use rlimit::Resource;

/// Descriptors kept for all but client and target connections: the listening sockets,
/// API and metrics clients, Redis, the log and state files. A quarter of the limit when
/// that is less.
const RESERVED: u64 = 100;

/// The soft limit assumed when it cannot be read: the usual default of Linux systems.
const USUAL_SOFT_LIMIT: u64 = 1024;

/// Raises the soft limit to the hard limit and logs both; returns the soft limit in force
/// (`None` when it cannot be read).
pub(crate) fn raise() -> Option<u64> {
    let (soft, hard) = match Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!("cannot read the open-files limit: {e}");
            return None;
        }
    };
    if soft >= hard {
        tracing::info!("Open-files limit {soft} (hard limit {hard})");
        return Some(soft);
    }
    match Resource::NOFILE.set(hard, hard) {
        Ok(()) => {
            tracing::info!("Open-files limit raised from {soft} to the hard limit {hard}");
            Some(hard)
        }
        Err(e) => {
            tracing::warn!("Open-files limit {soft} (hard limit {hard}): cannot raise it: {e}");
            Some(soft)
        }
    }
}

/// The default of `--max-connections`: half of the descriptors left after the reserve,
/// since each client connection may hold one to its target. At least 1.
pub(crate) fn default_max_connections(soft_limit: Option<u64>) -> u64 {
    let limit = soft_limit.unwrap_or(USUAL_SOFT_LIMIT);
    let reserved = RESERVED.min(limit / 4);
    ((limit - reserved) / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_max_connections_leaves_room_for_targets_and_the_rest() {
        assert_eq!(default_max_connections(Some(1024)), 462);
        assert_eq!(default_max_connections(None), 462);
        assert_eq!(default_max_connections(Some(1_048_576)), 524_238);
        // A small limit keeps a quarter for the rest.
        assert_eq!(default_max_connections(Some(64)), 24);
        assert_eq!(default_max_connections(Some(1)), 1);
        assert_eq!(default_max_connections(Some(0)), 1);
        assert_eq!(
            default_max_connections(Some(u64::MAX)),
            (u64::MAX - 100) / 2
        );
    }

    /// Run in the test process: the soft limit in force afterwards is the hard one (when
    /// the system lets it be raised, as it does an unprivileged process up to the hard
    /// limit).
    #[test]
    fn raise_reaches_the_hard_limit() {
        let soft = raise().unwrap();
        let (now, hard) = Resource::NOFILE.get().unwrap();
        assert_eq!((soft, now), (hard, hard));
    }
}
