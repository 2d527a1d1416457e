//! A private system-type bus for the binary tests: the real `dbus-daemon`
//! on `tests/fixtures/system-bus.conf` (deny by default, as Debian's system
//! bus, then the policy milspecd ships); killed on drop. The socket is open
//! to every user, so tests can call as `nobody` too.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SystemBus {
    child: Child,
    pub address: String,
}

impl Drop for SystemBus {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SystemBus {
    pub fn start(dir: &Path) -> SystemBus {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let socket = dir.join("system_bus_socket");
        let conf = dir.join("bus.conf");
        let policy = manifest.join("dist/usr/share/dbus-1/system.d");
        let template = fs::read_to_string(manifest.join("tests/fixtures/system-bus.conf")).unwrap();
        fs::write(
            &conf,
            template
                .replace("@SOCKET@", &socket.display().to_string())
                .replace("@POLICY_DIR@", &policy.display().to_string()),
        )
        .unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .spawn()
            .expect("dbus-daemon is missing: apt-get install dbus (tests/run-all.sh does)");
        let start = Instant::now();
        while !socket.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o777)).unwrap();
        SystemBus { child, address: format!("unix:path={}", socket.display()) }
    }

    /// Stops the bus now (its clients see it go away).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
