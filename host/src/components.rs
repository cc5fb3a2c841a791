//! The components built from this checkout (every `cdylib` crate under `functions/`, see `build.rs`),
//! embedded in the binary: for `functions/anomaly-check`, `ANOMALY_CHECK` (the bytes) and
//! `ANOMALY_CHECK_PATH` (the file, for compositions and other hosts; the host never runs the sink
//! adapters, `SINK_HTTP` and `PIPELINE_ADAPTER`).

include!(concat!(env!("OUT_DIR"), "/components.rs"));
