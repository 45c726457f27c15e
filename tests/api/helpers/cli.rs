//! Running the CLI (`simple-api ARGS`), as an operator would.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::process::command;

/// What a CLI run printed.
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// The one JSON object printed on stdout (the run is asserted to succeed).
    pub fn json(&self) -> Value {
        assert!(self.success, "CLI failed: {}", self.stderr);
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// Runs `cmd` (see `process::command`) with `args` to completion.
pub fn run(cmd: &mut Command, args: &[&str]) -> CliOutput {
    let out = cmd.args(args).output().unwrap();
    CliOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the CLI on `dir` (see `process::command`), and on the database at `url` if
/// given: it must succeed without a warning; the one line of JSON it prints.
pub fn json_on(dir: &Path, url: Option<&str>, args: &[&str]) -> Value {
    let out = run(command(dir).envs(url.map(|u| ("DATABASE_URL", u))), args);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    out.json()
}

/// `clients create` of a `users:read` client, as `json_on` runs it: (id, secret).
pub fn new_client(dir: &Path, url: Option<&str>) -> (String, String) {
    let args = [
        "clients",
        "create",
        "--name",
        "billing",
        "--scope",
        "users:read",
    ];
    let client = json_on(dir, url, &args);
    (
        client["client_id"].as_str().unwrap().to_owned(),
        client["client_secret"].as_str().unwrap().to_owned(),
    )
}
