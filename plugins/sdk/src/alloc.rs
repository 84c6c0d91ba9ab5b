//! The guest's global allocator: power-of-two size classes with a free
//! list each, carved from 64 KiB chunks of the standard library's allocator
//! (dlmalloc), which also serves anything larger than 4 KiB or aligned to
//! more than 16 bytes.
//!
//! Why: every call copies its arguments into the guest through
//! `cabi_realloc` (one allocation per string or list: ten for a resolver's
//! `resolve`), the bindings free them afterwards, and the result is freed
//! after the call. Through dlmalloc those allocations were the largest
//! share of a small resolver's call; a pop or a push here is a few
//! instructions.
//!
//! The price: a freed block stays in its class (it is never merged or
//! handed back to dlmalloc), so a plugin's memory is the peak of each class
//! it used, up to twice what it asked for in that class. Guests are
//! single-threaded (`wasm32-wasip2` has no threads), so there is no locking.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// The smallest class, 16 bytes: room for the free list's link and the
/// alignment every class guarantees.
const MIN_SHIFT: u32 = 4;
/// The largest class, 4 KiB: larger blocks go to the system allocator.
const MAX_SHIFT: u32 = 12;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// The alignment of every small block (chunks and class sizes are multiples).
const ALIGN: usize = 1 << MIN_SHIFT;
/// What one refill takes from the system allocator.
const CHUNK: usize = 64 << 10;

struct State {
    /// The head of each class's free list; a free block holds the next.
    free: [*mut u8; CLASSES],
    /// The unused rest of the current chunk.
    next: *mut u8,
    end: *mut u8,
}

/// A size-class allocator for single-threaded WebAssembly guests.
pub struct Allocator(UnsafeCell<State>);

// SAFETY: guests are single-threaded; a build with shared-memory threads
// (the `atomics` target feature) is refused below.
unsafe impl Sync for Allocator {}

#[cfg(target_feature = "atomics")]
compile_error!("fanwire_sdk::alloc::Allocator is for single-threaded guests only");

impl Allocator {
    /// An empty allocator (it takes its first chunk on first use).
    pub const fn new() -> Self {
        Allocator(UnsafeCell::new(State {
            free: [ptr::null_mut(); CLASSES],
            next: ptr::null_mut(),
            end: ptr::null_mut(),
        }))
    }
}

impl Default for Allocator {
    fn default() -> Self {
        Self::new()
    }
}

/// The class of a layout, or `None` for the system allocator.
#[inline]
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if size > 1 << MAX_SHIFT || layout.align() > ALIGN {
        return None;
    }
    let shift = (usize::BITS - size.saturating_sub(1).leading_zeros()).max(MIN_SHIFT);
    Some((shift - MIN_SHIFT) as usize)
}

impl State {
    /// A new block of `class` from the current chunk, or from a new one.
    #[cold]
    unsafe fn carve(&mut self, class: usize) -> *mut u8 {
        let size = 1usize << (class as u32 + MIN_SHIFT);
        if (self.end as usize) - (self.next as usize) < size {
            // The rest of the old chunk (if any) is dropped: at most one
            // block's worth, once per 64 KiB.
            let chunk = System.alloc(Layout::from_size_align_unchecked(CHUNK, ALIGN));
            if chunk.is_null() {
                return chunk;
            }
            self.next = chunk;
            self.end = chunk.add(CHUNK);
        }
        let block = self.next;
        self.next = block.add(size);
        block
    }
}

unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class(layout) else {
            return System.alloc(layout);
        };
        let state = &mut *self.0.get();
        let head = state.free[class];
        if head.is_null() {
            return state.carve(class);
        }
        state.free[class] = *head.cast::<*mut u8>();
        head
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = class(layout) else {
            return System.dealloc(ptr, layout);
        };
        let state = &mut *self.0.get();
        *ptr.cast::<*mut u8>() = state.free[class];
        state.free[class] = ptr;
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class(layout), class(new)) {
            // The block already has room (a string shrunk to its length).
            (Some(old), Some(to)) if old == to => ptr,
            (None, None) => System.realloc(ptr, layout, new_size),
            _ => {
                let moved = self.alloc(new);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                moved
            }
        }
    }
}
