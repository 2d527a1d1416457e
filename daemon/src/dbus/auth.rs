//! Who may change things: the caller's uid comes from the bus daemon
//! (`GetConnectionUnixUser` on the message's sender), never from the
//! message. Root may; anyone else only if polkit is on the bus and
//! authorizes `com.dell.milspec1.manage` for that caller. No polkit: denied.

use std::collections::HashMap;
use std::time::Duration;

use futures_lite::FutureExt;
use tracing::{info, warn};
use zbus::message::Header;
use zbus::names::BusName;
use zbus::zvariant::Value;

use super::{ManagerError, POLKIT_ACTION};
use crate::history::{Actor, Authorized};

const POLKIT_NAME: &str = "org.freedesktop.PolicyKit1";
/// How long polkit may take to answer (it may ask an agent).
const POLKIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The caller's uid, as the bus daemon knows it.
pub async fn caller_uid(conn: &zbus::Connection, hdr: &Header<'_>) -> Result<(String, u32), ManagerError> {
    let sender = hdr
        .sender()
        .ok_or_else(|| ManagerError::AccessDenied("the call has no sender; only bus clients may call".into()))?
        .to_owned();
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let uid = dbus
        .get_connection_unix_user(BusName::Unique(sender.as_ref()))
        .await
        .map_err(|e| ManagerError::AccessDenied(format!("cannot learn who the caller is: {e}")))?;
    Ok((sender.to_string(), uid))
}

/// Allows root; asks polkit for anyone else. Returns the caller's uid and
/// the caller as the history names it.
pub async fn authorize(conn: &zbus::Connection, hdr: &Header<'_>, method: &str) -> Result<(u32, Actor), ManagerError> {
    let (sender, uid) = caller_uid(conn, hdr).await?;
    if uid == 0 {
        return Ok((uid, Actor::Dbus { uid, sender, authorized: Authorized::Root }));
    }
    let denied = |why: &str| {
        let why = crate::journal::untrusted(why);
        crate::journal::REFUSED_CALLS.log("refused D-Bus calls", || warn!(uid, method, "denied: {why}"));
        ManagerError::AccessDenied(format!(
            "{method} changes the module and needs root or the polkit action {POLKIT_ACTION} (caller uid {uid}: {why}); run it as root, e.g. with sudo"
        ))
    };
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    let polkit_name = BusName::try_from(POLKIT_NAME).map_err(zbus::Error::from)?;
    if !dbus.name_has_owner(polkit_name).await.unwrap_or(false) {
        return Err(denied("polkit is not running"));
    }
    let check = async {
        let proxy = zbus::Proxy::new(
            conn,
            POLKIT_NAME,
            "/org/freedesktop/PolicyKit1/Authority",
            "org.freedesktop.PolicyKit1.Authority",
        )
        .await?;
        let mut details: HashMap<&str, Value<'_>> = HashMap::new();
        details.insert("name", Value::from(sender.as_str()));
        let subject = ("system-bus-name", details);
        let none: HashMap<&str, &str> = HashMap::new();
        // Flag 1: allow an authentication agent to ask the user.
        let reply: (bool, bool, HashMap<String, String>) =
            proxy.call("CheckAuthorization", &(subject, POLKIT_ACTION, none, 1u32, "")).await?;
        Ok::<_, zbus::Error>(reply.0)
    };
    let timeout = async {
        async_io::Timer::after(POLKIT_TIMEOUT).await;
        Err(zbus::Error::Failure("polkit did not answer in time".into()))
    };
    match check.or(timeout).await {
        Ok(true) => {
            info!(uid, method, "authorized by polkit");
            Ok((uid, Actor::Dbus { uid, sender, authorized: Authorized::Polkit }))
        }
        Ok(false) => Err(denied("polkit did not authorize it")),
        Err(e) => Err(denied(&format!("polkit check failed: {e}"))),
    }
}
