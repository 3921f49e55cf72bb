//! The process's heap: the allocator's settings at start, handing freed memory back to the
//! system after large transients, and what the heap holds (`/metrics`).
//!
//! The binary uses jemalloc (default feature `jemalloc`, set up in `src/main.rs`): less
//! fragmentation for the replica's many small rows (README, *Memory at 10,000 peerings*), and
//! its background thread hands pages freed a second ago back to the system by itself.
//! `--no-default-features` builds with glibc malloc, which keeps what the program frees: without
//! a trim the resident size is set by the largest transient the process ever had (an NB dump, a
//! full pass over every peering), not by what is live. [`release_freed_memory`] gives every free
//! page back (`malloc_trim` walks the whole heap holding each arena's lock: every allocation
//! meanwhile waits, `ovn_peerd_heap_trim_seconds` tells how long), so it runs on a blocking
//! thread, after a successful large pass or large update at most once per gap ([`After::gap`]),
//! the last one of a burst deferred to the gap's end, never dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Tunes glibc malloc; call first thing in `main`, before any thread exists.
///
/// - Two arenas: glibc gives each thread that allocates its own arena (up to 8 per core); with
///   tokio's workers and the blocking threads that multiplies what a large heap leaves
///   fragmented.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
    // SAFETY: mallopt only tunes the allocator; it runs before the runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// What a trim follows (the `after` label of `ovn_peerd_heap_trims_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// An NB initial dump (start-up, re-dump) was installed.
    Dump,
    /// A large NB update was applied.
    Update,
    /// A successful full or large worker pass ended.
    Pass,
}

impl After {
    fn label(self) -> &'static str {
        match self {
            After::Dump => "dump",
            After::Update => "update",
            After::Pass => "pass",
        }
    }

    /// After this, [`release_freed_memory_soon`] trims at most once per this gap (since any
    /// trim): NB updates can come in long streams, passes are rarer.
    pub fn gap(self) -> Duration {
        match self {
            After::Update => Duration::from_secs(30),
            After::Dump | After::Pass => Duration::from_secs(10),
        }
    }
}

/// The process's trims: when the last one ran, and whether one is deferred.
static TRIMMER: Trimmer = Trimmer::new(trim, After::gap);

/// Returns the heap's free pages to the system now, then publishes the heap's figures. It walks
/// the heap: call it on a blocking thread.
pub fn release_freed_memory(after: After) {
    TRIMMER.ran_now();
    trim(after);
}

/// [`release_freed_memory`] on a blocking task of its own (nobody waits for it): now, or, when
/// the heap was trimmed less than [`After::gap`] ago, once that gap has passed (one deferred
/// trim for any number of calls meanwhile). Needs a tokio runtime.
pub fn release_freed_memory_soon(after: After) {
    TRIMMER.schedule(after);
}

/// One trim, timed and counted.
fn trim(after: After) {
    let started = std::time::Instant::now();
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
    // SAFETY: malloc_trim only returns free memory to the system; it takes the allocator's
    // locks itself and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(feature = "jemalloc")]
    jemalloc::purge();
    metrics::histogram!(crate::metrics::HEAP_TRIM_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::metrics::HEAP_TRIMS_TOTAL, "after" => after.label()).increment(1);
    publish_stats();
}

/// Trims at most once per gap, and never forgets one asked for.
struct Trimmer {
    /// When the last trim started (or was decided on).
    last: Mutex<Option<Instant>>,
    /// A deferred trim is scheduled (a burst asks once).
    pending: AtomicBool,
    trim: fn(After),
    gap: fn(After) -> Duration,
}

impl Trimmer {
    const fn new(trim: fn(After), gap: fn(After) -> Duration) -> Self {
        Trimmer {
            last: Mutex::new(None),
            pending: AtomicBool::new(false),
            trim,
            gap,
        }
    }

    fn ran_now(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Trims on a blocking task now, or once the gap has passed; returns the task that will
    /// trim (none when a deferred trim is already scheduled).
    fn schedule(&'static self, after: After) -> Option<JoinHandle<()>> {
        let plan = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let plan = trim_plan(
                *last,
                Instant::now(),
                (self.gap)(after),
                self.pending.load(Ordering::Acquire),
            );
            if plan == TrimPlan::Now {
                *last = Some(Instant::now());
            }
            plan
        };
        let trim = self.trim;
        match plan {
            TrimPlan::Now => Some(tokio::spawn(async move {
                let _ = tokio::task::spawn_blocking(move || trim(after)).await;
            })),
            TrimPlan::After(wait) => {
                if self.pending.swap(true, Ordering::AcqRel) {
                    return None;
                }
                Some(tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    self.ran_now();
                    self.pending.store(false, Ordering::Release);
                    let _ = tokio::task::spawn_blocking(move || trim(after)).await;
                }))
            }
            TrimPlan::AlreadyPending => None,
        }
    }
}

