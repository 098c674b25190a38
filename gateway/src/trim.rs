//! Giving the memory of ended sessions back to the system.
//!
//! When sessions end, the allocator gets their memory back, but it gives free pages back
//! to the system only while the process is busy (mimalloc purges them lazily, when a
//! thread allocates), so a gateway gone quiet after a burst of sessions would keep its
//! peak resident size. Here the session maps give back their spare room and
//! [`service_kit::alloc::release_free_memory`] returns the free pages, on a blocking
//! thread, once session closes have paused for [`QUIET`] (and at least every
//! [`AT_MOST`] while they go on), never on the call path.
//!
//! Invariant: trimming only returns freed memory and spare capacity; it never removes an
//! entry.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Closes must pause this long before a trim.
const QUIET: Duration = Duration::from_millis(200);
/// With closes going on without a pause, a trim still happens this often.
const AT_MOST: Duration = Duration::from_secs(5);

static ENDED: AtomicU64 = AtomicU64::new(0);
static WAKE: Notify = Notify::const_new();

/// A client session ended (its memory is free now).
pub fn session_ended() {
    ENDED.fetch_add(1, Ordering::Relaxed);
    WAKE.notify_one();
}

/// Trims after sessions ended, until `stop`; `shrink` first gives back the room of maps
/// that held the sessions.
pub async fn run<F, Fut>(stop: CancellationToken, shrink: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut seen = ENDED.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = WAKE.notified() => {}
            _ = stop.cancelled() => return,
        }
        let started = tokio::time::Instant::now();
        // Wait for a pause in the closes (bounded).
        loop {
            let before = ENDED.load(Ordering::Relaxed);
            tokio::time::sleep(QUIET).await;
            if ENDED.load(Ordering::Relaxed) == before || started.elapsed() >= AT_MOST {
                break;
            }
        }
        let now = ENDED.load(Ordering::Relaxed);
        if now == seen {
            continue;
        }
        let ended = now - seen;
        seen = now;
        shrink().await;
        let runtime = tokio::runtime::Handle::current();
        let _ = tokio::task::spawn_blocking(move || {
            service_kit::alloc::release_free_memory(Some(&runtime));
        })
        .await;
        tracing::debug!(sessions = ended, "returned freed memory to the system");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn a_burst_of_closes_is_followed_by_one_trim_once_they_pause() {
        let stop = CancellationToken::new();
        let shrinks = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(stop.clone(), {
            let shrinks = Arc::clone(&shrinks);
            move || {
                shrinks.fetch_add(1, Ordering::SeqCst);
                async {}
            }
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(shrinks.load(Ordering::SeqCst), 0, "nothing ended yet");
        for _ in 0..50 {
            session_ended();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(shrinks.load(Ordering::SeqCst), 0, "not while closes go on");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while shrinks.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(QUIET * 2).await;
        assert_eq!(
            shrinks.load(Ordering::SeqCst),
            1,
            "one trim after the pause"
        );
        stop.cancel();
        task.await.expect("trimmer ends when stopped");
    }
}
