//! The pooled desktops the dashboard and fleet benchmarks report in their hosts' inventories.

use macpool_api::dto::{InventoryAdapter, InventoryCheckpoint};

/// A MAC as the API takes it: 12 hex digits.
pub(crate) fn mac(v: u64) -> String {
    format!("{v:012X}")
}

/// A pooled desktop's adapter as the agent reports it: live, or with `(id, n)` the adapter
/// frozen in its n-th checkpoint (the 0th is RDS's rollback checkpoint).
pub(crate) fn desktop_adapter(m: u64, checkpoint: Option<(String, u32)>) -> InventoryAdapter {
    InventoryAdapter {
        name: "Network Adapter".into(),
        mac: mac(m),
        dynamic: true,
        checkpoint: checkpoint.map(|(id, c)| InventoryCheckpoint {
            id,
            name: if c == 0 {
                "RDV_ROLLBACK".into()
            } else {
                format!("before update {c}")
            },
            kind: None,
            created: None,
        }),
    }
}
