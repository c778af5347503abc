//! Exit codes, decided in one place: 0 ok, 1 the answer is "no" (conflict, not found),
//! 2 usage or input error, 3 server unreachable or refused (auth, unavailable).

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

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure {
            code: UNREACHABLE,
            message: format!("{e:#}"),
        }
    }
}

pub type CmdResult = Result<i32, Failure>;
