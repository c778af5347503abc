//! Exit codes, as `macpool`'s: 0 ok, 1 the benchmark saw errors or duplicates, 2 usage or a
//! failed set-up, 3 a server or database unreachable.

use macpool_client::ClientError;

pub use macpool_client::exit::{NO, OK, UNREACHABLE, USAGE};

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

    pub fn no(message: impl Into<String>) -> Failure {
        Failure {
            code: NO,
            message: message.into(),
        }
    }
}

/// A set-up step that failed, as a usage failure (what the dashboard and fleet benchmarks seed).
pub fn fail(e: impl std::fmt::Display) -> Failure {
    Failure::usage(e.to_string())
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

pub type CmdResult = Result<i32, Failure>;
