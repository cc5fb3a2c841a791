//! TEST FIXTURE: a message-transform step in Rust without settings: drops payloads containing
//! `"heartbeat"`, and adds `"tagged":true` to every other JSON object payload.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: "../../../wit",
    world: "message-transform-component",
    generate_all,
});

use exports::tributary::pipeline::message_transform::Guest;
use tributary::pipeline::types::{Message, Rejection};

struct Component;

impl Guest for Component {
    fn prepare() -> Result<(), String> {
        Ok(())
    }

    fn apply(mut msg: Message) -> Result<Option<Message>, Rejection> {
        let text = String::from_utf8_lossy(&msg.data).into_owned();
        if text.contains("\"heartbeat\"") {
            return Ok(None);
        }
        let Some(body) = text.trim().strip_prefix('{') else {
            return Err(Rejection { reason: "udf-error".into(), message: "tag-step: not a JSON object".into() });
        };
        let sep = if body.trim_start().starts_with('}') { "" } else { "," };
        msg.data = format!("{{\"tagged\":true{sep}{body}").into_bytes();
        Ok(Some(msg))
    }
}

export!(Component);
