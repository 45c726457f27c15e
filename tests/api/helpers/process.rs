//! The real binary as a separate process: the `command` every spawned server and CLI run
//! starts from, and `Server`, a running one with its log and an HTTP `Client` for it.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::http::Client;
use super::{ADMIN_EMAIL, ADMIN_PASSWORD};

pub const BIN: &str = env!("CARGO_BIN_EXE_simple-api");

/// Every variable of the contract: none leaks in from the environment of the tests.
const CONTRACT_VARS: &[&str] = &[
    "API_HOST",
    "API_PORT",
    "DATA_DIR",
    "DATABASE_URL",
    "KEYS_DIR",
    "SESSION_DURATION",
    "REFRESH_TOKEN_TTL",
    "SESSION_NAME",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "PUBLIC_URL",
    "SIGNUP_ENABLED",
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
    "COOKIE_SECURE",
    "REFRESH_REUSE_GRACE",
    "KEY_PUBLISH_DELAY",
    "MAX_BODY_BYTES",
    "LOGIN_MAX_FAILURES",
    "LOGIN_WINDOW",
    "ARGON2_M_KIB",
    "ARGON2_T",
    "ARGON2_P",
    "TRUSTED_PROXIES",
    "AUDIT_LOG",
];

/// The binary with `dir/data` and `dir/keys`, cheap argon2, port 0 and the test admin.
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for var in CONTRACT_VARS {
        cmd.env_remove(var);
    }
    cmd.current_dir(dir)
        .env("DATA_DIR", dir.join("data"))
        .env("KEYS_DIR", dir.join("keys"))
        .env("ARGON2_M_KIB", "1024")
        .env("ARGON2_T", "1")
        .env("API_PORT", "0")
        .env("ADMIN_EMAIL", ADMIN_EMAIL)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdin(Stdio::null());
    cmd
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server process; dropping it kills it. Derefs to its HTTP `Client`.
pub struct Server {
    pub child: Child,
    /// Its stderr (the logs).
    pub log: PathBuf,
    http: Client,
}

impl Deref for Server {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.http
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The same server, asserting that every answer it gives is JSON.
    pub fn json_only(mut self) -> Server {
        self.http = self.http.clone().json_only();
        self
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (`HUP`, `TERM`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.try_send("GET", "/api/v1/status", &[], None).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the server exited ({status}): {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not start");
    }
}

/// A server on `dir` (see `command`).
pub fn start(dir: &Path) -> Server {
    start_logged(dir, &[])
}

/// A server on `dir` with these variables set too.
pub fn start_logged(dir: &Path, extra: &[(&str, &str)]) -> Server {
    let mut cmd = command(dir);
    cmd.envs(extra.iter().copied());
    start_with(dir, &mut cmd)
}

/// Starts `cmd` as a server on a free port, logging to a file in `dir`, once it answers.
pub fn start_with(dir: &Path, cmd: &mut Command) -> Server {
    let port = free_port();
    let log = dir.join(format!("server-{port}.log"));
    cmd.env("API_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut server = Server {
        child: cmd.spawn().unwrap(),
        log,
        http: Client::new(format!("http://127.0.0.1:{port}")),
    };
    server.wait_ready();
    server
}

/// Four writers sign up (`{tag}w{W}n{I}@example.com`, `password`) as fast as they can
/// while `server` is SIGKILLed after `after`: the emails whose sign-up was acknowledged.
pub fn signups_until_killed(
    server: &mut Server,
    tag: &str,
    password: &str,
    after: Duration,
) -> Vec<String> {
    let acknowledged = Mutex::new(Vec::new());
    let client = Client::new(server.base.clone());
    std::thread::scope(|s| {
        for w in 0..4 {
            let (client, acknowledged) = (&client, &acknowledged);
            s.spawn(move || {
                for i in 0.. {
                    let email = format!("{tag}w{w}n{i}@example.com");
                    match client.try_signup(&email, password) {
                        Ok(r) if r.status == 201 => acknowledged.lock().unwrap().push(email),
                        Ok(_) => {}
                        Err(_) => return, // the server is gone
                    }
                }
            });
        }
        std::thread::sleep(after);
        server.kill();
    });
    acknowledged.into_inner().unwrap()
}

/// A replica: a server on the database at `url`, with a DATA_DIR of its own (`dir/name`,
/// for its audit log) and the shared `dir/keys`; every answer it gives must be JSON.
#[cfg(not(no_postgres))]
pub fn replica(dir: &Path, name: &str, url: &str, extra: &[(&str, &str)]) -> Server {
    let data = dir.join(name);
    let keys = dir.join("keys");
    let mut env = vec![
        ("DATABASE_URL", url),
        ("DATA_DIR", data.to_str().unwrap()),
        ("KEYS_DIR", keys.to_str().unwrap()),
        ("RELOAD_INTERVAL", "1"),
    ];
    env.extend_from_slice(extra);
    start_logged(dir, &env).json_only()
}
