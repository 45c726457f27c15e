//! Admin changes while the server runs. The server holds DATA_DIR's lock, so the CLI
//! cannot append to the log itself: it writes the change, durably, to
//! `DATA_DIR/spool/<id>.json` and the server applies it on its next reload tick (every
//! couple of seconds, or at once on SIGHUP), then deletes the file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::codec::{decode, encode, Entry};
use super::log::sync_dir;
use super::{FileStore, FileStoreOptions};
use crate::domain::{Client, ClientId};
use crate::store::record::ClientRecord;
use crate::store::{Store, StoreError};

pub const SPOOL_DIR: &str = "spool";

/// A change an operator makes from the command line.
#[derive(Debug, Clone)]
pub enum AdminChange {
    PutClient(Client),
    DeleteClient(ClientId),
}

impl AdminChange {
    fn entry(&self) -> Entry {
        match self {
            Self::PutClient(client) => Entry::ClientPut {
                client: ClientRecord::from(client),
            },
            Self::DeleteClient(id) => Entry::ClientDelete { id: *id },
        }
    }
}

/// Where a change went.
#[derive(Debug)]
pub enum Applied {
    /// Written to the store (no server was running, or the server applied it).
    Done,
    /// Durably queued for the running server, which has not picked it up yet.
    Queued(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        context: path.display().to_string(),
        source,
    }
}

/// Applies `change` to the store in `data_dir`, directly when no server runs, through
/// the spool otherwise (waiting up to `wait` for the server to take it).
pub async fn apply(
    data_dir: &Path,
    change: AdminChange,
    wait: Duration,
) -> Result<Applied, StoreError> {
    match FileStore::open(data_dir, FileStoreOptions::default()) {
        Ok(store) => {
            store.apply_change(change).await?;
            Ok(Applied::Done)
        }
        Err(StoreError::Locked(_)) => {
            let path = submit(data_dir, &change)?;
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                if !path.exists() {
                    return Ok(Applied::Done);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Applied::Queued(path))
        }
        Err(e) => Err(e),
    }
}

/// Writes the change as a spool file: temp file, fsync, rename, fsync the directory.
fn submit(data_dir: &Path, change: &AdminChange) -> Result<PathBuf, StoreError> {
    let dir = data_dir.join(SPOOL_DIR);
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
    }
    let id = uuid::Uuid::now_v7();
    let path = dir.join(format!("{id}.json"));
    let tmp = dir.join(format!(".{id}.tmp"));
    let mut file = super::log::create_private(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&encode(&change.entry()))
        .and_then(|_| file.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(&dir)?;
    Ok(path)
}

/// The clients in `data_dir` as last written to its log, readable while a server runs.
pub fn read_clients(data_dir: &Path) -> Result<Vec<Client>, StoreError> {
    let mut clients = std::collections::BTreeMap::new();
    for entry in super::log::read_entries(data_dir)? {
        match entry {
            Entry::ClientPut { client } => {
                let client = Client::try_from(client).map_err(|reason| StoreError::Corrupt {
                    path: data_dir.display().to_string(),
                    reason,
                })?;
                clients.insert(client.id, client);
            }
            Entry::ClientDelete { id } => {
                clients.remove(&id);
            }
            _ => {}
        }
    }
    let mut clients: Vec<Client> = clients.into_values().collect();
    clients.sort_by_key(|c| (c.created_at, c.id));
    Ok(clients)
}

