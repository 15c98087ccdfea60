//! The allocator and the runtime every tocsin binary runs on: mimalloc (ADR 0017), told to
//! give the pages it frees back to the system 100 ms after they became free, in pages of
//! 4 KiB, and a thread that makes it do so when every other thread has gone quiet.
//!
//! By default mimalloc 3 returns a free page a second after it became free, and only when
//! some thread calls into it again; a tokio worker that goes quiet after a burst kept its
//! garbage resident until its next burst (6,571 bytes resident per active avatar after
//! 100,000 users became active at once, against 4,494 with pages returned at once). Returning
//! each page at once costs the busy process instead: an `madvise` per page and the TLB
//! shootdown it sends to the other core, then a fault to use the page again, 6.4 % of the
//! machine while escalations fire. A page kept 100 ms is reused within a burst, and the
//! collecting thread returns it within 100 ms of the burst's end (docs/performance.md,
//! "The allocator's page returns"). Resident memory is what a container's limit counts.
//!
//! Returning pages has a price where transparent huge pages are in use: mimalloc asks for
//! them on its arenas (`MADV_HUGEPAGE`), so touching a returned 64 KiB page again made the
//! kernel fault in and zero a whole 2 MiB page. While 100,000 avatars became active, that
//! zeroing was 22 % of the machine's time (docs/performance.md, fan-out). The process therefore
//! runs without transparent huge pages (`PR_SET_THP_DISABLE`, what mimalloc's own
//! `MIMALLOC_ALLOW_THP=0` does); children it starts inherit that.

/// The allocator of every tocsin binary.
pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's `mi_option_purge_delay` (in `mi_option_t`, mimalloc 3.x, which
/// `libmimalloc-sys` does not name): milliseconds before a free page is returned.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's `mi_option_allow_thp` (mimalloc 3.x): whether it asks for transparent huge pages.
const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// How long a freed page stays with the process, in case it is needed again, before it goes
/// back to the system (mimalloc's `purge_delay`, in ms).
const RETURN_AFTER_MS: libc::c_long = 100;

/// A multi-threaded tokio runtime (tokio's defaults), with the allocator set to return freed
/// pages after [`RETURN_AFTER_MS`], from a thread of its own. Called first thing in `main`,
/// before other threads exist.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    configure_allocator();
    return_freed_pages()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Unless the operator set `MIMALLOC_PURGE_DELAY` (or `MIMALLOC_ALLOW_THP`) themselves.
#[allow(unsafe_code)]
fn configure_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an option has no memory-safety preconditions; mimalloc documents it
        // as not thread-safe, and it runs before `main` starts any thread.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, RETURN_AFTER_MS) }
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: as above; and PR_SET_THP_DISABLE only sets a flag of this process (huge pages
    // already in place stay; none are made from now on). Its failure (an old kernel) leaves
    // huge pages on, which costs time, not correctness.
    unsafe {
        libmimalloc_sys::mi_option_set(ALLOW_THP, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// mimalloc returns a page whose delay is over only when some thread calls into it again; a
/// tokio worker that went quiet after a burst never does. A thread of its own asks it to, once
/// per delay, for as long as the process runs. With a delay of 0 pages go back at once and
/// no thread is needed; with a negative one, never.
#[allow(unsafe_code)]
fn return_freed_pages() -> std::io::Result<()> {
    // SAFETY: reading an option has no preconditions
    let delay = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
    let Ok(every) = u64::try_from(delay) else {
        return Ok(());
    };
    if every == 0 {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("tocsin-pages".into())
        .spawn(move || {
            // mimalloc collects only for a thread that has allocated with it (whatever the
            // global allocator is)
            // SAFETY: a block allocated and freed at once, never used
            unsafe { libmimalloc_sys::mi_free(libmimalloc_sys::mi_malloc(16)) }
            loop {
                std::thread::sleep(std::time::Duration::from_millis(every));
                // SAFETY: mi_collect may be called from any thread at any time
                unsafe { libmimalloc_sys::mi_collect(false) }
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident bytes of this process.
    fn resident() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// The options' numbers are mimalloc's: their defaults (1,000 ms and 1 in mimalloc 3) read
    /// back from them, and the runtime sets the delay and turns huge pages off for the
    /// process. Then the point of it: memory a thread freed goes back to the system after the
    /// delay, though that thread never calls the allocator again. (The one test in this binary
    /// that touches the allocator's options; the test binary itself allocates with the system
    /// allocator, so mimalloc here holds only what this test gives it.)
    #[test]
    #[allow(unsafe_code)]
    fn the_runtime_returns_freed_pages_after_the_delay_from_a_quiet_thread() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reading an option has no preconditions
        let read = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(read(), 1000, "mi_option_t {PURGE_DELAY} is not purge_delay");
        let thp_before = std::env::var_os("MIMALLOC_ALLOW_THP")
            .is_none()
            // SAFETY: as above
            .then(|| unsafe { libmimalloc_sys::mi_option_get(ALLOW_THP) });
        assert!(
            matches!(thp_before, None | Some(1)),
            "mi_option_t {ALLOW_THP} is not allow_thp (default 1)"
        );
        let rt = runtime().unwrap();
        assert_eq!(rt.block_on(async { 2 + 2 }), 4);
        assert_eq!(read(), RETURN_AFTER_MS);
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            // SAFETY: reading an option or a process flag has no preconditions
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(ALLOW_THP) }, 0);
            assert_eq!(
                unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) },
                1
            );
        }

        // 64 MiB in small blocks, written, freed, and the thread that did it gone quiet
        const BLOCKS: usize = 16 * 1024;
        const SIZE: usize = 4 * 1024;
        let before = resident();
        let (quiet, wait) = std::sync::mpsc::channel::<u64>();
        let (done, finish) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            // SAFETY: each block is allocated with SIZE bytes, written within them and freed
            // once, by this thread
            let blocks: Vec<usize> = (0..BLOCKS)
                .map(|_| unsafe {
                    let p = libmimalloc_sys::mi_malloc(SIZE).cast::<u8>();
                    assert!(!p.is_null());
                    std::ptr::write_bytes(p, 1, SIZE);
                    p as usize
                })
                .collect();
            let peak = resident();
            for p in blocks {
                // SAFETY: as above
                unsafe { libmimalloc_sys::mi_free(p as *mut std::ffi::c_void) }
            }
            quiet.send(peak).unwrap();
            // quiet until the test is over: it never calls the allocator again
            let _ = finish.recv();
        });
        let peak = wait.recv().unwrap();
        let held = peak.saturating_sub(before);
        assert!(
            held >= (BLOCKS * SIZE / 2) as u64,
            "64 MiB written made only {held} bytes resident"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut now = resident();
        while now > before + held / 4 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            now = resident();
        }
        done.send(()).unwrap();
        worker.join().unwrap();
        assert!(
            now <= before + held / 4,
            "{held} bytes freed on a quiet thread; {} still resident after 10 s",
            now.saturating_sub(before)
        );
    }
}
