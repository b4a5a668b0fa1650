//! How messages leave OCart. Email is built once with lettre (multipart text + HTML, a
//! Message-ID from the message key, `List-Unsubscribe` with an HTTPS URL and a mailto, and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click` as RFC 8058 asks), optionally DKIM
//! signed, then either handed to an SMTP server or written as an `.eml` file to the outbox
//! folder (the embedded default, so `ocart serve` needs no mail server). SMS goes to a
//! Twilio-compatible REST API or, by default, to a log file in the outbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::dkim::DkimConfig;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::dkim::{DkimAlgorithm, DkimKey};

/// Email settings (`[email]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// `outbox` (files in `<data_dir>/outbox`) or `smtp`.
    pub transport: String,
    pub from: String,
    pub reply_to: Option<String>,
    /// Where `mailto:` unsubscribe requests go (default: the From address).
    pub unsubscribe_mailto: Option<String>,
    pub smtp: SmtpConfig,
    pub dkim: Option<DkimSettings>,
    /// The secret the mail provider signs its delivery webhooks with
    /// (`POST /ocart/v1/webhooks/deliverability`).
    pub webhook_secret: Option<SecretString>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            transport: "outbox".into(),
            from: "Store <store@example.com>".into(),
            reply_to: None,
            unsubscribe_mailto: None,
            smtp: SmtpConfig::default(),
            dkim: None,
            webhook_secret: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// `none`, `starttls` or `tls` (implicit TLS).
    pub tls: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub timeout_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 587,
            tls: "starttls".into(),
            username: None,
            password: None,
            timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    pub domain: String,
    pub selector: String,
    /// `rsa` (PKCS#1 or PKCS#8 PEM) or `ed25519` (PKCS#8 PEM, or the base64 of the 32-byte
    /// private key); see [`super::dkim`].
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
    /// The private key itself, or…
    pub private_key: Option<SecretString>,
    /// …a file holding it.
    pub private_key_file: Option<PathBuf>,
}

/// SMS settings (`[sms]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// `outbox` (a log file in `<data_dir>/outbox`) or `twilio` (any Twilio-compatible API).
    pub transport: String,
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: SecretString,
    pub from: String,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            transport: "outbox".into(),
            base_url: "https://api.twilio.com".into(),
            account_sid: String::new(),
            auth_token: SecretString::default(),
            from: String::new(),
        }
    }
}

/// An email ready to go.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    pub key: String,
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    pub unsubscribe_url: String,
}

/// An SMS ready to go (the unsubscribe instruction already appended).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutgoingSms {
    pub key: String,
    pub to: String,
    pub body: String,
}

/// Why a send did not happen. `permanent` failures (a refused recipient) are not retried by
/// the channel; the run's attempts still count them.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    pub permanent: bool,
}

impl SendError {
    fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }
}

/// Where emails go.
#[async_trait]
pub trait EmailTransport: Send + Sync {
    async fn send(&self, message: &Message, key: &str) -> Result<(), SendError>;
    /// Whether the message with this key was already handed over: `None` when the transport
    /// cannot tell (SMTP), so a resumed claim re-sends under the same Message-ID.
    async fn was_sent(&self, _key: &str) -> Option<bool> {
        None
    }
}

/// Where SMS go.
#[async_trait]
pub trait SmsTransport: Send + Sync {
    async fn send(&self, sms: &OutgoingSms) -> Result<(), SendError>;
    async fn was_sent(&self, _key: &str) -> Option<bool> {
        None
    }
}

/// Builds the email: lettre's multipart/alternative with the headers the bulk-sender rules
/// (Gmail, Yahoo) and RFC 8058 require, signed when a DKIM key is configured.
pub struct EmailBuilder {
    from: Mailbox,
    reply_to: Option<Mailbox>,
    unsubscribe_mailto: String,
    dkim: Option<DkimConfig>,
}

