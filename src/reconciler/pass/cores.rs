//! A big full pass's per-peering CPU work spread over a few of the machine's cores.
//!
//! A pass runs on one blocking thread. A full pass over 100,000 peerings judges each one
//! against the replica (tree lookups, the rules, the in-sync comparison) independently of
//! the others: [`in_chunks`] cuts such work into consecutive chunks, lets up to
//! [`pass_threads`] threads (the caller's among them) take chunks in turn, and hands the
//! results back **in chunk order**: whatever thread ran a chunk, the caller sees what one
//! thread running the chunks one after the other would have given it. What must stay ordered
//! (age order, the first of two equal names) is therefore the caller's as before; the work
//! itself must be pure over shared, read-only data.
//!
//! **Bounded.** Only full passes over at least [`SPLIT_FROM`] peerings are split (a narrow
//! pass, or a full pass over fewer, stays on one thread: the API's figures during full
//! passes at 10,000 are untouched), on at most [`MAX_THREADS`] threads: such a pass is the
//! one after a restart (nothing else to do yet) or the periodic resync. The helper threads
//! run at the process's priority: lowered (nice 10), a helper the kernel left waiting on a
//! loaded machine held its chunk while the caller waited at the join (measured: `actual`'s
//! pick 152 → 389 ms at load 5–7), so the API would gain nothing the pass did not lose.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Full passes over fewer peerings than this stay on one thread (below it a full pass is a
/// fraction of a second of one core).
pub(crate) const SPLIT_FROM: usize = 20_000;

/// At most this many threads per pass, the caller's included.
pub(crate) const MAX_THREADS: usize = 4;

/// Chunks per thread: threads that finish early take the chunks of one that was descheduled
/// (the machine is shared) or that resolves a hub's router.
const CHUNKS_PER_THREAD: usize = 32;

/// How many threads a pass over `peerings` peerings may use: one for a narrow pass or
/// fewer than [`SPLIT_FROM`]; else the machine's cores, at most [`MAX_THREADS`].
pub(crate) fn pass_threads(full: bool, peerings: usize) -> usize {
    if !full || peerings < SPLIT_FROM {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
}

/// `f` over consecutive chunks of `items` (each given with the position of its first item),
/// on up to `threads` threads; the results in chunk order. With one thread, `f` runs once
/// over all of them on the caller's thread. A panic in `f` is the caller's (re-raised when the
/// threads are joined).
pub(crate) fn in_chunks<T, R, F>(items: &[T], threads: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(usize, &[T]) -> R + Sync,
{
    if threads <= 1 || items.len() < 2 {
        return vec![f(0, items)];
    }
    let size = items.len().div_ceil(threads * CHUNKS_PER_THREAD);
    let chunks: Vec<&[T]> = items.chunks(size).collect();
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(chunks.len()));
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(chunk) = chunks.get(i) else { return };
        let r = f(i * size, chunk);
        done.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
    };
    std::thread::scope(|s| {
        for _ in 1..threads.min(chunks.len()) {
            s.spawn(work);
        }
        work();
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every item once, each chunk given its first item's position, the results in order:
    /// the same as one thread, for any number of threads.
    #[test]
    fn chunks_come_back_in_order_whatever_the_threads() {
        let items: Vec<usize> = (0..10_007).collect();
        let one = in_chunks(&items, 1, |at, c| (at, c.to_vec()));
        assert_eq!(one.len(), 1);
        for threads in [2, 3, 8] {
            let split = in_chunks(&items, threads, |at, c| {
                assert_eq!(c[0], at, "a chunk starts at its position");
                c.to_vec()
            });
            assert!(split.len() > 1, "split over {threads} threads");
            assert_eq!(split.concat(), items);
        }
    }

    /// Narrow passes and small full passes stay on one thread; big full passes at most
    /// [`MAX_THREADS`].
    #[test]
    fn only_big_full_passes_split_and_never_past_the_cap() {
        assert_eq!(pass_threads(false, 1_000_000), 1);
        assert_eq!(pass_threads(true, SPLIT_FROM - 1), 1);
        let big = pass_threads(true, SPLIT_FROM);
        assert!((1..=MAX_THREADS).contains(&big), "{big}");
    }
}
