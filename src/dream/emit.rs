//! Ordering ops, resolving overlaps, building the MemoryPatch. (Being written.)
