//! `milspecctl`'s commands that talk to the daemon over the system bus.
//!
//! Exit codes: 0 done (committed, already installed, up to date), 1 error
//! (no system bus, busy, timeout...), 2 rejected or invalid package
//! (nothing changed), 3 rolled back, 4 access denied, 5 the daemon left the
//! bus (or stopped answering) while a command waited for it, 6 the
//! committed version has no build for the kernel asked about, 7 milspecd is
//! not running on this host.
//!
//! No command starts the daemon: it runs only where udev starts it (Dell
//! hardware), and ships no D-Bus activation file. Every command first asks
//! the bus whether anything owns `com.dell.MilSpec1` (`NameHasOwner`, which
//! never activates anything) and stops with [`NOT_RUNNING`] (exit 7) if not;
//! a call that still finds no owner (the daemon stopped in between) is
//! reported the same way. `watch` instead waits for the name to appear.
//!
//! Every method call has a reply timeout of [`CALL_TIMEOUT`], except the
//! actions that wait for the engine (`Install`, `CheckForUpdates`,
//! `Rollback`, `Reconcile`): those run on a connection of their own, and
//! the command watches `NameOwnerChanged` and pings the daemon meanwhile,
//! so a daemon that leaves the bus ends the wait within [`GONE_WITHIN`].
//!
//! Everything printed (text or JSON) is escaped with the format crate's
//! sanitiser, even though the daemon escapes what it sends: an older or
//! hostile daemon must not be able to write control characters to a
//! terminal either.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::json;
use zbus::blocking::{Connection, MessageIterator};
use zbus::message::Type;
use zbus::zvariant::{OwnedValue, Value};
use zbus::MatchRule;

use milspec_cli::Exit;
use milspec_interface::json;

use crate::progress::Progress;
use milspec_interface::{ActionResult, ManagerError, ManagerProxyBlocking, BUS_NAME, INTERFACE, OBJECT_PATH};
use zbus::DBusError;

/// Longest wait for the reply to any call but the long actions.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The long actions' own connection: the daemon's own limits (10 min to
/// stage, 30 min to poll) end them first; the wait is watched meanwhile.
const LONG_CALL_TIMEOUT: Duration = Duration::from_secs(35 * 60);
/// How soon a waiting command notices that the daemon left the bus.
const GONE_WITHIN: Duration = Duration::from_secs(5);
/// How often a waiting command pings the daemon: a daemon that stops
/// answering without leaving the bus is seen within [`GONE_WITHIN`] too.
const PING_EVERY: Duration = GONE_WITHIN;
/// How often a waiting command looks at its watches.
const POLL: Duration = Duration::from_millis(100);
/// Longest wait, after an outcome, for the daemon to become idle.
const SETTLE: Duration = Duration::from_secs(10);

pub const EXIT_REJECTED: u8 = 2;
pub const EXIT_ROLLED_BACK: u8 = 3;
pub const EXIT_DENIED: u8 = 4;
/// The daemon left the bus (or stopped answering) while we waited.
pub const EXIT_DAEMON_GONE: u8 = 5;
/// The committed version has no build for the kernel asked about.
pub const EXIT_NO_BUILD: u8 = 6;
/// milspecd is not running on this host (nothing owns its bus name).
pub const EXIT_NOT_RUNNING: u8 = 7;

/// What every command says when milspecd is not running.
pub const NOT_RUNNING: &str =
    "milspecd is not running on this host (nothing owns com.dell.MilSpec1 on the system bus; \
     it is started by udev on Dell hardware, never by this command): see `systemctl status milspecd`";

fn not_running() -> anyhow::Error {
    Exit { code: EXIT_NOT_RUNNING, message: NOT_RUNNING.into() }.into()
}

/// Whether `e` is the "milspecd is not running" of [`EXIT_NOT_RUNNING`].
pub fn is_not_running(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Exit>().is_some_and(|x| x.code == EXIT_NOT_RUNNING)
}

/// A bus error as the bus's own typed error (`org.freedesktop.DBus.Error.*`),
/// whether zbus decoded it already (property reads) or not (method calls).
fn fdo_error(e: &zbus::Error) -> zbus::fdo::Error {
    zbus::fdo::Error::from(e.clone())
}

/// Whether anything owns the daemon's name now. Asks the bus itself, so
/// it never starts anything.
fn has_owner(conn: &Connection) -> anyhow::Result<bool> {
    let dbus = zbus::blocking::fdo::DBusProxy::new(conn)
        .map_err(|e| anyhow::anyhow!("cannot talk to the system bus: {}", clean(&e.to_string())))?;
    let name = zbus::names::BusName::try_from(BUS_NAME).map_err(zbus::Error::from)?;
    dbus.name_has_owner(name)
        .map_err(|e| anyhow::anyhow!("cannot ask the system bus who owns {BUS_NAME}: {}", clean(&e.to_string())))
}

/// A connection to the system bus on which the daemon is running, or
/// [`NOT_RUNNING`].
fn connect_daemon(timeout: Duration) -> anyhow::Result<Connection> {
    let conn = connect(timeout)?;
    if !has_owner(&conn)? {
        return Err(not_running());
    }
    Ok(conn)
}

/// Daemon text, escaped before it is printed (see the module docs).
fn clean(s: &str) -> String {
    milspec_format::text::sanitize(s)
}

fn clean_map(m: HashMap<String, String>) -> HashMap<String, String> {
    m.into_iter().map(|(k, v)| (clean(&k), clean(&v))).collect()
}

fn clean3((a, b, c): (String, String, String)) -> (String, String, String) {
    (clean(&a), clean(&b), clean(&c))
}

