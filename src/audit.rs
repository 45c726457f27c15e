//! The security-event log: one JSON object per line, appended to AUDIT_LOG (default
//! DATA_DIR/audit.log, mode 0600; `-` for stdout). Never a password, hash or whole token.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

pub struct Audit {
    sink: Mutex<Box<dyn Write + Send>>,
    /// Repeatable events written recently, by event and subject (see `record_repeatable`).
    repeats: Mutex<HashMap<(&'static str, String), Repeat>>,
    repeat_window: Duration,
}

/// A repeatable event's last line and how many times it happened since, unwritten.
struct Repeat {
    written: Instant,
    unwritten: u64,
}

/// The longest subject or string field written, in bytes: room for any identifier the
/// service accepts (320 characters of up to 4 bytes); anything longer is cut.
pub const MAX_FIELD_BYTES: usize = 4 * crate::domain::MAX_IDENTIFIER_CHARS;
/// Repeatable events remembered at most (beyond that the oldest are forgotten, and may
/// be written again).
const MAX_REPEATS: usize = 10_000;

fn bounded(text: &str) -> &str {
    if text.len() <= MAX_FIELD_BYTES {
        return text;
    }
    let mut end = MAX_FIELD_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
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
        Ok(Self::over(sink))
    }

    fn over(sink: Box<dyn Write + Send>) -> Self {
        Self {
            sink: Mutex::new(sink),
            repeats: Mutex::new(HashMap::new()),
            repeat_window: Duration::ZERO,
        }
    }

    /// Writes a repeatable event at most once per `window` for each subject (see
    /// `record_repeatable`).
    pub fn repeats_within(mut self, window: Duration) -> Self {
        self.repeat_window = window;
        self
    }

    /// A sink that drops everything (for the spec printer and tools).
    pub fn discard() -> Self {
        Self::over(Box::new(std::io::sink()))
    }

    /// Records `event` about `subject` (a user or client id, an email for failed logins).
    /// `fields` must hold no secret; callers pass ids, scopes and outcomes only.
    /// An event an attacker can repeat at will (`login_throttled`): written once per
    /// `repeat_key` (what refused it: an account or an address) per window, the next line
    /// carrying `repeated`, how many times it happened unwritten in between. The log grows
    /// with the distinct keys, not the requests.
    pub fn record_repeatable(
        &self,
        event: &'static str,
        repeat_key: &str,
        subject: &str,
        ctx: &Context,
        mut fields: Value,
    ) {
        let now = Instant::now();
        let repeated = {
            let mut repeats = self.repeats.lock().unwrap_or_else(|e| e.into_inner());
            let key = (event, bounded(repeat_key).to_owned());
            match repeats.get_mut(&key) {
                Some(r) if now.duration_since(r.written) < self.repeat_window => {
                    r.unwritten += 1;
                    return;
                }
                Some(r) => {
                    let repeated = r.unwritten;
                    *r = Repeat {
                        written: now,
                        unwritten: 0,
                    };
                    repeated
                }
                None => {
                    if repeats.len() >= MAX_REPEATS {
                        let window = self.repeat_window;
                        repeats.retain(|_, r| now.duration_since(r.written) < window);
                        if repeats.len() >= MAX_REPEATS {
                            repeats.clear();
                        }
                    }
                    repeats.insert(
                        key,
                        Repeat {
                            written: now,
                            unwritten: 0,
                        },
                    );
                    0
                }
            }
        };
        if repeated > 0 {
            if let Value::Object(map) = &mut fields {
                map.insert("repeated".into(), json!(repeated));
            }
        }
        self.record(event, Some(subject), ctx, fields);
    }

    /// Records `event`; the subject and string fields are cut at `MAX_FIELD_BYTES`.
    pub fn record(&self, event: &str, subject: Option<&str>, ctx: &Context, fields: Value) {
        let mut line = Map::new();
        line.insert(
            "time".into(),
            json!(crate::domain::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        line.insert("event".into(), json!(event));
        if let Some(subject) = subject {
            line.insert("subject".into(), json!(bounded(subject)));
        }
        if let Some(ip) = ctx.client_ip {
            line.insert("client_ip".into(), json!(ip.to_string()));
        }
        if let Some(id) = &ctx.request_id {
            line.insert("request_id".into(), json!(id));
        }
        if let Value::Object(extra) = fields {
            line.extend(extra.into_iter().map(|(k, v)| match v {
                Value::String(text) if text.len() > MAX_FIELD_BYTES => (k, json!(bounded(&text))),
                other => (k, other),
            }));
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

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn repeatable_events_are_written_once_a_window_with_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(&path, false)
            .unwrap()
            .repeats_within(Duration::from_millis(200));
        let ctx = Context::default();
        for _ in 0..50 {
            audit.record_repeatable("login_throttled", "ann", "ann@example.com", &ctx, json!({}));
        }
        audit.record_repeatable("login_throttled", "bob", "bob@example.com", &ctx, json!({}));
        std::thread::sleep(Duration::from_millis(250));
        audit.record_repeatable("login_throttled", "ann", "ann@example.com", &ctx, json!({}));
        let lines = lines(&path);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["subject"], "ann@example.com");
        assert!(lines[0].get("repeated").is_none());
        assert_eq!(lines[1]["subject"], "bob@example.com");
        assert_eq!(lines[2]["repeated"], 49);
    }

    #[test]
    fn long_subjects_and_fields_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(&path, false).unwrap();
        let long = "é".repeat(2000);
        audit.record(
            "x",
            Some(&long),
            &Context::default(),
            json!({ "via": long }),
        );
        let line = &lines(&path)[0];
        assert!(line["subject"].as_str().unwrap().len() <= MAX_FIELD_BYTES);
        assert!(line["via"].as_str().unwrap().len() <= MAX_FIELD_BYTES);
        assert!(std::fs::metadata(&path).unwrap().len() < 3 * MAX_FIELD_BYTES as u64);
    }

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
