//! The `macpool serve` a benchmark measures: a child process on a free port, stopped with
//! SIGTERM on drop. By default it is this binary's hidden `serve` (the same
//! `macpool_server::serve::run` and allocator as `macpool serve`, so `cargo run -p
//! macpool-bench` needs no other build); `--binary PATH` starts another build's `macpool`
//! instead, for a before/after under the same client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::exit::Failure;
use crate::measure::random_u64;

/// A `macpool serve` child on a temporary (or given) store, stopped with SIGTERM on drop.
pub(crate) struct SpawnedServer {
    child: Child,
    pub(crate) url: String,
    pub(crate) token: String,
    _dir: Option<tempfile::TempDir>,
}

impl SpawnedServer {
    /// Starts `exe` (default: this binary) as `serve` on a fresh port over `data` (default: a
    /// temporary directory) and reads its address from its first line.
    pub(crate) fn start(
        exe: Option<&Path>,
        data: Option<PathBuf>,
    ) -> Result<SpawnedServer, Failure> {
        let (dir, path) = match data {
            Some(p) => (None, p),
            None => {
                let d = tempfile::tempdir().map_err(|e| Failure::usage(e.to_string()))?;
                let p = d.path().to_path_buf();
                (Some(d), p)
            }
        };
        let token = format!("bench-bootstrap-{:016x}", random_u64());
        let mut s = Self::spawn(exe, &["--data".as_ref(), path.as_os_str()], &token)?;
        s._dir = dir;
        Ok(s)
    }

    /// Starts `exe` as a replica on PostgreSQL database `url` with bootstrap token `token`
    /// (the same for every replica of one database).
    pub(crate) fn replica(
        exe: Option<&Path>,
        url: &str,
        token: &str,
    ) -> Result<SpawnedServer, Failure> {
        Self::spawn(exe, &["--database".as_ref(), url.as_ref()], token)
    }

    /// The server's process id (its CPU time and memory are read from /proc).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(
        exe: Option<&Path>,
        store: &[&std::ffi::OsStr],
        token: &str,
    ) -> Result<SpawnedServer, Failure> {
        let exe = match exe {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe().map_err(|e| Failure::usage(e.to_string()))?,
        };
        let started = macpool_spawn::spawn(
            Command::new(&exe)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(store)
                .env("MACPOOL_BOOTSTRAP_TOKEN", token)
                .stderr(Stdio::inherit()),
        )
        .map_err(|e| Failure::usage(format!("cannot start the server {}: {e}", exe.display())))?;
        Ok(SpawnedServer {
            child: started.child,
            url: started.url,
            token: token.to_string(),
            _dir: None,
        })
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}
