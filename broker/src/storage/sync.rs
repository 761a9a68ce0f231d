//! Durability of directory entries.

/// fsyncs a directory, so a file created or renamed in it survives a power loss.
pub fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
