//! A two-node rmqttd cluster (crates.io `rmqttd`, the rmqtt the embedded broker is built on)
//! from the configuration in `tests/brokers/rmqttd/`, moved to free ports and pointed at a
//! test app's broker hooks. The files are the ones the README offers for copying; the test
//! changes only addresses and the secret, so what passes here is what an operator deploys.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::mosquitto::free_port;

const START_DEADLINE: Duration = Duration::from_secs(20);

/// The values the configuration files hold for a deployment on one machine, each replaced by
/// the test's own.
const NODE_MQTT_ADDRS: [&str; 2] = ["127.0.0.1:1883", "127.0.0.1:1884"];
const NODE_RPC_ADDRS: [&str; 2] = ["127.0.0.1:5363", "127.0.0.1:5364"];
const HOOKS_BASE: &str = "http://127.0.0.1:8080";
const HOOK_SECRET: &str = "<hook secret>";

pub struct RmqttdCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Child>,
    /// Where devices connect to node 1 and node 2.
    pub mqtt_ports: [u16; 2],
}

fn installed() -> bool {
    let found = Command::new("rmqttd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must have rmqttd installed (.ci/run installs it)"
        );
        eprintln!("rmqttd is not installed (cargo install rmqttd); this test has nothing to run");
    }
    found
}

fn copy_replacing(from: &Path, to: &Path, replacements: &[(String, String)]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_replacing(&entry.path(), &target, replacements);
            continue;
        }
        let mut text = std::fs::read_to_string(entry.path()).unwrap();
        for (from, to) in replacements {
            text = text.replace(from.as_str(), to);
        }
        std::fs::write(target, text).unwrap();
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

impl RmqttdCluster {
    /// Both nodes, listening, their hooks at `hooks_base` (`http://127.0.0.1:PORT`) with
    /// `hook_secret`. `None` when rmqttd is not installed, which CI does not allow.
    pub fn start(hooks_base: &str, hook_secret: &str) -> Option<RmqttdCluster> {
        if !installed() {
            return None;
        }
        let mqtt_ports = [free_port(), free_port()];
        let rpc_ports = [free_port(), free_port()];
        let mut replacements = vec![
            (HOOKS_BASE.to_owned(), hooks_base.to_owned()),
            (HOOK_SECRET.to_owned(), hook_secret.to_owned()),
        ];
        for node in 0..2 {
            replacements.push((
                NODE_MQTT_ADDRS[node].to_owned(),
                format!("127.0.0.1:{}", mqtt_ports[node]),
            ));
            replacements.push((
                NODE_RPC_ADDRS[node].to_owned(),
                format!("127.0.0.1:{}", rpc_ports[node]),
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/brokers/rmqttd");
        copy_replacing(&source, dir.path(), &replacements);

        let nodes = (1..=2)
            .map(|node| {
                let log =
                    std::fs::File::create(dir.path().join(format!("node{node}.log"))).unwrap();
                Command::new("rmqttd")
                    .args(["-f", &format!("node{node}.toml")])
                    .current_dir(dir.path())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut cluster = RmqttdCluster {
            dir,
            nodes,
            mqtt_ports,
        };
        let deadline = Instant::now() + START_DEADLINE;
        while !mqtt_ports.iter().all(|port| port_open(*port)) {
            let exited = cluster
                .nodes
                .iter_mut()
                .any(|node| node.try_wait().unwrap().is_some());
            if exited || Instant::now() > deadline {
                panic!("rmqttd did not start:\n{}", cluster.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(cluster)
    }

    /// Both nodes' output, for a failing test to show.
    pub fn logs(&self) -> String {
        (1..=2)
            .map(|node| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("node{node}.log")))
                    .unwrap_or_default();
                format!("--- rmqttd node {node}:\n{log}")
            })
            .collect()
    }
}

impl Drop for RmqttdCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}
