//! The agent's durable position in the event logs: per channel the last EventRecordID it has
//! handled, plus the events it could not decide yet (authority unreachable), so that no event is
//! missed or handled twice across restarts. Saved atomically: temp file, fsync, rename, fsync
//! of the directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::hypervisor::Bookmarks;

/// An event whose decision is pending (retried with backoff, survives restarts).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deferred {
    pub channel: String,
    pub record_id: u64,
    pub attempts: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentBookmark {
    pub channels: Bookmarks,
    #[serde(default)]
    pub deferred: Vec<Deferred>,
}

impl AgentBookmark {
    /// Marks `(channel, record_id)` handled (the bookmark only moves forward).
    pub fn handled(&mut self, channel: &str, record_id: u64) {
        let e = self.channels.entry(channel.to_string()).or_insert(0);
        *e = (*e).max(record_id);
        self.deferred
            .retain(|d| !(d.channel == channel && d.record_id == record_id));
    }

    /// The channel's log was cleared (record ids restarted): resume after `record_id`, the
    /// newest record now; deferred events of the channel named records that no longer exist.
    pub fn reanchor(&mut self, channel: &str, record_id: u64) {
        self.channels.insert(channel.to_string(), record_id);
        self.deferred.retain(|d| d.channel != channel);
    }

    /// Keeps `(channel, record_id)` for a later decision; counts the attempt.
    pub fn defer(&mut self, channel: &str, record_id: u64) {
        match self
            .deferred
            .iter_mut()
            .find(|d| d.channel == channel && d.record_id == record_id)
        {
            Some(d) => d.attempts += 1,
            None => self.deferred.push(Deferred {
                channel: channel.to_string(),
                record_id,
                attempts: 1,
            }),
        }
    }
}

/// The bookmark file.
#[derive(Clone, Debug)]
pub struct BookmarkStore {
    path: PathBuf,
}

impl BookmarkStore {
    pub fn new(path: impl Into<PathBuf>) -> BookmarkStore {
        BookmarkStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved bookmark; a missing file is an empty one, an unreadable one an error (never
    /// silently reset: that would replay or skip events).
    pub fn load(&self) -> Result<AgentBookmark, String> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("{}: not a macpool bookmark: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgentBookmark::default()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    pub fn save(&self, b: &AgentBookmark) -> std::io::Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bookmark".into());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(b).expect("bookmark serialises"))?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let store = BookmarkStore::new(dir.path().join("bookmark.json"));
        assert_eq!(store.load().unwrap(), AgentBookmark::default());
        let mut b = AgentBookmark::default();
        b.handled("W", 10);
        b.handled("W", 7);
        b.defer("W", 11);
        b.defer("W", 11);
        store.save(&b).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.channels["W"], 10);
        assert_eq!(back.deferred[0].attempts, 2);
        let mut b = back;
        b.handled("W", 11);
        assert!(b.deferred.is_empty());
        std::fs::write(store.path(), "{").unwrap();
        assert!(store.load().is_err());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp files left"
        );
    }
}
