//! Bytes a store's files take on disk (`#[path = "common/disk.rs"] mod disk;`).

use std::path::Path;

/// The sizes of the files directly in `path` (a RocksDB directory), summed.
pub fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .map(|meta| meta.len())
                .sum()
        })
        .unwrap_or(0)
}
