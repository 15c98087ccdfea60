//! What a benchmark measures of the thread it runs on (`tocsin-bench work`): the allocations
//! it makes, counted by tocsin's allocator wrapped (a thread-local counter, so a count costs
//! about a nanosecond and no thread waits on another; the services use [`crate::Allocator`]
//! itself), and its CPU time.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

/// [`crate::Allocator`], counting each thread's allocations (and reallocations).
pub struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Allocations (and reallocations) this thread has made so far through [`CountingAllocator`].
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn count() {
    // `try_with`: an allocation while the thread's locals are being torn down is not counted
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call goes on unchanged to tocsin's allocator; counting neither allocates nor
// unwinds (a const-initialised thread-local with no destructor).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on
        unsafe { crate::Allocator.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on
        unsafe { crate::Allocator.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on
        unsafe { crate::Allocator.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on
        unsafe { crate::Allocator.dealloc(ptr, layout) }
    }
}

/// The CPU time this thread has used, to the nanosecond (`CLOCK_THREAD_CPUTIME_ID`; zero if
/// the clock cannot be read).
#[allow(unsafe_code)]
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call to fill
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}