fn gone_error(why: &str) -> anyhow::Error {
    Exit {
        code: EXIT_DAEMON_GONE,
        message: format!(
            "milspecd {why}; it finishes or rolls back what it was doing at its next start: see `milspecctl status` and `journalctl -u milspecd`"
        ),
    }
    .into()
}

/// Watches who owns `com.dell.MilSpec1` from the moment it is built: set
/// once the owner seen at the start goes away (or the bus connection does).
struct OwnerWatch {
    gone: Arc<std::sync::atomic::AtomicBool>,
    conn: Connection,
    last_ping: Instant,
}

impl OwnerWatch {
    fn start(conn: &Connection) -> anyhow::Result<OwnerWatch> {
        use std::sync::atomic::{AtomicBool, Ordering};
        // Subscribed before the owner is read, so no change falls between.
        let iter = MessageIterator::for_match_rule(owner_rule()?, conn, Some(16))
            .map_err(|e| anyhow::anyhow!("cannot watch the daemon's bus name: {e}"))?;
        let dbus = zbus::blocking::fdo::DBusProxy::new(conn).map_err(|e| call_error(e, "connect"))?;
        let name = zbus::names::BusName::try_from(BUS_NAME).map_err(zbus::Error::from)?;
        let owner = match dbus.get_name_owner(name) {
            Ok(o) => o.to_string(),
            Err(e) => return Err(call_error(zbus::Error::from(e), "connect")),
        };
        let gone = Arc::new(AtomicBool::new(false));
        let flag = gone.clone();
        std::thread::Builder::new().name("owner-watch".into()).spawn(move || {
            for msg in iter {
                let Ok(msg) = msg else { break };
                if let Ok((_, _, new)) = msg.body().deserialize::<(String, String, String)>() {
                    if new != owner {
                        break;
                    }
                }
            }
            flag.store(true, Ordering::SeqCst);
        })?;
        Ok(OwnerWatch { gone, conn: conn.clone(), last_ping: Instant::now() })
    }

    /// Fails with [`EXIT_DAEMON_GONE`] once the daemon is gone, or when it
    /// does not answer a ping (every [`PING_EVERY`], [`CALL_TIMEOUT`] each).
    fn check(&mut self) -> anyhow::Result<()> {
        if self.gone.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(gone_error("left the system bus"));
        }
        if self.last_ping.elapsed() >= PING_EVERY {
            self.last_ping = Instant::now();
            let ping =
                self.conn.call_method(Some(BUS_NAME), OBJECT_PATH, Some("org.freedesktop.DBus.Peer"), "Ping", &());
            if let Err(e) = ping {
                if self.gone.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(gone_error("left the system bus"));
                }
                return Err(gone_error(&format!("does not answer ({})", clean(&e.to_string()))));
            }
        }
        Ok(())
    }
}

/// Runs one long action on a connection of its own and waits for its
/// reply while `watch` looks after the daemon.
fn long_call<R: Send + 'static>(
    watch: &mut OwnerWatch,
    what: &'static str,
    call: impl FnOnce(&ManagerProxyBlocking<'_>) -> zbus::Result<R> + Send + 'static,
) -> anyhow::Result<R> {
    call_until(watch, what, LONG_CALL_TIMEOUT, call)
}

/// A long action on a connection of its own, watched meanwhile; gives up
/// at `deadline` (the daemon goes on).
fn call_until<R: Send + 'static>(
    watch: &mut OwnerWatch,
    what: &'static str,
    deadline: Duration,
    call: impl FnOnce(&ManagerProxyBlocking<'_>) -> zbus::Result<R> + Send + 'static,
) -> anyhow::Result<R> {
    let conn = connect(LONG_CALL_TIMEOUT)?;
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new().name("call".into()).spawn(move || {
        let r = proxy(&conn).map(|p| call(&p));
        let _ = tx.send(r);
    })?;
    let start = Instant::now();
    loop {
        match rx.recv_timeout(POLL) {
            Ok(Ok(r)) => return r.map_err(|e| call_error(e, what)),
            Ok(Err(e)) => return Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) if start.elapsed() >= deadline => {
                return Err(Exit {
                    code: 1,
                    message: format!(
                    "{what}: no answer within {}; the daemon goes on in the background: see `milspecctl kernels` later",
                    humantime::format_duration(deadline)
                ),
                }
                .into())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => watch.check()?,
            Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("{what}: the call thread stopped"),
        }
    }
}

fn connect(timeout: Duration) -> anyhow::Result<Connection> {
    zbus::blocking::connection::Builder::system()
        .and_then(|b| b.method_timeout(timeout).build())
        .map_err(|e| anyhow::anyhow!("cannot connect to the system bus: {e}; is dbus running?"))
}

fn proxy(conn: &Connection) -> anyhow::Result<ManagerProxyBlocking<'static>> {
    ManagerProxyBlocking::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .map_err(|e| call_error(e, "connect"))
}

