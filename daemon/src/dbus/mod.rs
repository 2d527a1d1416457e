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
//! - the names, errors and client proxy of the interface live in the
//!   `milspec-interface` crate, shared with `milspecctl`.

pub mod auth;
pub mod service;

pub use milspec_interface::{ManagerError, BUS_NAME, INTERFACE, MAX_HISTORY, OBJECT_PATH, POLKIT_ACTION};

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
