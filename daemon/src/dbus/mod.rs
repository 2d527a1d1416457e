//! Local control over the system bus: `com.dell.MilSpec1` at
//! `/com/dell/MilSpec1`, interface `com.dell.MilSpec1.Manager`
//! (docs/dbus.md). A thin layer: each method checks the caller, then
//! becomes one [`Action`] for the engine thread ([`crate::worker`]), the
//! same actions the poll timer sends.
//!
//! - [`service`]: the interface the daemon serves, and the emitter that
//!   turns the worker's notices into `PropertiesChanged` and signals;
//! - [`auth`]: who may change things (root, or polkit's
//!   `com.dell.milspec1.manage`);
//! - [`proxy`] and [`client`]: the client side, `milspecctl`'s commands.

pub mod auth;
pub mod client;
pub mod proxy;
pub mod service;

/// The well-known bus name.
pub const BUS_NAME: &str = "com.dell.MilSpec1";
/// The one object.
pub const OBJECT_PATH: &str = "/com/dell/MilSpec1";
/// The interface.
pub const INTERFACE: &str = "com.dell.MilSpec1.Manager";
/// The polkit action that lets a non-root caller change things.
pub const POLKIT_ACTION: &str = "com.dell.milspec1.manage";
/// Most events `History` returns.
pub const MAX_HISTORY: u32 = 1000;

/// D-Bus errors, named `com.dell.MilSpec1.Error.<Variant>`; the message
/// says what to do.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "com.dell.MilSpec1.Error")]
pub enum ManagerError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller is neither root nor authorized by polkit.
    AccessDenied(String),
    /// The package is valid but not for this host now (plan refused it).
    Rejected(String),
    /// The package is malformed, unsigned or fails its hashes.
    InvalidPackage(String),
    /// An install is in progress, or the queue is full.
    Busy(String),
    /// `Rollback` with no trial running.
    NothingToRollBack(String),
    /// The action did not finish in the time allowed.
    Timeout(String),
    /// Anything else; the message names the file or object and the reason.
    Failed(String),
}

impl From<crate::worker::ActionError> for ManagerError {
    fn from(e: crate::worker::ActionError) -> Self {
        use crate::worker::ActionError as A;
        let text = e.to_string();
        match e {
            A::Busy(_) => ManagerError::Busy(text),
            A::Rejected(_) => ManagerError::Rejected(text),
            A::InvalidPackage(_) => ManagerError::InvalidPackage(text),
            A::NothingToRollBack(_) => ManagerError::NothingToRollBack(text),
            A::Failed(_) | A::Gone => ManagerError::Failed(text),
        }
    }
}
