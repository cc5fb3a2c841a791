//! The default transform's logic: Pub/Sub events → `streaming_events` rows, sensor readings →
//! `sensor_readings` rows. Pure and native: the transform component (`functions/transform`), the
//! pipeline adapter (`functions/pipeline-adapter`) and the host's native baseline all link it.

pub mod normalize;
pub mod sensor;
pub mod timestamp;

pub use normalize::normalize;
