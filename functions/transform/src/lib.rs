//! The default transform component: Pub/Sub events → `streaming_events` rows, sensor readings →
//! `sensor_readings` rows.
//!
//! Glue only: the logic is the `normalize` crate (functions/normalize), which compiles and is tested
//! natively and which the pipeline adapter and the host's native baseline link too.

#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "wit-bindgen generates the canonical-ABI glue")]
mod component {
    use tributary_model as model;

    wit_bindgen::generate!({
        path: "../../wit",
        world: "transform-component",
    });

    use exports::tributary::pipeline::transform::{Guest, Rejection};
    use tributary::pipeline::types::{Message, Row};

    struct Component;

    impl Guest for Component {
        fn transform(msg: Message) -> Result<Vec<Row>, Rejection> {
            let msg = model::Message {
                id: msg.id,
                data: msg.data,
                attributes: msg.attributes,
                publish_time: msg.publish_time,
                ordering_key: msg.ordering_key,
                subscription: msg.subscription,
                delivery_attempt: msg.delivery_attempt,
            };
            match normalize::normalize(&msg, chrono::Utc::now()) {
                Ok(rows) => {
                    Ok(rows.into_iter().map(|r| Row { table: r.table, insert_id: r.insert_id, json: r.json }).collect())
                }
                Err(e) => Err(Rejection { reason: e.reason, message: e.message }),
            }
        }
    }

    export!(Component);
}