/// Turns a D-Bus error into an error with the right exit code and a
/// message that says what to do.
fn call_error(e: zbus::Error, what: &str) -> anyhow::Error {
    // The bus's own errors, typed: property reads come decoded, method
    // calls as a name that zbus decodes here.
    use zbus::fdo::Error as Fdo;
    match fdo_error(&e) {
        Fdo::ServiceUnknown(_) | Fdo::NameHasNoOwner(_) => return not_running(),
        Fdo::AccessDenied(msg) => {
            let message = format!("access denied by the bus policy: {}; run as root", clean(&msg));
            return Exit { code: EXIT_DENIED, message }.into();
        }
        Fdo::NoReply(msg) | Fdo::Timeout(msg) => {
            let message = format!("{what}: no answer in time ({}); see `milspecctl status`", clean(&msg));
            return Exit { code: 1, message }.into();
        }
        _ => {}
    }
    // The daemon's own errors, decoded into the type it sent.
    let e = match ManagerError::from(e) {
        ManagerError::ZBus(e) => e,
        ours => {
            let short = ours.name().as_str().rsplit('.').next().unwrap_or_default().to_string();
            let msg = clean(ours.description().unwrap_or_default());
            let (code, text) = match ours {
                ManagerError::AccessDenied(_) => (EXIT_DENIED, format!("access denied: {msg}")),
                ManagerError::Rejected(_) | ManagerError::InvalidPackage(_) => (EXIT_REJECTED, msg),
                _ => (1, format!("{short}: {msg}")),
            };
            return Exit { code, message: text }.into();
        }
    };
    if let zbus::Error::MethodError(name, msg, _) = &e {
        let msg = clean(&msg.clone().unwrap_or_default());
        let (code, text) = match name.as_str() {
            // An error of a newer daemon that this client does not know.
            n if n.starts_with(&format!("{BUS_NAME}.Error.")) => {
                (1, format!("{}: {msg}", n.rsplit('.').next().unwrap_or_default()))
            }
            _ => (1, format!("{what}: {name}: {msg}")),
        };
        return Exit { code, message: text }.into();
    }
    anyhow::anyhow!("{what}: {}", clean(&e.to_string()))
}

fn done(code: u8) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::from(code))
}

/// One JSON object on one line of stdout.
pub(crate) fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// One JSON value, indented, on stdout.
pub(crate) fn print_json_pretty(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// The outcome word of a command that failed with exit `code`.
pub fn failure_word(code: u8) -> &'static str {
    match code {
        EXIT_REJECTED => "rejected",
        EXIT_ROLLED_BACK => "rolled-back",
        EXIT_DENIED => "access-denied",
        EXIT_DAEMON_GONE => "gone",
        EXIT_NOT_RUNNING => "not-running",
        _ => "failed",
    }
}

/// One thing seen on the bus, as `watch` prints it.
#[derive(Debug, Clone, PartialEq)]
pub enum BusEvent {
    Property { name: String, value: serde_json::Value },
    Swapped { from: String, to: String },
    Committed { version: String },
    CommittedFault { version: String, reason: String },
    RolledBack { from: String, to: String, reason: String },
    Download { version: String, received: u64, total: u64 },
}

impl BusEvent {
    /// As `milspec.bus-event/1`, seen at `at`.
    pub fn to_json(&self, at: &str) -> json::BusEvent {
        let signal = |name: &str| json::BusEvent::new(at, "signal", Some(name));
        match self {
            BusEvent::Property { name, value } => {
                let mut e = json::BusEvent::new(at, "property", Some(name));
                e.value = Some(value.clone());
                e
            }
            BusEvent::Swapped { from, to } => {
                let mut e = signal("Swapped");
                (e.from, e.to) = (json::non_empty(from), json::non_empty(to));
                e
            }
            BusEvent::Committed { version } => {
                let mut e = signal("Committed");
                e.version = json::non_empty(version);
                e
            }
            BusEvent::CommittedFault { version, reason } => {
                let mut e = signal("CommittedFault");
                (e.version, e.reason) = (json::non_empty(version), json::non_empty(reason));
                e
            }
            BusEvent::RolledBack { from, to, reason } => {
                let mut e = signal("RolledBack");
                (e.from, e.to, e.reason) = (json::non_empty(from), json::non_empty(to), json::non_empty(reason));
                e
            }
            BusEvent::Download { version, received, total } => {
                let mut e = signal("DownloadProgress");
                e.version = json::non_empty(version);
                e.value = Some(json!({"received": received, "total": total}));
                e
            }
        }
    }

    pub fn to_text(&self) -> String {
        match self {
            BusEvent::Property { name, value } => format!("{name}: {}", value_text(value)),
            BusEvent::Swapped { from, to } => format!("swapped: {from} -> {to}"),
            BusEvent::Committed { version } => format!("committed: {version}"),
            BusEvent::CommittedFault { version, reason } => format!("fault of committed {version}: {reason}"),
            BusEvent::Download { version, received, total } => {
                crate::progress::download_text(version, *received, *total).trim_start().to_string()
            }
            BusEvent::RolledBack { from, to, reason } => {
                format!("rolled back: {from} -> {}: {reason}", if to.is_empty() { "none" } else { to })
            }
        }
    }
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) if s.is_empty() => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(m) => {
            let mut parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", value_text(v))).collect();
            parts.sort();
            parts.join(" ")
        }
        other => other.to_string(),
    }
}

fn owned_to_json(v: &OwnedValue) -> serde_json::Value {
    if let Ok(s) = <&str>::try_from(v) {
        return json!(s);
    }
    if let Ok(b) = bool::try_from(v) {
        return json!(b);
    }
    if let Ok(v) = v.try_clone() {
        if let Ok(m) = HashMap::<String, String>::try_from(v) {
            return json!(m);
        }
    }
    json!(format!("{:?}", Value::from(v.clone())))
}

pub(crate) fn clean_json(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(clean(&s)),
        serde_json::Value::Object(m) => m.into_iter().map(|(k, v)| (clean(&k), clean_json(v))).collect(),
        serde_json::Value::Array(a) => a.into_iter().map(clean_json).collect(),
        other => other,
    }
}

