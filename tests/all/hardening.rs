//! The public surface as an outsider meets it, against the real binary: no anonymous write path on
//! the public listener, forged insert ids cannot hide a real message, bodies bounded while they
//! stream (chunked included), slow clients never starve real pushes, the internal listener refuses
//! web pages and rebinding names, `/query` is read-only, and `/healthz` tells the truth when the
//! warehouse writer is gone.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Host, envelope, http_raw, temp_dir, wait_for};

fn event(id: &str) -> Vec<u8> {
    json!({"event_id": id, "event_type": "page_view", "user_id": "u1", "timestamp": "2024-01-01T10:00:00Z"})
        .to_string()
        .into_bytes()
}

async fn push(host: &Host, id: &str) -> u16 {
    let body = envelope(id, &event(id), "projects/p/subscriptions/s").into_bytes();
    http_raw("POST", &host.push_url(), body, &[("content-type", "application/json")]).await.0
}

/// Reads one HTTP/1 response's status line from a raw connection (or `None` when it was closed).
async fn status_line(stream: &mut TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().filter(|l| !l.is_empty()).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_anonymous_writes_and_forged_insert_ids_hide_nothing() {
    let host = Host::start(&temp_dir("hardening-writes"), "").await;
    let rows = json!({"rows": [{"insertId": "m-real", "json": {"event_id": "forged", "event_type": "x",
        "timestamp": "2024-01-01T10:00:00Z", "user_id": "attacker"}}]})
    .to_string()
    .into_bytes();
    let path = "/bigquery/v2/projects/p/datasets/d/tables/streaming_events/insertAll";

    // The public listener has no insertAll and no tick routes at all.
    let (status, text) =
        http_raw("POST", &format!("http://{}{path}", host.addr), rows.clone(), &[("content-type", "application/json")])
            .await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("internal listener"), "{text}");
    let (status, _) = http_raw("POST", &format!("http://{}/push/anomaly/tick", host.addr), Vec::new(), &[]).await;
    assert_eq!(status, 404);

    // On the internal listener: a browser form post is refused, and so is any request a web page sends.
    let internal = format!("http://{}{path}", host.admin);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(http_raw("POST", &internal, rows.clone(), &form).await.0, 415);
    let page = [("content-type", "application/json"), ("origin", "http://127.0.0.1:8000")];
    assert_eq!(http_raw("POST", &internal, rows.clone(), &page).await.0, 403);
    let rebound = [("content-type", "application/json"), ("host", "attacker.example:3001")];
    assert_eq!(http_raw("POST", &internal, rows.clone(), &rebound).await.0, 403);

    // A local tool writes with insert id "m-real"; then the real message "m-real" arrives: it lands.
    let (status, text) = http_raw("POST", &internal, rows, &[("content-type", "application/json")]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(push(&host, "m-real").await, 204);
    assert_eq!(host.count("SELECT count(*) FROM streaming_events WHERE event_id = 'm-real'").await, 1);
    assert_eq!(host.count("SELECT count(*) FROM streaming_events WHERE event_id = 'forged'").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_bounded_while_they_stream_and_slow_clients_starve_nothing() {
    let host = Host::start(
        &temp_dir("hardening-bodies"),
        "[guest]\nmax_instances = 16\n[http]\nheader_read_timeout_ms = 2000\nbody_read_timeout_ms = 3000\n",
    )
    .await;

    // Declared too big: refused before a byte of it is read.
    let mut s = TcpStream::connect(host.addr).await.expect("connect");
    let head = format!("POST /push/events HTTP/1.1\r\nhost: {}\r\ncontent-length: 17000000\r\n\r\n", host.addr);
    s.write_all(head.as_bytes()).await.expect("write");
    assert!(status_line(&mut s).await.is_some_and(|l| l.contains(" 413 ")), "declared length over the limit");

    // Chunked, with no length: cut off at the limit, answered 413 (not a guest running out of memory).
    let mut s = TcpStream::connect(host.addr).await.expect("connect");
    let head = format!("POST /push/events HTTP/1.1\r\nhost: {}\r\ntransfer-encoding: chunked\r\n\r\n", host.addr);
    s.write_all(head.as_bytes()).await.expect("write");
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..20 {
        let framed = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk.clone(), b"\r\n".to_vec()].concat();
        if s.write_all(&framed).await.is_err() {
            break; // the host stopped reading: its answer is waiting
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    assert!(status_line(&mut s).await.is_some_and(|l| l.contains(" 413 ")), "chunked body over the limit");

    // 300 connections with half-sent headers and 40 pushes whose bodies trickle in: real pushes go on.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(host.addr).await.expect("connect");
        s.write_all(b"POST /push/events HTTP/1.1\r\nhost: x\r\n").await.expect("write");
        slow.push(s);
    }
    let mut trickling = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(host.addr).await.expect("connect");
        let head = format!("POST /push/events HTTP/1.1\r\nhost: {}\r\ncontent-length: 1000\r\n\r\n{{", host.addr);
        s.write_all(head.as_bytes()).await.expect("write");
        trickling.push(s);
    }
    let started = Instant::now();
    for i in 0..50 {
        let status = push(&host, &format!("real-{i}")).await;
        assert_eq!(status, 204, "push {i} while slow clients hold connections");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "pushes were held up: {:?}", started.elapsed());
    assert_eq!(host.count("SELECT count(*) FROM streaming_events WHERE event_id LIKE 'real-%'").await, 50);

    // The trickling bodies time out (408), the half-sent headers are dropped.
    for mut s in trickling {
        let line = status_line(&mut s).await;
        assert!(line.as_deref().is_some_and(|l| l.contains(" 408 ")), "slow body: {line:?}");
    }
    for mut s in slow.into_iter().take(20) {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(_)) | Ok(Err(_))), "a half-sent request is closed by the header timeout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_connection_is_read_only_and_health_follows_the_writer() {
    let host = Host::start(&temp_dir("hardening-admin"), "[testing]\nfault_injection = true\n").await;
    assert_eq!(push(&host, "before").await, 204);
    let query = format!("http://{}/query", host.admin);
    for write in [
        "DROP TABLE streaming_events",
        "DELETE FROM streaming_events",
        "COPY streaming_events TO '/tmp/tributary-stolen.csv'",
        "SELECT * FROM read_text('/etc/hostname')",
    ] {
        let (status, text) = http_raw("POST", &query, write.as_bytes().to_vec(), &[]).await;
        assert_eq!(status, 400, "{write}: {text}");
    }
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 1, "nothing was changed");

    let health = format!("http://{}/healthz", host.addr);
    assert_eq!(http_raw("GET", &health, Vec::new(), &[]).await.0, 200);
    let faults = format!("http://{}/faults/sink", host.admin);
    assert_eq!(http_raw("PUT", &faults, b"crash".to_vec(), &[]).await.0, 200);
    let status = push(&host, "after").await;
    assert!(status >= 500, "a push the dead writer never committed is not acked: {status}");
    wait_for("/healthz to report the dead writer", Duration::from_secs(10), || async {
        (http_raw("GET", &health, Vec::new(), &[]).await.0 == 503).then_some(())
    })
    .await;
    assert!(host.log_text().contains("FAULT INJECTION"), "the crash is the injected one");
}

