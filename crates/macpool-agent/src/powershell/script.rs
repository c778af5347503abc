//! Typed commands and the exact PowerShell each one runs. Values from outside enter only through
//! [`quote`]; MACs and numbers are typed and formatted here. The functions the scripts call
//! (`Get-MacpoolInventory`, `Get-MacpoolCursor`, `Start-MacpoolWatch`) are defined by the
//! bootstrap ([`super::bootstrap`]).

use macpool_core::{Mac, MacFormat, MacRange};

use super::quote::quote;
use crate::hypervisor::{AdapterRef, MacSetting};

/// One event-log subscription: a channel, the event ids wanted, and the last record id already
/// delivered (0 = from now on only).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    pub channel: String,
    pub event_ids: Vec<u32>,
    pub after: Option<u64>,
}

/// A read-only check of `macpool hyperv selftest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelfCheck {
    HyperVModule,
    Elevated,
    ChannelReadable,
    RangeReadable,
    CursorReadable,
    /// The bootstrap's C# (EventLogWatcher, System.Core on Desktop edition) compiled.
    WatcherCompiled,
    /// Constrained Language Mode blocks Add-Type and `::new()`.
    LanguageMode,
    /// A non-ASCII literal survives stdin (OEM code page) and stdout (`'Ü'.Length` is 1).
    NonAscii,
    /// Every value under the `Worker` key: name, registry type, value (the cursor's are unverified).
    CursorValues,
    /// The newest VMMS-Admin 13002 and 18304 (which one a created VM logs).
    CreatedEvents,
    /// The channel's newest record id (for the watcher check).
    NewestRecord,
}

impl SelfCheck {
    pub const ALL: [SelfCheck; 11] = [
        SelfCheck::HyperVModule,
        SelfCheck::Elevated,
        SelfCheck::ChannelReadable,
        SelfCheck::RangeReadable,
        SelfCheck::CursorReadable,
        SelfCheck::WatcherCompiled,
        SelfCheck::LanguageMode,
        SelfCheck::NonAscii,
        SelfCheck::CursorValues,
        SelfCheck::CreatedEvents,
        SelfCheck::NewestRecord,
    ];
}

/// Everything the agent asks of the PowerShell child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// The whole host, or one VM (`vm_id`), as the `macpool-hyperv-inventory` document.
    Inventory {
        vm_id: Option<String>,
    },
    HostRange,
    SetHostRange {
        range: MacRange,
    },
    SetAdapterMac {
        adapter: AdapterRef,
        setting: MacSetting,
    },
    TurnOff {
        vm_id: String,
    },
    Start {
        vm_id: String,
    },
    Watch {
        subscriptions: Vec<Subscription>,
    },
    GetEvent {
        channel: String,
        record_id: u64,
    },
    Check {
        check: SelfCheck,
        channel: String,
    },
}

fn hex(mac: Mac) -> String {
    mac.display(MacFormat::Hyperv).to_string()
}

/// The adapter with exactly this `Id` (names are not unique: Hyper-V names every new adapter
/// "Network Adapter"), or without an id the one with exactly this name (no wildcards: `-Name`
/// would expand `*` and `[`); failing unless there is exactly one.
fn one_adapter(a: &AdapterRef) -> String {
    let source = match &a.checkpoint_id {
        None => format!("Get-VM -Id {} | Get-VMNetworkAdapter", quote(&a.vm_id)),
        Some(cp) => format!(
            "Get-VM -Id {} | Get-VMSnapshot | Where-Object {{ \"$($_.Id)\" -eq {} }} | Get-VMNetworkAdapter",
            quote(&a.vm_id),
            quote(cp)
        ),
    };
    let (what, key) = match &a.id {
        Some(id) => ("Id", id),
        None => ("Name", &a.adapter),
    };
    format!(
        "$a = @({source} | Where-Object {{ \"$($_.{what})\" -eq {key} }}); if ($a.Count -ne 1) {{ throw \"expected one adapter with that {what}, found $($a.Count)\" }}; ",
        key = quote(key),
    )
}

