//! Golden files: `fixtures/NAME.json` (a message and the processing time) → `golden/NAME.json` (the
//! rows, or the rejection). `UPDATE_GOLDEN=1 cargo test -p normalize` rewrites the golden files;
//! review the diff before committing it.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tributary_model::Message;

#[derive(Deserialize)]
struct Fixture {
    message: Message,
    now: DateTime<Utc>,
}

fn render(fixture: &Fixture) -> Value {
    match normalize::normalize(&fixture.message, fixture.now) {
        Ok(rows) => json!({
            "rows": rows.iter().map(|r| json!({
                "table": r.table,
                "insert_id": r.insert_id,
                "json": serde_json::from_str::<Value>(&r.json).expect("rows are JSON"),
            })).collect::<Vec<_>>()
        }),
        Err(rejection) => json!({ "rejection": { "reason": rejection.reason, "message": rejection.message } }),
    }
}

#[test]
fn fixtures_match_golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut fixtures: Vec<_> = std::fs::read_dir(root.join("fixtures"))
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 15, "expected the fixture set, found {}", fixtures.len());
    let mut mismatches = Vec::new();
    for path in fixtures {
        let name = path.file_name().expect("name");
        let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let actual = serde_json::to_string_pretty(&render(&fixture)).expect("json") + "\n";
        let golden = root.join("golden").join(name);
        if update {
            std::fs::write(&golden, &actual).expect("write golden");
        } else {
            let expected =
                std::fs::read_to_string(&golden).unwrap_or_else(|_| format!("<missing {}>", golden.display()));
            if expected != actual {
                mismatches.push(format!("{}:\n--- expected\n{expected}\n+++ actual\n{actual}", name.to_string_lossy()));
            }
        }
    }
    assert!(mismatches.is_empty(), "golden mismatches (UPDATE_GOLDEN=1 to accept):\n{}", mismatches.join("\n"));
}
