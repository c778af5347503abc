//! The macpool host agent's foundations.
//!
//! - [`hypervisor`]: the [`Hypervisor`] trait every adapter implements (Hyper-V here, the
//!   simulator elsewhere) and its domain types.
//! - [`powershell`]: Hyper-V over one long-lived PowerShell child speaking a line-delimited JSON
//!   protocol; the bootstrap script it runs; typed commands → exactly quoted PowerShell.
//! - [`events`]: Hyper-V event XML (`wevtutil qe … /f:xml`, `EventRecord.ToXml()`) and `.evtx`.
//! - [`bookmark`]: the durable last-handled EventRecordID per channel.
//! - [`decide`]: guard / blog-compatible / observe, written once against the traits.
//! - [`delegate`]: the host's own allocator on a block from the authority, rotated before the
//!   cursor wraps.
//! - [`agent`]: the long-running loop (bookmarks, deferred events, backoff, inventory pushes,
//!   delegate ticks).
//! - [`taskxml`]: the Task Scheduler XML for `agent on-event`.
//! - [`selftest`]: read-only checks on a real host and their report.
//! - `standin` (cargo feature `standin`, for tests and benchmarks only): the Hyper-V model
//!   behind the `hyperv-standin` test binary.
//! - `libvirt` (cargo feature `libvirt`, Unix): libvirt/KVM through the C library; see its
//!   module docs for the mapping, events, reconnects and what was verified against what.
//!
//! # What was verified against what
//!
//! There is no Windows host here. Verified **on Linux, in tests**:
//! - the child manager, line protocol, restart/backoff, bookmark resume and malformed-line
//!   handling, against the real `hyperv-standin` process (spawned for real, same protocol);
//! - every generated script, against golden strings; the quoting, by a property test that any
//!   string survives [`powershell::quote::quote`] and the stand-in's literal reader;
//! - event parsing, on samples written from the shapes in `shared/reference/hyperv.md`
//!   ("Events") and the Windows event schema, with and without the namespace, UTF-16;
//! - guard / blog-compatible decisions on the seed scenario, run against two stand-in hosts;
//! - the service loop with delegate (claim, `Set-VMHost`, activate, rotation before the cursor
//!   wraps) and inventory pushes, through the real binary, a real server and the stand-in;
//! - `cargo check --target x86_64-pc-windows-gnu` (compiles; nothing runs on Windows).
//!
//! **Not verified** (needs a Hyper-V host; `macpool hyperv selftest` is the first step there,
//! `docs/agent-windows.md` lists what to check): that `bootstrap.ps1` runs under Windows
//! PowerShell 5.1 (it is parsed by a PowerShell grammar and checked for the 5.1 facts the
//! stand-in models, not run); that `powershell.exe -Command -` lets the bootstrap read the following
//! stdin lines through `[Console]::In` (it is [likely]); the `EventLogWatcher` XPath; that
//! `Get-VM` objects carry `ParentSnapshotId/ParentSnapshotName` ([likely]; checked at run time:
//! missing properties make the VM "unknown", never acted on); that 18596 carries
//! `UserData/VmlEventLog/VmId` ([likely]; an event without it is reported and skipped); the
//! registry cursor's name and format ([likely]; an absent, unparseable or out-of-range cursor is
//! reported and delegate falls back to a lower bound from the inventory);
//! that the VM must be off to change a MAC ([likely]; the agent turns it off first anyway).
//!
//! # The stand-in models (each from `shared/reference/hyperv.md`)
//!
//! - "Dynamic MAC ranges": one dynamic range per host; allocation round-robin from the cursor
//!   with wrap-around; the in-use check sees only this host's VMs; an exhausted range makes the
//!   start fail ("Attempt to access invalid address").
//! - "A dynamic MAC is (re)checked only when the VM is started": a dynamic MAC outside this
//!   host's range is replaced at start only; migration and restore keep it.
//! - "a checkpoint freezes the MAC it had" (DESIGN.md) and "restore from a checkpoint with
//!   memory keeps the checkpoint's MAC": restore copies the checkpoint's adapters back, leaves
//!   the VM running, and emits 18596 with `UserData/VmlEventLog`.
//! - "Changing MACs" [likely]: a live adapter's MAC changes only while the VM is off; checkpoint
//!   adapters can be set any time (the published workaround does).
//! - `Set-VMHost -MacAddressMinimum/-Maximum`: existing VMs keep their MACs.
//! - "Events": 18500 on start, 18596 on restore, 13002 (or, when asked, 18304) on create, 13003
//!   on delete, with increasing record ids per channel; `clear-log` restarts a channel's ids
//!   (`wevtutil cl`); `fail-watch` is a watcher's `EventException` (a `watch_failed` line, and
//!   the watch delivers nothing more).
//! - "Adapter names are not unique": `nics: N` gives N adapters all called "Network Adapter",
//!   each with its own `Id`; `Set-VMNetworkAdapter` scripts find them by `Id`.
//! - "Management-OS vNICs take MACs from the same dynamic range": `add-management-adapter`.
//! - The cursor's registry value is unverified: `hide-cursor` makes it absent while the host
//!   keeps allocating.
//! - "Windows PowerShell 5.1 host facts": stdin is decoded as a single-byte OEM code page, so a
//!   line with a byte above 0x7E fails (`standin::decode_stdin_line`); the bootstrap is
//!   checked before the ready line (`standin::check_bootstrap`): no `System.Core` reference
//!   on Desktop edition, or setting `[Console]::OutputEncoding` (no console), kills the child;
//!   with `warn`, every request writes a warning, on stdout between protocol lines unless the
//!   bootstrap captures the streams; `-File FILE` loads the bootstrap from a file.
//!
//! It does not model: saved state, other checkpoint types, several switches, the rest of the
//! registry, PowerShell itself (the bootstrap's text is checked, not run; the syntax gate in
//! `crates/macpool/tests/pwsh_syntax.rs` parses it).

pub mod agent;
pub mod bookmark;
pub mod clusterrole;
pub mod decide;
pub mod delegate;
pub mod events;
pub mod hypervisor;
#[cfg(all(feature = "libvirt", unix))]
pub mod libvirt;
pub mod powershell;
pub mod selftest;
#[cfg(feature = "standin")]
pub mod standin;
pub mod taskxml;

pub use hypervisor::{
    AdapterRef, Bookmarks, EventKind, HostRangeState, HvError, HvEvent, HvResult, Hypervisor,
    MacSetting, VmStatus,
};