impl EmailBuilder {
    pub fn new(config: &EmailConfig) -> anyhow::Result<Self> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("email.from {:?} is not an address: {e}", config.from))?;
        let reply_to = match &config.reply_to {
            Some(r) => Some(
                r.parse()
                    .map_err(|e| anyhow::anyhow!("email.reply_to {r:?} is not an address: {e}"))?,
            ),
            None => None,
        };
        let unsubscribe_mailto = config
            .unsubscribe_mailto
            .clone()
            .unwrap_or_else(|| from.email.to_string());
        let dkim = match &config.dkim {
            Some(d) => Some(DkimKey::load(d)?.lettre_config(&d.selector, &d.domain)?),
            None => None,
        };
        Ok(Self {
            from,
            reply_to,
            unsubscribe_mailto,
            dkim,
        })
    }

    /// The domain of the From address (Message-IDs are made in it).
    pub fn domain(&self) -> String {
        self.from.email.domain().to_owned()
    }

    pub fn build(&self, email: &OutgoingEmail) -> Result<Message, SendError> {
        let to: Mailbox = email.to.parse().map_err(|e| SendError {
            message: format!("the recipient address is not valid: {e}"),
            permanent: true,
        })?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(format!("<{}@{}>", email.key, self.domain())))
            .date_now()
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!(
                    "<{}>, <mailto:{}?subject=unsubscribe>",
                    email.unsubscribe_url, self.unsubscribe_mailto
                ),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".into(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-OCart-Message"),
                email.key.clone(),
            ));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        // The multipart's Content-Type goes among the message's own headers (lettre's
        // `multipart()` writes it with the body, where its DKIM signer cannot see it), so the
        // signature covers it; the parts themselves are 7-bit (quoted-printable or base64).
        let cannot = |e: String| SendError {
            message: format!("the message cannot be built: {e}"),
            permanent: true,
        };
        let part = MultiPart::alternative_plain_html(email.text.clone(), email.html.clone());
        let content_type = part
            .headers()
            .get::<ContentType>()
            .ok_or_else(|| cannot("the multipart has no Content-Type".into()))?;
        let formatted = part.formatted();
        let body_at = formatted
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| cannot("the multipart has no body".into()))?;
        let body = &formatted[body_at + 4..];
        if !body.is_ascii() {
            return Err(cannot("the multipart is not 7-bit".into()));
        }
        let mut message = builder
            .header(lettre::message::header::MIME_VERSION_1_0)
            .header(content_type)
            .body(Body::dangerous_pre_encoded(
                body.to_vec(),
                ContentTransferEncoding::SevenBit,
            ))
            .map_err(|e| cannot(e.to_string()))?;
        // 7bit is a multipart's default; the parts carry their own encodings.
        message.headers_mut().remove::<ContentTransferEncoding>();
        if let Some(dkim) = &self.dkim {
            message.sign(dkim);
        }
        Ok(message)
    }
}

/// Emails as `.eml` files and SMS as lines of `sms.log`, under one folder.
pub struct Outbox {
    dir: PathBuf,
    sms_lock: tokio::sync::Mutex<()>,
}

impl Outbox {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sms_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn email_path(&self, key: &str) -> PathBuf {
        self.dir.join("email").join(format!("{key}.eml"))
    }

    fn sms_log(&self) -> PathBuf {
        self.dir.join("sms.log")
    }
}

/// A file name safe key (message keys are `<uuid>.s<n>.a<n>`; anything else is refused).
fn safe_key(key: &str) -> Result<&str, SendError> {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        && !key.starts_with('.')
    {
        Ok(key)
    } else {
        Err(SendError {
            message: format!("message key {key:?} is not file-safe"),
            permanent: true,
        })
    }
}

#[async_trait]
impl EmailTransport for Outbox {
    async fn send(&self, message: &Message, key: &str) -> Result<(), SendError> {
        let path = self.email_path(safe_key(key)?);
        let dir = path.parent().expect("outbox dir").to_path_buf();
        let bytes = message.formatted();
        let tmp = dir.join(format!(".{key}.tmp"));
        let write = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::rename(&tmp, &path).await
        };
        write
            .await
            .map_err(|e| SendError::transient(format!("writing {}: {e}", path.display())))
    }

    async fn was_sent(&self, key: &str) -> Option<bool> {
        let key = safe_key(key).ok()?;
        Some(tokio::fs::try_exists(self.email_path(key)).await.ok()?)
    }
}

#[async_trait]
impl SmsTransport for Outbox {
    async fn send(&self, sms: &OutgoingSms) -> Result<(), SendError> {
        use tokio::io::AsyncWriteExt;
        let _guard = self.sms_lock.lock().await;
        let line = serde_json::to_string(sms).map_err(|e| SendError::transient(e.to_string()))?;
        let write = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.sms_log())
                .await?;
            file.write_all(format!("{line}\n").as_bytes()).await?;
            file.sync_data().await
        };
        write
            .await
            .map_err(|e| SendError::transient(format!("writing the SMS log: {e}")))
    }

    async fn was_sent(&self, key: &str) -> Option<bool> {
        let text = match tokio::fs::read_to_string(self.sms_log()).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
            Err(_) => return None,
        };
        Some(
            text.lines().any(|line| {
                serde_json::from_str::<OutgoingSms>(line).is_ok_and(|sms| sms.key == key)
            }),
        )
    }
}

