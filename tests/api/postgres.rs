//! The PostgreSQL store's groundwork on a real PostgreSQL (issue #9): migrations.
//!
//! With DATABASE_URL set, each test gets its own database in it; otherwise the harness
//! starts a throwaway cluster (`initdb` + `pg_ctl` from /usr/lib/postgresql/*/bin, in a
//! temp dir, on a free port, as the `postgres` user when the tests run as root, since
//! PostgreSQL refuses root). Without PostgreSQL binaries the tests say so and skip, unless
//! REQUIRE_POSTGRES is set: `.ci/run` installs them and sets it, so CI always runs these.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::{command, free_port};

/// A database for one test; its cluster (if the harness started one) stops on drop.
pub struct TestDatabase {
    pub url: String,
    cluster: Option<(PathBuf, tempfile::TempDir)>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((bin, dir)) = &self.cluster {
            let _ = as_owner(&bin.join("pg_ctl"), dir.path())
                .args(["stop", "-m", "immediate", "-D"])
                .arg(dir.path().join("data"))
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
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd.current_dir(dir);
        cmd
    } else {
        let mut cmd = Command::new(program);
        cmd.current_dir(dir);
        cmd
    }
}

/// A fresh database, or `None` (after saying so) when there is no PostgreSQL here.
pub fn database() -> Option<TestDatabase> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let created = Command::new("psql")
            .args([url.as_str(), "-c", &format!("CREATE DATABASE {name}")])
            .output()
            .expect("psql runs");
        assert!(created.status.success(), "{created:?}");
        let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
        return Some(TestDatabase {
            url: format!("{base}/{name}"),
            cluster: None,
        });
    }
    let Some(bin) = postgres_bin() else {
        assert!(
            std::env::var_os("REQUIRE_POSTGRES").is_none(),
            "REQUIRE_POSTGRES is set but there are no PostgreSQL binaries under /usr/lib/postgresql"
        );
        eprintln!(
            "\n*** SKIPPED: no PostgreSQL binaries under /usr/lib/postgresql and no DATABASE_URL; \
             the PostgreSQL tests did not run (apt-get install postgresql) ***\n"
        );
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    if is_root() {
        let chown = Command::new("chown")
            .arg("postgres")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(chown.success());
    }
    let initdb = as_owner(&bin.join("initdb"), dir.path())
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
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(initdb.status.success(), "initdb: {initdb:?}");
    let port = free_port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1",
        dir.path().display()
    );
    let started = as_owner(&bin.join("pg_ctl"), dir.path())
        .args(["start", "-w", "-o", &options, "-l"])
        .arg(dir.path().join("log"))
        .arg("-D")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(started.status.success(), "pg_ctl start: {started:?}");
    Some(TestDatabase {
        url: format!("postgres://simple@127.0.0.1:{port}/postgres"),
        cluster: Some((bin, dir)),
    })
}

fn migrate(url: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .arg("migrate")
        .env("DATABASE_URL", url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "migrate is quiet on success: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn migrate_applies_the_schema_once() {
    let Some(db) = database() else { return };
    let first = migrate(&db.url);
    assert_eq!(first["applied"], serde_json::json!([1]));
    assert_eq!(first["schema_version"], 1);
    let again = migrate(&db.url);
    assert_eq!(again["applied"], serde_json::json!([]));
}

#[test]
fn replicas_migrating_at_once_do_not_race() {
    let Some(db) = database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            command(dir.path())
                .arg("migrate")
                .env("DATABASE_URL", &db.url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        applied.extend(report["applied"].as_array().unwrap().clone());
    }
    assert_eq!(
        applied,
        vec![serde_json::json!(1)],
        "exactly one applied it"
    );
}

#[tokio::test]
async fn email_uniqueness_is_the_databases_decision() {
    let Some(db) = database() else { return };
    migrate(&db.url);
    let client = simple_api::store::postgres::connect(&db.url).await.unwrap();
    let insert = "INSERT INTO users (id, email, email_key, role, password_hash, created_at,
                      updated_at, tokens_valid_after)
                  VALUES ($1::text::uuid, $2, $3, 'user', 'h', now(), now(), now())";
    let a = uuid::Uuid::now_v7().to_string();
    let b = uuid::Uuid::now_v7().to_string();
    client
        .execute(insert, &[&a, &"Ann@Example.com", &"ann@example.com"])
        .await
        .unwrap();
    let err = client
        .execute(insert, &[&b, &"ann@EXAMPLE.com", &"ann@example.com"])
        .await
        .unwrap_err();
    let code = err.code().cloned();
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
        "{err}"
    );
}