impl Command {
    /// The request's `op`: a stable name for logs and for the stand-in's dispatch.
    pub fn op(&self) -> &'static str {
        match self {
            Command::Inventory { .. } => "inventory",
            Command::HostRange => "host-range",
            Command::SetHostRange { .. } => "set-host-range",
            Command::SetAdapterMac { .. } => "set-adapter-mac",
            Command::TurnOff { .. } => "turn-off",
            Command::Start { .. } => "start",
            Command::Watch { .. } => "watch",
            Command::GetEvent { .. } => "get-event",
            Command::Check { .. } => "check",
        }
    }

    /// Whether the command changes the host (dry-run prints these instead of running them).
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Command::SetHostRange { .. }
                | Command::SetAdapterMac { .. }
                | Command::TurnOff { .. }
                | Command::Start { .. }
        )
    }

    /// The exact PowerShell the child runs for this command.
    pub fn script(&self) -> String {
        match self {
            // the management OS's vNICs too: they draw from the same dynamic range
            Command::Inventory { vm_id: None } => "Get-MacpoolInventory -ManagementOS".into(),
            Command::Inventory { vm_id: Some(id) } => {
                format!("Get-MacpoolInventory -VMId {}", quote(id))
            }
            Command::HostRange => "$h = Get-VMHost; [ordered]@{ MacAddressMinimum = \"$($h.MacAddressMinimum)\"; MacAddressMaximum = \"$($h.MacAddressMaximum)\"; CurrentMacAddress = (Get-MacpoolCursor) }".into(),
            Command::SetHostRange { range } => format!(
                "Set-VMHost -MacAddressMinimum {} -MacAddressMaximum {}",
                quote(&hex(range.first())),
                quote(&hex(range.last()))
            ),
            Command::SetAdapterMac { adapter, setting } => {
                let set = match setting {
                    MacSetting::Static(m) => {
                        format!("$a[0] | Set-VMNetworkAdapter -StaticMacAddress {}", quote(&hex(*m)))
                    }
                    MacSetting::Dynamic => "$a[0] | Set-VMNetworkAdapter -DynamicMacAddress".into(),
                };
                format!("{}{set}", one_adapter(adapter))
            }
            Command::TurnOff { vm_id } => {
                format!("Get-VM -Id {} | Stop-VM -TurnOff -Force -Confirm:$false", quote(vm_id))
            }
            Command::Start { vm_id } => format!("Get-VM -Id {} | Start-VM", quote(vm_id)),
            Command::Watch { subscriptions } => {
                let mut s = String::from("Stop-MacpoolWatch");
                for sub in subscriptions {
                    let ids: Vec<String> = sub.event_ids.iter().map(u32::to_string).collect();
                    s.push_str(&format!(
                        "; Start-MacpoolWatch -Channel {} -EventId {} -After {}",
                        quote(&sub.channel),
                        if ids.is_empty() { "@()".to_string() } else { ids.join(",") },
                        match sub.after {
                            Some(n) => n.to_string(),
                            None => "-1".into(),
                        }
                    ));
                }
                s
            }
            Command::GetEvent { channel, record_id } => format!(
                "@(Get-WinEvent -LogName {} -FilterXPath '*[System[EventRecordID={record_id}]]' -MaxEvents 1 -ErrorAction SilentlyContinue | ForEach-Object {{ $_.ToXml() }})",
                quote(channel)
            ),
            Command::Check { check, channel } => match check {
                SelfCheck::HyperVModule => "[bool](Get-Module -ListAvailable -Name Hyper-V)".into(),
                SelfCheck::Elevated => "$p = New-Object Security.Principal.WindowsPrincipal ([Security.Principal.WindowsIdentity]::GetCurrent()); [ordered]@{ Administrator = $p.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator); HyperVAdministrators = $p.IsInRole((New-Object Security.Principal.SecurityIdentifier 'S-1-5-32-578')) }".into(),
                SelfCheck::ChannelReadable => format!(
                    "$l = Get-WinEvent -ListLog {c}; [ordered]@{{ LogName = $l.LogName; IsEnabled = $l.IsEnabled; RecordCount = $l.RecordCount; Readable = $(try {{ $null = Get-WinEvent -LogName {c} -MaxEvents 1 -ErrorAction Stop; $true }} catch {{ $_.FullyQualifiedErrorId -like 'NoMatchingEventsFound*' }}) }}",
                    c = quote(channel)
                ),
                SelfCheck::RangeReadable => "$h = Get-VMHost; [ordered]@{ MacAddressMinimum = \"$($h.MacAddressMinimum)\"; MacAddressMaximum = \"$($h.MacAddressMaximum)\" }".into(),
                SelfCheck::CursorReadable => "[ordered]@{ CurrentMacAddress = (Get-MacpoolCursor) }".into(),
                SelfCheck::WatcherCompiled => "[ordered]@{ Compiled = [bool](([System.Management.Automation.PSTypeName]'MacpoolWatch').Type); Edition = \"$($PSVersionTable.PSEdition)\"; Version = \"$($PSVersionTable.PSVersion)\"; Clr = \"$($PSVersionTable.CLRVersion)\" }".into(),
                SelfCheck::LanguageMode => "[ordered]@{ LanguageMode = \"$($ExecutionContext.SessionState.LanguageMode)\" }".into(),
                SelfCheck::NonAscii => format!(
                    "[ordered]@{{ Text = {u}; Length = {u}.Length; CodePoint = [int]{u}[0]; InputEncoding = [Console]::InputEncoding.WebName }}",
                    u = quote("\u{dc}")
                ),
                SelfCheck::CursorValues => "$k = Get-Item -Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Virtualization\\Worker' -ErrorAction SilentlyContinue; [ordered]@{ KeyExists = [bool]$k; Values = @(if ($k) { foreach ($n in $k.GetValueNames()) { $v = $k.GetValue($n); [ordered]@{ Name = $n; Kind = \"$($k.GetValueKind($n))\"; Value = $(if ($v -is [byte[]]) { ($v | ForEach-Object { $_.ToString('X2') }) -join '' } else { \"$v\" }) } } }) }".into(),
                SelfCheck::CreatedEvents => format!(
                    "$c = {c}; [ordered]@{{ E13002 = @(Get-WinEvent -LogName $c -FilterXPath '*[System[EventID=13002]]' -MaxEvents 1 -ErrorAction SilentlyContinue | ForEach-Object {{ $_.TimeCreated.ToUniversalTime().ToString('o') }}); E18304 = @(Get-WinEvent -LogName $c -FilterXPath '*[System[EventID=18304]]' -MaxEvents 1 -ErrorAction SilentlyContinue | ForEach-Object {{ $_.TimeCreated.ToUniversalTime().ToString('o') }}) }}",
                    c = quote(crate::events::VMMS_ADMIN)
                ),
                SelfCheck::NewestRecord => format!(
                    "[ordered]@{{ Newest = @(Get-WinEvent -LogName {} -MaxEvents 1 -ErrorAction SilentlyContinue | ForEach-Object {{ $_.RecordId }}) }}",
                    quote(channel)
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "5f0e6c3a-1b2c-4d5e-8f90-0123456789ab";
    const CP: &str = "9a8b7c6d-0000-4000-8000-00000000cafe";
    const NIC: &str = "Microsoft:5F0E6C3A-1B2C-4D5E-8F90-0123456789AB\\2";

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    fn live(name: &str) -> AdapterRef {
        AdapterRef {
            vm_id: ID.into(),
            adapter: name.into(),
            id: None,
            checkpoint_id: None,
        }
    }

    #[test]
    fn golden_inventory_and_host() {
        assert_eq!(
            Command::Inventory { vm_id: None }.script(),
            "Get-MacpoolInventory -ManagementOS"
        );
        assert_eq!(
            Command::Inventory {
                vm_id: Some("it's $me".into())
            }
            .script(),
            "Get-MacpoolInventory -VMId 'it''s $me'"
        );
        assert_eq!(
            Command::HostRange.script(),
            "$h = Get-VMHost; [ordered]@{ MacAddressMinimum = \"$($h.MacAddressMinimum)\"; MacAddressMaximum = \"$($h.MacAddressMaximum)\"; CurrentMacAddress = (Get-MacpoolCursor) }"
        );
        assert_eq!(
            Command::SetHostRange {
                range: "00155D020600-00155D0206FF".parse().unwrap()
            }
            .script(),
            "Set-VMHost -MacAddressMinimum '00155D020600' -MacAddressMaximum '00155D0206FF'"
        );
    }

    #[test]
    fn golden_set_adapter_mac() {
        // issue 17: by Id, since every new adapter is called "Network Adapter"
        let s = Command::SetAdapterMac {
            adapter: AdapterRef {
                id: Some(NIC.into()),
                ..live("Network Adapter")
            },
            setting: MacSetting::Static(mac("00:15:5d:0a:0b:0c")),
        }
        .script();
        assert_eq!(
            s,
            "$a = @(Get-VM -Id '5f0e6c3a-1b2c-4d5e-8f90-0123456789ab' | Get-VMNetworkAdapter | Where-Object { \"$($_.Id)\" -eq 'Microsoft:5F0E6C3A-1B2C-4D5E-8F90-0123456789AB\\2' }); if ($a.Count -ne 1) { throw \"expected one adapter with that Id, found $($a.Count)\" }; $a[0] | Set-VMNetworkAdapter -StaticMacAddress '00155D0A0B0C'"
        );
        let s = Command::SetAdapterMac {
            adapter: AdapterRef {
                vm_id: ID.into(),
                adapter: "NIC 'prod' $x `t ‘q’ Ü".into(),
                id: None,
                checkpoint_id: Some(CP.into()),
            },
            setting: MacSetting::Dynamic,
        }
        .script();
        assert_eq!(
            s,
            "$a = @(Get-VM -Id '5f0e6c3a-1b2c-4d5e-8f90-0123456789ab' | Get-VMSnapshot | Where-Object { \"$($_.Id)\" -eq '9a8b7c6d-0000-4000-8000-00000000cafe' } | Get-VMNetworkAdapter | Where-Object { \"$($_.Name)\" -eq 'NIC ''prod'' $x `t ‘‘q’’ Ü' }); if ($a.Count -ne 1) { throw \"expected one adapter with that Name, found $($a.Count)\" }; $a[0] | Set-VMNetworkAdapter -DynamicMacAddress"
        );
        assert_eq!(
            crate::powershell::quote::literals(&s).unwrap(),
            vec![ID, CP, "NIC 'prod' $x `t ‘q’ Ü"]
        );
    }

    #[test]
    fn golden_power_and_events() {
        assert_eq!(
            Command::TurnOff { vm_id: ID.into() }.script(),
            "Get-VM -Id '5f0e6c3a-1b2c-4d5e-8f90-0123456789ab' | Stop-VM -TurnOff -Force -Confirm:$false"
        );
        assert_eq!(
            Command::Start { vm_id: ID.into() }.script(),
            "Get-VM -Id '5f0e6c3a-1b2c-4d5e-8f90-0123456789ab' | Start-VM"
        );
        let w = Command::Watch {
            subscriptions: vec![
                Subscription {
                    channel: "Microsoft-Windows-Hyper-V-Worker-Admin".into(),
                    event_ids: vec![18596, 18500],
                    after: Some(4711),
                },
                Subscription {
                    channel: "Microsoft-Windows-Hyper-V-VMMS-Admin".into(),
                    event_ids: vec![18304, 13003],
                    after: None,
                },
            ],
        };
        assert_eq!(
            w.script(),
            "Stop-MacpoolWatch; Start-MacpoolWatch -Channel 'Microsoft-Windows-Hyper-V-Worker-Admin' -EventId 18596,18500 -After 4711; Start-MacpoolWatch -Channel 'Microsoft-Windows-Hyper-V-VMMS-Admin' -EventId 18304,13003 -After -1"
        );
        assert_eq!(
            Command::GetEvent {
                channel: "Microsoft-Windows-Hyper-V-Worker-Admin".into(),
                record_id: 42
            }
            .script(),
            "@(Get-WinEvent -LogName 'Microsoft-Windows-Hyper-V-Worker-Admin' -FilterXPath '*[System[EventRecordID=42]]' -MaxEvents 1 -ErrorAction SilentlyContinue | ForEach-Object { $_.ToXml() })"
        );
    }

    #[test]
    fn golden_checks() {
        let c = |check| {
            Command::Check {
                check,
                channel: "Microsoft-Windows-Hyper-V-Worker-Admin".into(),
            }
            .script()
        };
        assert_eq!(
            c(SelfCheck::HyperVModule),
            "[bool](Get-Module -ListAvailable -Name Hyper-V)"
        );
        assert!(c(SelfCheck::Elevated).contains("'S-1-5-32-578'"));
        assert_eq!(
            c(SelfCheck::ChannelReadable),
            "$l = Get-WinEvent -ListLog 'Microsoft-Windows-Hyper-V-Worker-Admin'; [ordered]@{ LogName = $l.LogName; IsEnabled = $l.IsEnabled; RecordCount = $l.RecordCount; Readable = $(try { $null = Get-WinEvent -LogName 'Microsoft-Windows-Hyper-V-Worker-Admin' -MaxEvents 1 -ErrorAction Stop; $true } catch { $_.FullyQualifiedErrorId -like 'NoMatchingEventsFound*' }) }"
        );
        assert_eq!(
            c(SelfCheck::CursorReadable),
            "[ordered]@{ CurrentMacAddress = (Get-MacpoolCursor) }"
        );
        for check in SelfCheck::ALL {
            assert!(
                !Command::Check {
                    check,
                    channel: String::new()
                }
                .mutates()
            );
        }
    }
}