impl FileStore {
    async fn apply_change(&self, change: AdminChange) -> Result<(), StoreError> {
        match change {
            AdminChange::PutClient(client) => self.put_client(client).await,
            AdminChange::DeleteClient(id) => match self.delete_client(id).await {
                Ok(_) | Err(StoreError::NotFound) => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    /// Applies and removes every spooled change, oldest first. Files that do not parse
    /// (or carry anything but client changes) are renamed `*.rejected` and logged.
    pub async fn apply_spool(&self) -> Result<usize, StoreError> {
        let dir = self.dir().join(SPOOL_DIR);
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let mut applied = 0;
        for path in files {
            let text = fs::read(&path).map_err(io_err(&path))?;
            let line = text.strip_suffix(b"\n").unwrap_or(&text);
            let change = match decode(line) {
                Some(Entry::ClientPut { client }) => {
                    Client::try_from(client).map(AdminChange::PutClient)
                }
                Some(Entry::ClientDelete { id }) => Ok(AdminChange::DeleteClient(id)),
                _ => Err("not a client change".to_owned()),
            };
            match change {
                Ok(change) => {
                    self.apply_change(change).await?;
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    applied += 1;
                }
                Err(reason) => {
                    tracing::error!(path = %path.display(), %reason, "rejected a spooled change");
                    let _ = fs::rename(&path, path.with_extension("rejected"));
                }
            }
        }
        if applied > 0 {
            sync_dir(&dir)?;
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::domain::{ClientName, Scope, Scopes};

    fn client() -> Client {
        Client {
            id: uuid::Uuid::new_v4(),
            name: ClientName::parse("billing").unwrap(),
            scope: Scopes::of([Scope::UsersRead]),
            credential: crate::domain::Credential::Secret(
                "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
            ),
            created_at: crate::domain::now(),
            secret_rotated_at: crate::domain::now(),
            sign_in: Default::default(),
        }
    }

    #[tokio::test]
    async fn without_a_server_changes_apply_directly() {
        let dir = tempfile::tempdir().unwrap();
        let c = client();
        let applied = apply(
            dir.path(),
            AdminChange::PutClient(c.clone()),
            Duration::ZERO,
        )
        .await
        .unwrap();
        assert!(matches!(applied, Applied::Done));
        let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
        assert_eq!(store.client(c.id).await.unwrap(), Some(c));
    }

    /// The spool carries a client with public keys as it carries one with a secret.
    #[tokio::test]
    async fn a_spooled_client_with_public_keys_is_applied_as_it_was_given() {
        const ED: &str =
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let keys = crate::domain::ClientKeys::parse_jwks(ED).unwrap();
        let c = Client {
            credential: crate::domain::Credential::Keys(keys),
            ..client()
        };
        let dir = tempfile::tempdir().unwrap();
        let server = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
        let change = AdminChange::PutClient(c.clone());
        let applied = apply(dir.path(), change, Duration::ZERO).await.unwrap();
        assert!(matches!(applied, Applied::Queued(_)), "{applied:?}");
        assert_eq!(server.apply_spool().await.unwrap(), 1);
        assert_eq!(server.client(c.id).await.unwrap(), Some(c.clone()));
        assert_eq!(read_clients(dir.path()).unwrap(), [c]);
    }

    #[tokio::test]
    async fn with_a_server_changes_are_spooled_then_applied_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let server = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
        let c = client();
        let applied = apply(
            dir.path(),
            AdminChange::PutClient(c.clone()),
            Duration::ZERO,
        )
        .await
        .unwrap();
        let Applied::Queued(path) = applied else {
            panic!("expected a queued change")
        };
        assert!(path.exists());
        assert_eq!(server.apply_spool().await.unwrap(), 1);
        assert!(!path.exists());
        assert_eq!(server.client(c.id).await.unwrap(), Some(c.clone()));
        apply(dir.path(), AdminChange::DeleteClient(c.id), Duration::ZERO)
            .await
            .unwrap();
        server.apply_spool().await.unwrap();
        assert!(server.client(c.id).await.unwrap().is_none());
        fs::write(dir.path().join(SPOOL_DIR).join("junk.json"), "junk").unwrap();
        assert_eq!(server.apply_spool().await.unwrap(), 0);
        assert!(dir.path().join(SPOOL_DIR).join("junk.rejected").exists());
    }
}
