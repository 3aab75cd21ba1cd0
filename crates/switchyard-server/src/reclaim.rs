//! Gives memory back to the system after a burst.
//!
//! mimalloc (v3) takes back the blocks other threads freed into a thread's pages, and
//! frees the pages left empty, only when that thread collects its heap: once in 10,000
//! allocations that take its slow path. The pages freed then go back to the system
//! (`MADV_DONTNEED`) at a later collection, at least its purge delay (1 s) on. A tokio
//! worker that goes idle after a burst makes no allocations, so it keeps what the burst
//! left (debug build, 10,000 idle connections and 2,000 WebSockets opened and closed:
//! 24 MiB before, 267 MiB open, 192 MiB 20 s after closing without this task; 27 MiB
//! 4 s after with it). The `mimalloc` crate has no safe call to collect, so every
//! second a task looks at the process's resident memory, and when it is well above its
//! lowest and has stopped growing, has every thread that serves make those allocations
//! itself, twice, [`PURGE_DELAY`] apart: under a millisecond of work per thread. The
//! main thread does it in place; each serving thread runs a current-thread runtime, so
//! a task spawned on its handle does it there. Off Linux (no `/proc`) the task ends at
//! once.

use std::hint::black_box;
use std::time::Duration;

/// How often resident memory is looked at.
const TICK: Duration = Duration::from_secs(1);

/// Past mimalloc's purge delay (1 s in v3; `purge_delay` × `arena_purge_mult`).
const PURGE_DELAY: Duration = Duration::from_millis(1_100);

/// Resident memory above the lowest seen that is worth a reclaim, in KiB.
const WORTH: u64 = 2 * 1024;

/// Allocations above mimalloc's small size (1 KiB) always take its slow path; this many
/// reach its collection count.
const CALLS: usize = 10_000;

/// The size of each: past the small sizes, in a size class that is rarely in use.
const SIZE: usize = 2048;

/// After a reclaim that gave nothing back, the next is tried anyway after this long
/// (doubled each time it gives nothing, up to [`MAX_RETRY`]), even with no descriptor
/// closed: a reclaim made while connections were still closing finds their memory in
/// use, and the descriptors may never go lower than they were then.
const FIRST_RETRY: Duration = Duration::from_secs(4);
const MAX_RETRY: Duration = Duration::from_secs(600);

/// Runs until the runtime stops: reclaims after each burst. A reclaim that gives back
/// less than [`WORTH`] found the memory in use: the next waits until fewer descriptors
/// are open than then (connections closed, so memory freed), or for a retry time that
/// doubles while reclaims give nothing. `serving`: the runtimes of the public listener's
/// threads (none when the main thread serves it).
pub(crate) async fn run(serving: Vec<tokio::runtime::Handle>) {
    let mut lowest = u64::MAX;
    let mut previous = 0;
    // The descriptors open at the last reclaim that gave nothing back, and when to try
    // again all the same.
    let mut in_use_at: Option<(usize, tokio::time::Instant)> = None;
    let mut retry = FIRST_RETRY;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(rss) = resident_kib() else { return };
        lowest = lowest.min(rss);
        let growing = rss > previous + WORTH / 4;
        previous = rss;
        if growing || rss < lowest + WORTH {
            continue;
        }
        let fds = open_descriptors();
        let now = tokio::time::Instant::now();
        if in_use_at.is_some_and(|(then, until)| fds >= then && now < until) {
            continue;
        }
        collect_everywhere(&serving).await;
        tokio::time::sleep(PURGE_DELAY).await;
        collect_everywhere(&serving).await;
        let after = resident_kib().unwrap_or(rss);
        tracing::debug!("allocator reclaim: {rss} KiB resident, {after} KiB after");
        if after + WORTH > rss {
            in_use_at = Some((fds, now + retry));
            retry = (retry * 2).min(MAX_RETRY);
        } else {
            in_use_at = None;
            retry = FIRST_RETRY;
        }
        previous = after;
    }
}

/// Makes the main thread (this one: the server's main runtime is a current-thread one)
/// and each serving thread collect its heap.
async fn collect_everywhere(serving: &[tokio::runtime::Handle]) {
    collect();
    for handle in serving {
        let _ = handle.spawn(async { collect() }).await;
    }
}

/// Makes mimalloc collect this thread's heap. Never inlined: `bench/instructions.sh`
/// leaves its instructions out of what it counts by its name.
#[inline(never)]
fn collect() {
    for _ in 0..CALLS {
        drop(black_box(Vec::<u8>::with_capacity(SIZE)));
    }
}

/// How many descriptors the process has open.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// The process's resident memory in KiB (`VmRSS` in `/proc/self/status`).
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    line.trim().strip_suffix("kB")?.trim().parse().ok()
}
