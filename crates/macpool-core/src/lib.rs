//! macpool's domain: MAC addresses, ranges, pools, the allocator, leases, holds, history and
//! conflicts.
//!
//! Invariant of this crate: it knows nothing about HTTP, SQL, files, async or the clock. Time and
//! randomness come in as arguments ([`Timestamp`], a random start offset), so every decision is
//! reproducible in tests and in the simulator.

pub mod authority;
pub mod block;
pub mod conflict;
pub mod explain;
pub mod freespace;
pub mod history;
pub mod hyperv;
pub mod inventory;
pub mod lease;
pub mod mac;
pub mod pool;
pub mod range;
mod time;

pub use mac::{Mac, MacFormat, MacParseError};
pub use range::{MacRange, RangeError};
pub use time::Timestamp;
