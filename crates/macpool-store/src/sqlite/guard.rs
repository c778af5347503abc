//! What keeps a data directory's store safe before SQLite touches it: one writer, and no lost
//! store silently replaced by an empty one.
//!
//! One writer: `macpool.lock` is locked, and so is the database file itself, for the life of the
//! store. The second lock is what makes the rule hold when `macpool.lock` was deleted (two
//! authorities on one store hand out the same MACs and overwrite each other's leases). On Unix
//! it is `flock(2)` on `macpool.db`, which is independent of the `fcntl` locks SQLite takes on the
//! same file. On Windows a lock over the whole file would be mandatory and block SQLite's own
//! reads, so one byte of SQLite's lock-byte page is locked instead: SQLite never reads or writes
//! that page, and its own locks use only the page's first 512 bytes.
//!
//! No lost store: SQLite treats a missing or zero-length database as a new, empty one (and deletes
//! a WAL beside a zero-length database). When the directory shows that a store existed here — our
//! marker `macpool.store` (written once the store is durable), a non-empty WAL, or the lock file
//! — an empty or unreadable database is refused instead of being reinitialised.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DATABASE: &str = "macpool.db";
pub const LOCK: &str = "macpool.lock";
pub const MARKER: &str = "macpool.store";
pub const WAL: &str = "macpool.db-wal";

/// Creates the data directory private to its owner (0700 on Unix), and makes the names of the
/// directories it created durable: a power cut must not take the whole store with it.
pub fn create_private_dir(dir: &Path) -> Result<(), String> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    for created in missing {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent).map_err(|e| format!("cannot sync {}: {e}", parent.display()))?;
    }
    Ok(())
}

/// Opens `path` for reading and writing, creating it readable by its owner only (0600 on Unix).
/// SQLite creates its WAL and shared-memory files with the database file's mode, so creating
/// `macpool.db` this way keeps them private too.
pub fn open_private(path: &Path, create: bool) -> std::io::Result<File> {
    let mut o = File::options();
    o.read(true).write(true).create(create).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// The signs, gathered before this process creates anything, that a store existed in `dir`.
pub struct Evidence(Vec<String>);

impl Evidence {
    pub fn gather(dir: &Path) -> Evidence {
        let mut found = Vec::new();
        if dir.join(MARKER).exists() {
            found.push(format!("{MARKER} (written when the store was created)"));
        }
        if let Ok(m) = std::fs::metadata(dir.join(WAL))
            && m.len() > 0
        {
            found.push(format!("{WAL} ({} bytes of write-ahead log)", m.len()));
        }
        if dir.join(LOCK).exists() {
            found.push(format!("{LOCK} (left by a macpool that ran here)"));
        }
        Evidence(found)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses to go on with a database that is `what` where a store existed.
    pub fn refuse(&self, dir: &Path, what: &str) -> String {
        let present: Vec<PathBuf> = [DATABASE, WAL, "macpool.db-shm", LOCK, MARKER]
            .iter()
            .map(|f| dir.join(f))
            .filter(|p| p.exists())
            .collect();
        let present: Vec<String> = present.iter().map(|p| p.display().to_string()).collect();
        format!(
            "refusing to open the store in {}: {} is {what}, but {} show that a store existed \
             here; opening it would start an empty store and hand out every leased MAC again. \
             Restore {DATABASE} (with its {WAL}, if any) from a backup; or, to start a new, empty \
             store on purpose, stop every macpool using this directory and remove {}",
            dir.display(),
            dir.join(DATABASE).display(),
            self.0.join(" and "),
            present.join(", "),
        )
    }
}

/// Holds `macpool.lock` (and records this process's id in it, for the next one's message).
pub fn lock_directory(dir: &Path) -> Result<File, String> {
    let path = dir.join(LOCK);
    let mut lock =
        open_private(&path, true).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if lock.try_lock().is_err() {
        let holder = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .map(|pid| format!(" (process {pid}, per {LOCK})"))
            .unwrap_or_default();
        return Err(format!(
            "data directory {} is in use by another macpool process{holder}: it holds {}",
            dir.display(),
            path.display()
        ));
    }
    // Best effort: the id only improves a message.
    let _ = lock.set_len(0).and_then(|()| {
        writeln!(lock, "{}", std::process::id())?;
        lock.flush()
    });
    Ok(lock)
}

/// Locks the database file itself for the life of the store (see the module comment).
pub fn lock_database(dir: &Path, db: &File) -> Result<(), String> {
    if try_lock_database(db).is_err() {
        return Err(format!(
            "data directory {} is in use by another macpool process: it holds a lock on {} \
             (is a second macpool serving this directory, its {LOCK} deleted?)",
            dir.display(),
            dir.join(DATABASE).display()
        ));
    }
    Ok(())
}

#[cfg(unix)]
fn try_lock_database(db: &File) -> Result<(), std::fs::TryLockError> {
    db.try_lock()
}

/// Where the Windows lock lives: inside SQLite's lock-byte page (at 1 GiB, pages of 1 KiB or
/// more), past the 512 bytes its own locks use.
#[cfg(windows)]
const WINDOWS_LOCK_OFFSET: u64 = 0x4000_0000 + 0x300;

#[cfg(windows)]
fn try_lock_database(db: &File) -> std::io::Result<()> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Storage::FileSystem::{
        LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY, LockFileEx,
    };
    use windows_sys::Win32::System::IO::{OVERLAPPED, OVERLAPPED_0, OVERLAPPED_0_0};
    // SAFETY: OVERLAPPED is plain data; zero is its documented initial state.
    let mut at: OVERLAPPED = unsafe { std::mem::zeroed() };
    at.Anonymous = OVERLAPPED_0 {
        Anonymous: OVERLAPPED_0_0 {
            Offset: WINDOWS_LOCK_OFFSET as u32,
            OffsetHigh: (WINDOWS_LOCK_OFFSET >> 32) as u32,
        },
    };
    // SAFETY: a valid handle owned by `db`, and `at` outlives this synchronous call. The lock
    // goes away when the handle is closed.
    let ok = unsafe {
        LockFileEx(
            db.as_raw_handle(),
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            1,
            0,
            &mut at,
        )
    };
    if ok == 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Makes the names in `dir` durable (a new file is not durable until its directory is synced).
/// Windows cannot open a directory as a `File`; NTFS journals names itself.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes the marker once the store is durable, so that its loss can be told from a new store.
pub fn write_marker(dir: &Path) -> Result<(), String> {
    let path = dir.join(MARKER);
    if path.exists() {
        return Ok(());
    }
    let write = || -> std::io::Result<()> {
        let mut f = open_private(&path, true)?;
        f.write_all(
            b"This directory holds a macpool store (macpool.db). macpool refuses to start on an \
              empty or missing macpool.db while this file exists.\n",
        )?;
        f.sync_all()?;
        sync_dir(dir)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}