fn parse(msg: &zbus::Message) -> Vec<BusEvent> {
    let h = msg.header();
    let (Some(iface), Some(member)) = (h.interface(), h.member()) else {
        return vec![];
    };
    let body = msg.body();
    match (iface.as_str(), member.as_str()) {
        ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
            let Ok((name, changed, _inv)) = body.deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
            else {
                return vec![];
            };
            if name != INTERFACE {
                return vec![];
            }
            let mut v: Vec<BusEvent> = changed
                .iter()
                .map(|(k, val)| BusEvent::Property { name: clean(k), value: clean_json(owned_to_json(val)) })
                .collect();
            v.sort_by_key(prop_order);
            v
        }
        (i, "Swapped") if i == INTERFACE => body
            .deserialize::<(String, String)>()
            .map(|(from, to)| vec![BusEvent::Swapped { from: clean(&from), to: clean(&to) }])
            .unwrap_or_default(),
        (i, "DownloadProgress") if i == INTERFACE => body
            .deserialize::<(String, u64, u64)>()
            .map(|(version, received, total)| vec![BusEvent::Download { version: clean(&version), received, total }])
            .unwrap_or_default(),
        (i, "Committed") if i == INTERFACE => body
            .deserialize::<(String,)>()
            .map(|(version,)| vec![BusEvent::Committed { version: clean(&version) }])
            .unwrap_or_default(),
        (i, "CommittedFault") if i == INTERFACE => body
            .deserialize::<(String, String)>()
            .map(|(version, reason)| {
                vec![BusEvent::CommittedFault { version: clean(&version), reason: clean(&reason) }]
            })
            .unwrap_or_default(),
        (i, "RolledBack") if i == INTERFACE => body
            .deserialize::<(String, String, String)>()
            .map(|(from, to, reason)| {
                vec![BusEvent::RolledBack { from: clean(&from), to: clean(&to), reason: clean(&reason) }]
            })
            .unwrap_or_default(),
        _ => vec![],
    }
}

/// `State` first, so a line about a new state precedes its details.
fn prop_order(e: &BusEvent) -> (u8, String) {
    match e {
        BusEvent::Property { name, .. } if name == "State" => (0, String::new()),
        BusEvent::Property { name, .. } => (1, name.clone()),
        _ => (2, String::new()),
    }
}

/// Subscribes to the daemon's signals and property changes; events arrive
/// on the returned channel. Subscribed before this returns.
/// The daemon's signals, parsed, as they come. With `progress`, download
/// progress is shown there at once and not passed on.
fn follow(conn: &Connection, progress: Option<Arc<Progress>>) -> anyhow::Result<mpsc::Receiver<BusEvent>> {
    let rule = MatchRule::builder().msg_type(Type::Signal).sender(BUS_NAME)?.path(OBJECT_PATH)?.build();
    let iter = MessageIterator::for_match_rule(rule, conn, Some(256))
        .map_err(|e| anyhow::anyhow!("cannot subscribe to the daemon's signals: {e}"))?;
    let (tx, rx) = mpsc::sync_channel(256);
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for msg in iter {
            let Ok(msg) = msg else { continue };
            for ev in parse(&msg) {
                if let (Some(p), BusEvent::Download { version, received, total }) = (&progress, &ev) {
                    p.download(version, *received, *total);
                    continue;
                }
                if tx.send(ev).is_err() {
                    return;
                }
            }
        }
    })?;
    Ok(rx)
}

pub fn status(json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect_daemon(CALL_TIMEOUT)?;
    let p = proxy(&conn)?;
    let e = |e| call_error(e, "status");
    let state = clean(&p.state().map_err(e)?);
    let committed = clean(&p.committed_version().map_err(e)?);
    let slot = clean(&p.active_slot().map_err(e)?);
    let trial = clean(&p.trial_version().map_err(e)?);
    let paused = p.paused().map_err(e)?;
    let last_error = clean(&p.last_error().map_err(e)?);
    let last_check = clean(&p.last_check().map_err(e)?);
    let reboot = p.reboot_required().map_err(e)?;
    let health = clean_map(p.health().map_err(e)?);
    // A daemon from before kernel builds were tracked has no such property.
    let kernel_build = p.kernel_build().map(|k| clean(&k)).unwrap_or_default();
    // A daemon from before the blocklist was served has no such method.
    let blocklist: Option<Vec<json::BlockedVersion>> =
        p.blocklist().ok().map(|b| b.into_iter().map(clean_map).map(|m| json::BlockedVersion::from_map(&m)).collect());
    if json_out {
        let mut v = json::Status::running();
        v.state = json::non_empty(&state);
        v.committed_version = json::non_empty(&committed);
        v.committed_slot = json::non_empty(&slot);
        v.trial_version = json::non_empty(&trial);
        v.paused = paused;
        v.reboot_required = reboot;
        v.kernel_build = json::non_empty(&kernel_build);
        v.last_check = json::non_empty(&last_check);
        v.last_error = json::non_empty(&last_error);
        v.health = json::Health::from_map(&health);
        v.slots = p.slots().map_err(e)?.into_iter().map(clean_map).map(|m| json::Slot::from_map(&m)).collect();
        v.blocklist = blocklist;
        print_json_pretty(&v)?;
        return done(0);
    }
    let dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
    let yes = |b: bool| if b { "yes" } else { "no" };
    let h = |k: &str| dash(health.get(k).map(String::as_str).unwrap_or_default());
    println!("{:<15} {state}", "state:");
    println!(
        "{:<15} {}",
        "committed:",
        if committed.is_empty() { "-".into() } else { format!("{committed} (slot {slot})") }
    );
    println!("{:<15} {}", "trial:", dash(&trial));
    if !kernel_build.is_empty() {
        let what = match kernel_build.as_str() {
            "ready" => "the committed version has a build for the running kernel",
            "no-build" => {
                "NO BUILD of the committed version for the running kernel: nothing loaded (milspecctl kernels)"
            }
            "no-version" => "nothing committed",
            other => other,
        };
        println!("{:<15} {what}", "kernel:");
    }
    println!(
        "{:<15} {} state {} selftest {} mode5_level {}",
        "module:",
        h("version"),
        h("state"),
        h("selftest"),
        h("mode5_level")
    );
    println!("{:<15} oops {} warn {} taint {}", "counters:", h("oops_count"), h("warn_count"), h("taint"));
    println!("{:<15} {}", "paused:", yes(paused));
    println!("{:<15} {}", "last check:", dash(&last_check));
    println!("{:<15} {}", "last error:", dash(&last_error));
    match blocklist.as_deref() {
        None => {}
        Some([]) => println!("{:<15} -", "blocked:"),
        Some(blocked) => {
            for b in blocked {
                println!("{:<15} {} since {}: {}", "blocked:", b.version, b.at, b.reason);
            }
        }
    }
    if reboot {
        println!("{:<15} the faulty module is stuck; the committed version loads at the next boot", "REBOOT NEEDED:");
    }
    done(0)
}

