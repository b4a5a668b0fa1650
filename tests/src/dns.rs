//! A fake authoritative DNS server answering TXT queries.

use std::sync::Arc;

/// An authoritative DNS server for tests (UDP): answers TXT queries from its table, NXDOMAIN
/// for names it does not know. Real DNS messages (hickory-proto), so resolvers talk to it as to
/// any name server.
pub struct DnsServer {
    pub addr: std::net::SocketAddr,
    records: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    pub async fn start() -> Self {
        use hickory_proto::op::{Message, ResponseCode};
        use hickory_proto::rr::rdata::TXT;
        use hickory_proto::rr::{Name, RData, Record, RecordType};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>> =
            Default::default();
        let table = records.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                reply.metadata.authoritative = true;
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                let mut known = false;
                for q in &query.queries {
                    reply.add_query(q.clone());
                    let name = q
                        .name()
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase();
                    if let Some(txts) = table.lock().unwrap().get(&name) {
                        known = true;
                        if q.query_type() == RecordType::TXT {
                            for txt in txts {
                                // Long values are split into 255-byte character-strings.
                                let parts: Vec<String> = txt
                                    .as_bytes()
                                    .chunks(255)
                                    .map(|c| String::from_utf8_lossy(c).into_owned())
                                    .collect();
                                reply.add_answer(Record::from_rdata(
                                    Name::from_ascii(format!("{name}.")).unwrap(),
                                    60,
                                    RData::TXT(TXT::new(parts)),
                                ));
                            }
                        }
                    }
                }
                if !known {
                    reply.metadata.response_code = ResponseCode::NXDomain;
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Self {
            addr,
            records,
            task,
        }
    }

    /// Publishes a TXT record at `name`.
    pub fn txt(&self, name: &str, value: &str) {
        self.records
            .lock()
            .unwrap()
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.to_owned());
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