/// Messages that would loop or vanish end as they should: a push whose state key is over the store's
/// limit is dead-lettered (not 503 forever); a 9 MB poison payload is dead-lettered truncated, with
/// its full size and SHA-256; two publishes of one payload without metadata are two rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_limits_big_poison_and_identical_payloads_neither_loop_nor_vanish() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let host = Host::start(&temp_dir("hardening-poison"), "").await;
    let json = [("content-type", "application/json")];

    // `sensor/<id>` is over `state.max_key_bytes` (1024): the reading can never be judged.
    let huge_id = "s".repeat(2_000);
    let reading = json!({"sensor_id": huge_id, "sensor_type": "temperature", "location": "hall",
        "timestamp": "2024-01-01T10:00:00Z", "value": 21.5})
    .to_string();
    let body = envelope("huge-key", reading.as_bytes(), "projects/p/subscriptions/sensors").into_bytes();
    let sensors = format!("http://{}/push/sensors", host.addr);
    for delivery in 0..2 {
        let (status, text) = http_raw("POST", &sensors, body.clone(), &json).await;
        assert_eq!(status, 200, "delivery {delivery}: acked as a dead letter: {text}");
        assert!(text.contains("state-limit"), "{text}");
    }
    let dead =
        host.sql("SELECT stage, error_reason, error_message FROM dead_letter WHERE message_id = 'huge-key'").await;
    assert_eq!(dead.len(), 1, "one dead letter for both deliveries: {dead:?}");
    assert_eq!((dead[0]["stage"].as_str(), dead[0]["error_reason"].as_str()), (Some("state"), Some("state-limit")));
    assert!(dead[0]["error_message"].as_str().is_some_and(|m| m.contains("max_key_bytes")), "{dead:?}");

    // 9 MB that is not JSON: the dead letter keeps the first MiB, the size and the digest.
    let data: Vec<u8> = (0..9_000_000u32).map(|i| b"poison "[i as usize % 7]).collect();
    let body = envelope("big-poison", &data, "projects/p/subscriptions/events").into_bytes();
    let (status, text) = http_raw("POST", &host.push_url(), body, &json).await;
    assert_eq!(status, 200, "{text}");
    let dead = host
        .sql(
            "SELECT payload, length(payload_text) AS text_bytes, payload_bytes, payload_sha256, payload_truncated, \
             error_reason FROM dead_letter WHERE message_id = 'big-poison'",
        )
        .await;
    assert_eq!(dead.len(), 1);
    let kept = base64::engine::general_purpose::STANDARD.decode(dead[0]["payload"].as_str().expect("payload"));
    assert_eq!(kept.expect("base64"), data[..1 << 20]);
    assert_eq!(dead[0]["text_bytes"], 1 << 20);
    assert_eq!(dead[0]["payload_bytes"], 9_000_000);
    assert_eq!(dead[0]["payload_sha256"], hex::encode(sha2::Sha256::digest(&data)));
    assert_eq!(
        (dead[0]["payload_truncated"].as_bool(), dead[0]["error_reason"].as_str()),
        (Some(true), Some("not-json"))
    );

    // No wrapper, no metadata: nothing identifies a redelivery, so identical payloads are distinct messages.
    let same = json!({"event_type": "page_view", "user_id": "twice", "timestamp": "2024-01-01T10:00:00Z"}).to_string();
    for _ in 0..2 {
        let (status, text) = http_raw("POST", &host.push_url(), same.clone().into_bytes(), &json).await;
        assert_eq!(status, 204, "{text}");
    }
    assert_eq!(host.count("SELECT count(*) FROM streaming_events WHERE user_id = 'twice'").await, 2);
}
