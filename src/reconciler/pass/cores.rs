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
//! passes at 10,000 are untouched), on at most [`MAX_THREADS`] threads, the machine's cores
//! (both of a 2-core machine). Such a pass is the one after a restart, when the API has
//! little to serve yet, **or the periodic resync** (every 5 minutes, or the interval set),
//! which runs while the API is live: for its CPU part (seconds at 100,000 on a loaded
//! machine) the pass then competes with the API for every core, not one. API latency during
//! a split pass has not been measured. The helper threads run at the process's priority:
//! lowered (nice 10), a helper the kernel left waiting on a loaded machine held its chunk
//! while the caller waited at the join (measured: `actual`'s pick 152 → 389 ms at load 5–7),
//! so the API would gain nothing the pass did not lose.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
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
/// on up to `threads` threads; the results in chunk order (chunk `i`'s result is stored in
/// slot `i`, whatever thread ran it and whenever it finished). With one thread, `f` runs once
/// over all of them on the caller's thread.
///
/// Helpers are named `pass-helper`; one the system cannot start is not an error: the threads
/// that did start (the caller's at least) take its chunks. A panic in `f` stops the handing
/// out of chunks and is re-raised on the caller's thread with its own payload (its message),
/// once the threads that were running a chunk are done.
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
    let slots: Vec<Mutex<Option<R>>> = chunks.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let panicked: Mutex<Option<Box<dyn Any + Send>>> = Mutex::new(None);
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(chunk) = chunks.get(i) else { return };
        match panic::catch_unwind(AssertUnwindSafe(|| f(i * size, chunk))) {
            Ok(r) => *lock(&slots[i]) = Some(r),
            Err(payload) => {
                // No chunk is handed out any more; the first panic is the one re-raised.
                next.store(chunks.len(), Ordering::Relaxed);
                lock(&panicked).get_or_insert(payload);
                return;
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads.min(chunks.len()) {
            let helper = std::thread::Builder::new().name("pass-helper".into());
            if helper.spawn_scoped(s, work).is_err() {
                break; // the threads already running (the caller's at least) do the rest
            }
        }
        work();
    });
    if let Some(payload) = panicked.into_inner().unwrap_or_else(|e| e.into_inner()) {
        panic::resume_unwind(payload);
    }
    slots
        .into_iter()
        .map(|slot| {
            let r = slot.into_inner().unwrap_or_else(|e| e.into_inner());
            r.expect("every chunk ran: none panicked")
        })
        .collect()
}

/// A value built on a thread of its own while the caller goes on (with more than one thread
/// for the pass), or at once on the caller's; [`Beside::get`] waits for it: the first caller
/// joins the thread, the others wait for that one. A panic while building is re-raised on
/// whichever thread asked first, with its payload.
pub(crate) struct Beside<'scope, T> {
    building: Mutex<Option<std::thread::ScopedJoinHandle<'scope, T>>>,
    built: std::sync::OnceLock<T>,
    /// The message of a build that panicked, for those who ask after the first.
    failed: Mutex<Option<String>>,
}

impl<'scope, T: Send + 'scope> Beside<'scope, T> {
    /// `build` on a thread of `scope` when `threads` > 1 (a thread the system cannot start
    /// is not an error: then at once, as with one thread).
    pub(crate) fn new<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        threads: usize,
        build: impl FnOnce() -> T + Send + 'scope,
    ) -> Self {
        let built = std::sync::OnceLock::new();
        let mut building = None;
        let build = std::sync::Arc::new(Mutex::new(Some(build)));
        if threads > 1 {
            let mine = build.clone();
            let run = move || lock(&mine).take().expect("built once")();
            let thread = std::thread::Builder::new().name("pass-helper".into());
            building = thread.spawn_scoped(scope, run).ok();
        }
        if building.is_none() {
            let build = lock(&build).take().expect("not started");
            let _ = built.set(build());
        }
        Beside {
            building: Mutex::new(building),
            built,
            failed: Mutex::new(None),
        }
    }

    pub(crate) fn get(&self) -> &T {
        self.built.get_or_init(|| {
            let Some(handle) = lock(&self.building).take() else {
                let failed = lock(&self.failed).clone();
                panic!(
                    "{}",
                    failed.unwrap_or_else(|| "built beside: no value".into())
                );
            };
            handle.join().unwrap_or_else(|payload| {
                *lock(&self.failed) = Some(panic_message(&*payload));
                panic::resume_unwind(payload)
            })
        })
    }

    pub(crate) fn into_inner(self) -> T {
        self.get();
        self.built.into_inner().expect("built")
    }
}

/// A panic's message, when it has one.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".into(),
    }
}

