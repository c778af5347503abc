//! A filesystem for power-loss tests: everything written stays volatile until it is synced, and
//! a simulated power cut throws away everything that was not.
//!
//! The model is the one POSIX promises and no more:
//! - a file's contents (and size and mode) become durable only by `fsync`/`fdatasync` of that
//!   file (both are treated alike: size is data);
//! - a directory's entries (files created, removed, renamed) become durable only by `fsync` of
//!   that directory; a name that is durable while its file never was synced comes back empty;
//! - [`Disk::cut_power`] restores exactly the durable state. Between cuts, the filesystem is
//!   unmounted and mounted again ([`Disk::mount`]), so no page the kernel cached survives either;
//! - [`Disk::fail_syncs`] makes every sync fail with `EIO` (and persist nothing) until cleared,
//!   as a dying disk does.
//!
//! Everything lives in memory; locks (`fcntl`, `flock`) are left to the kernel, which handles
//! them locally when a FUSE filesystem does not. Linux only; needs `/dev/fuse` and the right to
//! mount (root, or `fusermount3`).

#![cfg(target_os = "linux")]

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

const ROOT: u64 = 1;
const TTL: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
struct Durable {
    data: Vec<u8>,
    mode: u32,
    entries: BTreeMap<OsString, u64>,
}

struct Node {
    dir: bool,
    mode: u32,
    data: Vec<u8>,
    entries: BTreeMap<OsString, u64>,
    durable: Durable,
    mtime: SystemTime,
}

impl Node {
    fn new(dir: bool, mode: u32) -> Node {
        Node {
            dir,
            mode: mode & 0o7777,
            data: Vec::new(),
            entries: BTreeMap::new(),
            durable: Durable {
                mode: mode & 0o7777,
                ..Durable::default()
            },
            mtime: SystemTime::now(),
        }
    }
}

/// Counters a test reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub syncs: u64,
    pub failed_syncs: u64,
    pub power_cuts: u64,
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    fail_syncs: bool,
    stats: Stats,
}

impl State {
    fn new() -> State {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::new(true, 0o755));
        State {
            nodes,
            next_ino: ROOT + 1,
            fail_syncs: false,
            stats: Stats::default(),
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        Some(FileAttr {
            ino,
            size: if n.dir { 0 } else { n.data.len() as u64 },
            blocks: (n.data.len() as u64).div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind: if n.dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: n.mode as u16,
            nlink: if n.dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.nodes.get(&parent)?.entries.get(name).copied()
    }

    fn add(&mut self, parent: u64, name: &OsStr, dir: bool, mode: u32) -> Result<u64, i32> {
        match self.nodes.get(&parent) {
            Some(p) if p.dir => {
                if p.entries.contains_key(name) {
                    return Err(libc::EEXIST);
                }
            }
            Some(_) => return Err(libc::ENOTDIR),
            None => return Err(libc::ENOENT),
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, Node::new(dir, mode));
        let p = self.nodes.get_mut(&parent).unwrap();
        p.entries.insert(name.to_owned(), ino);
        p.mtime = SystemTime::now();
        Ok(ino)
    }

    fn sync(&mut self, ino: u64) -> Result<(), i32> {
        if self.fail_syncs {
            self.stats.failed_syncs += 1;
            return Err(libc::EIO);
        }
        let n = self.nodes.get_mut(&ino).ok_or(libc::ENOENT)?;
        n.durable = Durable {
            data: n.data.clone(),
            mode: n.mode,
            entries: n.entries.clone(),
        };
        self.stats.syncs += 1;
        Ok(())
    }

    /// Back to the durable state: durable names, durable contents; everything else is gone.
    fn cut_power(&mut self) {
        let mut keep = HashMap::new();
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            let Some(mut n) = self.nodes.remove(&ino) else {
                continue;
            };
            n.data = n.durable.data.clone();
            n.mode = n.durable.mode;
            n.entries = n.durable.entries.clone();
            if n.dir {
                todo.extend(n.entries.values().copied());
            }
            keep.insert(ino, n);
        }
        self.nodes = keep;
        self.stats.power_cuts += 1;
    }
}

/// The disk: survives mounts and power cuts; hand out mounts of it with [`Disk::mount`].
#[derive(Clone)]
pub struct Disk(Arc<Mutex<State>>);

impl Default for Disk {
    fn default() -> Self {
        Disk::new()
    }
}

impl Disk {
    pub fn new() -> Disk {
        Disk(Arc::new(Mutex::new(State::new())))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mounts the disk at `dir` (an empty directory) until the returned [`Mount`] is dropped.
    pub fn mount(&self, dir: &Path) -> std::io::Result<Mount> {
        let options = [
            MountOption::FSName("macpool-powercut".into()),
            MountOption::RW,
            MountOption::NoAtime,
        ];
        let session = fuser::spawn_mount2(Fs(self.clone()), dir, &options)?;
        Ok(Mount {
            session: Some(session),
            dir: dir.to_path_buf(),
        })
    }

    /// Throws away everything not synced. Unmount first (drop the [`Mount`]).
    pub fn cut_power(&self) {
        self.state().cut_power();
    }

    /// From now on every `fsync`/`fdatasync` fails with `EIO` and persists nothing (`true`), or
    /// syncs work again (`false`).
    pub fn fail_syncs(&self, fail: bool) {
        self.state().fail_syncs = fail;
    }

    pub fn stats(&self) -> Stats {
        self.state().stats
    }
}

/// A mounted [`Disk`]; unmounted on drop.
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
    dir: PathBuf,
}

impl Mount {
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            s.join();
        }
    }
}

