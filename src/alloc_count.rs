//! A counting global allocator for the benchmarks: heap allocations made by the current
//! thread. The library never installs it (the browser build keeps the default allocator);
//! the native CLI does (`src/bin/sd-webgpu.rs`), and so can a test binary:
//!
//! ```ignore
//! #[global_allocator]
//! static A: sd_webgpu::alloc_count::Counting = sd_webgpu::alloc_count::Counting;
//! ```
//!
//! [`thread_allocations`] is `None` where it is not installed.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// The system allocator, counting the allocations (and reallocations) of each thread.
pub struct Counting;

static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    // `try_with`: the thread's slot may already be gone while the thread shuts down.
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

// SAFETY: every call forwards to `System` with the caller's arguments unchanged; the
// counter is a const-initialised thread-local `Cell` (no allocation, no drop).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Heap allocations made by this thread so far, where [`Counting`] is the global allocator.
pub fn thread_allocations() -> Option<u64> {
    let n = COUNT.with(|c| c.get());
    INSTALLED.load(Ordering::Relaxed).then_some(n)
}