/// When to trim, asked at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrimPlan {
    Now,
    /// Once the gap since the last trim has passed.
    After(Duration),
    /// A deferred trim is scheduled: it will free what is freed by then.
    AlreadyPending,
}

/// Trims at most once per `gap`, and never forgets one asked for: what a burst of large passes
/// frees is given back by one trim at the gap's end.
fn trim_plan(last: Option<Instant>, now: Instant, gap: Duration, pending: bool) -> TrimPlan {
    let wait = last.map_or(Duration::ZERO, |t| {
        gap.saturating_sub(now.saturating_duration_since(t))
    });
    match (wait.is_zero(), pending) {
        (_, true) => TrimPlan::AlreadyPending,
        (true, false) => TrimPlan::Now,
        (false, false) => TrimPlan::After(wait),
    }
}

/// What the heap holds now, in bytes, by `state` (`in_use` first), where the allocator tells it:
///
/// - glibc (`mallinfo2`): `in_use` (allocated, not freed), `free` (kept inside the heap;
///   resident only where not trimmed: it counts pages already handed back too), `mmapped` (of
///   `in_use`, the large blocks mapped on their own, given back as soon as freed);
/// - jemalloc (`stats.*` after an `epoch` bump): `in_use` (`allocated`), `resident` (pages
///   mapped and resident, metadata included), `retained` (address space kept but not resident).
pub fn stats() -> Vec<(&'static str, usize)> {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters (under its locks).
        let m = unsafe { libc::mallinfo2() };
        vec![
            ("in_use", m.uordblks + m.hblkhd),
            ("free", m.fordblks),
            ("mmapped", m.hblkhd),
        ]
    }
    #[cfg(feature = "jemalloc")]
    {
        jemalloc::stats()
    }
    #[cfg(not(any(feature = "jemalloc", all(target_os = "linux", target_env = "gnu"))))]
    Vec::new()
}

/// Sets `ovn_peerd_heap_bytes{state}` from [`stats`] (after each trim: what a trim leaves).
pub fn publish_stats() {
    for (state, bytes) in stats() {
        metrics::gauge!(crate::metrics::HEAP_BYTES, "state" => state).set(bytes as f64);
    }
}

/// jemalloc's `malloc_conf`: a C string the allocator reads before `main` (`src/main.rs`).
#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points at a constant C string, never written.
unsafe impl Sync for MallocConf {}

impl MallocConf {
    /// Settings as jemalloc reads them (`key:value,...`).
    pub const fn new(conf: &'static std::ffi::CStr) -> Self {
        MallocConf(conf.as_ptr())
    }
}

/// jemalloc's control interface (`mallctl`), for the binary built with it.
#[cfg(feature = "jemalloc")]
pub mod jemalloc {
    use std::ffi::{c_int, c_void, CStr};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A `mallctl` failed (logged once: the same call fails the same way every time).
    static FAILURE_LOGGED: AtomicBool = AtomicBool::new(false);

