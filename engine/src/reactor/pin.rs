//! CPU pinning of reactor threads (`core_affinity`).

use core_affinity::CoreId;

/// The cores this process may run on (empty if they cannot be listed).
pub(crate) fn cores() -> Vec<CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// Pins the calling thread (reactor `index`) to `core`, logging instead of failing: an
/// unpinned reactor still works, only less predictably.
pub(crate) fn pin_current(core: CoreId, index: usize) {
    if core_affinity::set_for_current(core) {
        tracing::debug!("reactor {index} pinned to core {}", core.id);
    } else {
        tracing::warn!("reactor {index}: could not pin to core {}", core.id);
    }
}
