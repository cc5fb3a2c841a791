//! A new user's first run: every warehouse backend starts from a data directory that does not exist
//! yet, the log is plain text when it is not a terminal, and the startup line names every route.

use std::time::Duration;

use tributary::functions::{self, Kind};

use crate::support::{BigQueryEmulator, Host, envelope, http_raw, temp_dir, wait_for};

const EVENT: &[u8] = br#"{"user_id":"u","event_type":"page_view","timestamp":"2024-01-01 10:00:00"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_starts_from_an_empty_data_directory() {
    let bq = BigQueryEmulator::start("first-run").await;
    let backends = [
        ("embedded", String::new()),
        ("bigquery-insertall", bq.host_config("bigquery-insertall", "")),
        ("bigquery-write-default", bq.host_config("bigquery-write", "write_stream = \"default\"\n")),
        ("bigquery-write-committed", bq.host_config("bigquery-write", "write_stream = \"committed\"\n")),
    ];
    for (name, config) in backends {
        let dir = temp_dir(&format!("first-run-{name}"));
        let data = dir.join("not/there/yet");
        assert!(!data.exists());
        let (addr, admin) = Host::free_addrs();
        let host = Host::start_in(&dir, &data, addr, admin, &config).await;
        assert!(data.is_dir(), "{name}: the host creates its data directory");
        let id = format!("first-{name}");
        let (status, body) = http_raw("POST", &host.push_url(), envelope(&id, EVENT, "s").into_bytes(), &[]).await;
        assert_eq!(status, 204, "{name}: {body}");
        let query = format!("SELECT count(*) FROM streaming_events WHERE message_id = '{id}'");
        let landed = if name == "embedded" {
            host.count(&query).await
        } else {
            let bq_query = query.replace("FROM streaming_events", "FROM tributary.streaming_events");
            wait_for(&format!("{name}: the row in BigQuery"), Duration::from_secs(30), || async {
                Some(bq.count(&bq_query)).filter(|n| *n > 0)
            })
            .await
        };
        assert_eq!(landed, 1, "{name}");

        let log = host.log_text();
        assert!(!log.contains('\u{1b}'), "{name}: colour codes in a log file:\n{log}");
        let serving = log.lines().find(|l| l.contains("serving:")).unwrap_or_else(|| panic!("no startup line:\n{log}"));
        for route in functions::routes(Kind::Push).chain(functions::routes(Kind::Tick)) {
            assert!(serving.contains(route), "{name}: the startup line does not name {route}: {serving}");
        }
    }
}
