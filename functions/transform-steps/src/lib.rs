//! `transform` = the imported message-transform step, then the imported transform: what the Tributary
//! host's `transform` import does for `[[message_transforms]]`, as a component, for hosts that do not
//! (Spin, `wasmtime serve`). Compose it: `wac plug transform-steps.wasm --plug js-udf.wasm --plug
//! transform.wasm`, then plug the result into a function. A step that drops the message makes it no
//! rows; a step's rejection (`udf-*`) is the transform's, dead-lettered with stage `udf`. Traps and
//! deadlines are the host's: under these hosts a looping step fails the push (Pub/Sub redelivers).

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: "../../wit",
    world: "transform-with-steps",
});

use exports::tributary::pipeline::transform::Guest;
use tributary::pipeline::types::{Message, Rejection, Row};
use tributary::pipeline::{message_transform, transform};

struct Component;

impl Guest for Component {
    fn transform(msg: Message) -> Result<Vec<Row>, Rejection> {
        match message_transform::apply(&msg)? {
            Some(kept) => transform::transform(&kept),
            None => Ok(Vec::new()),
        }
    }
}

export!(Component);
