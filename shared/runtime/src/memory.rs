//! The allocator and the runtime every tocsin binary runs on: mimalloc (ADR 0017), told to
//! give the pages it frees back to the system at once, in pages of 4 KiB.
//!
//! By default mimalloc 3 returns a free page a second after it became free, and only when
//! the thread that owns it allocates or frees again; a tokio worker that goes quiet after a
//! burst kept its garbage resident until its next burst. Measured on a router after 100,000
//! users became active at once: 6,571 bytes resident per active avatar, 4,494 with pages
//! returned at once, and the pipeline's burst rate the same either way (docs/performance.md).
//! Resident memory is what a container's limit counts.
//!
//! Returning pages at once has a price where transparent huge pages are in use: mimalloc asks
//! for them on its arenas (`MADV_HUGEPAGE`), so touching a returned 64 KiB page again made the
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

/// A multi-threaded tokio runtime (tokio's defaults), with the allocator set to return freed
/// pages at once. Called first thing in `main`, before other threads exist.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    return_freed_pages_at_once();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Unless the operator set `MIMALLOC_PURGE_DELAY` (or `MIMALLOC_ALLOW_THP`) themselves.
#[allow(unsafe_code)]
fn return_freed_pages_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: setting an option has no memory-safety preconditions; mimalloc documents it as
    // not thread-safe, and it runs before `main` starts any thread.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The options' numbers are mimalloc's: their defaults (1,000 ms and 1 in mimalloc 3) read
    /// back from them, and the runtime sets both to 0 and turns huge pages off for the process.
    /// (The one test in this binary that touches them.)
    #[test]
    #[allow(unsafe_code)]
    fn the_runtime_makes_mimalloc_return_freed_pages_at_once() {
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
        assert_eq!(read(), 0);
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            // SAFETY: reading an option or a process flag has no preconditions
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(ALLOW_THP) }, 0);
            assert_eq!(
                unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) },
                1
            );
        }
    }
}
