//! libvirt/KVM as a [`Hypervisor`], through the C library (`virt` bindings; cargo feature
//! `libvirt`, Unix only).
//!
//! # Mapping
//! - **VMs** are domains: the id is the domain's UUID, the name its name, the state from
//!   `virDomainGetState` (`running`/`blocked` → running, `paused`, `shutoff` → off, shut off
//!   with a managed-save image → saved, anything else kept by name). Transient domains are
//!   listed like the others.
//! - **Live adapters** come from the domain XML (the live one while running, else the
//!   persistent one). **Checkpoint adapters** come from every snapshot's XML: the embedded
//!   `<domain>` (and `<inactiveDomain>`) is what a revert brings back. A snapshot's name is the
//!   checkpoint's id and name; the current snapshot (`virDomainSnapshotCurrent`) is
//!   [`VmStatus::current_checkpoint`]. libvirt has no dynamic MACs: every adapter is `static`.
//! - **Adapter names** ([`macpool_audit::libvirt::adapter_name`], shared with the offline
//!   audit): the interface's `<target dev>` unless libvirt generated it (`vnet3`, `macvtap0`,
//!   the test driver's `testnet0` …), else a user alias (`ua-…`), else `net<position>`. qemu
//!   gives a running domain a new `vnetN` at every start and drops it from the persistent XML,
//!   so only these names are the same while the domain runs and after it was turned off —
//!   which [`Hypervisor::set_adapter_mac`] relies on.
//! - **Host range**: libvirt has none (each domain's MAC is generated at define time, randomly
//!   in 52:54:00), so [`Hypervisor::host_range`] / `set_host_range` answer
//!   [`HvError::NotApplicable`] and the `delegate` strategy cannot run here. `guard` and
//!   `observe` work unchanged.
//!
//! # Actions
//! - `set_adapter_mac` redefines the **persistent** XML (`virDomainDefineXML` of the
//!   `VIR_DOMAIN_XML_INACTIVE | SECURE` definition with only the `<mac>` element changed) and
//!   refuses while the domain runs: the running domain is never edited live. `Dynamic` removes
//!   `<mac>` so libvirt generates one. Snapshot (checkpoint) adapters are refused: libvirt
//!   rejects a redefined snapshot whose MAC differs ("Target network card mac … does not match
//!   source", its saved device state carries the MAC), so the `blog-compatible` strategy, which
//!   blanks checkpoint MACs, does not apply to libvirt.
//! - `turn_off` is `virDomainDestroy` (refused for a transient domain, which would vanish),
//!   `start` is `virDomainCreate`; both succeed when the domain already is in that state.
//!
//! # Events
//! Domain lifecycle callbacks (`VIR_DOMAIN_EVENT_ID_LIFECYCLE`) on libvirt's default event loop,
//! which this module registers once per process (`virEventRegisterDefaultImpl` before the first
//! connection) and runs on a thread of its own (`libvirt-events`). See [`queue::event_kind`] for
//! the mapping (a revert is [`crate::EventKind::Restored`]). The channel is `libvirt:<uri>`.
//! libvirt keeps no event log: record ids are this process's counter, so **a bookmark cannot
//! resume across restarts** — events while the agent was not connected are not delivered, and
//! whoever starts the agent must send the full inventory to the authority first (its conflict
//! engine then finds what changed meanwhile).
//!
//! # Connection loss
//! A close callback (remote URIs; keepalive every 5 s, 3 unanswered = dead) or a failed call
//! on a dead connection marks the connection lost. Calls then answer [`HvError::Unavailable`]
//! (the agent defers its decisions) while a thread (`libvirt-reconnect`) reconnects with
//! exponential backoff ([`LibvirtOptions::retry_min`] … `retry_max`), re-registers the
//! callbacks, re-reads the full inventory and queues events for what changed since the last
//! view ([`queue::resync`]).
//!
//! # Threads and blocking
//! Every libvirt call blocks, so each trait method runs on [`tokio::task::spawn_blocking`]; the
//! connection is thread-safe and shared. [`LibvirtHypervisor::connect`] blocks too (it opens
//! the connection and reads the inventory once).

pub mod queue;
pub mod xml;

use std::collections::BTreeMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use macpool_core::MacRange;
use macpool_core::inventory::{Checkpoint, CheckpointType, HostInventory, Vm, VmState};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::sys;

