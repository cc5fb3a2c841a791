//! TEST FIXTURE, never deployed: a transform component that misbehaves on request, to prove that a
//! trapping, looping or memory-hungry guest fails only its own push.
//!
//! Payload `trap` panics (a wasm trap), `loop` spins forever (stopped by the host's epoch deadline),
//! `oom` allocates until the host's memory limit refuses; `row:{json}` becomes exactly that row of
//! `streaming_events` (a user transform emitting fields or types the table does not expect); anything
//! else becomes a minimal event row.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transform-component",
});

use exports::tributary::pipeline::transform::{Guest, Rejection};
use tributary::pipeline::types::{Message, Row};

struct Chaos;

impl Guest for Chaos {
    fn transform(msg: Message) -> Result<Vec<Row>, Rejection> {
        match msg.data.as_slice() {
            b"trap" => panic!("chaos-transform: trap requested"),
            b"loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            b"oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            data if data.starts_with(b"row:") => Ok(vec![Row {
                table: "streaming_events".into(),
                insert_id: msg.id.clone(),
                json: String::from_utf8_lossy(&data[4..]).into_owned(),
            }]),
            _ => Ok(vec![Row {
                table: "streaming_events".into(),
                insert_id: msg.id.clone(),
                json: format!(
                    r#"{{"event_id":"{id}","user_id":"chaos","event_type":"chaos_ok","timestamp":"2024-01-01T00:00:00Z","message_id":"{id}","properties":{{}}}}"#,
                    id = msg.id
                ),
            }]),
        }
    }
}

export!(Chaos);
