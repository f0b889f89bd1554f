//! Files that hold the ledger or what it records (the SQLite database and its
//! WAL, the lock file, stream checkpoints, function logs) are the user's alone:
//! created with mode 0600 whatever the umask, and never opened through a symbolic
//! link (another local user could point one at a file of theirs).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every file this module creates.
pub const MODE: u32 = 0o600;

/// Options that create a file with mode 0600 and refuse a symbolic link as the
/// last component of its path; the caller adds read, write, append, create.
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(MODE).custom_flags(libc::O_NOFOLLOW);
    options
}

/// Writes `bytes` to `path` through a temporary file beside it (0600) and a rename,
/// so a reader sees the old contents or the new, never a part.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = options().write(true).create_new(true).open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// Makes an existing file the owner's alone (0600), if it is not already.
pub fn restrict(path: &Path) -> std::io::Result<()> {
    let metadata = std::fs::symlink_metadata(path)?;
    if metadata.file_type().is_symlink() {
        return Err(std::io::Error::other(format!("{} is a symbolic link", path.display())));
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(MODE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_created_0600_and_symbolic_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger");
        options().write(true).create(true).truncate(false).open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        replace(&dir.path().join("checkpoint"), b"{}").unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("checkpoint")).unwrap().permissions().mode() & 0o777, 0o600);

        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "theirs").unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert!(options().append(true).create(true).open(&link).is_err(), "a symbolic link is not followed");
        assert!(restrict(&link).is_err());
        restrict(&elsewhere).unwrap();
        assert_eq!(std::fs::metadata(&elsewhere).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
