//! Exit codes, decided in one place: 0 ok, 1 the answer is "no" (conflict, not found),
//! 2 usage or input error, 3 server unreachable or refused (auth, unavailable), 4 some input
//! file could not be read (the output covers the rest; `audit`, `hyperv events`).

use macpool_audit::Verdict;
use macpool_client::ClientError;

pub use macpool_client::exit::{NO, OK, UNREACHABLE, USAGE};
/// Some input could not be read: what was printed is incomplete, so it must not pass for clean.
pub const INCOMPLETE: i32 = 4;

/// `macpool audit`'s status: conflicts outrank unreadable inputs (they are the finding), and an
/// unreadable input outranks "clean".
pub fn audit(verdict: Verdict) -> i32 {
    match verdict {
        Verdict::Clean => OK,
        Verdict::Conflicts => NO,
        Verdict::NothingRead => USAGE,
        Verdict::Incomplete => INCOMPLETE,
    }
}

/// Writing the output failed. A closed pipe (`macpool history | head -1`) is the reader saying it
/// has enough: that ends the command quietly with 0, as ripgrep does; other errors are reported.
pub fn output_error(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure {
            code: OK,
            message: String::new(),
        }
    } else {
        Failure::usage(format!("cannot write the output: {e}"))
    }
}

/// An error that knows its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: USAGE,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure {
            code: UNREACHABLE,
            message: format!("{e:#}"),
        }
    }
}

pub type CmdResult = Result<i32, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_statuses_are_the_ones_the_audit_library_documents() {
        use macpool_audit::{Report, Summary};
        let mut r = Report {
            files: Vec::new(),
            conflicts: Vec::new(),
            summary: Summary::default(),
        };
        let mut seen = Vec::new();
        for (read, unreadable) in [(0, 0), (1, 0), (1, 1)] {
            r.summary.files_read = read;
            r.summary.files_unreadable = unreadable;
            assert_eq!(audit(r.verdict()), macpool_audit::exit_code(&r));
            seen.push(audit(r.verdict()));
        }
        assert_eq!(seen, [USAGE, OK, INCOMPLETE]);
    }

    #[test]
    fn a_closed_pipe_is_a_quiet_success() {
        let f = output_error(std::io::ErrorKind::BrokenPipe.into());
        assert_eq!((f.code, f.message.as_str()), (OK, ""));
        assert_eq!(output_error(std::io::ErrorKind::Other.into()).code, USAGE);
    }
}
