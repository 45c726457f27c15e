//! The database password when DATABASE_URL leaves it out, found as libpq finds it:
//! `PGPASSWORD`, then the password file (`PGPASSFILE`, default `~/.pgpass`: lines of
//! `host:port:database:user:password`, `*` matching anything, `\` escaping `:` and `\`).
//! So the password need not sit in the URL, where `ps` and process listings show it.

use std::path::PathBuf;

use tokio_postgres::config::Host;

/// Where the password may come from, read from the environment by the caller.
pub struct Sources {
    pub pgpassword: Option<String>,
    pub pgpassfile: Option<PathBuf>,
}

impl Sources {
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass"));
        Self {
            pgpassword: std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()),
            pgpassfile: std::env::var_os("PGPASSFILE").map(PathBuf::from).or(home),
        }
    }
}

/// Sets `config`'s password from `sources` if the URL gave none.
pub fn fill_in(config: &mut tokio_postgres::Config, sources: &Sources) {
    if config.get_password().is_some() {
        return;
    }
    if let Some(password) = &sources.pgpassword {
        config.password(password.as_str());
        return;
    }
    let Some(path) = &sources.pgpassfile else {
        return;
    };
    // As libpq: a password file others can read is not used.
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            tracing::warn!(file = %path.display(), "password file has group or world access; ignored (chmod 0600 it)");
            return;
        }
        Ok(_) => {}
        Err(_) => return,
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(_)) | None => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default().to_owned();
    let database = config.get_dbname().unwrap_or(&user).to_owned();
    let wanted = [host.as_str(), &port, &database, &user];
    if let Some(password) = text.lines().find_map(|line| matching(line, &wanted)) {
        config.password(password);
    }
}

/// The password of a password-file line whose first four fields match `wanted`.
fn matching(line: &str, wanted: &[&str; 4]) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.extend(chars.next()),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    if fields.len() != 4 {
        return None;
    }
    let matches = fields
        .iter()
        .zip(wanted)
        .all(|(field, want)| field == "*" || field == want);
    matches.then_some(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> tokio_postgres::Config {
        url.parse().unwrap()
    }

    #[test]
    fn the_url_wins_then_pgpassword_then_the_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:*:app:nope\ndb.internal:5432:auth:app:fr\\:om-file\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let sources = |pgpassword: Option<&str>| Sources {
            pgpassword: pgpassword.map(str::to_owned),
            pgpassfile: Some(file.clone()),
        };
        let mut c = config("postgres://app:in-url@db.internal/auth");
        fill_in(&mut c, &sources(Some("from-env")));
        assert_eq!(c.get_password(), Some(&b"in-url"[..]));
        let mut c = config("postgres://app@db.internal/auth");
        fill_in(&mut c, &sources(Some("from-env")));
        assert_eq!(c.get_password(), Some(&b"from-env"[..]));
        let mut c = config("postgres://app@db.internal/auth");
        fill_in(&mut c, &sources(None));
        assert_eq!(c.get_password(), Some(&b"fr:om-file"[..]));
        let mut c = config("postgres://app@elsewhere/auth");
        fill_in(&mut c, &sources(None));
        assert_eq!(c.get_password(), None);
        // Readable by others: ignored, as libpq ignores it.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = config("postgres://app@db.internal/auth");
        fill_in(&mut c, &sources(None));
        assert_eq!(c.get_password(), None);
    }

    #[test]
    fn wildcards_and_defaults_match_as_in_libpq() {
        let wanted = ["localhost", "5432", "app", "app"];
        assert_eq!(matching("*:*:*:app:pw", &wanted), Some("pw".into()));
        assert_eq!(matching("localhost:5433:*:app:pw", &wanted), None);
        assert_eq!(matching("#localhost:*:*:*:pw", &wanted), None);
        assert_eq!(matching("too:few:fields", &wanted), None);
    }
}
