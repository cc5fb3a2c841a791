//! The conversions between a function's `wit-bindgen` records and the model's, which every function's
//! `lib.rs` needs and cannot share as code (each component generates its own types). One macro writes
//! them into the calling crate: [`import_glue!`](crate::import_glue).

/// Writes `transform_import`, `sink_write` and `sink_upsert`: the `transform` and `sink` imports of the
/// bindings generated at `$pipeline` (e.g. `tributary::pipeline`), with the model's records.
#[macro_export]
macro_rules! import_glue {
    ($($pipeline:ident)::+) => {
        /// The `transform` import, with the model's records.
        #[allow(dead_code)]
        fn transform_import(
            msg: &::tributary_model::Message,
        ) -> Result<Vec<::tributary_model::Row>, ::tributary_model::Rejection> {
            use $($pipeline)::+::{transform, types};
            let wit_msg = types::Message {
                id: msg.id.clone(),
                data: msg.data.clone(),
                attributes: msg.attributes.clone(),
                publish_time: msg.publish_time.clone(),
                ordering_key: msg.ordering_key.clone(),
                subscription: msg.subscription.clone(),
                delivery_attempt: msg.delivery_attempt,
            };
            match transform::transform(&wit_msg) {
                Ok(rows) => Ok(rows
                    .into_iter()
                    .map(|r| ::tributary_model::Row { table: r.table, insert_id: r.insert_id, json: r.json })
                    .collect()),
                Err(r) => Err(::tributary_model::Rejection { reason: r.reason, message: r.message }),
            }
        }

        fn rows_to_wit(rows: Vec<::tributary_model::Row>) -> Vec<$($pipeline)::+::types::Row> {
            rows.into_iter()
                .map(|r| $($pipeline)::+::types::Row { table: r.table, insert_id: r.insert_id, json: r.json })
                .collect()
        }

        fn outcome_from_wit(
            result: Result<Vec<$($pipeline)::+::types::RowError>, $($pipeline)::+::sink::WriteError>,
        ) -> ::tributary_model::WriteOutcome {
            use $($pipeline)::+::sink::WriteError;
            match result {
                Ok(refused) => Ok(refused
                    .into_iter()
                    .map(|e| ::tributary_model::RowError {
                        index: e.index,
                        reason: e.reason,
                        location: e.location,
                        message: e.message,
                    })
                    .collect()),
                Err(WriteError::Overloaded(m)) => Err(::tributary_model::WriteError::Overloaded(m)),
                Err(WriteError::Unavailable(m)) => Err(::tributary_model::WriteError::Unavailable(m)),
            }
        }

        /// `sink.write`, with the model's records; returns once the rows are durable.
        #[allow(dead_code)]
        fn sink_write(rows: Vec<::tributary_model::Row>) -> ::tributary_model::WriteOutcome {
            outcome_from_wit($($pipeline)::+::sink::write(&rows_to_wit(rows)))
        }

        /// `sink.upsert`, with the model's records.
        #[allow(dead_code)]
        fn sink_upsert(rows: Vec<::tributary_model::Row>) -> ::tributary_model::WriteOutcome {
            outcome_from_wit($($pipeline)::+::sink::upsert(&rows_to_wit(rows)))
        }
    };
}