/// After an outcome, waits (briefly) for the daemon to finish the action,
/// so that the next command is not refused as `Busy`.
fn settle(p: &ManagerProxyBlocking<'_>) {
    let start = Instant::now();
    while start.elapsed() < SETTLE {
        match p.state().as_deref() {
            Ok("idle" | "error") | Err(_) => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits for the outcome of `version`'s trial; prints progress.
fn await_outcome(
    conn: &Connection,
    watch: &mut OwnerWatch,
    events: &mpsc::Receiver<BusEvent>,
    version: &str,
    timeout: Duration,
    json_out: bool,
    progress: Option<&Progress>,
) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + timeout;
    let p = proxy(conn)?;
    // When the probation window ends (Unix ms), once the trial is on.
    let mut trial_ends: Option<u64> = None;
    loop {
        if let (Some(pg), Some(ends)) = (progress, trial_ends) {
            pg.countdown(version, Duration::from_millis(ends.saturating_sub(unix_ms())));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Exit {
                code: 1,
                message: format!(
                    "no outcome for {version} within {}; the daemon goes on: see `milspecctl status` and `milspecctl history`",
                    humantime::format_duration(timeout)
                ),
            }
            .into());
        }
        watch.check().map_err(|e| {
            e.context(format!(
                "following the trial of {version}: at its next start milspecd finishes or rolls back the trial"
            ))
        })?;
        match events.recv_timeout(left.min(POLL)) {
            Ok(BusEvent::Committed { version: v }) if v == version => {
                settle(&p);
                if json_out {
                    print_json(&json::Outcome::new("committed", format!("committed {v}"), 0).version(&v))?;
                } else {
                    say(progress, &format!("committed {v}"));
                }
                return done(0);
            }
            Ok(BusEvent::RolledBack { from, to, reason }) if from == version => {
                settle(&p);
                let text = format!("rolled back {from} -> {}: {reason}", if to.is_empty() { "none" } else { &to });
                if json_out {
                    print_json(
                        &json::Outcome::new("rolled-back", text, EXIT_ROLLED_BACK)
                            .version(&from)
                            .to(Some(&to))
                            .reason(&reason),
                    )?;
                } else {
                    say(progress, &text);
                }
                return done(EXIT_ROLLED_BACK);
            }
            Ok(ev) => {
                let trial_on = match &ev {
                    BusEvent::Property { name, value } => name == "State" && value == "trial",
                    BusEvent::Swapped { .. } => true,
                    _ => false,
                };
                if trial_on {
                    // An older daemon has no such property: no countdown.
                    trial_ends = p.trial_ends_at().ok().filter(|t| *t > 0);
                }
                if !json_out {
                    match &ev {
                        BusEvent::Property { name, .. } if name == "State" || name == "TrialVersion" => {
                            say(progress, &format!("  {}", ev.to_text()))
                        }
                        BusEvent::Swapped { .. } => say(progress, &format!("  {}", ev.to_text())),
                        _ => {}
                    }
                }
            }
            // The watch pings the daemon and sees it leave the bus.
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("lost the connection to the system bus while following {version}")
            }
        }
    }
}

/// Prints an action's immediate answer; follows a started install.
fn finish(
    conn: &Connection,
    watch: &mut OwnerWatch,
    events: &mpsc::Receiver<BusEvent>,
    reply: (String, String, String),
    timeout: Duration,
    json_out: bool,
    progress: Option<&Progress>,
) -> anyhow::Result<ExitCode> {
    let (word, version, message) = clean3(reply);
    // A word from a newer daemon that this client does not know is shown
    // as it came, and counts as done.
    let result = ActionResult::from_word(&word);
    if result == Some(ActionResult::Started) {
        if !json_out {
            say(progress, &message);
        }
        return await_outcome(conn, watch, events, &version, timeout, json_out, progress);
    }
    let code = match result {
        Some(ActionResult::RolledBack) => EXIT_ROLLED_BACK,
        Some(ActionResult::Rejected) => EXIT_REJECTED,
        _ => 0,
    };
    if json_out {
        print_json(&json::Outcome::new(&word, message, code).version(&version))?;
    } else {
        say(progress, &message);
    }
    done(code)
}

