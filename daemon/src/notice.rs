//! What the engine thread tells the D-Bus side and the journal as it
//! goes: the worker sends [`Notice`]s, the D-Bus emitter turns them into
//! `PropertiesChanged` and signals, and the journal names the events.

/// What the D-Bus side turns into `PropertiesChanged` and signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// [`crate::worker::Published`] (or the health it reads) may have changed.
    Changed,
    Swapped {
        from: String,
        to: String,
        /// The trial's probation window, as the state record holds it.
        window: std::time::Duration,
    },
    Committed {
        version: String,
    },
    /// A package download went on: `received` of `total` bytes (sent at
    /// most a few times a second, and at its end).
    Download {
        version: String,
        received: u64,
        total: u64,
    },
    /// A fault naming the committed module, seen after its probation.
    CommittedFault {
        version: String,
        reason: String,
    },
    /// `to` is empty when nothing could be loaded or a reboot is pending.
    RolledBack {
        from: String,
        to: String,
        reason: String,
    },
}
