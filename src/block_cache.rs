//! musl's allocator (mallocng) gives a group of slots back to the kernel as soon as its last
//! slot is freed, so memory a request allocates and frees costs an `mmap`, a page fault and a
//! `munmap` every time: 26 `mmap`s and 20 `munmap`s on the shim's call thread per container
//! once, 9 pairs of them in each helper still with blocks of 512 B-16 KiB kept. This keeps freed
//! blocks of 16 B-16 KiB, rounded up to powers of two, for the next request to take. glibc's
//! allocator keeps such memory itself; it gets none of this.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// Size classes 2^4 .. 2^14: 16 B to 16 KiB.
const MIN_SHIFT: u32 = 4;
const CLASSES: usize = 11;
/// The most blocks kept of one class (the small ones).
const KEPT: usize = 16;
const ALIGN: usize = 16;

/// Blocks kept of class `c`: up to 4 KiB of each class up to 1 KiB, two of each above. At
/// most 16 * (16 + 32 + 64 + 128 + 256) B + 8 * 512 B + 4 KiB + 2 * (2 + 4 + 8 + 16) KiB =
/// 77568 B held.
const fn kept(c: usize) -> usize {
    let n = 4096 >> (MIN_SHIFT as usize + c);
    if n < 2 {
        2
    } else if n > KEPT {
        KEPT
    } else {
        n
    }
}

struct Kept {
    len: [u8; CLASSES],
    blocks: [[usize; KEPT]; CLASSES],
}

pub struct BlockCache {
    free: Mutex<Kept>,
}

impl BlockCache {
    pub const fn new() -> BlockCache {
        BlockCache {
            free: Mutex::new(Kept {
                len: [0; CLASSES],
                blocks: [[0; KEPT]; CLASSES],
            }),
        }
    }

    fn take(&self, c: usize) -> Option<*mut u8> {
        let mut k = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let n = usize::from(k.len[c]);
        if n == 0 {
            return None;
        }
        k.len[c] -= 1;
        Some(k.blocks[c][n - 1] as *mut u8)
    }

    /// Whether the block was kept (else the caller frees it).
    fn keep(&self, c: usize, ptr: *mut u8) -> bool {
        let mut k = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let n = usize::from(k.len[c]);
        if n >= kept(c) {
            return false;
        }
        k.blocks[c][n] = ptr as usize;
        k.len[c] += 1;
        true
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
    let shift = (usize::BITS - (size - 1).leading_zeros()).max(MIN_SHIFT);
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
        if let Some(p) = self.take(c) {
            return p;
        }
        // SAFETY: a non-zero size.
        unsafe { System.alloc(rounded) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some((c, rounded)) = class(layout) else {
            // SAFETY: allocated by System with this layout (alloc above).
            return unsafe { System.dealloc(ptr, layout) };
        };
        if self.keep(c, ptr) {
            return;
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
        assert_eq!(of(8), None);
        assert_eq!(of(9), Some((0, 16)));
        assert_eq!(of(17), Some((1, 32)));
        assert_eq!(of(257), Some((5, 512)));
        assert_eq!(of(512), Some((5, 512)));
        assert_eq!(of(513), Some((6, 1024)));
        assert_eq!(of(3000), Some((8, 4096)));
        assert_eq!(of(16384), Some((10, 16384)));
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

    #[test]
    fn kept_counts_hold_at_most_76_kib() {
        let held: usize = (0..CLASSES)
            .map(|c| kept(c) << (MIN_SHIFT as usize + c))
            .sum();
        assert_eq!(held, 77568);
        assert_eq!(
            (kept(0), kept(4), kept(5), kept(6), kept(7)),
            (16, 16, 8, 4, 2)
        );
    }

    #[test]
    fn a_class_keeps_its_count_then_frees() {
        let cache = BlockCache::new();
        let l = Layout::from_size_align(600, 8).unwrap();
        unsafe {
            let blocks: Vec<*mut u8> = (0..6).map(|_| cache.alloc(l)).collect();
            for &b in &blocks {
                cache.dealloc(b, l);
            }
            // 1 KiB class: four kept, handed out last-in first.
            let again: Vec<*mut u8> = (0..4).map(|_| cache.alloc(l)).collect();
            assert_eq!(again, [blocks[3], blocks[2], blocks[1], blocks[0]]);
            for b in again {
                cache.dealloc(b, l);
            }
        }
    }
}
