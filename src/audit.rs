//! The security-event log: one JSON object per line, appended to AUDIT_LOG (default
//! DATA_DIR/audit.log, mode 0600; `-` for stdout). Never a password, hash or whole token.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Map, Value};

pub struct Audit {
    sink: Mutex<Box<dyn Write + Send>>,
}

/// Where and for whom an event happened.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub request_id: Option<String>,
    pub client_ip: Option<IpAddr>,
}

impl Audit {
    /// `-` writes to stdout; anything else is a file opened for appending.
    /// Appends to `target` (`-`: standard output). `make_dir`: create its directory if
    /// missing (the default location in DATA_DIR, which with PostgreSQL holds nothing
    /// else and may not exist yet; an AUDIT_LOG path that names a missing directory is
    /// a mistake to report, not to paper over).
    pub fn open(target: &Path, make_dir: bool) -> std::io::Result<Self> {
        let sink: Box<dyn Write + Send> = if target == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            if let Some(dir) = target
                .parent()
                .filter(|d| make_dir && !d.as_os_str().is_empty())
            {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
            Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(target)?,
            )
        };
        Ok(Self {
            sink: Mutex::new(sink),
        })
    }

    /// A sink that drops everything (for the spec printer and tools).
    pub fn discard() -> Self {
        Self {
            sink: Mutex::new(Box::new(std::io::sink())),
        }
    }

    /// Records `event` about `subject` (a user or client id, an email for failed logins).
    /// `fields` must hold no secret; callers pass ids, scopes and outcomes only.
    pub fn record(&self, event: &str, subject: Option<&str>, ctx: &Context, fields: Value) {
        let mut line = Map::new();
        line.insert(
            "time".into(),
            json!(crate::domain::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        line.insert("event".into(), json!(event));
        if let Some(subject) = subject {
            line.insert("subject".into(), json!(subject));
        }
        if let Some(ip) = ctx.client_ip {
            line.insert("client_ip".into(), json!(ip.to_string()));
        }
        if let Some(id) = &ctx.request_id {
            line.insert("request_id".into(), json!(id));
        }
        if let Value::Object(extra) = fields {
            line.extend(extra);
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        // An audit line must not be lost silently, but it must not fail the request either.
        if let Err(error) = sink.write_all(text.as_bytes()).and_then(|_| sink.flush()) {
            tracing::error!(%error, event, "could not write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_lines_with_their_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(&path, false).unwrap();
        let ctx = Context {
            request_id: Some("r1".into()),
            client_ip: Some("192.0.2.1".parse().unwrap()),
        };
        audit.record(
            "login_failed",
            Some("a@example.com"),
            &ctx,
            json!({"grant": "password"}),
        );
        audit.record("logout", None, &Context::default(), json!({}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "login_failed");
        assert_eq!(lines[0]["client_ip"], "192.0.2.1");
        assert_eq!(lines[0]["request_id"], "r1");
        assert_eq!(lines[0]["grant"], "password");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