    fn checked(name: &CStr, rc: c_int) -> Option<()> {
        if rc == 0 {
            return Some(());
        }
        if !FAILURE_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                mallctl = %name.to_string_lossy(),
                errno = rc,
                "jemalloc refused a control call; heap figures or purges may be missing"
            );
        }
        None
    }

    /// Reads a setting or statistic of type `T` (jemalloc refuses a size that does not match).
    pub fn read<T: Copy + Default>(name: &CStr) -> Option<T> {
        let mut value = T::default();
        let mut len = std::mem::size_of::<T>();
        // SAFETY: jemalloc writes at most `len` bytes into `value` (it checks `len` equals the
        // size of the named entry and fails otherwise) and reads nothing.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&raw mut value).cast::<c_void>(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        checked(name, rc).map(|()| value)
    }

    /// Runs a control call that takes and returns nothing.
    fn call(name: &CStr) -> Option<()> {
        // SAFETY: no value in or out.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        checked(name, rc)
    }

    /// Hands every arena's unused dirty pages back to the system now ("4096" is
    /// `MALLCTL_ARENAS_ALL`).
    pub fn purge() {
        call(c"arena.4096.purge");
    }

    /// `in_use`, `resident`, `retained`, as of now.
    pub fn stats() -> Vec<(&'static str, usize)> {
        // The statistics are a snapshot taken when the epoch advances.
        let mut epoch: u64 = 1;
        // SAFETY: writes a u64 of the size given; reads nothing back.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"epoch".as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                (&raw mut epoch).cast::<c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
        if checked(c"epoch", rc).is_none() {
            return Vec::new();
        }
        [
            ("in_use", c"stats.allocated"),
            ("resident", c"stats.resident"),
            ("retained", c"stats.retained"),
        ]
        .into_iter()
        .filter_map(|(state, name)| read::<usize>(name).map(|b| (state, b)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_trim_runs_at_once_unless_one_ran_within_the_gap_and_is_never_dropped() {
        let gap = Duration::from_secs(10);
        let t0 = Instant::now();
        assert_eq!(trim_plan(None, t0, gap, false), TrimPlan::Now);
        assert_eq!(trim_plan(Some(t0), t0 + gap, gap, false), TrimPlan::Now);
        // Asked again within the gap: deferred to its end, not skipped.
        let half = gap / 2;
        assert_eq!(
            trim_plan(Some(t0), t0 + half, gap, false),
            TrimPlan::After(gap - half)
        );
        // One deferred trim serves every call until it runs.
        assert_eq!(
            trim_plan(Some(t0), t0 + half, gap, true),
            TrimPlan::AlreadyPending
        );
    }

    static TRIMS: AtomicUsize = AtomicUsize::new(0);

    fn count(_: After) {
        TRIMS.fetch_add(1, Ordering::SeqCst);
    }

    fn short_gap(_: After) -> Duration {
        Duration::from_millis(20)
    }

    /// A burst trims once now and once at the gap's end; a call after that deferred trim is
    /// deferred again (not lost to a flag left set).
    #[tokio::test]
    async fn a_burst_trims_now_and_once_at_the_gaps_end_and_later_calls_trim_again() {
        let trimmer: &'static Trimmer = Box::leak(Box::new(Trimmer::new(count, short_gap)));
        let gap = short_gap(After::Pass);
        let t0 = Instant::now();
        trimmer.schedule(After::Pass).unwrap().await.unwrap();
        assert_eq!(TRIMS.load(Ordering::SeqCst), 1);

        let deferred = trimmer
            .schedule(After::Pass)
            .expect("deferred, not dropped");
        for _ in 0..3 {
            assert!(trimmer.schedule(After::Pass).is_none(), "one deferred trim");
        }
        assert_eq!(TRIMS.load(Ordering::SeqCst), 1);
        deferred.await.unwrap();
        assert_eq!(TRIMS.load(Ordering::SeqCst), 2);
        assert!(Instant::now() >= t0 + gap);

        let again = trimmer
            .schedule(After::Pass)
            .expect("a later call trims again");
        again.await.unwrap();
        assert_eq!(TRIMS.load(Ordering::SeqCst), 3);
        assert!(Instant::now() >= t0 + 2 * gap);
    }

    /// Updates keep the longer gap.
    #[test]
    fn updates_wait_longer_between_trims_than_passes() {
        assert_eq!(After::Update.gap(), Duration::from_secs(30));
        assert_eq!(After::Pass.gap(), Duration::from_secs(10));
    }

    // The lib's tests run with the system allocator (jemalloc is the binary's: its tests are in
    // src/main.rs).
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
    #[test]
    fn stats_count_a_live_block() {
        let mmapped = || {
            stats()
                .into_iter()
                .find(|(s, _)| *s == "mmapped")
                .map(|(_, b)| b)
                .unwrap()
        };
        let before = mmapped();
        // 64 MiB is past glibc's largest mmap threshold (32 MiB): a block mapped on its own.
        // Other tests' threads may free mapped blocks meanwhile, but not 32 MiB of them.
        let block = std::hint::black_box(vec![7u8; 64 << 20]);
        let held = mmapped();
        assert!(held >= before + (32 << 20), "{before} -> {held}");
        drop(block);
    }
}
