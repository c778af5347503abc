//! Starting a `macpool serve` child and reading the address it listens on, in one place.
//!
//! `macpool serve --listen 127.0.0.1:0` picks a free port and prints
//! `macpool listening on URL (store …)` on stdout (`macpool_server::serve`); everything that
//! starts a server to talk to it — the end-to-end tests, the replica checker, the benchmarks —
//! reads that line here.
//!
//! **Why a crate of its own:** its users are the `macpool` package's tests (a dev-dependency),
//! `macpool-checker` and `macpool-bench` (tools), and the checker is itself a dev-dependency of
//! the `macpool` tests. Put in any of them, the others would depend on a tool crate (or the
//! tests on the benchmarks) to read one line; put in `macpool-server`, the parser would ship in
//! the binary that only prints the line. This crate has no dependencies, so none of its users
//! gains a cycle or a heavier build, and nothing here lands in the shipped `macpool`.

use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

/// What `macpool serve` prints before the URL it listens on.
pub const LISTENING: &str = "macpool listening on ";

/// The URL in a `macpool listening on URL (store …)` line, or `None` for any other line.
pub fn listening_url(line: &str) -> Option<&str> {
    line.strip_prefix(LISTENING)?.split_whitespace().next()
}

/// Reads `lines` up to the listening line: the URL, and every line before it (what a test may
/// want to check a server said at start-up). An error if the output ends first.
pub fn read_address(
    lines: &mut impl Iterator<Item = io::Result<String>>,
) -> io::Result<(String, Vec<String>)> {
    let mut before = Vec::new();
    for line in lines {
        let line = line?;
        if let Some(url) = listening_url(&line) {
            return Ok((url.to_string(), before));
        }
        before.push(line);
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the server exited before listening; it printed: {before:?}"),
    ))
}

/// A started server: the child, the URL it listens on and the lines it printed before it.
#[derive(Debug)]
pub struct Listening {
    pub child: Child,
    pub url: String,
    pub before: Vec<String>,
}

/// Spawns `cmd` (a `macpool serve …` the caller built: program, store, token, TLS) with stdout
/// piped, waits for its listening line, and keeps reading stdout on a thread, so the server
/// never blocks on a full pipe. On failure the child is killed and reaped.
pub fn spawn(cmd: &mut Command) -> io::Result<Listening> {
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    match read_from(stdout) {
        Ok((url, before)) => Ok(Listening { child, url, before }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

fn read_from(stdout: impl Read + Send + 'static) -> io::Result<(String, Vec<String>)> {
    let mut lines = BufReader::new(stdout).lines();
    let found = read_address(&mut lines)?;
    std::thread::spawn(move || for _ in lines {});
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_the_first_word_after_the_prefix() {
        assert_eq!(
            listening_url("macpool listening on http://127.0.0.1:4321 (store sqlite:/tmp/x)"),
            Some("http://127.0.0.1:4321")
        );
        assert_eq!(listening_url("macpool: bootstrap admin token …"), None);
        assert_eq!(listening_url("macpool listening on "), None);
    }

    #[test]
    fn lines_before_the_address_are_kept_and_a_missing_one_is_an_error() {
        let text = "first\nmacpool listening on https://127.0.0.1:1 (store x)\nafter\n";
        let mut lines = BufReader::new(text.as_bytes()).lines();
        let (url, before) = read_address(&mut lines).unwrap();
        assert_eq!(
            (url.as_str(), before),
            ("https://127.0.0.1:1", vec!["first".to_string()])
        );
        let mut none = BufReader::new("a\nb\n".as_bytes()).lines();
        assert_eq!(
            read_address(&mut none).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn a_child_that_never_listens_is_reaped_with_an_error() {
        let e = spawn(Command::new("sh").args(["-c", "echo not-a-server"])).unwrap_err();
        assert!(e.to_string().contains("not-a-server"), "{e}");
    }
}