#[test]
fn migrate_needs_a_database_url_and_a_reachable_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).arg("migrate").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL is not set"));
    let port = free_port(); // nothing listens there
    let started = std::time::Instant::now();
    let out = command(dir.path())
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("postgres://simple@127.0.0.1:{port}/x"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connect to DATABASE_URL"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

async fn open_store(url: &str) -> simple_api::store::postgres::PgStore {
    simple_api::store::postgres::PgStore::new(
        simple_api::store::postgres::connect(url).await.unwrap(),
    )
}

fn new_user(email: &str) -> simple_api::domain::User {
    simple_api::domain::User::new(
        simple_api::domain::Email::parse(email).unwrap(),
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        simple_api::domain::Role::User,
        None,
        None,
    )
}

#[tokio::test]
async fn users_live_in_postgresql_as_in_the_file_store() {
    let Some(db) = database() else { return };
    migrate(&db.url);
    let store = open_store(&db.url).await;
    let ann = new_user("Ann@Example.com");
    store.create_user(&ann).await.unwrap();
    let err = store
        .create_user(&new_user("ann@EXAMPLE.com"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, simple_api::store::StoreError::DuplicateEmail),
        "{err}"
    );
    let bob = new_user("bob@example.com");
    store.create_user(&bob).await.unwrap();

    // Read back exactly (timestamps at PostgreSQL's microsecond precision).
    let found = store
        .user_by_email("ANN@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, ann.id);
    assert_eq!(found.email.as_str(), "Ann@Example.com");
    assert_eq!(
        store.user(bob.id).await.unwrap().unwrap().email.as_str(),
        "bob@example.com"
    );
    assert_eq!(store.count_users().await.unwrap(), 2);
    let page: Vec<_> = store
        .list_users(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(page, vec![ann.id, bob.id], "oldest first");
    assert_eq!(store.list_users(1, 10).await.unwrap().len(), 1);

    // Concurrent changes of different fields, on two connections: neither is lost.
    let mut a = open_store(&db.url).await;
    let mut b = open_store(&db.url).await;
    let first = simple_api::domain::PersonName::parse("Ann", "first_name").unwrap();
    let last = simple_api::domain::PersonName::parse("Lee", "last_name").unwrap();
    let (ra, rb) = tokio::join!(
        a.update_user(ann.id, Box::new(move |u| u.first_name = first)),
        b.update_user(ann.id, Box::new(move |u| u.last_name = last)),
    );
    ra.unwrap();
    rb.unwrap();
    let both = store.user(ann.id).await.unwrap().unwrap();
    assert_eq!(both.first_name.unwrap().as_str(), "Ann");
    assert_eq!(both.last_name.unwrap().as_str(), "Lee");

    // Taking someone else's email by changing case is refused by the database too.
    let taken = simple_api::domain::Email::parse("BOB@example.com").unwrap();
    let err = a
        .update_user(ann.id, Box::new(move |u| u.email = taken))
        .await
        .unwrap_err();
    assert!(
        matches!(err, simple_api::store::StoreError::DuplicateEmail),
        "{err}"
    );

    assert_eq!(store.delete_user(bob.id).await.unwrap().id, bob.id);
    assert!(store.user(bob.id).await.unwrap().is_none());
    assert!(matches!(
        store.delete_user(bob.id).await.unwrap_err(),
        simple_api::store::StoreError::NotFound
    ));
    assert!(matches!(
        a.update_user(bob.id, Box::new(|_| {})).await.unwrap_err(),
        simple_api::store::StoreError::NotFound
    ));
}

#[tokio::test]
async fn clients_and_revocations_live_in_postgresql() {
    use simple_api::domain::{Client, ClientName, Scope, Scopes};
    let Some(db) = database() else { return };
    migrate(&db.url);
    let store = open_store(&db.url).await;
    let now = chrono::Utc::now();
    let mut client = Client {
        id: uuid::Uuid::now_v7(),
        name: ClientName::parse("billing").unwrap(),
        scope: Scopes::of([Scope::UsersRead]),
        secret_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        created_at: now,
        secret_rotated_at: now,
    };
    store.put_client(&client).await.unwrap();
    client.scope = Scopes::of([Scope::UsersRead, Scope::UsersWrite]);
    store.put_client(&client).await.unwrap(); // a change replaces the row
    let found = store.client(client.id).await.unwrap().unwrap();
    assert_eq!(found.scope, client.scope);
    assert_eq!(found.name.as_str(), "billing");
    assert_eq!(store.list_clients().await.unwrap().len(), 1);
    assert_eq!(store.delete_client(client.id).await.unwrap().id, client.id);
    assert!(store.client(client.id).await.unwrap().is_none());
    assert!(matches!(
        store.delete_client(client.id).await.unwrap_err(),
        simple_api::store::StoreError::NotFound
    ));

    let later = now + chrono::Duration::minutes(15);
    store.revoke_jti("live", later).await.unwrap();
    store.revoke_jti("live", later).await.unwrap(); // idempotent
    store
        .revoke_jti("old", now - chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert!(store.is_jti_revoked("live").await.unwrap());
    assert!(!store.is_jti_revoked("never").await.unwrap());
    assert_eq!(
        store.prune_jtis(now).await.unwrap(),
        1,
        "only the expired one"
    );
    assert!(store.is_jti_revoked("live").await.unwrap());
    assert!(!store.is_jti_revoked("old").await.unwrap());
}