fn lock<V>(m: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use ovn_peerd_test_support::wait_until;

    use super::*;

    const WAIT: Duration = Duration::from_secs(60);

    /// Every item once, each chunk given its first item's position, the results in chunk
    /// order although the first chunk finishes last (it waits until the last one is done: the
    /// order cannot come from scheduling); the chunks other than the waiting one ran on the
    /// helpers, named `pass-helper`.
    #[test]
    fn chunks_come_back_in_order_even_when_the_first_finishes_last() {
        let items: Vec<usize> = (0..10_007).collect();
        let one = in_chunks(&items, 1, |at, c| (at, c.to_vec()));
        assert_eq!(one.len(), 1);
        let caller = std::thread::current().id();
        for threads in [2, 3, 8] {
            let last_done = AtomicBool::new(false);
            let split = in_chunks(&items, threads, |at, c| {
                assert_eq!(c[0], at, "a chunk starts at its position");
                if at == 0 {
                    wait_until("the last chunk is done", WAIT, || {
                        last_done.load(Ordering::SeqCst)
                    })
                    .expect("another thread runs the last chunk");
                }
                if c.last() == items.last() {
                    last_done.store(true, Ordering::SeqCst);
                }
                let me = std::thread::current();
                let on_helper = me.name() == Some("pass-helper");
                assert!(on_helper || me.id() == caller, "{:?}", me.name());
                (c.to_vec(), on_helper)
            });
            assert!(split.len() > 1, "split over {threads} threads");
            let (chunks, helpers): (Vec<Vec<usize>>, Vec<bool>) = split.into_iter().unzip();
            assert!(chunks.concat() == items, "the chunks out of order");
            assert!(helpers.contains(&true), "no chunk on a pass-helper");
        }
    }

    /// Set when a helper thread that ran a chunk exits.
    static HELPER_GONE: AtomicBool = AtomicBool::new(false);

    struct OnExit;

    impl Drop for OnExit {
        fn drop(&mut self) {
            HELPER_GONE.store(true, Ordering::SeqCst);
        }
    }

    thread_local! {
        static ON_EXIT: OnExit = const { OnExit };
    }

    /// A helper's panic reaches the caller with its own message, and no chunk is handed out
    /// after it: the caller holds each chunk it takes until the helper has exited (its first
    /// chunk panicked), so it runs at most the one it took before the panic.
    #[test]
    fn a_helpers_panic_reaches_the_caller_with_its_message_and_stops_the_pass() {
        let items: Vec<usize> = (0..1_000).collect();
        let ran = AtomicUsize::new(0);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            in_chunks(&items, 2, |at, _| {
                ran.fetch_add(1, Ordering::SeqCst);
                if std::thread::current().name() == Some("pass-helper") {
                    ON_EXIT.with(|_| ());
                    panic!("the chunk at {at} broke");
                }
                wait_until("the helper has exited", WAIT, || {
                    HELPER_GONE.load(Ordering::SeqCst)
                })
                .expect("the helper panics on its first chunk");
            })
        }));
        let payload = caught.expect_err("the helper's panic is the caller's");
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or("(not a String)");
        assert!(message.contains("broke"), "{message}");
        let ran = ran.load(Ordering::SeqCst);
        assert!(
            ran <= 2,
            "{ran} chunks ran: the helper's, the caller's at most one"
        );
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

    /// With one thread the value is built at once on the caller's; with more, on a
    /// `pass-helper` while the caller goes on (the build waits for the caller to have gone on:
    /// built at once, it would never see that and say so); a panic while building is the
    /// asker's, with its message.
    #[test]
    fn a_value_built_beside_is_built_while_the_caller_goes_on() {
        let caller = std::thread::current().id();
        let went_on = AtomicBool::new(false);
        std::thread::scope(|s| {
            let inline = Beside::new(s, 1, || std::thread::current().id());
            assert_eq!(*inline.get(), caller);
            let went_on = &went_on;
            let beside = Beside::new(s, 2, move || {
                let seen = wait_until("the caller went on", WAIT, || {
                    went_on.load(Ordering::SeqCst)
                });
                let name = std::thread::current().name().map(str::to_owned);
                (seen.is_ok(), name)
            });
            went_on.store(true, Ordering::SeqCst);
            assert_eq!(beside.into_inner(), (true, Some("pass-helper".to_owned())));
        });
        let caught = panic::catch_unwind(|| {
            std::thread::scope(|s| {
                let broken: Beside<'_, ()> = Beside::new(s, 2, || panic!("broke while building"));
                let first = panic::catch_unwind(AssertUnwindSafe(|| {
                    broken.get();
                }));
                let first = first.expect_err("the first asker gets the build's panic");
                assert_eq!(panic_message(&*first), "broke while building");
                broken.get();
            })
        });
        // A later asker (another of the pass's threads) gets the same message, not another.
        let payload = caught.expect_err("a later asker panics too");
        let message = panic_message(&*payload);
        assert!(message.contains("broke while building"), "{message}");
    }
}
