//! One `serve` per embedded store file: an advisory lock on a file beside it,
//! holding the owner's process id so the refusal can name it. Read-only commands
//! (`history`, `connections`, ...) do not take it and keep working beside `serve`.
//!
//! Two emulators on one file would each take the other's live connections for gone
//! (their registries differ) and record them as disconnected.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Held while `serve` runs; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct ServeLock {
    _file: File,
    path: PathBuf,
}

impl ServeLock {
    /// The lock file of a store file: `wsledger.db` → `wsledger.db.serve-lock`.
    pub fn path_for(store: &Path) -> PathBuf {
        let mut name = store.as_os_str().to_owned();
        name.push(".serve-lock");
        PathBuf::from(name)
    }

    /// Takes the lock, or says which process holds it.
    pub fn acquire(store: &Path) -> Result<ServeLock, String> {
        let path = Self::path_for(store);
        let mut file = crate::private_files::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| format!("cannot open the lock file {}: {error}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            let owner = owner.trim();
            let who = if owner.is_empty() { "another process".to_owned() } else { format!("process {owner}") };
            return Err(format!(
                "{} is already served by {who} (wsledger serve); stop it, or give this one another --store file",
                store.display()
            ));
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(ServeLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_store_is_refused_with_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("wsledger.db");
        let first = ServeLock::acquire(&store).unwrap();
        let refused = ServeLock::acquire(&store).unwrap_err();
        assert!(refused.contains(&format!("process {}", std::process::id())), "{refused}");
        assert!(refused.contains(&store.display().to_string()), "{refused}");
        drop(first);
        ServeLock::acquire(&store).unwrap();
    }
}
