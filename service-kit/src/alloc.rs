//! The allocator of every process of the stack: mimalloc, whose per-thread free lists
//! make an allocation and its free a few dozen instructions. With glibc's malloc they
//! were ~15k of the ~116k instructions a proxied call costs the gateway (~70
//! allocations, most of them freed on another thread than the one that made them).
//!
//! mimalloc gives free pages back to the system lazily, as threads allocate, and its
//! `mi_collect` works on the calling thread's heap (nothing at all on a thread that never
//! allocated): a worker gone idle keeps the pages of every session it served.
//! [`release_free_memory`] asks every runtime worker to give its free pages back the
//! next time it parks ([`runtime`] builds runtimes whose workers do), and wakes them.
//! Measured with 4,000 sessions that hold rmcp's session copy: their memory back to
//! 1.2x of idle after they close, as with glibc's `malloc_trim` (5.6x when only the
//! asking thread collected).
//!
//! Invariant: this is the workspace's one global allocator, and giving memory back only
//! returns what is free.

use std::{
    cell::Cell,
    sync::atomic::{AtomicU64, Ordering},
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How many times memory was asked back; each thread remembers what it answered.
static ASKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static ANSWERED: Cell<u64> = const { Cell::new(0) };
}

/// A multi-threaded runtime builder (all drivers on) whose workers give free memory
/// back when asked ([`release_free_memory`]).
pub fn runtime() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().on_thread_park(on_park);
    builder
}

/// Gives the free pages of this thread's heap and of mimalloc's shared arenas back to
/// the system now, and asks every worker of the runtimes [`runtime`] built to do the
/// same for its own heap when it next parks; `wake` is a handle of such a runtime,
/// whose parked workers are woken for it. Call it off the async workers (it blocks
/// briefly).
pub fn release_free_memory(wake: Option<&tokio::runtime::Handle>) {
    ASKED.fetch_add(1, Ordering::Relaxed);
    collect();
    if let Some(handle) = wake {
        // A task spawned from outside the runtime wakes a parked worker; it parks again
        // once the task is done, and answers then.
        for _ in 0..handle.metrics().num_workers() {
            handle.spawn(async {});
        }
    }
}

/// A worker is about to park: answers a request for memory it has not answered yet.
fn on_park() {
    let asked = ASKED.load(Ordering::Relaxed);
    if ANSWERED.get() != asked {
        ANSWERED.set(asked);
        collect();
    }
}

#[allow(unsafe_code)] // the one FFI call of the workspace; see the SAFETY note
fn collect() {
    unsafe extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: `mi_collect` is mimalloc's own (linked with the allocator above), takes a
    // plain flag and has no preconditions: it frees the calling thread's empty pages
    // and purges the free pages of every arena, under mimalloc's own locks.
    unsafe { mi_collect(true) }
}
