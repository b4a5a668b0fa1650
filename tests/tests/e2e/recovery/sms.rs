//! SMS steps through a Twilio-compatible API.

use chrono::Duration;
use ocart_tests::Kind;
use serde_json::json;

use super::{capture, events_of, Manual};

/// A Twilio-compatible SMS API for tests: records each request (path, headers, form body) and
/// answers 201 with a message resource, or `status` when set.
async fn sms_api(
    status: u16,
) -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>> = Default::default();
    let store = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(socket);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut headers = String::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).await.unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        headers.push_str(&line);
                    }
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).await.unwrap();
                    store.lock().unwrap().push((
                        request_line.trim().to_owned(),
                        headers,
                        String::from_utf8(body).unwrap(),
                    ));
                    let reply = if status == 201 {
                        r#"{"sid":"SM1","status":"queued"}"#
                    } else {
                        r#"{"code":21211,"message":"The 'To' number is not a valid phone number."}"#
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        reply.len()
                    );
                    let socket = reader.get_mut();
                    socket.write_all(head.as_bytes()).await.unwrap();
                    socket.write_all(reply.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (port, seen)
}

/// An SMS step goes to a Twilio-compatible API as a form POST with basic auth, with the
/// unsubscribe instruction appended; a 4xx answer is recorded as a failed attempt.
async fn sms_step(status: u16) {
    let (port, seen) = sms_api(status).await;
    let m = Manual::start(Kind::Sqlite, |c| {
        c.sms.transport = "twilio".into();
        c.sms.base_url = format!("http://127.0.0.1:{port}");
        c.sms.account_sid = "AC123".into();
        c.sms.auth_token = "secret-token".into();
        c.sms.from = "+15005550006".into();
    })
    .await;
    let app = &m.app;
    m.project().await;
    let resp = app
        .client
        .delete(app.url("/ocart/v1/recovery/sequences/default"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    m.project().await;
    let (status_code, body) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&app.admin),
            &json!({"name": "SMS", "trigger_type": "cart_abandoned", "steps": [
                {"channel": "sms", "delay_min": 15, "template": "sms_1"}]}),
        )
        .await;
    assert_eq!(status_code, 201, "{body}");
    m.project().await;
    let cart = capture(app, "sam@example.com").await;
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(15));
    let report = m.dispatch().await;
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (line, headers, form) = &requests[0];
    assert_eq!(
        line,
        "POST /2010-04-01/Accounts/AC123/Messages.json HTTP/1.1"
    );
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("AC123:secret-token");
    assert!(
        headers.to_ascii_lowercase().contains(&format!(
            "authorization: basic {}",
            basic.to_ascii_lowercase()
        )),
        "{headers}"
    );
    assert!(
        headers.contains("application/x-www-form-urlencoded"),
        "{headers}"
    );
    let fields: std::collections::HashMap<String, String> =
        url_decode_form(form).into_iter().collect();
    assert_eq!(fields["To"], "+14155550123");
    assert_eq!(fields["From"], "+15005550006");
    assert!(fields["Body"].contains("Mug Store"), "{form}");
    assert!(
        fields["Body"].contains("Reply STOP to opt out: https://ocart.shop.test/u/"),
        "{form}"
    );
    let run = m.only_run(&cart).await;
    if status == 201 {
        assert_eq!(report.sent, 1);
        assert_eq!(run["status"], "stopped");
        assert_eq!(run["stop_reason"], "completed");
    } else {
        assert_eq!(report.failed, 1);
        let failed = events_of(app, "recovery/failed").await;
        assert!(
            failed[0]["error"].as_str().unwrap().contains("400"),
            "{failed:?}"
        );
        assert_eq!(run["status"], "pending");
    }
}

fn url_decode_form(form: &str) -> Vec<(String, String)> {
    form.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(raw: &str) -> String {
    let bytes = raw.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn an_sms_step_goes_to_a_twilio_compatible_api() {
    sms_step(201).await;
}

#[tokio::test]
async fn a_refused_sms_is_recorded_as_a_failed_attempt() {
    sms_step(400).await;
}
