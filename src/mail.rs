//! Sending mail (issue #19): composing RFC 5322 messages (multipart text + HTML) and
//! delivering them, over SMTP (`SMTP_URL`, lettre on tokio) or, with no SMTP_URL, into
//! `DATA_DIR/outbox/` as `.eml` files a developer can open. Queueing, retries and the audit
//! are `service::mail`'s; this module knows messages and transports only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::{header, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How long one SMTP delivery may take (connect, TLS, dialogue) before it counts as a
/// transient failure.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where messages go.
pub enum Transport {
    /// `.eml` files in this directory (DATA_DIR/outbox).
    Outbox(PathBuf),
    /// An SMTP server.
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// `host:port (tls)`, for logs; never the credentials.
        described: String,
    },
}

/// What `SMTP_URL` says.
#[derive(Debug, PartialEq, Eq)]
pub struct SmtpUrl {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// `smtp://`: STARTTLS, required (a server that does not offer it is refused).
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://…?tls=none`: plain text, to a loopback host only (a local relay).
    None,
}

impl SmtpUrl {
    /// Parses `smtp://user:pass@host:587`, `smtps://host:465` or
    /// `smtp://127.0.0.1:2525?tls=none`. `Err` says why, without the password.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("SMTP_URL is not a URL: {e}"))?;
        let implicit = match url.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => {
                return Err(format!(
                    "SMTP_URL: the scheme must be smtp or smtps, not {other}"
                ))
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("SMTP_URL names no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let mut tls = if implicit {
            Tls::Implicit
        } else {
            Tls::StartTls
        };
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("tls", "none") if !implicit => tls = Tls::None,
                ("tls", "required") if !implicit => tls = Tls::StartTls,
                _ => return Err(format!("SMTP_URL: unknown parameter {key}={value}")),
            }
        }
        if tls == Tls::None && !is_loopback(&host) {
            return Err(format!(
                "SMTP_URL: tls=none is allowed for a loopback host only, not {host} (passwords and codes would cross the network in clear)"
            ));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| "SMTP_URL: the user or password is not UTF-8".to_owned())
        };
        let user = match url.username() {
            "" => None,
            u => Some(decode(u)?),
        };
        let password = url.password().map(decode).transpose()?;
        Ok(Self {
            port: url.port().unwrap_or(if implicit { 465 } else { 587 }),
            host,
            tls,
            user,
            password,
        })
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct DeliveryError {
    /// The server refused the message for good (a 5xx reply): trying again cannot help.
    pub permanent: bool,
    pub reason: String,
}

impl Transport {
    /// The transport `smtp_url` names, or the outbox in `data_dir`.
    pub fn new(smtp_url: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        let Some(raw) = smtp_url.filter(|u| !u.is_empty()) else {
            return Ok(Self::Outbox(data_dir.join("outbox")));
        };
        let url = SmtpUrl::parse(raw)?;
        let builder = match url.tls {
            Tls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&url.host),
            Tls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&url.host),
            Tls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                url.host.clone(),
            )),
        }
        .map_err(|e| format!("SMTP_URL: {e}"))?;
        let mut builder = builder.port(url.port).timeout(Some(SMTP_TIMEOUT));
        if let (Some(user), Some(password)) = (url.user.clone(), url.password.clone()) {
            builder = builder.credentials(Credentials::new(user, password));
        }
        let tls = match url.tls {
            Tls::StartTls => "STARTTLS required",
            Tls::Implicit => "TLS",
            Tls::None => "no TLS, loopback",
        };
        Ok(Self::Smtp {
            transport: builder.build(),
            described: format!("{}:{} ({tls})", url.host, url.port),
        })
    }

    /// Where messages go, for the start-up log.
    pub fn describe(&self) -> String {
        match self {
            Self::Outbox(dir) => format!("files in {}", dir.display()),
            Self::Smtp { described, .. } => format!("SMTP {described}"),
        }
    }

    /// Delivers `message` (RFC 5322 bytes) from `from` to `to`; `name` names its outbox
    /// file.
    pub async fn deliver(
        &self,
        from: &Address,
        to: &str,
        message: &[u8],
        name: &str,
    ) -> Result<(), DeliveryError> {
        let to: Address = to.parse().map_err(|e| DeliveryError {
            permanent: true,
            reason: format!("the recipient is not an address: {e}"),
        })?;
        match self {
            Self::Outbox(dir) => write_outbox(dir, name, message).await,
            Self::Smtp { transport, .. } => {
                let envelope =
                    Envelope::new(Some(from.clone()), vec![to]).map_err(|e| DeliveryError {
                        permanent: true,
                        reason: e.to_string(),
                    })?;
                transport
                    .send_raw(&envelope, message)
                    .await
                    .map(|_| ())
                    .map_err(|e| DeliveryError {
                        permanent: e.is_permanent(),
                        reason: e.to_string(),
                    })
            }
        }
    }
}