use crate::hypervisor::{
    AdapterRef, Bookmarks, EventKind, HostRangeState, HvError, HvEvent, HvResult, Hypervisor,
    MacSetting, VmStatus,
};
use queue::{EventQueue, Fingerprint, event_kind, event_name};

/// What [`HvError::NotApplicable`] says for the host range.
pub const NO_HOST_RANGE: &str =
    "libvirt has no host-wide dynamic MAC range: delegate is not applicable (use guard or observe)";

/// How the hypervisor connects and reconnects.
#[derive(Clone, Debug)]
pub struct LibvirtOptions {
    /// The host name the inventory reports; `None`: libvirt's (`virConnectGetHostname`).
    pub host: Option<String>,
    /// First wait before reconnecting after the connection was lost; doubled per failure.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for LibvirtOptions {
    fn default() -> Self {
        LibvirtOptions {
            host: None,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// One domain's problem found while reading the inventory (the domain is still listed, with
/// the adapters that could be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainProblem {
    pub vm_id: String,
    pub vm_name: String,
    pub message: String,
}

impl std::fmt::Display for DomainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "domain '{}' ({}): {}",
            self.vm_name, self.vm_id, self.message
        )
    }
}

/// The libvirt [`Hypervisor`]. Dropping it closes the connection and stops its reconnect
/// thread (libvirt's event-loop thread lives as long as the process).
pub struct LibvirtHypervisor {
    inner: Arc<Inner>,
}

struct Live {
    conn: Connect,
    lifecycle: c_int,
    close: bool,
}

#[derive(Default)]
struct Link {
    lost: bool,
    shutdown: bool,
}

struct Inner {
    uri: String,
    opts: LibvirtOptions,
    live: Mutex<Option<Live>>,
    link: Mutex<Link>,
    link_changed: Condvar,
    events: Mutex<EventQueue>,
    arrived: tokio::sync::Notify,
    /// The last view of every domain, to tell after a reconnect what changed meanwhile.
    baseline: Mutex<BTreeMap<String, Fingerprint>>,
}

/// Why one domain could not be read.
enum ReadError {
    Virt(VirtError),
    Other(String),
}

impl From<VirtError> for ReadError {
    fn from(e: VirtError) -> Self {
        ReadError::Virt(e)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // a panic while holding one of these locks leaves plain data behind: keep going
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn is(e: &VirtError, codes: &[ErrorNumber]) -> bool {
    codes.iter().any(|c| e.code().is(*c))
}

/// libvirt's default event loop, registered before the first connection is opened (events of a
/// connection opened earlier would never be dispatched) and run forever on its own thread.
fn event_loop() -> HvResult<()> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            // errors are reported through our results; libvirt's default handler prints them
            virt::error::clear_error_callback();
            virt::event::event_register_default_impl().map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(|| {
                    loop {
                        if let Err(e) = virt::event::event_run_default_impl() {
                            tracing::error!("libvirt event loop: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                })
                .map(drop)
                .map_err(|e| format!("cannot start the libvirt event thread: {e}"))
        })
        .clone()
        .map_err(|e| HvError::Unavailable(format!("libvirt event loop: {e}")))
}

/// The error for a connection that could not be opened: unreachable (worth retrying later) is
/// [`HvError::Unavailable`]; permission denied, an unknown driver or a refused configuration
/// is [`HvError::Failed`] (retrying will not help).
pub fn connect_error(uri: &str, e: &VirtError) -> HvError {
    use ErrorNumber::*;
    let msg = e.message();
    let command = format!("connect {uri}");
    if is(
        e,
        &[
            AuthFailed,
            AuthCancelled,
            AuthUnavailable,
            AccessDenied,
            OperationDenied,
        ],
    ) || msg.contains("Permission denied")
    {
        return HvError::Failed {
            command,
            message: format!(
                "permission denied: {msg} (qemu:///system needs root or membership in the \
                 'libvirt' group; remote URIs need the transport's credentials)"
            ),
        };
    }
    if msg.contains("no connection driver available") {
        return HvError::Failed {
            command,
            message: format!("{msg}: unknown URI scheme or the driver is not installed"),
        };
    }
    if is(e, &[SystemError, Rpc, NoConnect, UnknownHost]) {
        return HvError::Unavailable(format!("cannot reach libvirt at {uri}: {msg}"));
    }
    HvError::Failed {
        command,
        message: msg.to_string(),
    }
}

// ---- callbacks (run on libvirt's event-loop thread; must never unwind into C) -------------

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `opaque` is the `Box<Weak<Inner>>` registered with this callback; libvirt
        // keeps it alive until it calls `free_weak`.
        let weak = unsafe { &*(opaque as *const Weak<Inner>) };
        let Some(inner) = weak.upgrade() else {
            return;
        };
        // SAFETY: `dom` is valid for the duration of the callback.
        let (uuid, name) = unsafe { domain_ident(dom) };
        inner.lifecycle(uuid, name, event, detail);
    }));
    0
}

