//! The strategies a run compares, and what the simulated agent does under each.
//!
//! Every strategy except `hyperv-default` runs the real decision logic of the agent
//! ([`macpool_agent::decide::handle_event`]); the ones that need an authority run it against the
//! real core state machine ([`macpool_core::authority::Authority`]). The table in
//! `Strategy::setup` is the only place that says which parts a strategy uses, so adding a
//! strategy is one match arm there.

use macpool_agent::decide;

/// One way of running the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Strategy {
    /// Hyper-V as shipped: per-host dynamic ranges, no agent.
    HypervDefault,
    /// The published workaround: after every `RDV_ROLLBACK` restore, the checkpoint's adapters
    /// are set dynamic and the desktop is turned off and started again.
    BlogCompatible,
    /// macpool guard: on a rollback restore, ask the authority; only on a real conflict turn the
    /// desktop off, give it a fresh static MAC from the pool, start it.
    Guard,
    /// macpool delegate: each host's dynamic range is a cluster-unique block from the
    /// authority, rotated before Hyper-V would wrap around.
    Delegate,
    /// delegate, and guard for what delegate cannot prevent.
    DelegateGuard,
}

/// Which parts of macpool a strategy runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Setup {
    /// The agent's decision logic on restore events, and with which behaviour.
    pub decide: Option<decide::Strategy>,
    /// An authority (the real core), told about the hosts by their agents' inventories.
    pub authority: bool,
    /// Host ranges are blocks delegated by the authority.
    pub delegate: bool,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::HypervDefault,
        Strategy::BlogCompatible,
        Strategy::Guard,
        Strategy::Delegate,
        Strategy::DelegateGuard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::HypervDefault => "hyperv-default",
            Strategy::BlogCompatible => "blog-compatible",
            Strategy::Guard => "guard",
            Strategy::Delegate => "delegate",
            Strategy::DelegateGuard => "delegate+guard",
        }
    }

    pub fn parse(s: &str) -> Result<Strategy, String> {
        Strategy::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown strategy '{s}': expected hyperv-default, blog-compatible, guard, delegate or delegate+guard"
                )
            })
    }

    /// One line for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Strategy::HypervDefault => "Hyper-V as shipped: per-host dynamic ranges, no agent",
            Strategy::BlogCompatible => {
                "the published workaround: restart the desktop after every rollback"
            }
            Strategy::Guard => {
                "macpool guard: restart only on a real conflict, with a fresh pool MAC"
            }
            Strategy::Delegate => {
                "macpool delegate: host ranges are cluster-unique blocks, rotated before wrap-around"
            }
            Strategy::DelegateGuard => "macpool delegate and guard together",
        }
    }

    /// What the simulated agent runs under this strategy.
    pub(crate) fn setup(self) -> Setup {
        match self {
            Strategy::HypervDefault => Setup {
                decide: None,
                authority: false,
                delegate: false,
            },
            Strategy::BlogCompatible => Setup {
                decide: Some(decide::Strategy::BlogCompatible),
                authority: false,
                delegate: false,
            },
            Strategy::Guard => Setup {
                decide: Some(decide::Strategy::Guard),
                authority: true,
                delegate: false,
            },
            Strategy::Delegate => Setup {
                decide: None,
                authority: true,
                delegate: true,
            },
            Strategy::DelegateGuard => Setup {
                decide: Some(decide::Strategy::Guard),
                authority: true,
                delegate: true,
            },
        }
    }

    /// `Err(why)` when this build cannot run the strategy.
    pub fn available(self) -> Result<(), String> {
        if self.setup().delegate {
            crate::delegate::available()
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