/// Writes `message` as `dir/name.eml`, readable by its owner only (it may carry a code):
/// into a temporary name first, so a reader never sees half a message.
async fn write_outbox(dir: &Path, name: &str, message: &[u8]) -> Result<(), DeliveryError> {
    let failed = |e: std::io::Error| DeliveryError {
        permanent: false,
        reason: format!("outbox {}: {e}", dir.display()),
    };
    tokio::fs::create_dir_all(dir).await.map_err(failed)?;
    let path = dir.join(format!("{name}.eml"));
    let partial = dir.join(format!(".{name}.eml.partial"));
    let bytes = message.to_vec();
    let (from, to) = (partial.clone(), path.clone());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&from)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&from, &to)
    })
    .await
    .map_err(|e| failed(std::io::Error::other(e)))?
    .map_err(failed)?;
    tracing::info!(path = %path.display(), "a message was written to the outbox (no SMTP_URL)");
    Ok(())
}

/// A message ready to queue: its RFC 5322 bytes.
pub fn compose(
    from: &Mailbox,
    to: &str,
    subject: &str,
    text: String,
    html: String,
) -> Result<Vec<u8>, String> {
    let to: Mailbox = to
        .parse()
        .map_err(|e| format!("the recipient is not an address: {e}"))?;
    let message = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .header(header::MIME_VERSION_1_0)
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| e.to_string())?;
    Ok(message.formatted())
}

/// MAIL_FROM, or `simple-api <no-reply@PUBLIC_URL's host>`.
pub fn sender(mail_from: Option<&str>, public_url: &str, service: &str) -> Result<Mailbox, String> {
    if let Some(raw) = mail_from.filter(|m| !m.is_empty()) {
        return raw
            .parse()
            .map_err(|e| format!("MAIL_FROM is not an address ({e})"));
    }
    let host = url::Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "localhost".into());
    // An IP address is no mail domain (lettre, like most servers, refuses address
    // literals): the default PUBLIC_URL's sender is no-reply@localhost.
    let domain = match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(_) => "localhost".to_owned(),
        Err(_) => host,
    };
    // Built, not parsed: SERVICE_NAME may hold what an address's text form cannot.
    let address = lettre::Address::new("no-reply", &domain)
        .map_err(|e| format!("MAIL_FROM default for {public_url}: {e}"))?;
    Ok(Mailbox::new(Some(service.to_owned()), address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_say_how_to_connect_and_plain_text_stays_on_loopback() {
        let u = SmtpUrl::parse("smtp://ann:p%40ss@mail.example.com").unwrap();
        assert_eq!(
            u,
            SmtpUrl {
                host: "mail.example.com".into(),
                port: 587,
                tls: Tls::StartTls,
                user: Some("ann".into()),
                password: Some("p@ss".into()),
            }
        );
        let u = SmtpUrl::parse("smtps://mail.example.com").unwrap();
        assert_eq!((u.port, u.tls), (465, Tls::Implicit));
        let u = SmtpUrl::parse("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!((u.port, u.tls, u.user), (2525, Tls::None, None));
        assert!(SmtpUrl::parse("smtp://[::1]:25?tls=none").is_ok());
        assert!(SmtpUrl::parse("smtp://localhost:25?tls=none").is_ok());
        let refused = SmtpUrl::parse("smtp://mail.example.com?tls=none").unwrap_err();
        assert!(refused.contains("loopback"), "{refused}");
        assert!(SmtpUrl::parse("smtps://127.0.0.1?tls=none").is_err());
        assert!(SmtpUrl::parse("http://mail.example.com").is_err());
        assert!(SmtpUrl::parse("smtp://mail.example.com?tls=maybe").is_err());
        let secret = SmtpUrl::parse("ftp://u:hunter2@h").unwrap_err();
        assert!(!secret.contains("hunter2"));
    }

    #[test]
    fn the_sender_defaults_to_no_reply_at_the_public_host() {
        let m = sender(None, "https://auth.example.com", "simple-api").unwrap();
        assert_eq!(m.to_string(), "simple-api <no-reply@auth.example.com>");
        let m = sender(None, "http://127.0.0.1:5000", "simple-api").unwrap();
        assert_eq!(m.email.to_string(), "no-reply@localhost");
        let m = sender(Some("Ops <ops@example.com>"), "http://x", "s").unwrap();
        assert_eq!(m.email.to_string(), "ops@example.com");
        assert!(sender(Some("not an address"), "http://x", "s").is_err());
    }

    #[test]
    fn a_message_is_multipart_text_and_html() {
        let from = sender(None, "https://auth.example.com", "simple-api").unwrap();
        let raw = compose(
            &from,
            "ann@example.com",
            "Reset your password",
            "Your code:\n\n123456\n".into(),
            "<p>Your code: <b>123456</b></p>".into(),
        )
        .unwrap();
        let text = String::from_utf8(raw).unwrap();
        assert!(text.contains("Subject: Reset your password"));
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("text/plain") && text.contains("text/html"));
        assert!(text.contains("To: ann@example.com"));
        assert!(compose(&from, "nobody", "s", String::new(), String::new()).is_err());
    }

    #[tokio::test]
    async fn the_outbox_holds_whole_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let transport = Transport::new(None, dir.path()).unwrap();
        let from: Address = "no-reply@example.com".parse().unwrap();
        transport
            .deliver(&from, "ann@example.com", b"Subject: hi\r\n\r\nbody", "m1")
            .await
            .unwrap();
        let path = dir.path().join("outbox/m1.eml");
        assert_eq!(std::fs::read(&path).unwrap(), b"Subject: hi\r\n\r\nbody");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
