//! The process's heap: glibc malloc's settings at start, handing freed memory back to the system
//! after large transients, and what the heap holds (`/metrics`).
//!
//! Why it needs care: glibc keeps the memory a program frees for later use, so without a trim
//! the resident size is set by the largest transient the process ever had (an NB dump, a full
//! pass over every peering), not by what is live. [`release_freed_memory`] gives every free page
//! back (`malloc_trim` walks the whole heap holding the allocator's locks: tens of milliseconds
//! at 10,000 peerings, so it runs on a blocking thread, and after a large update or pass at most
//! once per [`TRIM_GAP`], the last one of a burst deferred to the gap's end, never dropped).
//!
//! `--features jemalloc` builds the binary with jemalloc instead (less fragmentation for the
//! replica's many small rows: see the README's *Memory at 10,000 peerings*); its background
//! thread gives freed pages back by itself, and a trim here purges at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// After a large update or pass, the heap is trimmed at most this often.
pub const TRIM_GAP: Duration = Duration::from_secs(10);

/// When the heap was last trimmed.
static LAST_TRIM: Mutex<Option<Instant>> = Mutex::new(None);

/// A deferred trim is scheduled (a burst of large passes asks once).
static TRIM_PENDING: AtomicBool = AtomicBool::new(false);

/// Tunes glibc malloc; call first thing in `main`, before any thread exists.
///
/// - Two arenas: glibc gives each thread that allocates its own arena (up to 8 per core); with
///   tokio's workers and the blocking threads that multiplies what a large heap leaves
///   fragmented.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
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
    /// A full or large worker pass ended.
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
}

/// Returns the heap's free pages to the system now, then publishes the heap's figures. It walks
/// the heap: call it on a blocking thread.
pub fn release_freed_memory(after: After) {
    *LAST_TRIM.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
    // SAFETY: malloc_trim only returns free memory to the system; it takes the allocator's
    // locks itself and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(feature = "jemalloc")]
    // SAFETY: "arena.4096.purge" (4096 = MALLCTL_ARENAS_ALL) takes no value and returns none:
    // it purges the unused dirty pages of every arena.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    metrics::counter!(crate::metrics::HEAP_TRIMS_TOTAL, "after" => after.label()).increment(1);
    publish_stats();
}

/// [`release_freed_memory`] on a blocking task of its own (nobody waits for it): now, or, when
/// the heap was trimmed less than [`TRIM_GAP`] ago, once that gap has passed (one deferred trim
/// for any number of calls meanwhile). Needs a tokio runtime.
pub fn release_freed_memory_soon(after: After) {
    let plan = {
        let mut last = LAST_TRIM.lock().unwrap_or_else(|e| e.into_inner());
        let plan = trim_plan(*last, Instant::now(), TRIM_PENDING.load(Ordering::Acquire));
        if plan == TrimPlan::Now {
            *last = Some(Instant::now());
        }
        plan
    };
    match plan {
        TrimPlan::Now => {
            tokio::task::spawn_blocking(move || release_freed_memory(after));
        }
        TrimPlan::After(wait) => {
            if TRIM_PENDING.swap(true, Ordering::AcqRel) {
                return;
            }
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                TRIM_PENDING.store(false, Ordering::Release);
                let _ = tokio::task::spawn_blocking(move || release_freed_memory(after)).await;
            });
        }
        TrimPlan::AlreadyPending => {}
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

/// Trims at most once per [`TRIM_GAP`], and never forgets one asked for: what a burst of large
/// passes frees is given back by one trim at the gap's end.
fn trim_plan(last: Option<Instant>, now: Instant, pending: bool) -> TrimPlan {
    let wait = last.map_or(Duration::ZERO, |t| {
        TRIM_GAP.saturating_sub(now.saturating_duration_since(t))
    });
    match (wait.is_zero(), pending) {
        (_, true) => TrimPlan::AlreadyPending,
        (true, false) => TrimPlan::Now,
        (false, false) => TrimPlan::After(wait),
    }
}

/// What glibc's heap holds, in bytes (`mallinfo2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Allocated and not freed: what the program holds.
    pub in_use: usize,
    /// Free inside the heap (kept by the allocator; resident only where not trimmed).
    pub free: usize,
    /// Of `in_use`, the large blocks mapped on their own (given back as soon as freed).
    pub mmapped: usize,
}

/// The heap's figures now, where glibc tells them (not with jemalloc).
pub fn stats() -> Option<HeapStats> {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters (under its locks).
        let m = unsafe { libc::mallinfo2() };
        Some(HeapStats {
            in_use: m.uordblks + m.hblkhd,
            free: m.fordblks,
            mmapped: m.hblkhd,
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc"))))]
    None
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

/// Sets `ovn_peerd_heap_bytes{state}` from [`stats`] (after each trim: what a trim leaves).
fn publish_stats() {
    if let Some(s) = stats() {
        metrics::gauge!(crate::metrics::HEAP_BYTES, "state" => "in_use").set(s.in_use as f64);
        metrics::gauge!(crate::metrics::HEAP_BYTES, "state" => "free").set(s.free as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_runs_at_once_unless_one_ran_within_the_gap_and_is_never_dropped() {
        let t0 = Instant::now();
        assert_eq!(trim_plan(None, t0, false), TrimPlan::Now);
        assert_eq!(trim_plan(Some(t0), t0 + TRIM_GAP, false), TrimPlan::Now);
        // Asked again within the gap: deferred to its end, not skipped.
        let half = TRIM_GAP / 2;
        assert_eq!(
            trim_plan(Some(t0), t0 + half, false),
            TrimPlan::After(TRIM_GAP - half)
        );
        // One deferred trim serves every call until it runs.
        assert_eq!(
            trim_plan(Some(t0), t0 + half, true),
            TrimPlan::AlreadyPending
        );
    }

    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "jemalloc")))]
    #[test]
    fn stats_count_a_live_block() {
        let before = stats().unwrap();
        let block = std::hint::black_box(vec![7u8; 64 << 20]);
        let held = stats().unwrap();
        // Other tests' threads allocate and free meanwhile, but not 64 MiB.
        assert!(
            held.in_use >= before.in_use + (32 << 20),
            "{before:?} -> {held:?}"
        );
        drop(block);
    }
}
