//! Files and directories that hold `stsgate dev`'s secrets (database password, master key,
//! admin password), made so that another local user can neither read them nor make dev (often
//! root) write through a link or into a directory they planted.
//!
//! - A secret is written to a fresh temporary name opened with create-new (`O_EXCL`) and
//!   `O_NOFOLLOW`, mode 0600, then renamed over its real name: a link at either name is never
//!   followed (a link at the real name is replaced).
//! - A secret is read with `O_NOFOLLOW` and only when it is a regular file of ours that nobody
//!   else could have written.
//! - A directory dev makes outside its data dir gets a random name and an exclusive `mkdir`, so
//!   one planted in advance makes creation fail instead of being used.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, Metadata, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

/// Why a path was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{} is a symbolic link: refusing to follow it (another user may have planted it)",
        .0.display()
    )]
    Symlink(PathBuf),
    #[error("{} is not a {expected}", path.display())]
    NotA {
        path: PathBuf,
        expected: &'static str,
    },
    #[error(
        "{} belongs to another user (uid {uid}): refusing to use it; remove it to start over",
        path.display()
    )]
    NotOurs { path: PathBuf, uid: u32 },
    #[error(
        "{} is writable by other users (mode {mode:o}): refusing to keep secrets there; \
         run `chmod go-w {}` or choose another --data-dir",
        path.display(),
        path.display()
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error(
        "{} has mode {mode:o}, not {expected:o} as stsgate dev made it: refusing to use it; \
         remove it to start over",
        path.display()
    )]
    UnexpectedMode {
        path: PathBuf,
        mode: u32,
        expected: u32,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// This process's effective uid (the owner of `/proc/self`).
pub fn my_uid() -> u32 {
    fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Creates a new file at `path` for writing, mode 0600. Fails when anything is already there
/// (a file, or a link, dangling or not), and never follows a link.
pub fn create_new_private(path: &Path) -> Result<File, Error> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err(path))?;
    // Exactly 0600 whatever the umask (fchmod, on the file just created).
    file.set_permissions(Permissions::from_mode(0o600))
        .map_err(io_err(path))?;
    Ok(file)
}

/// Replaces `path` with a file holding `contents`, mode 0600, owned by `owner` (or by us).
///
/// The bytes go to `.<name>.<random>.tmp` beside it, created with create-new and no-follow,
/// and that file is renamed over `path`: a link planted at `path` is replaced by the new file,
/// never written through.
pub fn write_private(path: &Path, contents: &[u8], owner: Option<(u32, u32)>) -> Result<(), Error> {
    let name = path.file_name().ok_or_else(|| Error::NotA {
        path: path.to_owned(),
        expected: "file name",
    })?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", random_hex(8)));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut file = create_new_private(&tmp)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(io_err(&tmp))?;
        }
        file.write_all(contents).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Reads a file dev wrote, or `None` when there is none. Refuses a link, anything but a
/// regular file, and a file that is not ours or that others could have written.
pub fn read_private(path: &Path) -> Result<Option<String>, Error> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::Symlink(path.to_owned()));
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(Error::NotA {
            path: path.to_owned(),
            expected: "regular file",
        });
    }
    check_owner_and_mode(path, &meta, my_uid())?;
    let mut text = String::new();
    io::Read::read_to_string(&mut file, &mut text).map_err(io_err(path))?;
    Ok(Some(text))
}

/// A fresh log file at `path`, mode 0600: whatever was there (a file, a link) is unlinked
/// first, then the file is created with create-new and no-follow.
pub fn create_log(path: &Path) -> Result<File, Error> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    create_new_private(path)
}

