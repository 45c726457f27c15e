//! PostgreSQL for the tests, real, never mocked (issue #9).
//!
//! With DATABASE_URL set, each test gets its own database in that server. Otherwise the
//! harness starts a throwaway cluster itself (`initdb` + `pg_ctl` from
//! /usr/lib/postgresql/*/bin, in a temp dir, on a free port, as the `postgres` user when
//! the tests run as root, since PostgreSQL refuses root): one shared by the whole run
//! (each test in a fresh database copied from a migrated template), stopped and deleted
//! by a watchdog when the test process exits; and, for the tests that stop PostgreSQL,
//! one of their own. Without PostgreSQL binaries (build.rs checks) the PostgreSQL half of
//! the suite is not compiled and one test says so loudly, or fails if REQUIRE_POSTGRES
//! is set: `.ci/run` installs PostgreSQL and sets it, so CI always runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::process::{command, free_port};

/// A database for one test. Dropping it drops the database (shared cluster) or stops
/// the cluster (own cluster).
pub struct TestDatabase {
    pub url: String,
    drop_sql: Option<(String, String)>,
    cluster: Option<Cluster>,
}

impl TestDatabase {
    /// The cluster this test owns (see `own_cluster`).
    pub fn cluster(&self) -> &Cluster {
        self.cluster
            .as_ref()
            .expect("a database with its own cluster")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.drop_sql {
            let _ = psql(
                admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// A running cluster: its binaries, data directory and port.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    owned: Option<tempfile::TempDir>,
}

impl Cluster {
    fn start(bin: PathBuf, dir: PathBuf, owned: Option<tempfile::TempDir>) -> Cluster {
        if is_root() {
            let chown = Command::new("chown")
                .arg("postgres")
                .arg(&dir)
                .status()
                .unwrap();
            assert!(chown.success());
        }
        let initdb = as_owner(&bin.join("initdb"), &dir)
            .args([
                "-A",
                "trust",
                "-U",
                "simple",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(dir.join("data"))
            .output()
            .unwrap();
        assert!(initdb.status.success(), "initdb: {initdb:?}");
        let cluster = Cluster {
            bin,
            dir,
            port: free_port(),
            owned,
        };
        cluster.pg_ctl_start();
        cluster
    }

    fn pg_ctl_start(&self) {
        // fsync off: a test cluster need not survive a power cut, and tests run faster.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let started = as_owner(&self.bin.join("pg_ctl"), &self.dir)
            .args(["start", "-w", "-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(started.status.success(), "pg_ctl start: {started:?}");
    }

    /// Stops PostgreSQL (fast mode: connections are closed, as in a real restart).
    pub fn stop(&self) {
        let stopped = as_owner(&self.bin.join("pg_ctl"), &self.dir)
            .args(["stop", "-w", "-m", "fast", "-D"])
            .arg(self.dir.join("data"))
            .output()
            .unwrap();
        assert!(stopped.status.success(), "pg_ctl stop: {stopped:?}");
    }

    /// Sends `signal` (`STOP`, `CONT`) to every process of the cluster.
    pub fn signal(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        let children = Command::new("pgrep").args(["-P", &pid]).output().unwrap();
        let mut pids = vec![pid];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(&pids)
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    fn admin_url(&self) -> String {
        format!("postgres://simple@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned.is_some() {
            let _ = as_owner(&self.bin.join("pg_ctl"), &self.dir)
                .args(["stop", "-m", "immediate", "-D"])
                .arg(self.dir.join("data"))
                .output();
        }
    }
}

fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `program`, run as the owner PostgreSQL needs: `postgres` when we are root.
fn as_owner(program: &Path, dir: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.current_dir(dir);
    cmd
}

fn psql_program() -> PathBuf {
    postgres_bin()
        .map(|bin| bin.join("psql"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

fn psql(url: &str, sql: &str) -> std::process::Output {
    Command::new(psql_program())
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("psql runs")
}

/// The single value `sql` returns, as text.
pub fn query_value(url: &str, sql: &str) -> String {
    let out = Command::new(psql_program())
        .args([url, "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Where the shared databases live: DATABASE_URL's server, or the run's own cluster.
struct Shared {
    /// A URL of the server's maintenance database, for CREATE/DROP DATABASE.
    admin: String,
    /// `…/` + a database name makes a URL.
    base: String,
    /// A migrated database that fresh ones are copied from.
    template: String,
    _cluster: Option<Cluster>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (admin, cluster) = match std::env::var("DATABASE_URL") {
            Ok(url) => (url, None),
            Err(_) => {
                let bin = postgres_bin().expect("PostgreSQL binaries (build.rs found them)");
                let dir = tempfile::Builder::new()
                    .prefix("simple-api-pg-")
                    .tempdir()
                    .unwrap()
                    .keep();
                let cluster = Cluster::start(bin, dir.clone(), None);
                watch(&cluster);
                (cluster.admin_url(), Some(cluster))
            }
        };
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(b, _)| b)
            .to_owned();
        let template = format!("simple_template_{}", std::process::id());
        let created = psql(&admin, &format!("CREATE DATABASE {template}"));
        assert!(created.status.success(), "{created:?}");
        let dir = tempfile::tempdir().unwrap();
        let out = command(dir.path())
            .arg("migrate")
            .env("DATABASE_URL", format!("{base}/{template}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "migrate the template: {out:?}");
        Shared {
            admin,
            base,
            template,
            _cluster: cluster,
        }
    })
}

/// Stops and deletes the shared cluster once this test process is gone, however it ends.
// The watchdog must outlive this process, so it is never waited for.
#[allow(clippy::zombie_processes)]
fn watch(cluster: &Cluster) {
    let stop = format!(
        "{} {} stop -m immediate -D {}",
        if is_root() {
            "runuser -u postgres --"
        } else {
            ""
        },
        cluster.bin.join("pg_ctl").display(),
        cluster.dir.join("data").display()
    );
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}; rm -rf {dir}",
        pid = std::process::id(),
        dir = cluster.dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh runs");
}

fn create(template: &str) -> TestDatabase {
    let shared = shared();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    // Two copies of one template at the same instant can collide; retry briefly.
    let mut attempt = 0;
    loop {
        let out = psql(
            &shared.admin,
            &format!("CREATE DATABASE {name} TEMPLATE {template}"),
        );
        if out.status.success() {
            break;
        }
        attempt += 1;
        assert!(attempt < 20, "CREATE DATABASE: {out:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    TestDatabase {
        url: format!("{}/{name}", shared.base),
        drop_sql: Some((shared.admin.clone(), name)),
        cluster: None,
    }
}

/// A fresh, migrated database on the shared server.
pub fn database() -> TestDatabase {
    create(&shared().template)
}

/// A fresh database with no schema yet (for the migration tests).
pub fn empty_database() -> TestDatabase {
    create("template0")
}

/// A database on a cluster of this test's own, which it may stop and start.
pub fn own_cluster() -> TestDatabase {
    let bin = postgres_bin().expect("PostgreSQL binaries (build.rs found them)");
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(bin, dir.path().to_owned(), Some(dir));
    TestDatabase {
        url: cluster.admin_url(),
        drop_sql: None,
        cluster: Some(cluster),
    }
}

/// A fresh database at schema `version`, as a build of that version left it: migrations
/// 1 to `version` applied and recorded the way `migrate` does (for the upgrade tests).
pub fn database_at(version: i32) -> TestDatabase {
    let db = empty_database();
    let mut sql = String::from(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, \
         applied_at timestamptz NOT NULL DEFAULT now());",
    );
    for m in simple_api::store::postgres::MIGRATIONS
        .iter()
        .filter(|m| m.version <= version)
    {
        sql.push_str(m.sql);
        sql.push_str(&format!(
            ";\nINSERT INTO schema_migrations (version, name) VALUES ({}, '{}');",
            m.version,
            m.name.replace('\'', "''")
        ));
    }
    let out = psql(&db.url, &sql);
    assert!(out.status.success(), "migrations 1 to {version}: {out:?}");
    db
}
