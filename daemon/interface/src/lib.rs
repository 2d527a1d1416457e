//! The `com.dell.MilSpec1` D-Bus interface, shared by the daemon that
//! serves it and by `milspecctl`: its names, its errors and the client
//! proxy (docs/dbus.md). No daemon logic lives here.

pub mod json;
pub mod proxy;
pub mod result;

pub use proxy::{ManagerProxy, ManagerProxyBlocking};
pub use result::ActionResult;

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