/// What the outbox holds, for `ocart recovery outbox`.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxEntry {
    pub channel: &'static str,
    pub key: String,
    pub to: String,
    pub subject: Option<String>,
    pub path: String,
}

impl Outbox {
    /// Every message in the outbox, emails first (by key), then SMS in the order sent.
    pub fn list(&self) -> std::io::Result<Vec<OutboxEntry>> {
        let mut entries = Vec::new();
        let email_dir = self.dir.join("email");
        if email_dir.exists() {
            let mut files: Vec<_> = std::fs::read_dir(&email_dir)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect();
            files.sort();
            for path in files {
                let text = std::fs::read_to_string(&path)?;
                let header = |name: &str| {
                    text.lines()
                        .take_while(|l| !l.is_empty())
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                };
                entries.push(OutboxEntry {
                    channel: "email",
                    key: path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    to: header("To").unwrap_or_default(),
                    subject: header("Subject"),
                    path: path.display().to_string(),
                });
            }
        }
        if let Ok(text) = std::fs::read_to_string(self.sms_log()) {
            for sms in text
                .lines()
                .filter_map(|l| serde_json::from_str::<OutgoingSms>(l).ok())
            {
                entries.push(OutboxEntry {
                    channel: "sms",
                    key: sms.key,
                    to: sms.to,
                    subject: None,
                    path: self.sms_log().display().to_string(),
                });
            }
        }
        Ok(entries)
    }
}

/// How the SMTP connection is secured.
enum SmtpTls {
    None,
    /// `STARTTLS` on the plain connection, required.
    StartTls(TlsParameters),
    /// Implicit TLS (SMTPS, usually port 465).
    Wrapper(TlsParameters),
}

/// Connections to the relay kept open between messages.
const SMTP_POOL: usize = 32;

/// A pooled connection idle for longer than this is checked with `NOOP` before it is used
/// (relays close idle sessions, usually after a minute or more).
const SMTP_CHECK_IDLE: Duration = Duration::from_secs(10);

/// An SMTP relay, through lettre's SMTP client, on connections OCart opens and pools itself
/// so it can switch Nagle's algorithm off (`TCP_NODELAY`). lettre 0.11 leaves it on, and it
/// writes the message body and the closing `.` separately: Nagle then holds the `.` until
/// the relay acknowledges the body, and the relay delays that acknowledgement (40 ms on
/// Linux), so every message waited 40 ms (measured: 44 ms per send, 299 messages/s with 16
/// at once; lettre's upstream fix is pull request 1159). Implicit TLS connections still come
/// from lettre, which does not expose their socket.
pub struct Smtp {
    host: String,
    port: u16,
    tls: SmtpTls,
    timeout: Duration,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, std::time::Instant)>>,
    slots: tokio::sync::Semaphore,
}

impl Smtp {
    pub fn new(config: &SmtpConfig) -> anyhow::Result<Self> {
        let tls = match config.tls.as_str() {
            "none" => SmtpTls::None,
            "starttls" => SmtpTls::StartTls(TlsParameters::new(config.host.clone())?),
            "tls" => SmtpTls::Wrapper(TlsParameters::new(config.host.clone())?),
            other => anyhow::bail!("email.smtp.tls {other:?}: use none, starttls or tls"),
        };
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            )),
            _ => None,
        };
        Ok(Self {
            host: config.host.clone(),
            port: config.port,
            tls,
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
            credentials,
            hello: ClientId::default(),
            idle: std::sync::Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(SMTP_POOL),
        })
    }

    /// A new session: connected, greeted, secured and authenticated.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        let mut conn = match &self.tls {
            SmtpTls::Wrapper(params) => {
                AsyncSmtpConnection::connect_tokio1(
                    (self.host.as_str(), self.port),
                    Some(self.timeout),
                    &self.hello,
                    Some(params.clone()),
                    None,
                )
                .await?
            }
            SmtpTls::None | SmtpTls::StartTls(_) => {
                let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(SmtpError::Io)?;
                stream.set_nodelay(true).map_err(SmtpError::Io)?;
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                        .await?;
                if let SmtpTls::StartTls(params) = &self.tls {
                    conn.starttls(params.clone(), &self.hello).await?;
                }
                conn
            }
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(conn)
    }

    /// A pooled session that still answers, else a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        loop {
            let parked = self.idle.lock().expect("SMTP pool").pop();
            let Some((mut conn, since)) = parked else {
                return self.connect().await;
            };
            if since.elapsed() < SMTP_CHECK_IDLE || conn.test_connected().await {
                return Ok(conn);
            }
            conn.abort().await;
        }
    }

    async fn deliver(&self, message: &Message) -> Result<(), SmtpError> {
        let mut conn = self.checkout().await?;
        let sent = conn.send(message.envelope(), &message.formatted()).await;
        if conn.has_broken() {
            conn.abort().await;
        } else {
            self.idle
                .lock()
                .expect("SMTP pool")
                .push((conn, std::time::Instant::now()));
        }
        sent.map(|_| ()).map_err(SmtpError::Smtp)
    }
}

