//! Turning the paths on the command line into files, and reading them.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::{FileReport, FileStatus};

pub(crate) struct Walked {
    pub files: Vec<PathBuf>,
    pub errors: Vec<FileReport>,
}

/// Every regular file under `paths`, directories walked in name order, each file once even when
/// reached twice (a path given twice, a symlink); symlink loops are not followed twice.
pub(crate) fn collect_files(paths: &[PathBuf]) -> Walked {
    let mut w = Walked {
        files: Vec::new(),
        errors: Vec::new(),
    };
    let mut seen_files = HashSet::new();
    let mut seen_dirs = HashSet::new();
    for p in paths {
        visit(p, &mut w, &mut seen_files, &mut seen_dirs);
    }
    w
}

fn unreadable(path: &Path, why: String) -> FileReport {
    let mut r = FileReport::new(path);
    r.status = FileStatus::Unreadable(why);
    r
}

fn visit(
    path: &Path,
    w: &mut Walked,
    seen_files: &mut HashSet<PathBuf>,
    seen_dirs: &mut HashSet<PathBuf>,
) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            w.errors.push(unreadable(path, e.to_string()));
            return;
        }
    };
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if meta.is_dir() {
        if !seen_dirs.insert(canonical) {
            return;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(e) => {
                w.errors
                    .push(unreadable(path, format!("cannot list directory: {e}")));
                return;
            }
        };
        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for child in children {
            visit(&child, w, seen_files, seen_dirs);
        }
    } else if meta.is_file() {
        if seen_files.insert(canonical) {
            w.files.push(path.to_path_buf());
        }
    } else {
        let mut r = FileReport::new(path);
        r.status = FileStatus::Skipped("not a regular file".into());
        w.errors.push(r);
    }
}

/// A file's bytes: memory-mapped (huge lists are never copied) or, after decoding, owned.
pub(crate) enum Content {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Content {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Content::Mapped(m) => m,
            Content::Owned(v) => v,
        }
    }

    /// The bytes the second pass over a MAC list reads (already decoded for an owned buffer).
    pub fn text(&self) -> &[u8] {
        match self {
            Content::Mapped(m) => {
                let b: &[u8] = m;
                b.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(b)
            }
            Content::Owned(v) => v,
        }
    }
}

/// `Ok(None)` for an empty file (which cannot be mapped and holds nothing).
pub(crate) fn read(path: &Path) -> Result<Option<Content>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: the map is read-only. If another process truncates the file while we read it, the
    // process may get SIGBUS; that is the accepted trade-off of every mmap-based reader (ripgrep
    // makes it too) for never copying a multi-gigabyte list.
    match unsafe { Mmap::map(&file) } {
        Ok(m) => {
            #[cfg(unix)]
            let _ = m.advise(memmap2::Advice::Sequential);
            Ok(Some(Content::Mapped(m)))
        }
        // Some file systems (procfs, pipes named as files) cannot be mapped: read them instead.
        Err(_) => std::fs::read(path)
            .map(|v| Some(Content::Owned(v)))
            .map_err(|e| e.to_string()),
    }
}