pub fn install(package: &Path, timeout: Duration, json_out: bool) -> anyhow::Result<ExitCode> {
    // Opened as the caller: the daemon reads only what the caller can read.
    // A FIFO or a device is refused here, before any call (the daemon also
    // refuses a descriptor that is not a regular file).
    let shown = clean(&package.display().to_string());
    let file = milspec_format::open_package(package, &milspec_format::Limits::DEFAULT).map_err(|e| match e.source {
        milspec_format::PackageError::Io(source) => {
            anyhow::Error::new(source).context(format!("{shown}: cannot open the package"))
        }
        _ => e.into(),
    })?;
    let conn = connect_daemon(CALL_TIMEOUT)?;
    let progress = shown_progress(json_out);
    let events = follow(&conn, progress.clone())?;
    let mut watch = OwnerWatch::start(&conn)?;
    if !json_out {
        println!("installing {shown} through milspecd");
    }
    let reply = long_call(&mut watch, "install", move |p| p.install(zbus::zvariant::Fd::from(&file)))?;
    finish(&conn, &mut watch, &events, reply, timeout, json_out, progress.as_deref())
}

pub fn check(timeout: Duration, json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect_daemon(CALL_TIMEOUT)?;
    let progress = shown_progress(json_out);
    let events = follow(&conn, progress.clone())?;
    let mut watch = OwnerWatch::start(&conn)?;
    let reply = long_call(&mut watch, "check", |p| p.check_for_updates())?;
    finish(&conn, &mut watch, &events, reply, timeout, json_out, progress.as_deref())
}

pub fn rollback(timeout: Duration, json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect_daemon(CALL_TIMEOUT)?;
    let progress = shown_progress(json_out);
    let events = follow(&conn, progress.clone())?;
    let mut watch = OwnerWatch::start(&conn)?;
    let (from, to, result) = clean3(long_call(&mut watch, "rollback", |p| p.rollback())?);
    if ActionResult::from_word(&result) == Some(ActionResult::Started) {
        // No trial was running: the earlier version is on trial now.
        if !json_out {
            println!("going back from {from} to {to} (the other slot); watching {to} on probation");
        }
        return await_outcome(&conn, &mut watch, &events, &to, timeout, json_out, progress.as_deref());
    }
    let text = format!("rolled back {from} -> {}", if to.is_empty() { "none" } else { &to });
    if json_out {
        print_json(&json::Outcome::new("rolled-back", text, 0).version(&from).to(Some(&to)))?;
    } else {
        println!("{text}");
    }
    done(0)
}

pub fn reconcile(json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect_daemon(CALL_TIMEOUT)?;
    let mut watch = OwnerWatch::start(&conn)?;
    let reply = long_call(&mut watch, "reconcile", |p| match p.reconcile() {
        // The daemon is changing the module itself (its own unload and load
        // raise the same udev events); it reconciles when it is done.
        Err(zbus::Error::MethodError(name, msg, _)) if name == ManagerError::Busy(String::new()).name() => {
            Ok(("busy".into(), String::new(), msg.unwrap_or_default()))
        }
        other => other,
    })?;
    print_answer(reply, json_out)
}

pub fn unblock(version: &str, json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect_daemon(CALL_TIMEOUT)?;
    let reply = proxy(&conn)?.unblock(version).map_err(|e| call_error(e, "unblock"))?;
    print_answer(reply, json_out)
}

/// An accepted action's `(result, version, message)`: `result: message`,
/// or the outcome as JSON; exit 0.
fn print_answer(reply: (String, String, String), json_out: bool) -> anyhow::Result<ExitCode> {
    let (result, version, message) = clean3(reply);
    if json_out {
        print_json(&json::Outcome::new(&result, message, 0).version(&version))?;
    } else {
        println!("{result}: {message}");
    }
    done(0)
}

pub fn kernel_installed(release: &str, timeout: Duration, json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect_daemon(CALL_TIMEOUT)?;
    let mut watch = OwnerWatch::start(&conn)?;
    let r = release.to_string();
    let reply = call_until(&mut watch, "kernel-installed", timeout, move |p| p.prepare_kernel(&r))?;
    let (result, version, message) = clean3(reply);
    let code = match ActionResult::from_word(&result) {
        Some(ActionResult::NoBuild) => EXIT_NO_BUILD,
        Some(ActionResult::Rejected) => EXIT_REJECTED,
        _ => 0,
    };
    if json_out {
        print_json(&json::Outcome::new(&result, message, code).version(&version).kernel(&clean(release)))?;
    } else {
        println!("{result}: {message}");
    }
    done(code)
}

pub fn kernel_removed(release: &str, json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect_daemon(CALL_TIMEOUT)?;
    let reply = proxy(&conn)?.kernel_removed(release).map_err(|e| call_error(e, "kernel-removed"))?;
    let (result, version, message) = clean3(reply);
    if json_out {
        print_json(&json::Outcome::new(&result, message, 0).version(&version).kernel(&clean(release)))?;
    } else {
        println!("{message}");
    }
    done(0)
}

pub fn kernels(json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect_daemon(CALL_TIMEOUT)?;
    let p = proxy(&conn)?;
    let e = |e| call_error(e, "kernels");
    let build = clean(&p.kernel_build().map_err(e)?);
    let committed = clean(&p.committed_version().map_err(e)?);
    let covered: Vec<String> = p.committed_kernels().map_err(e)?.iter().map(|k| clean(k)).collect();
    let without: Vec<String> = p.kernels_without_build().map_err(e)?.iter().map(|k| clean(k)).collect();
    if json_out {
        print_json_pretty(&json::Kernels {
            schema: json::KERNELS.into(),
            kernel_build: json::non_empty(&build),
            committed_version: json::non_empty(&committed),
            committed_kernels: covered,
            kernels_without_build: without,
        })?;
        return done(0);
    }
    let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(", ") };
    println!("{:<15} {}", "committed:", if committed.is_empty() { "-" } else { &committed });
    println!("{:<15} {build}", "running kernel:");
    println!("{:<15} {}", "builds for:", list(&covered));
    println!("{:<15} {}", "no build for:", list(&without));
    done(0)
}

