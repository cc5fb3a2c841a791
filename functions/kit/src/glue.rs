//! The glue between a function's `wit-bindgen` bindings and the kit, which every function's `lib.rs`
//! needs and cannot share as code (each component generates its own types). Macros write it into the
//! calling crate: [`import_glue!`](crate::import_glue) (the `transform` and `sink` imports as the
//! kit's traits) and [`settings_glue!`](crate::settings_glue) (the settings, read once per instance).

/// Writes `struct Imports`, implementing [`Transformer`](crate::contract::Transformer),
/// [`Sink`](crate::contract::Sink) and [`Upserter`](crate::contract::Upserter) with the `transform` and
/// `sink` imports of the bindings generated at `$pipeline` (e.g. `tributary::pipeline`). The transform
/// is the built-in one, run in this instance, when the request allows it
/// ([`builtin_transform`](crate::serve::builtin_transform)).
#[macro_export]
macro_rules! import_glue {
    ($($pipeline:ident)::+) => {
        /// This component's imports, as the kit's traits.
        #[derive(Debug, Clone, Copy)]
        struct Imports;

        impl $crate::contract::Transformer for Imports {
            fn transform(
                &self,
                msg: &::tributary_model::Message,
            ) -> Result<Vec<::tributary_model::Row>, ::tributary_model::Rejection> {
                use $($pipeline)::+::{transform, types};
                if let Some(rows) = $crate::serve::builtin_transform(msg) {
                    return rows;
                }
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

        // The imports are synchronous: the instance waits while the host group-commits.
        impl $crate::contract::Sink for Imports {
            fn write(
                &self,
                rows: Vec<::tributary_model::Row>,
            ) -> impl ::std::future::Future<Output = ::tributary_model::WriteOutcome> {
                ::std::future::ready(outcome_from_wit($($pipeline)::+::sink::write(&rows_to_wit(rows))))
            }
        }

        impl $crate::contract::Upserter for Imports {
            fn upsert(
                &self,
                rows: Vec<::tributary_model::Row>,
            ) -> impl ::std::future::Future<Output = ::tributary_model::WriteOutcome> {
                ::std::future::ready(outcome_from_wit($($pipeline)::+::sink::upsert(&rows_to_wit(rows))))
            }
        }
    };
}

/// Writes `fn settings() -> Result<&'static $settings, String>`: the function's `wasi:config/store`
/// pairs (the bindings generated in the calling crate) parsed by `$settings::from_pairs`, once per
/// instance (they are fixed for a deployment's lifetime).
#[macro_export]
macro_rules! settings_glue {
    ($settings:ty) => {
        fn settings() -> Result<&'static $settings, String> {
            static SETTINGS: ::std::sync::OnceLock<Result<$settings, String>> = ::std::sync::OnceLock::new();
            let read = || wasi::config::store::get_all().map_err(|e| format!("reading the settings: {e:?}"));
            $crate::settings::once(&SETTINGS, read, <$settings>::from_pairs)
        }
    };
}

/// Writes both of a function's entry points over one `route`, `settings` and `run` (the arguments of
/// [`serve`](crate::serve::serve)): the `wasi:http/handler` export (spin-sdk's `http_service`, for Spin
/// and `wasmtime serve`) and the `direct-handler` export the Tributary host calls, with the bindings
/// generated in the calling crate (`exports::tributary::pipeline`) and their `export!`.
#[macro_export]
macro_rules! serve_glue {
    ($route:expr, $settings:expr, $run:expr) => {
        #[::spin_sdk::http_service]
        async fn handle(req: ::spin_sdk::http::Request) -> impl ::spin_sdk::http::IntoResponse {
            $crate::http::serve(req, $route, $settings, $run).await
        }

        /// The `direct-handler` export.
        struct Direct;

        impl exports::tributary::pipeline::direct_handler::Guest for Direct {
            fn handle(
                req: exports::tributary::pipeline::direct_handler::Request,
            ) -> exports::tributary::pipeline::direct_handler::Reply {
                let body = req.body;
                let answer = $crate::serve::with_builtin_transform(req.builtin_transform, || {
                    $crate::serve::ready_answer($crate::serve::serve(
                        &req.method,
                        &req.path,
                        req.headers,
                        async || Ok(body),
                        $route,
                        $settings,
                        $run,
                    ))
                });
                exports::tributary::pipeline::direct_handler::Reply {
                    status: answer.status,
                    body: answer.body,
                    window_skip: answer.window_skip.map(str::to_owned),
                }
            }
        }

        export!(Direct);
    };
}
