//! The allocator and the runtime every tocsin binary runs on: mimalloc (ADR 0017), told to
//! give the pages it frees back to the system at once.
//!
//! By default mimalloc 3 returns a free page a second after it became free, and only when
//! the thread that owns it allocates or frees again; a tokio worker that goes quiet after a
//! burst kept its garbage resident until its next burst. Measured on a router after 100,000
//! users became active at once: 6,571 bytes resident per active avatar, 4,494 with pages
//! returned at once, and the pipeline's burst rate the same either way (docs/performance.md).
//! Resident memory is what a container's limit counts.

/// The allocator of every tocsin binary.
pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's `mi_option_purge_delay` (in `mi_option_t`, mimalloc 3.x, which
/// `libmimalloc-sys` does not name): milliseconds before a free page is returned.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// A multi-threaded tokio runtime (tokio's defaults), with the allocator set to return freed
/// pages at once. Called first thing in `main`, before other threads exist.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    return_freed_pages_at_once();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Unless the operator set `MIMALLOC_PURGE_DELAY` themselves.
#[allow(unsafe_code)]
fn return_freed_pages_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: setting an option has no memory-safety preconditions; mimalloc documents it as
    // not thread-safe, and it runs before `main` starts any thread.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option's number is mimalloc's: its default (1,000 ms in mimalloc 3) reads back from it,
    /// and the runtime sets it to 0. (The one test in this binary that touches the option.)
    #[test]
    #[allow(unsafe_code)]
    fn the_runtime_makes_mimalloc_return_freed_pages_at_once() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reading an option has no preconditions
        let read = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(read(), 1000, "mi_option_t {PURGE_DELAY} is not purge_delay");
        let rt = runtime().unwrap();
        assert_eq!(rt.block_on(async { 2 + 2 }), 4);
        assert_eq!(read(), 0);
    }
}
