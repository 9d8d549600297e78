//! How objects are cut into parts: S3's limits, the part size for an object and the
//! ranges of its parts, and the settings that cap parts in flight and in memory.
//!
//! Invariant: an object never needs more than `MAX_PARTS` parts, whatever the part
//! size asked for.

use std::sync::Arc;

use tokio::sync::Semaphore;

pub const MAX_PARTS: u64 = 10_000;
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// The largest object CopyObject copies in one request.
pub const MAX_COPY_OBJECT: u64 = 5 << 30;

/// How objects are split into parts, and the global cap on part requests in flight.
#[derive(Debug, Clone)]
pub struct PartSettings {
    pub part_size: u64,
    /// Parts of one object in flight at once.
    pub concurrency: usize,
    /// Shared by every object: bounds part requests in the process.
    pub permits: Arc<Semaphore>,
    /// Shared by every object: MiB of parts held in memory (copies through this
    /// machine), `BUFFER_BUDGET_MIB` in all.
    pub buffers: Arc<Semaphore>,
}

/// Memory for parts held whole in memory, across all objects.
pub const BUFFER_BUDGET_MIB: usize = 256;

/// The part size for an object: the requested one, grown (to whole MiB) so the object
/// needs no more than 10,000 parts.
pub fn part_size_for(size: u64, requested: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    requested.max(needed)
}

/// (part number, offset, length) of each part.
pub fn part_ranges(size: u64, part_size: u64) -> impl Iterator<Item = (i32, u64, u64)> {
    let count = size.div_ceil(part_size).max(1);
    (0..count).map(move |i| {
        let offset = i * part_size;
        (i as i32 + 1, offset, part_size.min(size - offset))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_to_fit_ten_thousand_parts() {
        assert_eq!(part_size_for(1 << 30, 16 << 20), 16 << 20);
        let huge = 5u64 << 40; // 5 TiB
        let grown = part_size_for(huge, 16 << 20);
        assert!(huge.div_ceil(grown) <= MAX_PARTS);
        assert_eq!(grown % (1 << 20), 0);
    }

    #[test]
    fn ranges_cover_the_object_exactly() {
        let ranges: Vec<_> = part_ranges(12, 5).collect();
        assert_eq!(ranges, vec![(1, 0, 5), (2, 5, 5), (3, 10, 2)]);
        assert_eq!(part_ranges(10, 5).count(), 2);
    }
}
