//! The `delegate` strategies run the agent's own delegation, [`macpool_agent::delegate::tick`]:
//! a host's dynamic range is a block the host claims from the authority's `host-blocks` pool,
//! and the agent rotates to a fresh block while the host's cursor still has `block_margin`
//! addresses left, so Hyper-V's allocator never wraps around. The wiring is in
//! `crate::agent::Agents::tick`; the blocks' rules are the core's (`authority/blocks.rs`).

/// Whether this build can run the delegate strategies.
pub fn available() -> Result<(), String> {
    Ok(())
}