unsafe extern "C" fn on_close(_conn: sys::virConnectPtr, reason: c_int, opaque: *mut c_void) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `on_lifecycle`.
        let weak = unsafe { &*(opaque as *const Weak<Inner>) };
        if let Some(inner) = weak.upgrade() {
            let why = match u32::try_from(reason).unwrap_or(u32::MAX) {
                sys::VIR_CONNECT_CLOSE_REASON_ERROR => "a connection error",
                sys::VIR_CONNECT_CLOSE_REASON_EOF => "end of file (the daemon went away)",
                sys::VIR_CONNECT_CLOSE_REASON_KEEPALIVE => "keepalive timeout",
                sys::VIR_CONNECT_CLOSE_REASON_CLIENT => "client request",
                _ => "an unknown reason",
            };
            inner.lost(&format!("libvirt closed the connection: {why}"));
        }
    }));
}

unsafe extern "C" fn free_weak(opaque: *mut c_void) {
    // SAFETY: `opaque` came from `Box::into_raw(Box<Weak<Inner>>)` and libvirt frees it once.
    drop(unsafe { Box::from_raw(opaque as *mut Weak<Inner>) });
}

/// The domain's UUID and name, read from the handle (no call to the daemon).
///
/// # Safety
/// `dom` must be a valid domain pointer.
unsafe fn domain_ident(dom: sys::virDomainPtr) -> (String, Option<String>) {
    let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    // SAFETY: the buffer has VIR_UUID_STRING_BUFLEN bytes, as the call requires.
    let uuid = if unsafe { sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) } == 0 {
        // SAFETY: on success libvirt wrote a NUL-terminated string into the buffer.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    // SAFETY: the name belongs to the domain object and lives as long as `dom`.
    let name = unsafe { sys::virDomainGetName(dom) };
    let name = (!name.is_null()).then(|| {
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    });
    (uuid, name)
}

fn leak_opaque(inner: &Arc<Inner>) -> *mut c_void {
    Box::into_raw(Box::new(Arc::downgrade(inner))) as *mut c_void
}

/// The domain's state; shut off with a managed-save image is `Saved` (a start would restore
/// the saved device state, MAC included).
fn domain_state(dom: &Domain) -> Result<VmState, VirtError> {
    let (mut state, mut reason): (c_int, c_int) = (-1, -1);
    // SAFETY: valid domain and out-pointers.
    if unsafe { sys::virDomainGetState(dom.as_ptr(), &mut state, &mut reason, 0) } < 0 {
        return Err(VirtError::last_error());
    }
    Ok(match u32::try_from(state).unwrap_or(u32::MAX) {
        sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED => VmState::Running,
        sys::VIR_DOMAIN_PAUSED => VmState::Paused,
        sys::VIR_DOMAIN_SHUTOFF => {
            // SAFETY: valid domain.
            if unsafe { sys::virDomainHasManagedSaveImage(dom.as_ptr(), 0) } > 0 {
                VmState::Saved
            } else {
                VmState::Off
            }
        }
        sys::VIR_DOMAIN_SHUTDOWN => VmState::Other("shutting-down".into()),
        sys::VIR_DOMAIN_CRASHED => VmState::Other("crashed".into()),
        sys::VIR_DOMAIN_PMSUSPENDED => VmState::Other("pmsuspended".into()),
        _ => VmState::Other("nostate".into()),
    })
}

