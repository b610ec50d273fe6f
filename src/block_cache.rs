//! musl's allocator (mallocng) gives a freed group of its larger size classes back to the kernel
//! at once, so a buffer of a few KiB that a request allocates and frees costs an `mmap`, a page
//! fault and a `munmap` every time: 26 `mmap`s and 20 `munmap`s on the shim's call thread per
//! container, more in the helper. This keeps a few freed blocks of 512 B-16 KiB for the next request to take. glibc's
//! allocator keeps such memory itself; it gets none of this.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// Size classes 2^9 .. 2^14: 512 B to 16 KiB.
const MIN_SHIFT: u32 = 9;
const CLASSES: usize = 6;
/// Blocks kept per class: at most 2 * (0.5 + 1 + 2 + 4 + 8 + 16) = 63 KiB held.
const KEPT: usize = 2;
const ALIGN: usize = 16;

pub struct BlockCache {
    free: Mutex<[[usize; KEPT]; CLASSES]>,
}

impl BlockCache {
    pub const fn new() -> BlockCache {
        BlockCache {
            free: Mutex::new([[0; KEPT]; CLASSES]),
        }
    }
}

/// The class of a request the cache serves, and the size it is rounded up to.
fn class(layout: Layout) -> Option<(usize, Layout)> {
    let size = layout.size();
    if layout.align() > ALIGN
        || size <= (1 << (MIN_SHIFT - 1))
        || size > (1 << (MIN_SHIFT + CLASSES as u32 - 1))
    {
        return None;
    }
    let shift = usize::BITS - (size - 1).leading_zeros();
    let c = (shift - MIN_SHIFT) as usize;
    Layout::from_size_align(1 << shift, ALIGN)
        .ok()
        .map(|l| (c, l))
}

unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((c, rounded)) = class(layout) else {
            // SAFETY: forwarded as is.
            return unsafe { System.alloc(layout) };
        };
        {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = free[c].iter_mut().find(|p| **p != 0) {
                return std::mem::take(slot) as *mut u8;
            }
        }
        // SAFETY: a non-zero size.
        unsafe { System.alloc(rounded) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some((c, rounded)) = class(layout) else {
            // SAFETY: allocated by System with this layout (alloc above).
            return unsafe { System.dealloc(ptr, layout) };
        };
        {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = free[c].iter_mut().find(|p| **p == 0) {
                *slot = ptr as usize;
                return;
            }
        }
        // SAFETY: allocated by System with the rounded layout.
        unsafe { System.dealloc(ptr, rounded) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = class(layout);
        // SAFETY: new_size is non-zero and, rounded up to align, does not overflow (caller's
        // contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = class(new_layout);
        match (old, new) {
            // Same class: the block already has room.
            (Some((a, _)), Some((b, _))) if a == b => ptr,
            // SAFETY: neither side is ours: System's own realloc.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: as GlobalAlloc's default realloc: a new block, the common prefix
                // copied, the old block freed.
                unsafe {
                    let p = self.alloc(new_layout);
                    if !p.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    p
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let l = |s| Layout::from_size_align(s, 8).unwrap();
        let of = |s| class(l(s)).map(|(c, r)| (c, r.size()));
        assert_eq!(of(256), None);
        assert_eq!(of(257), Some((0, 512)));
        assert_eq!(of(512), Some((0, 512)));
        assert_eq!(of(513), Some((1, 1024)));
        assert_eq!(of(3000), Some((3, 4096)));
        assert_eq!(of(16384), Some((5, 16384)));
        assert_eq!(of(16385), None);
        assert!(class(Layout::from_size_align(4096, 4096).unwrap()).is_none());
    }

    #[test]
    fn a_freed_block_is_taken_again_and_grows_in_place() {
        let cache = BlockCache::new();
        let l = Layout::from_size_align(3000, 8).unwrap();
        unsafe {
            let a = cache.alloc(l);
            a.write_bytes(7, 3000);
            let grown = cache.realloc(a, l, 4000);
            assert_eq!(grown, a, "3000 and 4000 are both in the 4 KiB class");
            let l4 = Layout::from_size_align(4000, 8).unwrap();
            cache.dealloc(grown, l4);
            let b = cache.alloc(Layout::from_size_align(2500, 8).unwrap());
            assert_eq!(b, a, "the kept block is handed out again");
            let moved = cache.realloc(b, Layout::from_size_align(2500, 8).unwrap(), 9000);
            assert_eq!(*moved.add(2499), 7, "the prefix moved with it");
            cache.dealloc(moved, Layout::from_size_align(9000, 8).unwrap());
        }
    }
}
