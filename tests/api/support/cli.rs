//! The `iotbind` binary as an operator runs it.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The binary with no inherited `IOTBIND_*` variables, in a scratch folder.
pub fn iotbind(dir: &tempfile::TempDir) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iotbind"));
    for (key, _) in std::env::vars() {
        if key.starts_with("IOTBIND_") {
            command.env_remove(key);
        }
    }
    command.current_dir(dir.path());
    command
}

pub fn create_user(dir: &tempfile::TempDir, url: &str, username: &str, password: &str) -> Output {
    let mut child = iotbind(dir)
        .env("IOTBIND_DATABASE_URL", url)
        .args(["user", "create", "--username", username, "--admin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
