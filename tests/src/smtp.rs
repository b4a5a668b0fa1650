//! A fake SMTP server that keeps every message it accepts.

use std::sync::Arc;

use ocart_api::Config;

/// An SMTP server for tests: speaks enough of RFC 5321 (EHLO/HELO, MAIL, RCPT, DATA with
/// dot-unstuffing, RSET, NOOP, QUIT) for lettre, and keeps every message it accepts.
pub struct SmtpSink {
    pub port: u16,
    messages: Arc<std::sync::Mutex<Vec<SinkMessage>>>,
    /// Refuse the next `n` DATA commands with a 451 (a transient failure).
    pub fail_next: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// A message the sink accepted.
#[derive(Debug, Clone)]
pub struct SinkMessage {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl SinkMessage {
    /// The first value of a header (unfolded), case-insensitive.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

impl SmtpSink {
    pub async fn start() -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind smtp");
        let port = listener.local_addr().expect("addr").port();
        let messages: Arc<std::sync::Mutex<Vec<SinkMessage>>> = Arc::default();
        let fail_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (store, failing) = (messages.clone(), fail_next.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (store, failing) = (store.clone(), failing.clone());
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read);
                    let _ = write.write_all(b"220 sink.test ESMTP\r\n").await;
                    let (mut from, mut to) = (String::new(), Vec::new());
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let upper = line.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") {
                            b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
                        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
                            b"250 ok\r\n"
                        } else if upper.starts_with("MAIL FROM:") {
                            from = line[10..].trim().to_owned();
                            to.clear();
                            b"250 ok\r\n"
                        } else if upper.starts_with("RCPT TO:") {
                            to.push(line[8..].trim().to_owned());
                            b"250 ok\r\n"
                        } else if upper.starts_with("DATA") {
                            if failing
                                .fetch_update(
                                    std::sync::atomic::Ordering::SeqCst,
                                    std::sync::atomic::Ordering::SeqCst,
                                    |n| n.checked_sub(1),
                                )
                                .is_ok()
                            {
                                b"451 4.3.0 try again later\r\n"
                            } else {
                                let _ = write.write_all(b"354 go ahead\r\n").await;
                                let mut data = String::new();
                                loop {
                                    line.clear();
                                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                                        return;
                                    }
                                    if line == ".\r\n" {
                                        break;
                                    }
                                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                                    data.push_str(unstuffed);
                                }
                                store.lock().unwrap().push(SinkMessage {
                                    from: from.clone(),
                                    to: to.clone(),
                                    data,
                                });
                                b"250 2.0.0 queued\r\n"
                            }
                        } else if upper.starts_with("RSET") {
                            from.clear();
                            to.clear();
                            b"250 ok\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"502 5.5.2 not implemented\r\n"
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            port,
            messages,
            fail_next,
            task,
        }
    }

    pub fn messages(&self) -> Vec<SinkMessage> {
        self.messages.lock().unwrap().clone()
    }

    /// Points `config` at this sink (plain SMTP, no auth).
    pub fn configure(&self, config: &mut Config) {
        config.email.transport = "smtp".into();
        config.email.smtp.host = "127.0.0.1".into();
        config.email.smtp.port = self.port;
        config.email.smtp.tls = "none".into();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}
