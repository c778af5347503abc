//! Exit codes, as `macpool`'s: 0 ok, 1 the benchmark saw errors or duplicates, 2 usage or a
//! failed set-up, 3 a server or database unreachable.

use macpool_client::ClientError;

pub const OK: i32 = 0;
pub const NO: i32 = 1;
pub const USAGE: i32 = 2;
pub const UNREACHABLE: i32 = 3;

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
        let code = match &e {
            ClientError::Problem(p) => match p.status {
                404 | 409 => NO,
                400 | 413 | 415 | 422 => USAGE,
                _ => UNREACHABLE,
            },
            ClientError::Unreachable { .. } => UNREACHABLE,
            ClientError::Usage(_) => USAGE,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

pub type CmdResult = Result<i32, Failure>;