#[derive(Debug, thiserror::Error)]
enum SmtpError {
    #[error("{0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("connecting: {0}")]
    Io(std::io::Error),
}

#[async_trait]
impl EmailTransport for Smtp {
    async fn send(&self, message: &Message, _key: &str) -> Result<(), SendError> {
        let _slot = self.slots.acquire().await.map_err(|_| SendError {
            message: "SMTP: the client is shutting down".into(),
            permanent: false,
        })?;
        match tokio::time::timeout(self.timeout, self.deliver(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(SendError {
                permanent: matches!(&err, SmtpError::Smtp(e) if e.is_permanent()),
                message: format!("SMTP: {err}"),
            }),
            Err(_) => Err(SendError {
                message: format!("SMTP: no answer within {} s", self.timeout.as_secs()),
                permanent: false,
            }),
        }
    }
}

/// A Twilio-compatible SMS API: `POST {base}/2010-04-01/Accounts/{sid}/Messages.json`, form
/// encoded `To`, `From`, `Body`, HTTP basic auth with the account SID and auth token.
pub struct TwilioSms {
    client: reqwest::Client,
    config: SmsConfig,
}

impl TwilioSms {
    pub fn new(config: &SmsConfig) -> anyhow::Result<Self> {
        if config.account_sid.is_empty()
            || config.auth_token.expose_secret().is_empty()
            || config.from.is_empty()
        {
            anyhow::bail!("sms.transport = \"twilio\" needs account_sid, auth_token and from");
        }
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()?,
            config: config.clone(),
        })
    }
}

#[async_trait]
impl SmsTransport for TwilioSms {
    async fn send(&self, sms: &OutgoingSms) -> Result<(), SendError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.config.base_url.trim_end_matches('/'),
            self.config.account_sid
        );
        let response = self
            .client
            .post(url)
            .basic_auth(
                &self.config.account_sid,
                Some(self.config.auth_token.expose_secret()),
            )
            .form(&[
                ("To", sms.to.as_str()),
                ("From", self.config.from.as_str()),
                ("Body", sms.body.as_str()),
            ])
            .send()
            .await
            .map_err(|e| SendError::transient(format!("SMS API: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(SendError {
            message: format!(
                "SMS API answered {status}: {}",
                body.chars().take(300).collect::<String>()
            ),
            // 4xx (bad number, unsubscribed at the carrier) will not work on a retry; 429 might.
            permanent: status.is_client_error() && status.as_u16() != 429,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message's Content-Type and MIME-Version sit among its own headers (where the DKIM
    /// signer sees them), once each, and the body is the multipart itself.
    #[test]
    fn the_multipart_headers_are_message_headers() {
        let config = EmailConfig {
            dkim: Some(DkimSettings {
                domain: "shop.test".into(),
                selector: "s1".into(),
                algorithm: DkimAlgorithm::Ed25519,
                private_key: Some("nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=".into()),
                private_key_file: None,
            }),
            ..EmailConfig::default()
        };
        let message = EmailBuilder::new(&config)
            .unwrap()
            .build(&OutgoingEmail {
                key: "k1".into(),
                to: "ann@example.com".into(),
                subject: "Your cart".into(),
                html: format!("<p>{}</p>", "é".repeat(200)),
                text: "x".repeat(300),
                unsubscribe_url: "https://shop.test/u/1".into(),
            })
            .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let count = |name: &str| head.lines().filter(|l| l.starts_with(name)).count();
        assert_eq!(count("Content-Type: multipart/alternative;"), 1, "{head}");
        assert_eq!(count("MIME-Version: 1.0"), 1, "{head}");
        assert_eq!(count("Content-Transfer-Encoding"), 0, "{head}");
        assert_eq!(count("DKIM-Signature"), 1, "{head}");
        assert!(body.starts_with("--"), "{body}");
        assert!(body.contains("Content-Type: text/html"), "{body}");
    }
}
