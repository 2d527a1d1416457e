//! The result word of an action's answer (`Install`, `CheckForUpdates`,
//! `Reconcile`: the first string; `Rollback`: the third). One type for
//! both sides: the daemon turns it into its word here, and `milspecctl`
//! turns the word back into the same value.

use std::fmt;

/// What an action that was accepted did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionResult {
    /// A swap and its probation are under way; the outcome follows as a
    /// `Committed` or `RolledBack` signal.
    Started,
    /// The same version is already installed and committed.
    AlreadyInstalled,
    Committed,
    RolledBack,
    /// Refused before any swap; nothing changed.
    Rejected,
    /// The mirror offers nothing newer for this host.
    UpToDate,
    /// A newer version exists, but its rollout has not reached this host.
    Waiting,
    /// The running version is revoked and nothing replaces it.
    RevokedNoReplacement,
    /// The kernel matches the committed slot.
    Clean,
    /// No module (or an unmanaged one) was loaded; the committed slot was.
    LoadedCommitted,
    /// The loaded module matches no committed slot and was left alone.
    Drift,
    /// A rollback waits for a reboot.
    PendingReboot,
    /// The committed version has no build for the kernel asked about (the
    /// running one, or one just installed), here or on the mirror.
    NoBuild,
    /// The committed slot holds a build for the kernel asked about.
    KernelReady,
    /// A build for the kernel asked about was fetched and added to the
    /// committed slot.
    BuildAdded,
    /// A version was taken off the blocklist.
    Unblocked,
}

impl ActionResult {
    pub const ALL: [ActionResult; 16] = [
        ActionResult::Started,
        ActionResult::AlreadyInstalled,
        ActionResult::Committed,
        ActionResult::RolledBack,
        ActionResult::Rejected,
        ActionResult::UpToDate,
        ActionResult::Waiting,
        ActionResult::RevokedNoReplacement,
        ActionResult::Clean,
        ActionResult::LoadedCommitted,
        ActionResult::Drift,
        ActionResult::PendingReboot,
        ActionResult::NoBuild,
        ActionResult::KernelReady,
        ActionResult::BuildAdded,
        ActionResult::Unblocked,
    ];

    /// The word on the bus.
    pub fn word(self) -> &'static str {
        match self {
            ActionResult::Started => "started",
            ActionResult::AlreadyInstalled => "already-installed",
            ActionResult::Committed => "committed",
            ActionResult::RolledBack => "rolled-back",
            ActionResult::Rejected => "rejected",
            ActionResult::UpToDate => "up-to-date",
            ActionResult::Waiting => "waiting",
            ActionResult::RevokedNoReplacement => "revoked-no-replacement",
            ActionResult::Clean => "clean",
            ActionResult::LoadedCommitted => "loaded-committed",
            ActionResult::Drift => "drift",
            ActionResult::PendingReboot => "pending-reboot",
            ActionResult::NoBuild => "no-build",
            ActionResult::KernelReady => "kernel-ready",
            ActionResult::BuildAdded => "build-added",
            ActionResult::Unblocked => "unblocked",
        }
    }

    /// The value of a word; `None` for a word this side does not know (a
    /// newer daemon's).
    pub fn from_word(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.word() == word)
    }
}

impl fmt::Display for ActionResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_goes_to_its_word_and_back() {
        for r in ActionResult::ALL {
            assert_eq!(ActionResult::from_word(r.word()), Some(r));
        }
        let mut words: Vec<&str> = ActionResult::ALL.iter().map(|r| r.word()).collect();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), ActionResult::ALL.len(), "two results share a word");
    }

    #[test]
    fn the_words_on_the_bus_stay_as_they_are() {
        let words: Vec<&str> = ActionResult::ALL.iter().map(|r| r.word()).collect();
        assert_eq!(
            words,
            [
                "started",
                "already-installed",
                "committed",
                "rolled-back",
                "rejected",
                "up-to-date",
                "waiting",
                "revoked-no-replacement",
                "clean",
                "loaded-committed",
                "drift",
                "pending-reboot",
                "no-build",
                "kernel-ready",
                "build-added",
                "unblocked"
            ]
        );
        assert_eq!(ActionResult::from_word("paused"), None);
    }
}
