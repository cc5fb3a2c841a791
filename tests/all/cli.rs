//! `tributary sql`: through the running host, and on the file when no host runs.

use std::process::Command;

use crate::support::{Host, envelope, http_raw, temp_dir};

fn sql(host_admin: &str, data: &std::path::Path, query: &str, format: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["sql", query, "--format", format, "--admin", host_admin, "--data"])
        .arg(data)
        .output()
        .expect("running tributary sql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prints_tables_and_json_lines() {
    let data = temp_dir("cli");
    let mut host = Host::start(&data, "").await;
    for (id, kind) in [("a", "page_view"), ("b", "page_view"), ("c", "purchase")] {
        let payload = format!(r#"{{"user_id":"u","event_type":"{kind}","timestamp":"2024-01-01 10:00:00"}}"#);
        let (status, _) =
            http_raw("POST", &host.push_url(), envelope(id, payload.as_bytes(), "s").into_bytes(), &[]).await;
        assert_eq!(status, 204);
    }
    let admin = host.admin.to_string();
    let query = "SELECT event_type, count(*) AS n FROM streaming_events GROUP BY 1 ORDER BY 1";
    let (ok, out, err) = sql(&admin, &data, query, "json");
    assert!(ok, "{err}");
    assert_eq!(out, "{\"event_type\":\"page_view\",\"n\":2}\n{\"event_type\":\"purchase\",\"n\":1}\n");
    let (ok, out, err) = sql(&admin, &data, query, "table");
    assert!(ok, "{err}");
    assert_eq!(out, "event_type | n\n-----------+--\npage_view  | 2\npurchase   | 1\n(2 rows)\n");
    let (ok, _, err) = sql(&admin, &data, "SELECT nope FROM streaming_events", "json");
    assert!(!ok && err.contains("nope"), "{err}");

    // With the host stopped, the file is read directly.
    host.stop();
    let (ok, out, err) = sql(&admin, &data, "SELECT count(*) AS n FROM streaming_events", "json");
    assert!(ok, "{err}");
    assert_eq!(out, "{\"n\":3}\n");
}
