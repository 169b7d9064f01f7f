//! A Mosquitto of the test's own on a free port: the machine's shared one must not be
//! restarted or reconfigured under other tests. Optionally with its dynamic security plugin,
//! from a fresh `mosquitto_ctrl dynsec init` file whose admin is [`DYNSEC_ADMIN`].

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The dynamic security admin that `mosquitto_ctrl dynsec init` creates.
pub const DYNSEC_ADMIN: &str = "iotbind-admin";
pub const DYNSEC_ADMIN_PASSWORD: &str = "the admin's password for this test broker";
/// Debian's plugin.
const DYNSEC_PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so";
const START_DEADLINE: Duration = Duration::from_secs(15);

pub struct PrivateMosquitto {
    dir: tempfile::TempDir,
    pub port: u16,
    process: Option<std::process::Child>,
}

/// A free local port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn installed() -> bool {
    let found = Command::new("mosquitto")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must have mosquitto installed"
        );
        eprintln!("mosquitto is not installed; this test has nothing to run");
    }
    found
}

impl PrivateMosquitto {
    /// Anonymous access, sessions persisted in a temporary directory as a production broker
    /// would. `None` when Mosquitto is not installed, which CI does not allow.
    pub fn start() -> Option<PrivateMosquitto> {
        Self::start_with(|dir, port| {
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n\
                 persistence_location {}/\nmax_queued_messages 100000\n",
                dir.display()
            )
        })
    }

    /// With the dynamic security plugin and nothing else: only its clients may connect, and
    /// only its roles decide topics.
    pub fn start_with_dynsec() -> Option<PrivateMosquitto> {
        Self::start_with(|dir, port| {
            let file = dir.join("dynsec.json");
            let init = Command::new("mosquitto_ctrl")
                .args(["dynsec", "init"])
                .arg(&file)
                .args([DYNSEC_ADMIN, DYNSEC_ADMIN_PASSWORD])
                .output()
                .expect("mosquitto_ctrl runs");
            assert!(file.exists(), "dynsec init: {init:?}");
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\nuser root\n\
                 plugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {}\n",
                file.display()
            )
        })
    }

    fn start_with(
        config: impl FnOnce(&std::path::Path, u16) -> String,
    ) -> Option<PrivateMosquitto> {
        if !installed() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let text = config(dir.path(), port);
        std::fs::write(dir.path().join("mosquitto.conf"), text).unwrap();
        let mut broker = PrivateMosquitto {
            dir,
            port,
            process: None,
        };
        broker.run();
        Some(broker)
    }

    fn run(&mut self) {
        let process = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.process = Some(process);
        let addr = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + START_DEADLINE;
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Sends the broker process a signal (`TERM`, `STOP`, `CONT`, …).
    pub fn signal(&self, name: &str) {
        if let Some(process) = &self.process {
            let sent = Command::new("kill")
                .args([&format!("-{name}"), &process.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
        }
    }

    /// Stops it as an operator's restart does (SIGTERM: it saves its sessions), then starts it
    /// again on the same port.
    pub async fn restart(&mut self, down_for: Duration) {
        if let Some(mut process) = self.process.take() {
            let sent = Command::new("kill")
                .args(["-TERM", &process.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
            tokio::task::spawn_blocking(move || process.wait())
                .await
                .unwrap()
                .unwrap();
        }
        tokio::time::sleep(down_for).await;
        self.run();
    }
}

impl Drop for PrivateMosquitto {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}
