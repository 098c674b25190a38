//! Freed memory goes back to the system when asked (`service_kit::alloc`), also when its
//! pages belong to runtime workers that have gone idle and the thread asking never
//! allocated: mimalloc's `mi_collect` works on the calling thread's heap (and does
//! nothing on a thread without one), so the workers themselves must answer. Without
//! that, a gateway kept the memory of 4,000 closed sessions resident (114 MiB against
//! 20 MiB idle) after its trimmer asked from a blocking thread.
//!
//! Its own test binary: it reads the process's resident size, which other tests running
//! beside it would move.

use std::time::{Duration, Instant};

/// The process's resident size (`VmRSS`), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

const BLOCK: usize = 16 * 1024;
const BLOCKS_PER_TASK: usize = 2048;
const TASKS: usize = 8;
/// 256 MiB in all.
const MADE_KIB: u64 = (BLOCK * BLOCKS_PER_TASK * TASKS / 1024) as u64;

#[test]
fn freed_memory_goes_back_when_asked_even_from_idle_workers() {
    let runtime = service_kit::alloc::runtime()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let before = rss_kib();
    // Blocks the size of a tokio channel's first block, made on the workers (in their
    // heaps) and written to, so that they are resident.
    let made: Vec<Vec<Box<[u8]>>> = runtime.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                tokio::spawn(async move {
                    // Every other block freed at once, on the worker: no page fills up
                    // (mimalloc lets any thread reclaim a full page), as pages of
                    // sessions opened and closed in turn do not.
                    let mut kept = Vec::with_capacity(BLOCKS_PER_TASK);
                    for i in 0..BLOCKS_PER_TASK * 2 {
                        let block = vec![(t + i) as u8 | 1; BLOCK].into_boxed_slice();
                        if i % 2 == 0 {
                            kept.push(block);
                        }
                    }
                    kept
                })
            })
            .collect();
        let mut made = Vec::new();
        for t in tasks {
            made.push(t.await.expect("an allocating task"));
        }
        made
    });
    let peak = rss_kib();
    assert!(
        peak >= before + MADE_KIB * 3 / 4,
        "the blocks are not resident: {before} KiB before, {peak} KiB after making {MADE_KIB} KiB"
    );
    // Freed on the workers, as a session's memory is; they are idle from here on.
    runtime.block_on(async move {
        let tasks: Vec<_> = made
            .into_iter()
            .map(|blocks| tokio::spawn(async move { drop(blocks) }))
            .collect();
        for t in tasks {
            t.await.expect("a freeing task");
        }
    });
    std::thread::sleep(Duration::from_millis(200));

    // Asked from a thread of its own, as the gateway's trimmer asks from a blocking
    // thread (one that may never have allocated).
    let handle = runtime.handle().clone();
    std::thread::spawn(move || service_kit::alloc::release_free_memory(Some(&handle)))
        .join()
        .expect("the asking thread");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = rss_kib();
    while now > before + MADE_KIB / 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        now = rss_kib();
    }
    assert!(
        now <= before + MADE_KIB / 4,
        "freed memory stayed resident: {before} KiB before, {peak} KiB at the peak, {now} KiB 10 s after asking for it back"
    );
}