impl Inner {
    fn open(self: &Arc<Inner>) -> HvResult<Live> {
        let conn = Connect::open(Some(&self.uri)).map_err(|e| connect_error(&self.uri, &e))?;
        // remote URIs: notice a dead daemon or network within about 20 s (local drivers say no)
        let _ = conn.set_keep_alive(5, 3);
        let opaque = leak_opaque(self);
        let generic: sys::virConnectDomainEventGenericCallback = Some(
            // SAFETY: libvirt calls a lifecycle callback with the lifecycle signature; the
            // generic type only erases it (what VIR_DOMAIN_EVENT_CALLBACK does in C).
            unsafe {
                std::mem::transmute::<
                    unsafe extern "C" fn(
                        sys::virConnectPtr,
                        sys::virDomainPtr,
                        c_int,
                        c_int,
                        *mut c_void,
                    ) -> c_int,
                    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
                >(on_lifecycle)
            },
        );
        // SAFETY: valid connection; opaque/freecb as libvirt documents them.
        let lifecycle = unsafe {
            sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                std::ptr::null_mut(),
                sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
                generic,
                opaque,
                Some(free_weak),
            )
        };
        if lifecycle < 0 {
            // the opaque is left to libvirt (whether it frees it on failure is not documented)
            return Err(HvError::Failed {
                command: format!("connect {}", self.uri),
                message: format!(
                    "cannot subscribe to domain lifecycle events: {}",
                    VirtError::last_error().message()
                ),
            });
        }
        let opaque = leak_opaque(self);
        // SAFETY: as above.
        let close = unsafe {
            sys::virConnectRegisterCloseCallback(
                conn.as_ptr(),
                Some(on_close),
                opaque,
                Some(free_weak),
            )
        } == 0;
        if !close {
            // local drivers (test:///, in-process) cannot lose their connection
            tracing::debug!(
                "{}: no close callback: {}",
                self.uri,
                VirtError::last_error().message()
            );
        }
        Ok(Live {
            conn,
            lifecycle,
            close,
        })
    }

    fn close(live: Live) {
        // SAFETY: the ids were returned by the registrations on this connection.
        unsafe {
            sys::virConnectDomainEventDeregisterAny(live.conn.as_ptr(), live.lifecycle);
            if live.close {
                sys::virConnectUnregisterCloseCallback(live.conn.as_ptr(), Some(on_close));
            }
        }
        drop(live.conn);
    }

    fn channel(&self) -> String {
        format!("libvirt:{}", self.uri)
    }

    fn lifecycle(&self, uuid: String, name: Option<String>, event: c_int, detail: c_int) {
        let what = event_name(event, detail);
        let Some(kind) = event_kind(event, detail) else {
            tracing::debug!("{what} of domain {uuid}: not an event the agent acts on");
            return;
        };
        let raw = format!(
            "libvirt lifecycle event {what} of domain '{}' ({uuid}) on {}",
            name.as_deref().unwrap_or("?"),
            self.uri
        );
        // the domains known to exist, for the resync after a lost connection
        {
            let mut baseline = lock(&self.baseline);
            let id = uuid.to_ascii_lowercase();
            match kind {
                EventKind::Created => {
                    baseline
                        .entry(id)
                        .or_insert_with(|| Fingerprint::named(name.clone().unwrap_or_default()));
                }
                EventKind::Deleted => {
                    baseline.remove(&id);
                }
                _ => {}
            }
        }
        // both are small non-negative libvirt enums (checked by `event_kind`)
        let event_id = event.unsigned_abs() * 100 + detail.unsigned_abs();
        if lock(&self.events).push(kind, event_id, uuid, name, raw) {
            self.arrived.notify_waiters();
        }
    }

    fn lost(&self, why: &str) {
        let mut link = lock(&self.link);
        if !link.lost && !link.shutdown {
            tracing::warn!("{}: {why}; reconnecting", self.uri);
            link.lost = true;
            self.link_changed.notify_all();
        }
    }

    fn conn(&self) -> HvResult<Connect> {
        let lost = lock(&self.link).lost;
        match &*lock(&self.live) {
            Some(l) if !lost => Ok(l.conn.clone()),
            _ => Err(HvError::Unavailable(format!(
                "the connection to {} is lost; reconnecting",
                self.uri
            ))),
        }
    }

    /// The error for a failed call: on a dead connection the connection is marked lost and
    /// the answer is [`HvError::Unavailable`] (nothing is known about whether the call ran).
    fn fail(&self, conn: &Connect, command: &str, e: ReadError) -> HvError {
        let e = match e {
            ReadError::Other(message) => {
                return HvError::Failed {
                    command: command.into(),
                    message,
                };
            }
            ReadError::Virt(e) => e,
        };
        if !conn.is_alive().unwrap_or(false) {
            self.lost(&format!(
                "{command} failed on a dead connection: {}",
                e.message()
            ));
            return HvError::Unavailable(format!("{command}: {} (reconnecting)", e.message()));
        }
        use ErrorNumber::*;
        if is(&e, &[SystemError, Rpc, NoConnect, InvalidConn]) {
            return HvError::Unavailable(format!("{command}: {}", e.message()));
        }
        HvError::Failed {
            command: command.into(),
            message: e.message().to_string(),
        }
    }

    fn host_name(&self, conn: &Connect) -> Result<String, ReadError> {
        match &self.opts.host {
            Some(h) => Ok(h.clone()),
            None => Ok(conn.hostname()?),
        }
    }

    /// One domain: its VM (live and checkpoint adapters), current checkpoint, and the
    /// problems of the parts that could not be read.
    fn read_domain(&self, dom: &Domain) -> Result<(VmStatus, Vec<String>), ReadError> {
        let id = dom.uuid_string()?;
        let name = dom.name()?;
        let mut vm =
            Vm::new(id, name, domain_state(dom)?).map_err(|e| ReadError::Other(e.to_string()))?;
        let mut problems = Vec::new();
        match xml::live_adapters(&dom.xml_desc(0)?) {
            Ok(a) => {
                vm.adapters.extend(a.adapters);
                problems.extend(a.problems);
            }
            Err(why) => problems.push(format!("domain XML: {why}")),
        }
        let mut checkpoints = BTreeMap::new();
        for snap in dom.list_all_snapshots(0)? {
            let name = snap.name()?;
            match xml::snapshot_adapters(&snap.xml_desc(0)?) {
                Ok((cp, a)) => {
                    vm.adapters.extend(a.adapters);
                    problems.extend(
                        a.problems
                            .into_iter()
                            .map(|p| format!("snapshot '{name}': {p}")),
                    );
                    checkpoints.insert(name, cp);
                }
                Err(why) => problems.push(format!("snapshot '{name}': {why}")),
            }
        }
        let current = match dom.current_snapshot(0) {
            Ok(s) => Some(s.name()?),
            Err(e) if e.code().is(ErrorNumber::NoDomainSnapshot) => None,
            Err(e) => return Err(e.into()),
        };
        let current_checkpoint = current.map(|name| {
            checkpoints.remove(&name).unwrap_or(Checkpoint {
                id: name.clone(),
                name,
                kind: CheckpointType::Other("libvirt-unknown".into()),
                created: None,
            })
        });
        Ok((
            VmStatus {
                vm,
                current_checkpoint,
            },
            problems,
        ))
    }

    fn inventory_report(&self) -> HvResult<(HostInventory, Vec<DomainProblem>)> {
        let conn = self.conn()?;
        let fail = |c: &str, e: ReadError| self.fail(&conn, c, e);
        let host = self.host_name(&conn).map_err(|e| fail("hostname", e))?;
        let mut inv = HostInventory::new(host).map_err(|e| HvError::Protocol {
            command: "hostname".into(),
            message: e.to_string(),
        })?;
        let doms = conn
            .list_all_domains(0)
            .map_err(|e| fail("list domains", e.into()))?;
        let mut problems = Vec::new();
        let mut seen = BTreeMap::new();
        for dom in doms {
            let (vm_id, vm_name) = (
                dom.uuid_string().unwrap_or_default(),
                dom.name().unwrap_or_default(),
            );
            let problem = |message: String| DomainProblem {
                vm_id: vm_id.clone(),
                vm_name: vm_name.clone(),
                message,
            };
            match self.read_domain(&dom) {
                Ok((status, probs)) => {
                    problems.extend(probs.into_iter().map(problem));
                    seen.insert(
                        status.vm.id().to_ascii_lowercase(),
                        Fingerprint::of(&status),
                    );
                    if let Err(e) = inv.add_vm(status.vm) {
                        problems.push(problem(e.to_string()));
                    }
                }
                Err(ReadError::Virt(e)) if e.code().is(ErrorNumber::NoDomain) => {
                    tracing::debug!("domain {vm_id} vanished while the inventory was read");
                }
                Err(e) => match fail("read domain", e) {
                    HvError::Unavailable(m) => return Err(HvError::Unavailable(m)),
                    other => problems.push(problem(other.to_string())),
                },
            }
        }
        for p in &problems {
            tracing::warn!("inventory of {}: {p}", self.uri);
        }
        *lock(&self.baseline) = seen;
        Ok((inv, problems))
    }

    fn domain(&self, conn: &Connect, vm_id: &str) -> Result<Option<Domain>, ReadError> {
        match conn.lookup_domain_by_uuid_string(vm_id) {
            Ok(d) => Ok(Some(d)),
            Err(e) if is(&e, &[ErrorNumber::NoDomain, ErrorNumber::InvalidArg]) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn vm(&self, vm_id: &str) -> HvResult<Option<VmStatus>> {
        let conn = self.conn()?;
        let Some(dom) = self
            .domain(&conn, vm_id)
            .map_err(|e| self.fail(&conn, "lookup", e))?
        else {
            return Ok(None);
        };
        match self.read_domain(&dom) {
            Ok((status, problems)) => {
                for p in problems {
                    tracing::warn!("domain '{}' ({vm_id}): {p}", status.vm.name);
                }
                lock(&self.baseline).insert(vm_id.to_ascii_lowercase(), Fingerprint::of(&status));
                Ok(Some(status))
            }
            Err(ReadError::Virt(e)) if e.code().is(ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(self.fail(&conn, "read domain", e)),
        }
    }

    fn existing(&self, conn: &Connect, vm_id: &str, command: &str) -> HvResult<Domain> {
        self.domain(conn, vm_id)
            .map_err(|e| self.fail(conn, command, e))?
            .ok_or_else(|| HvError::Failed {
                command: command.into(),
                message: format!("no domain with UUID {vm_id} on {}", self.uri),
            })
    }

    fn set_adapter_mac(&self, adapter: &AdapterRef, setting: MacSetting) -> HvResult<()> {
        const CMD: &str = "set-adapter-mac";
        if let Some(cp) = &adapter.checkpoint_id {
            return Err(HvError::Failed {
                command: CMD.into(),
                message: format!(
                    "changing the MAC of snapshot '{cp}' is not supported on libvirt: libvirt \
                     refuses a redefined snapshot whose MAC differs (its saved device state \
                     carries the old one)"
                ),
            });
        }
        let conn = self.conn()?;
        let dom = self.existing(&conn, &adapter.vm_id, CMD)?;
        let fail = |e: ReadError| self.fail(&conn, CMD, e);
        let name = dom.name().map_err(|e| fail(e.into()))?;
        if dom.is_active().map_err(|e| fail(e.into()))? {
            return Err(fail(ReadError::Other(format!(
                "domain '{name}' is running: its MAC is only changed in the persistent \
                 definition while it is off (the running domain is never edited live)"
            ))));
        }
        if !dom.is_persistent().map_err(|e| fail(e.into()))? {
            return Err(fail(ReadError::Other(format!(
                "domain '{name}' is transient: it has no persistent definition to change"
            ))));
        }
        let flags = sys::VIR_DOMAIN_XML_INACTIVE | sys::VIR_DOMAIN_XML_SECURE;
        let before = dom.xml_desc(flags).map_err(|e| fail(e.into()))?;
        let after = xml::set_interface_mac(&before, &adapter.adapter, setting)
            .map_err(|e| fail(ReadError::Other(format!("domain '{name}': {e}"))))?;
        conn.define_domain_xml(&after).map_err(|e| fail(e.into()))?;
        // read it back: what libvirt made of it is what counts (and is logged)
        let now = dom
            .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(|e| fail(e.into()))?;
        let got = xml::live_adapters(&now)
            .ok()
            .and_then(|a| a.adapters.into_iter().find(|a| a.name == adapter.adapter))
            .map(|a| a.mac);
        match (setting, got) {
            (MacSetting::Static(want), Some(m)) if m == want => {}
            (MacSetting::Dynamic, Some(m)) => {
                tracing::info!(
                    "domain '{name}' adapter {}: libvirt generated {m}",
                    adapter.adapter
                );
            }
            (_, got) => {
                return Err(HvError::Protocol {
                    command: CMD.into(),
                    message: format!(
                        "domain '{name}' was redefined but adapter {} now has {}",
                        adapter.adapter,
                        got.map_or("no MAC".to_string(), |m| m.to_string())
                    ),
                });
            }
        }
        if let Ok((status, _)) = self.read_domain(&dom) {
            lock(&self.baseline)
                .insert(adapter.vm_id.to_ascii_lowercase(), Fingerprint::of(&status));
        }
        Ok(())
    }

    fn turn_off(&self, vm_id: &str) -> HvResult<()> {
        const CMD: &str = "turn-off";
        let conn = self.conn()?;
        let dom = self.existing(&conn, vm_id, CMD)?;
        let fail = |e: VirtError| self.fail(&conn, CMD, e.into());
        if !dom.is_active().map_err(fail)? {
            return Ok(());
        }
        if !dom.is_persistent().map_err(fail)? {
            return Err(HvError::Failed {
                command: CMD.into(),
                message: format!("domain {vm_id} is transient: turning it off would delete it"),
            });
        }
        dom.destroy().map_err(fail)
    }

    fn start(&self, vm_id: &str) -> HvResult<()> {
        const CMD: &str = "start";
        let conn = self.conn()?;
        let dom = self.existing(&conn, vm_id, CMD)?;
        let fail = |e: VirtError| self.fail(&conn, CMD, e.into());
        if dom.is_active().map_err(fail)? {
            return Ok(());
        }
        dom.create().map(drop).map_err(fail)
    }

    /// Waits for a lost connection, reconnects with backoff, resynchronises; until shutdown.
    fn reconnect_loop(self: Arc<Inner>) {
        loop {
            {
                let mut link = lock(&self.link);
                while !link.lost && !link.shutdown {
                    link = self
                        .link_changed
                        .wait(link)
                        .unwrap_or_else(|p| p.into_inner());
                }
                if link.shutdown {
                    return;
                }
            }
            let dead = lock(&self.live).take();
            if let Some(dead) = dead {
                Inner::close(dead);
            }
            let mut wait = self.opts.retry_min;
            loop {
                {
                    let link = lock(&self.link);
                    let (link, _) = self
                        .link_changed
                        .wait_timeout_while(link, wait, |l| !l.shutdown)
                        .unwrap_or_else(|p| p.into_inner());
                    if link.shutdown {
                        return;
                    }
                }
                match self.open() {
                    Ok(live) => {
                        *lock(&self.live) = Some(live);
                        lock(&self.link).lost = false;
                        tracing::info!("{}: reconnected", self.uri);
                        self.resync();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "{}: reconnect failed: {e}; next try in {:?}",
                            self.uri,
                            wait.saturating_mul(2).min(self.opts.retry_max)
                        );
                        wait = wait.saturating_mul(2).min(self.opts.retry_max);
                    }
                }
            }
        }
    }

    /// After a reconnect: the full inventory again, and events for what changed meanwhile.
    fn resync(&self) {
        let before = lock(&self.baseline).clone();
        if let Err(e) = self.inventory_report() {
            tracing::warn!("{}: inventory after reconnecting: {e}", self.uri);
            return;
        }
        let after = lock(&self.baseline).clone();
        let mut queued = false;
        for (kind, vm_id, vm_name, why) in queue::resync(&before, &after) {
            let raw = format!(
                "resync after reconnecting to {}: domain '{vm_name}' ({vm_id}) {why}",
                self.uri
            );
            tracing::info!("{raw}");
            queued |= lock(&self.events).push(kind, 0, vm_id, Some(vm_name), raw);
        }
        if queued {
            self.arrived.notify_waiters();
        }
    }

    fn shutdown(&self) {
        {
            let mut link = lock(&self.link);
            link.shutdown = true;
            self.link_changed.notify_all();
        }
        let live = lock(&self.live).take();
        if let Some(live) = live {
            Inner::close(live);
        }
    }
}

impl LibvirtHypervisor {
    /// Connects to `uri` (`qemu:///system`, `qemu+ssh://host/system`, `test:///default`,
    /// `test:///abs/path/node.xml` …) with default options. Blocking.
    ///
    /// Errors: unreachable (no daemon, connection refused, unknown host) is
    /// [`HvError::Unavailable`]; permission denied, an unknown URI scheme and a configuration
    /// libvirt refuses (e.g. a test-driver node file with a malformed MAC) are
    /// [`HvError::Failed`]; the message says which, with libvirt's own text.
    pub fn connect(uri: &str) -> HvResult<LibvirtHypervisor> {
        LibvirtHypervisor::connect_with(uri, LibvirtOptions::default())
    }

    /// [`LibvirtHypervisor::connect`] with options.
    pub fn connect_with(uri: &str, opts: LibvirtOptions) -> HvResult<LibvirtHypervisor> {
        event_loop()?;
        let inner = Arc::new(Inner {
            uri: uri.to_string(),
            opts,
            live: Mutex::new(None),
            link: Mutex::new(Link::default()),
            link_changed: Condvar::new(),
            events: Mutex::new(EventQueue::new(format!("libvirt:{uri}"))),
            arrived: tokio::sync::Notify::new(),
            baseline: Mutex::new(BTreeMap::new()),
        });
        let live = inner.open()?;
        *lock(&inner.live) = Some(live);
        // the first view, so that a later reconnect can tell what changed
        if let Err(e) = inner.inventory_report() {
            tracing::warn!("{uri}: first inventory: {e}");
        }
        let for_thread = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("libvirt-reconnect".into())
            .spawn(move || for_thread.reconnect_loop())
            .map_err(|e| HvError::Unavailable(format!("cannot start the reconnect thread: {e}")))?;
        Ok(LibvirtHypervisor { inner })
    }

    pub fn uri(&self) -> &str {
        &self.inner.uri
    }

    /// The event channel name, `libvirt:<uri>`.
    pub fn channel(&self) -> String {
        self.inner.channel()
    }

    /// The current connection (a new reference), for tests and diagnostics;
    /// [`HvError::Unavailable`] while reconnecting.
    pub fn connection(&self) -> HvResult<Connect> {
        self.inner.conn()
    }

    /// Whether the connection is currently lost (a reconnect is under way).
    pub fn is_reconnecting(&self) -> bool {
        lock(&self.inner.link).lost
    }

    /// The inventory and, per domain, what could not be read (those domains are still listed,
    /// with the adapters that could be read); [`Hypervisor::inventory`] logs the problems.
    pub async fn inventory_report(&self) -> HvResult<(HostInventory, Vec<DomainProblem>)> {
        self.blocking(|i| i.inventory_report()).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> HvResult<T> + Send + 'static,
    ) -> HvResult<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| HvError::Unavailable(format!("libvirt worker: {e}")))?
    }
}

