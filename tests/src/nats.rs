//! NATS: the shared server's address, and a nats-server process of a test's own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The shared NATS server (JetStream on) for tests that do not need to stop it.
pub fn nats_url() -> String {
    std::env::var("OCART_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A nats-server process of the test's own, with JetStream, on a free port; killed on drop.
pub struct NatsServer {
    pub port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start() -> Self {
        let port = free_port();
        let store =
            std::env::temp_dir().join(format!("ocart-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store).expect("nats store dir");
        let mut server = Self {
            port,
            store,
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and store.
    pub fn restart(&mut self) {
        let bin = std::env::var("OCART_TEST_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(&bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}); install nats-server as the README says")
            });
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not start on port {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Everything on `subject` in the relay's JetStream stream `stream_name`, read with a new
/// durable pull consumer named `durable` (each message acknowledged), until a pull comes back
/// empty.
pub async fn pull_all(
    nats_url: &str,
    stream_name: &str,
    subject: &str,
    durable: &str,
) -> Vec<serde_json::Value> {
    use async_nats::jetstream::{self, consumer};
    use futures::StreamExt;
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to NATS");
    let stream = jetstream::new(client)
        .get_stream(stream_name)
        .await
        .expect("the relay created the stream");
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subject: subject.to_owned(),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let mut received = Vec::new();
    loop {
        let mut batch = consumer
            .batch()
            .max_messages(1_000)
            .expires(Duration::from_millis(1500))
            .messages()
            .await
            .expect("pull a batch");
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message.expect("message");
            received.push(serde_json::from_slice(&message.payload).expect("JSON"));
            message.ack().await.expect("ack");
            got += 1;
        }
        if got == 0 {
            return received;
        }
    }
}
