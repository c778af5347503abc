pub mod blocks;
pub mod inventory;
pub mod leases;
pub mod pools;
pub mod system;
pub mod tokens;