impl Drop for LibvirtHypervisor {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

impl Hypervisor for LibvirtHypervisor {
    async fn inventory(&self) -> HvResult<HostInventory> {
        self.inventory_report().await.map(|(inv, _)| inv)
    }

    async fn vm(&self, vm_id: &str) -> HvResult<Option<VmStatus>> {
        let vm_id = vm_id.to_string();
        self.blocking(move |i| i.vm(&vm_id)).await
    }

    async fn host_range(&self) -> HvResult<HostRangeState> {
        Err(HvError::NotApplicable(NO_HOST_RANGE.into()))
    }

    async fn set_host_range(&self, _range: MacRange) -> HvResult<()> {
        Err(HvError::NotApplicable(NO_HOST_RANGE.into()))
    }

    async fn set_adapter_mac(&self, adapter: &AdapterRef, setting: MacSetting) -> HvResult<()> {
        let adapter = adapter.clone();
        self.blocking(move |i| i.set_adapter_mac(&adapter, setting))
            .await
    }

    async fn turn_off(&self, vm_id: &str) -> HvResult<()> {
        let vm_id = vm_id.to_string();
        self.blocking(move |i| i.turn_off(&vm_id)).await
    }

    async fn start(&self, vm_id: &str) -> HvResult<()> {
        let vm_id = vm_id.to_string();
        self.blocking(move |i| i.start(&vm_id)).await
    }

    async fn watch(&self, resume: &Bookmarks) -> HvResult<()> {
        let channel = self.inner.channel();
        if let Some(after) = resume.get(&channel) {
            tracing::info!(
                "{channel}: libvirt keeps no event log, so events after record {after} of an \
                 earlier run cannot be replayed; delivering from now on"
            );
        }
        lock(&self.inner.events).watch();
        Ok(())
    }

    async fn next_event(&self, wait: Duration) -> HvResult<Option<HvEvent>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.inner.arrived.notified();
            tokio::pin!(arrived);
            // registered before looking, so an event queued in between still wakes us
            arrived.as_mut().enable();
            if let Some(ev) = lock(&self.inner.events).pop() {
                return Ok(Some(ev));
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn event(&self, channel: &str, record_id: u64) -> HvResult<Option<HvEvent>> {
        Ok(lock(&self.inner.events).recent(channel, record_id))
    }
}