pub fn set_paused(paused: bool, json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect_daemon(CALL_TIMEOUT)?;
    proxy(&conn)?.set_paused(paused).map_err(|e| call_error(e, if paused { "pause" } else { "resume" }))?;
    let text = format!("automatic polling {}", if paused { "paused" } else { "resumed" });
    if json_out {
        print_json(&json::Outcome::new(if paused { "paused" } else { "resumed" }, text, 0))?;
    } else {
        println!("{text}");
    }
    done(0)
}

pub fn history(limit: u32, json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect_daemon(CALL_TIMEOUT)?;
    let events: Vec<_> =
        proxy(&conn)?.history(limit).map_err(|e| call_error(e, "history"))?.into_iter().map(clean_map).collect();
    if json_out {
        let events: Vec<_> = events.iter().map(json::HistoryEvent::from_map).collect();
        print_json_pretty(&events)?;
        return done(0);
    }
    for e in &events {
        let g = |k: &str| e.get(k).cloned().unwrap_or_default();
        let mut line = format!("{} {:<24} {}", g("at"), g("event"), g("version"));
        if e.contains_key("slot") {
            line.push_str(&format!(" slot {}", g("slot")));
        }
        if e.contains_key("from") {
            line.push_str(&format!(" {} -> {}", g("from"), e.get("to").map_or("none", String::as_str)));
        }
        if e.contains_key("millis") {
            line.push_str(&format!(" ({} ms)", g("millis")));
        }
        if e.contains_key("reason") {
            line.push_str(&format!(": {}", g("reason")));
        }
        println!("{}", line.trim_end());
    }
    done(0)
}

pub fn slots(json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect_daemon(CALL_TIMEOUT)?;
    let slots: Vec<_> = proxy(&conn)?.slots().map_err(|e| call_error(e, "slots"))?.into_iter().map(clean_map).collect();
    if json_out {
        let slots: Vec<_> = slots.iter().map(json::Slot::from_map).collect();
        print_json_pretty(&slots)?;
        return done(0);
    }
    for s in &slots {
        let g = |k: &str| s.get(k).cloned().unwrap_or_default();
        let what = match (s.get("version"), s.get("error")) {
            (_, Some(e)) => format!("error: {e}"),
            (Some(v), _) => format!("{v} (sequence {})", g("sequence")),
            _ => "empty".into(),
        };
        let mark = if g("committed") == "true" { ", committed" } else { "" };
        let valid = if g("valid") == "true" { "valid" } else { "not valid" };
        println!("slot {}: {what} [{valid}{mark}]", g("slot"));
    }
    done(0)
}

/// The daemon's compliance report: its JSON escaped again, checked to be
/// a `milspec.report/1`, then printed as JSON or as lines.
/// `history --verify`: the daemon checks the chain; exit 2 when broken.
pub fn verify_history(json_out: bool) -> anyhow::Result<ExitCode> {
    // The daemon reads every file (up to [history] max_size).
    let conn = connect_daemon(Duration::from_secs(10 * 60))?;
    let text = proxy(&conn)?.verify_history().map_err(|e| call_error(e, "history --verify"))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("history --verify: the daemon's answer is not JSON: {e}"))?;
    let v = clean_json(v);
    if v["schema"] != json::HISTORY_VERIFY {
        anyhow::bail!(
            "history --verify: the daemon answered a {}, this milspecctl reads {}; use the milspecctl of the daemon's release",
            clean(&v["schema"].to_string()),
            json::HISTORY_VERIFY
        );
    }
    let broken = v["result"] != "ok";
    if json_out {
        print_json_pretty(&v)?;
    } else {
        println!("{}", v["message"].as_str().unwrap_or_default());
    }
    done(if broken { 2 } else { 0 })
}

pub fn report(json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect_daemon(CALL_TIMEOUT)?;
    let text = proxy(&conn)?.report().map_err(|e| call_error(e, "report"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("report: the daemon's answer is not JSON: {e}"))?;
    let v = clean_json(v);
    if v["schema"] != json::REPORT {
        anyhow::bail!(
            "report: the daemon answered a {}, this milspecctl reads {}; use the milspecctl of the daemon's release",
            clean(&v["schema"].to_string()),
            json::REPORT
        );
    }
    let report: milspecd::report::Report =
        serde_json::from_value(v).map_err(|e| anyhow::anyhow!("report: not a {} object: {e}", json::REPORT))?;
    if json_out {
        print_json_pretty(&report)?;
    } else {
        print!("{}", report.to_text());
    }
    done(0)
}

/// `watch`'s notes about the daemon itself (on stderr: stdout holds only
/// the daemon's events).
const WAITING_NOTE: &str = "milspecd is not running on this host; waiting for milspecd to start \
     (it is started by udev on Dell hardware; see `systemctl status milspecd`)";
const STARTED_NOTE: &str = "milspecd started; following it";
const STOPPED_NOTE: &str = "milspecd left the bus; waiting for milspecd to start again";

/// The note for a change of the owner of the daemon's name (`old` and
/// `new` unique names, empty for none), given whether the daemon was seen
/// running (updated). None when nothing changed for the reader, e.g. a
/// start already seen when `watch` looked at the owner.
fn owner_note(running: &mut bool, old: &str, new: &str) -> Option<&'static str> {
    match (new.is_empty(), *running) {
        (true, true) => {
            *running = false;
            Some(STOPPED_NOTE)
        }
        (true, false) => None,
        (false, false) => {
            *running = true;
            Some(STARTED_NOTE)
        }
        // One owner replaced by another, with no gap: a new daemon.
        (false, true) if !old.is_empty() => Some(STARTED_NOTE),
        (false, true) => None,
    }
}

