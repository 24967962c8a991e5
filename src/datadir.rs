//! The data directory is private: it holds the query log (who asked for what),
//! alerts, the password hash and the API token, so only dnsguard's own user may
//! read it, whatever umask dnsguard was started with.
//!
//! * Directories dnsguard makes are 0700 and files 0600, set explicitly
//!   ([`create_dir`], [`file_options`]).
//! * Files that libraries make themselves (sled's segments, snapshots and blobs,
//!   at any time while the server runs) get 0600 from the server's umask, 077
//!   ([`make_private`]); they sit in 0700 directories anyway.
//! * A data directory made earlier with looser modes (an older dnsguard, the CLI
//!   under umask 022, a copy) is tightened when the server starts, and the log
//!   says so.

use std::fs::{OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory under the data directory, and of itself.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file dnsguard writes there.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents as [`DIR_MODE`], and gives `dir` that
/// mode exactly (whatever the umask, or if it already existed with another).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    if std::fs::metadata(dir)?.permissions().mode() & 0o7777 == DIR_MODE {
        return Ok(());
    }
    set_mode(dir, DIR_MODE)
}

/// Options that create a file as [`FILE_MODE`] (add read/write/append).
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Takes group and other permissions from `path` if it has any; true if it did.
pub fn tighten(path: &Path) -> io::Result<bool> {
    let meta = std::fs::symlink_metadata(path)?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() || mode & 0o077 == 0 {
        return Ok(false);
    }
    set_mode(path, mode & !0o077)?;
    Ok(true)
}

/// [`tighten`] on `dir` and everything below it (symbolic links are neither
/// followed nor changed); how many entries it changed. An entry that cannot be
/// read or changed does not stop the walk: the first such error comes back with
/// the count.
pub fn tighten_tree(dir: &Path) -> (usize, Option<io::Error>) {
    let mut changed = 0;
    let mut first_error = None;
    let mut note = |r: io::Result<bool>| match r {
        Ok(c) => changed += usize::from(c),
        Err(e) => {
            first_error.get_or_insert(e);
        }
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        note(tighten(&path));
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        match std::fs::read_dir(&path) {
            Ok(entries) => stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path()))),
            Err(e) => note(Err(e)),
        }
    }
    (changed, first_error)
}

/// At server start: sets the process umask to 077 (for files libraries create)
/// and makes `data_dir` private, creating it or tightening what is there. Never
/// fails: a data directory that cannot be changed (read-only disk) must not stop
/// DNS; the log says what happened.
pub fn make_private(data_dir: &Path) {
    // SAFETY: umask(2) only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    // A symbolic link to the data directory is followed (only) here.
    let Ok(dir) = std::fs::canonicalize(data_dir) else {
        if let Err(error) = create_dir(data_dir) {
            tracing::warn!(%error, dir = %data_dir.display(), "cannot create the data directory");
        }
        return;
    };
    let (changed, error) = tighten_tree(&dir);
    if changed > 0 {
        tracing::warn!(
            dir = %data_dir.display(), entries = changed,
            "the data directory was readable by other users: made it private (directories 0700, files 0600)"
        );
    }
    if let Some(error) = error {
        tracing::warn!(
            %error, dir = %data_dir.display(),
            "cannot make everything in the data directory private"
        );
    }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
}

/// Writes `bytes` to `path` atomically: a temp file next to it, fsync, `mode`
/// (exactly: the server runs with umask 077, see `datadir.rs`), rename.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A fresh temp name next to `path` (same directory, so rename is atomic and
/// relative paths in a config resolve the same).
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.{}-{:08x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_private_directories_and_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        let f = dir.join("f");
        file_options().create(true).append(true).open(&f).unwrap();
        assert_eq!(mode(&f) & 0o077, 0, "never more than 0600");
        // An existing directory gets the mode too.
        set_mode(&dir, 0o755).unwrap();
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn tightens_a_tree_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        set_mode(&outside, 0o644).unwrap();
        let root = tmp.path().join("data");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        for d in [&root, &root.join("sub"), &root.join("sub/deeper")] {
            set_mode(d, 0o755).unwrap();
        }
        for (f, m) in [("f", 0o644), ("sub/g", 0o666), ("sub/deeper/h", 0o600)] {
            std::fs::write(root.join(f), "x").unwrap();
            set_mode(&root.join(f), m).unwrap();
        }
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let (changed, error) = tighten_tree(&root);
        assert_eq!(changed, 5);
        assert!(error.is_none(), "{error:?}");
        for d in ["", "sub", "sub/deeper"] {
            assert_eq!(mode(&root.join(d)), 0o700, "{d}");
        }
        for f in ["f", "sub/g", "sub/deeper/h"] {
            assert_eq!(mode(&root.join(f)), 0o600, "{f}");
        }
        assert_eq!(mode(&outside), 0o644, "a link's target is left alone");
        assert_eq!(tighten_tree(&root).0, 0, "nothing left to do");
    }

    #[test]
    fn atomic_write_sets_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomically(&p, b"a", 0o600).unwrap();
        write_atomically(&p, b"b", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"b");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
