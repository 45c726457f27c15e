//! Data written by an older version keeps working and is brought up to date: client
//! secrets hashed with argon2 (before they were stored as digests), on both stores; a
//! PostgreSQL database from before public-key clients (schema version 4).

use secrecy::SecretString;
use simple_api::auth::clients::generate_secret;
use simple_api::auth::PasswordHasher;
use simple_api::domain::{Client, ClientName, Scope, Scopes};
use simple_api::store::Store;

use super::helpers::process::{start, Server};

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// A client as an older version stored it: its secret hashed with argon2.
fn argon2_client() -> (Client, String) {
    let secret = generate_secret();
    let hasher = PasswordHasher::new(1024, 1, 1, 1).unwrap();
    let hash = block_on(hasher.hash(&SecretString::from(secret.clone()))).unwrap();
    let now = simple_api::domain::now();
    let client = Client {
        id: uuid::Uuid::new_v4(),
        name: ClientName::parse("legacy").unwrap(),
        scope: Scopes::of([Scope::UsersRead]),
        credential: simple_api::domain::Credential::Secret(hash),
        created_at: now,
        secret_rotated_at: now,
        sign_in: Default::default(),
    };
    (client, secret)
}

/// The client authenticates, its stored hash becomes a digest (`stored` reads it), the
/// token minted before the upgrade stays valid and the secret keeps working after it.
fn authenticates_and_is_upgraded(
    server: &Server,
    client: &Client,
    secret: &str,
    stored: impl Fn() -> String,
) {
    assert!(stored().starts_with("$argon2id$"), "{}", stored());
    let id = client.id.to_string();
    let before = server.client_token(&id, secret);
    assert!(stored().starts_with("sha256$"), "{}", stored());
    let after = server.client_token(&id, secret);
    for token in [&before, &after] {
        assert_eq!(server.get("/api/v1/stats", Some(token)).status, 200);
    }
    assert_eq!(server.client_grant(&id, "wrong", None).status, 401);
}

#[test]
fn an_argon2_client_secret_in_a_file_store_authenticates_and_becomes_a_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (client, secret) = argon2_client();
    let data = dir.path().join("data");
    block_on(async {
        let store = simple_api::store::FileStore::open(
            &data,
            simple_api::store::FileStoreOptions::default(),
        )
        .unwrap();
        store.put_client(client.clone()).await.unwrap();
    });
    let id = client.id.to_string();
    let stored = || {
        let text = std::fs::read_to_string(data.join("store.log")).unwrap();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains(&id))
            .unwrap()
            .to_owned();
        let hash = line.split("\"secret_hash\":\"").nth(1).unwrap();
        hash.split('"').next().unwrap().to_owned()
    };
    let server = start(dir.path());
    authenticates_and_is_upgraded(&server, &client, &secret, stored);
}

#[cfg(not(no_postgres))]
#[test]
fn an_argon2_client_secret_in_postgresql_authenticates_and_becomes_a_digest() {
    use super::helpers::database::{database, query_value};
    let dir = tempfile::tempdir().unwrap();
    let db = database();
    let (client, secret) = argon2_client();
    block_on(async {
        let store = simple_api::store::postgres::PgStore::open_unlisted(&db.url)
            .await
            .unwrap();
        store.put_client(client.clone()).await.unwrap();
    });
    let sql = format!("SELECT secret_hash FROM clients WHERE id = '{}'", client.id);
    let stored = || query_value(&db.url, &sql);
    let server = super::helpers::process::replica(dir.path(), "a", &db.url, &[]);
    authenticates_and_is_upgraded(&server, &client, &secret, stored);
}

/// A client stored at schema version 4 (before public keys: `secret_hash` NOT NULL, no
/// `jwks`, no client notifications) authenticates once a replica has migrated the
/// database to version 5, is read back as it was, and a change to it made afterwards
/// reaches that replica's cache of it (migration 5's trigger is in place).
#[cfg(not(no_postgres))]
#[test]
fn a_client_stored_before_migration_5_keeps_working_after_it() {
    use super::helpers::database::{database_at, query_value};
    use super::helpers::within;
    let dir = tempfile::tempdir().unwrap();
    let db = database_at(4);
    let (id, secret) = (uuid::Uuid::new_v4(), generate_secret());
    let hash = simple_api::auth::clients::hash_secret(&secret);
    query_value(
        &db.url,
        &format!(
            "INSERT INTO clients (id, name, scope, secret_hash, created_at, \
             secret_rotated_at) VALUES ('{id}', 'legacy', 'users:read', '{hash}', now(), \
             now()) RETURNING 1"
        ),
    );
    let server = super::helpers::process::replica(dir.path(), "a", &db.url, &[]);
    let version = "SELECT max(version) FROM schema_migrations";
    assert_eq!(
        query_value(&db.url, version),
        simple_api::store::postgres::MIGRATIONS
            .last()
            .unwrap()
            .version
            .to_string()
    );
    let token = server.client_token(&id.to_string(), &secret);
    assert_eq!(server.get("/api/v1/stats", Some(&token)).status, 200);
    let row = format!(
        "SELECT secret_hash || ',' || coalesce(jwks, 'no keys') FROM clients WHERE id = '{id}'"
    );
    assert_eq!(query_value(&db.url, &row), format!("{hash},no keys"));

    let rotate = format!(
        "UPDATE clients SET secret_hash = 'rotated', secret_rotated_at = now() \
         WHERE id = '{id}' RETURNING 1"
    );
    query_value(&db.url, &rotate);
    within(
        "the rotation heard",
        std::time::Duration::from_secs(1),
        || server.get("/api/v1/stats", Some(&token)).status == 401,
    );
}