/// The `(old, new)` owners of the daemon's name as they change, from the
/// moment this returns.
fn owner_changes(conn: &Connection) -> anyhow::Result<mpsc::Receiver<(String, String)>> {
    let iter = MessageIterator::for_match_rule(owner_rule()?, conn, Some(16))
        .map_err(|e| anyhow::anyhow!("cannot watch the daemon's bus name: {e}"))?;
    let (tx, rx) = mpsc::sync_channel(16);
    std::thread::Builder::new().name("owner-changes".into()).spawn(move || {
        for msg in iter {
            let Ok(msg) = msg else { return };
            if let Ok((_, old, new)) = msg.body().deserialize::<(String, String, String)>() {
                if tx.send((old, new)).is_err() {
                    return;
                }
            }
        }
    })?;
    Ok(rx)
}

/// `NameOwnerChanged` of the daemon's name, from the bus itself.
fn owner_rule() -> zbus::Result<MatchRule<'static>> {
    Ok(MatchRule::builder()
        .msg_type(Type::Signal)
        .sender("org.freedesktop.DBus")?
        .interface("org.freedesktop.DBus")?
        .member("NameOwnerChanged")?
        .arg(0, BUS_NAME)?
        .build())
}

/// Prints the daemon's events until `count` of them or `timeout`; waits
/// for the daemon to start, and follows it across restarts: the signal
/// subscription names the daemon by its well-known name, which the bus
/// matches against whoever owns it when a signal is sent.
pub fn watch(count: Option<u64>, timeout: Option<Duration>, json_out: bool) -> anyhow::Result<ExitCode> {
    let conn = connect(CALL_TIMEOUT)?;
    // Both subscribed before the owner is asked, so no start falls between.
    let events = follow(&conn, None)?;
    let owners = owner_changes(&conn)?;
    let mut running = has_owner(&conn)?;
    let note = |n: &str| eprintln!("{} {n}", now_rfc3339());
    if !running {
        note(WAITING_NOTE);
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut seen = 0u64;
    while count.is_none_or(|c| seen < c) {
        loop {
            match owners.try_recv() {
                Ok((old, new)) => {
                    if let Some(n) = owner_note(&mut running, &old, &new) {
                        note(n);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => anyhow::bail!("lost the connection to the system bus"),
            }
        }
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => POLL,
        };
        if wait.is_zero() {
            break;
        }
        match events.recv_timeout(wait.min(POLL)) {
            Ok(ev) => {
                seen += 1;
                if json_out {
                    print_json(&ev.to_json(&now_rfc3339()))?;
                } else {
                    println!("{} {}", now_rfc3339(), ev.to_text());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("lost the connection to the system bus"),
        }
    }
    done(0)
}

/// Progress shown on stdout for a person (not with `--json`).
fn shown_progress(json_out: bool) -> Option<Arc<Progress>> {
    (!json_out).then(|| Arc::new(Progress::for_stdout()))
}

/// A line for a person, through the progress display when there is one.
fn say(progress: Option<&Progress>, text: &str) {
    match progress {
        Some(p) => p.line(text),
        None => println!("{text}"),
    }
}

/// Now, in Unix milliseconds (the daemon's `TrialEndsAt` clock).
fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Now, as RFC 3339 UTC (as the daemon's history writes it).
fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_says_once_when_the_daemon_starts_and_when_it_leaves() {
        let mut running = false;
        // A start, seen again by the subscription made before the look.
        assert_eq!(owner_note(&mut running, "", ":1.5"), Some(STARTED_NOTE));
        assert_eq!(owner_note(&mut running, "", ":1.5"), None);
        assert!(running);
        assert_eq!(owner_note(&mut running, ":1.5", ""), Some(STOPPED_NOTE));
        assert_eq!(owner_note(&mut running, ":1.5", ""), None);
        assert!(!running);
        assert_eq!(owner_note(&mut running, "", ":1.9"), Some(STARTED_NOTE));
        // Replaced with no gap: a new daemon all the same.
        assert_eq!(owner_note(&mut running, ":1.9", ":1.12"), Some(STARTED_NOTE));
        assert!(running);
    }

    #[test]
    fn the_bus_errors_for_no_owner_are_not_running_typed_or_not() {
        let typed = zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown("x".into())));
        assert!(is_not_running(&call_error(typed, "status")));
        for name in ["org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"] {
            let name = zbus::names::OwnedErrorName::try_from(name).unwrap_or_else(|_| unreachable!());
            let e = call_error(zbus::Error::MethodError(name, Some("x".into()), dummy_message()), "install");
            assert!(is_not_running(&e), "{e}");
            assert_eq!(e.to_string(), NOT_RUNNING);
        }
        let denied = zbus::names::OwnedErrorName::try_from("org.freedesktop.DBus.Error.AccessDenied")
            .unwrap_or_else(|_| unreachable!());
        let e = call_error(zbus::Error::MethodError(denied, None, dummy_message()), "install");
        assert!(!is_not_running(&e));
        assert_eq!(e.downcast_ref::<Exit>().map(|x| x.code), Some(EXIT_DENIED));
    }

    fn dummy_message() -> zbus::Message {
        zbus::Message::method_call("/", "Ping").and_then(|b| b.build(&())).unwrap_or_else(|e| unreachable!("{e}"))
    }
}