fn check_owner_and_mode(path: &Path, meta: &Metadata, uid: u32) -> Result<(), Error> {
    if meta.uid() != uid {
        return Err(Error::NotOurs {
            path: path.to_owned(),
            uid: meta.uid(),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Error::Writable {
            path: path.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// `dir` is a real directory (not a link), owned by `uid`, that no one else can write to,
/// with exactly `mode` when one is given.
pub fn check_private_dir(dir: &Path, uid: u32, mode: Option<u32>) -> Result<(), Error> {
    let meta = fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if meta.file_type().is_symlink() {
        return Err(Error::Symlink(dir.to_owned()));
    }
    if !meta.is_dir() {
        return Err(Error::NotA {
            path: dir.to_owned(),
            expected: "directory",
        });
    }
    check_owner_and_mode(dir, &meta, uid)?;
    if let Some(expected) = mode
        && meta.mode() & 0o7777 != expected
    {
        return Err(Error::UnexpectedMode {
            path: dir.to_owned(),
            mode: meta.mode() & 0o7777,
            expected,
        });
    }
    Ok(())
}

/// No ancestor of `path` lets everyone rename or replace what it holds: an ancestor that
/// others can write must be sticky (like /tmp), so only an entry's owner can move it.
pub fn check_ancestors(path: &Path) -> Result<(), Error> {
    for dir in path.ancestors().skip(1) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let meta = fs::metadata(dir).map_err(io_err(dir))?;
        if meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0 {
            return Err(Error::Writable {
                path: dir.to_owned(),
                mode: meta.mode() & 0o7777,
            });
        }
    }
    Ok(())
}

/// Makes a new directory `<parent>/<prefix><random>` with `mode`, owned by us. `mkdir` is
/// exclusive: a directory or link planted at that name makes it fail, it is never adopted.
pub fn create_fresh_dir(parent: &Path, prefix: &str, mode: u32) -> Result<PathBuf, Error> {
    check_ancestors(&parent.join("x"))?;
    let mut attempt = 0;
    let dir = loop {
        let dir = parent.join(format!("{prefix}{}", random_hex(8)));
        match DirBuilder::new().mode(mode).create(&dir) {
            Ok(()) => break dir,
            // A 64-bit random name taken: try another (never use what is there).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 3 => attempt += 1,
            Err(e) => return Err(io_err(&dir)(e)),
        }
    };
    // Exactly `mode` whatever the umask. Only we (or root) can replace an entry of ours in
    // a sticky directory, so the path still names the directory just made.
    fs::set_permissions(&dir, Permissions::from_mode(mode)).map_err(io_err(&dir))?;
    check_private_dir(&dir, my_uid(), Some(mode))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A scratch directory of ours, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("stsgate-private-fs-{}", random_hex(8)));
            DirBuilder::new().mode(0o700).create(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_secret_replaces_a_planted_link_and_never_writes_through_it() {
        let s = Scratch::new();
        let victim = s.0.join("victim");
        fs::write(&victim, "original").unwrap();
        let secret = s.0.join("pg.pw");
        symlink(&victim, &secret).unwrap();

        write_private(&secret, b"hunter2\n", None).unwrap();

        assert_eq!(fs::read_to_string(&victim).unwrap(), "original");
        let meta = fs::symlink_metadata(&secret).unwrap();
        assert!(meta.is_file(), "the link itself was replaced");
        assert_eq!(mode(&secret), 0o600);
        assert_eq!(fs::read_to_string(&secret).unwrap(), "hunter2\n");
        // No temporary left behind.
        let names: Vec<_> = fs::read_dir(&s.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_secret_is_0600_whatever_was_there_before() {
        let s = Scratch::new();
        let path = s.0.join("secrets.json");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new", None).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn create_new_refuses_any_existing_entry_links_included() {
        let s = Scratch::new();
        let victim = s.0.join("victim");
        fs::write(&victim, "original").unwrap();
        let link = s.0.join("link");
        symlink(&victim, &link).unwrap();
        let dangling = s.0.join("dangling");
        symlink(s.0.join("nowhere"), &dangling).unwrap();

        for path in [&victim, &link, &dangling] {
            assert!(create_new_private(path).is_err(), "{}", path.display());
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "original");
        assert!(
            !s.0.join("nowhere").exists(),
            "a dangling link was not followed"
        );
    }

    #[test]
    fn a_log_over_a_planted_link_is_a_new_private_file() {
        let s = Scratch::new();
        let victim = s.0.join("victim");
        fs::write(&victim, "original").unwrap();
        let log = s.0.join("postgres.log");
        symlink(&victim, &log).unwrap();

        let mut f = create_log(&log).unwrap();
        f.write_all(b"LOG: started\n").unwrap();

        assert_eq!(fs::read_to_string(&victim).unwrap(), "original");
        assert!(fs::symlink_metadata(&log).unwrap().is_file());
        assert_eq!(mode(&log), 0o600);
    }

    #[test]
    fn reading_a_secret_refuses_links_and_files_others_can_write() {
        let s = Scratch::new();
        let good = s.0.join("good");
        write_private(&good, b"ok", None).unwrap();
        assert_eq!(read_private(&good).unwrap().as_deref(), Some("ok"));
        assert!(read_private(&s.0.join("missing")).unwrap().is_none());

        let link = s.0.join("link");
        symlink(&good, &link).unwrap();
        assert!(matches!(read_private(&link), Err(Error::Symlink(_))));

        fs::set_permissions(&good, Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(read_private(&good), Err(Error::Writable { .. })));
    }

    #[test]
    fn fresh_directories_are_new_random_and_checked() {
        let s = Scratch::new();
        let a = create_fresh_dir(&s.0, "stsgate-dev-", 0o711).unwrap();
        let b = create_fresh_dir(&s.0, "stsgate-dev-", 0o711).unwrap();
        assert_ne!(a, b);
        assert_eq!(mode(&a), 0o711);
        check_private_dir(&a, my_uid(), Some(0o711)).unwrap();

        fs::set_permissions(&b, Permissions::from_mode(0o771)).unwrap();
        assert!(matches!(
            check_private_dir(&b, my_uid(), Some(0o711)),
            Err(Error::Writable { .. })
        ));
        fs::set_permissions(&b, Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            check_private_dir(&b, my_uid(), Some(0o711)),
            Err(Error::UnexpectedMode { .. })
        ));
        let link = s.0.join("link");
        symlink(&a, &link).unwrap();
        assert!(matches!(
            check_private_dir(&link, my_uid(), None),
            Err(Error::Symlink(_))
        ));
        assert!(matches!(
            check_private_dir(&a, my_uid().wrapping_add(1), None),
            Err(Error::NotOurs { .. })
        ));
    }

    #[test]
    fn an_ancestor_everyone_can_write_is_refused_unless_sticky() {
        let s = Scratch::new();
        let open = s.0.join("open");
        DirBuilder::new().create(&open).unwrap();
        fs::set_permissions(&open, Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            check_ancestors(&open.join("data")),
            Err(Error::Writable { .. })
        ));
        fs::set_permissions(&open, Permissions::from_mode(0o1777)).unwrap();
        check_ancestors(&open.join("data")).unwrap();
        assert!(create_fresh_dir(&open, "x-", 0o700).is_ok());
    }

    #[test]
    fn secrets_can_be_given_to_another_user() {
        if my_uid() != 0 {
            eprintln!("SKIPPED: chown needs root");
            return;
        }
        let s = Scratch::new();
        let path = s.0.join("pg.pw");
        write_private(&path, b"pw", Some((65534, 65534))).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        assert_eq!(mode(&path), 0o600);
    }
}