struct Fs(Disk);

impl Filesystem for Fs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let s = self.0.state();
        match s.child(parent, name).and_then(|i| s.attr(i)) {
            Some(a) => reply.entry(&TTL, &a, 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.0.state().attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(libc::ENOENT),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut s = self.0.state();
        let Some(n) = s.nodes.get_mut(&ino) else {
            return reply.error(libc::ENOENT);
        };
        if let Some(m) = mode {
            n.mode = m & 0o7777;
        }
        if let Some(len) = size {
            n.data.resize(len as usize, 0);
            n.mtime = SystemTime::now();
        }
        let a = s.attr(ino).unwrap();
        reply.attr(&TTL, &a);
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.0.state();
        match s.add(parent, name, true, mode & !umask) {
            Ok(ino) => reply.entry(&TTL, &s.attr(ino).unwrap(), 0),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(libc::EPERM);
        }
        let mut s = self.0.state();
        match s.add(parent, name, false, mode & !umask) {
            Ok(ino) => reply.entry(&TTL, &s.attr(ino).unwrap(), 0),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.0.state();
        match s.add(parent, name, false, mode & !umask) {
            Ok(ino) => reply.created(&TTL, &s.attr(ino).unwrap(), 0, 0, 0),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.0.state();
        match s.nodes.get_mut(&parent).map(|p| p.entries.remove(name)) {
            Some(Some(_)) => reply.ok(),
            _ => reply.error(libc::ENOENT),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.0.state();
        let Some(ino) = s.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        if !s.nodes[&ino].entries.is_empty() {
            return reply.error(libc::ENOTEMPTY);
        }
        s.nodes.get_mut(&parent).unwrap().entries.remove(name);
        reply.ok();
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        let mut s = self.0.state();
        let Some(ino) = s.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        if !s.nodes.get(&newparent).is_some_and(|p| p.dir) {
            return reply.error(libc::ENOENT);
        }
        s.nodes.get_mut(&parent).unwrap().entries.remove(name);
        s.nodes
            .get_mut(&newparent)
            .unwrap()
            .entries
            .insert(newname.to_owned(), ino);
        reply.ok();
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        if self.0.state().nodes.contains_key(&ino) {
            reply.opened(0, 0);
        } else {
            reply.error(libc::ENOENT);
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let s = self.0.state();
        let Some(n) = s.nodes.get(&ino) else {
            return reply.error(libc::ENOENT);
        };
        let start = (offset as usize).min(n.data.len());
        let end = (start + size as usize).min(n.data.len());
        reply.data(&n.data[start..end]);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut s = self.0.state();
        let Some(n) = s.nodes.get_mut(&ino) else {
            return reply.error(libc::ENOENT);
        };
        let start = offset as usize;
        if n.data.len() < start + data.len() {
            n.data.resize(start + data.len(), 0);
        }
        n.data[start..start + data.len()].copy_from_slice(data);
        n.mtime = SystemTime::now();
        reply.written(data.len() as u32);
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.0.state().sync(ino) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        if self.0.state().nodes.get(&ino).is_some_and(|n| n.dir) {
            reply.opened(0, 0);
        } else {
            reply.error(libc::ENOTDIR);
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.0.state();
        let Some(n) = s.nodes.get(&ino) else {
            return reply.error(libc::ENOENT);
        };
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for (name, child) in &n.entries {
            let kind = if s.nodes[child].dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            all.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(child, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.0.state().sync(ino) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        reply.statfs(1 << 20, 1 << 19, 1 << 19, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, _mask: i32, reply: ReplyEmpty) {
        if self.0.state().nodes.contains_key(&ino) {
            reply.ok();
        } else {
            reply.error(libc::ENOENT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_keeps_exactly_what_was_synced() {
        let mut s = State::new();
        let d = s.add(ROOT, OsStr::new("d"), true, 0o700).unwrap();
        s.sync(ROOT).unwrap();
        let f = s.add(d, OsStr::new("f"), false, 0o600).unwrap();
        s.nodes.get_mut(&f).unwrap().data = b"synced".to_vec();
        s.sync(f).unwrap();
        s.nodes.get_mut(&f).unwrap().data = b"synced, then more".to_vec();
        // The file was synced, but not the directory that names it.
        s.cut_power();
        assert_eq!(s.child(d, OsStr::new("f")), None);
        let f = s.add(d, OsStr::new("f"), false, 0o600).unwrap();
        s.nodes.get_mut(&f).unwrap().data = b"synced".to_vec();
        s.sync(d).unwrap();
        s.nodes.get_mut(&f).unwrap().data = b"synced later".to_vec();
        s.cut_power();
        // The name is durable, the contents never were.
        assert_eq!(s.nodes[&s.child(d, OsStr::new("f")).unwrap()].data, b"");
        s.nodes.get_mut(&f).unwrap().data = b"now".to_vec();
        s.sync(f).unwrap();
        s.fail_syncs = true;
        s.nodes.get_mut(&f).unwrap().data = b"lost".to_vec();
        assert_eq!(s.sync(f), Err(libc::EIO));
        s.cut_power();
        assert_eq!(s.nodes[&f].data, b"now");
    }
}
