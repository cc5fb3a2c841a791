//! The `sink` capability: guests write rows through the host's [`GroupCommit`]; the call returns when
//! the flush holding the rows has committed. `write` appends to append-only tables, `upsert` replaces
//! rows of keyed tables; each call refuses, per row, rows meant for the other kind of table.

pub mod group_commit;

pub use group_commit::{FlusherThread, GroupCommit};

use tributary_model as model;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{sink, types};
use crate::push::PushState;
use crate::warehouse::schema;

/// Links the `sink` import (and the `types` it uses) once, at start.
pub fn add_to_linker(linker: &mut Linker<PushState>) -> wasmtime::Result<()> {
    sink::add_to_linker::<PushState, HasSelf<PushState>>(linker, |s| s)
}

impl types::Host for PushState {}

/// Whether a row is a write or an upsert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Append,
    Upsert,
}

/// Why `row` cannot be written with `mode`, if it cannot. Unknown tables pass: the warehouse names them.
pub fn mode_refusal(row: &model::Row, mode: Mode) -> Option<String> {
    let table = schema::find(&row.table)?;
    match (mode, table.keyed) {
        (Mode::Append, Some(_)) => Some(format!("table {} is keyed: write it with upsert", row.table)),
        (Mode::Upsert, None) => Some(format!("table {} is append-only: write it with write, not upsert", row.table)),
        (Mode::Upsert, Some(keyed)) => {
            let key =
                serde_json::from_str::<serde_json::Value>(&row.json).ok().and_then(|v| match v.get(keyed.key)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                });
            (key.as_deref() != Some(row.insert_id.as_str())).then(|| {
                format!(
                    "an upsert's insert id must be its key: {} is '{}', the insert id '{}'",
                    keyed.key,
                    key.unwrap_or_default(),
                    row.insert_id
                )
            })
        }
        (Mode::Append, None) => None,
    }
}

/// Writes `rows` with `mode`: refuses the misdirected ones, group-commits the others, and reports
/// every refusal by its index in `rows`.
pub async fn write_mode(sink: &GroupCommit, rows: Vec<model::Row>, mode: Mode) -> model::WriteOutcome {
    let mut refused = Vec::new();
    let mut kept = Vec::with_capacity(rows.len());
    let mut positions = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        match mode_refusal(&row, mode) {
            Some(message) => refused.push(model::RowError { index, reason: "invalid".into(), location: None, message }),
            None => {
                positions.push(index);
                kept.push(row);
            }
        }
    }
    for mut e in sink.write(kept).await? {
        e.index = positions.get(e.index as usize).copied().unwrap_or(e.index);
        refused.push(e);
    }
    refused.sort_by_key(|e| e.index);
    Ok(refused)
}

fn to_model(rows: Vec<types::Row>) -> Vec<model::Row> {
    rows.into_iter().map(|r| model::Row { table: r.table, insert_id: r.insert_id, json: r.json }).collect()
}

fn to_wit(outcome: model::WriteOutcome) -> Result<Vec<types::RowError>, sink::WriteError> {
    match outcome {
        Ok(refused) => Ok(refused
            .into_iter()
            .map(|e| types::RowError { index: e.index, reason: e.reason, location: e.location, message: e.message })
            .collect()),
        Err(model::WriteError::Overloaded(m)) => Err(sink::WriteError::Overloaded(m)),
        Err(model::WriteError::Unavailable(m)) => Err(sink::WriteError::Unavailable(m)),
    }
}

impl sink::Host for PushState {
    async fn write(&mut self, rows: Vec<types::Row>) -> Result<Vec<types::RowError>, sink::WriteError> {
        to_wit(write_mode(&self.sink, to_model(rows), Mode::Append).await)
    }

    async fn upsert(&mut self, rows: Vec<types::Row>) -> Result<Vec<types::RowError>, sink::WriteError> {
        to_wit(write_mode(&self.sink, to_model(rows), Mode::Upsert).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(table: &str, insert_id: &str, json: &str) -> model::Row {
        model::Row { table: table.into(), insert_id: insert_id.into(), json: json.into() }
    }

    #[test]
    fn each_call_takes_its_own_kind_of_table() {
        let recs = row("realtime_user_recs", "u1", r#"{"user_id":"u1"}"#);
        assert_eq!(mode_refusal(&recs, Mode::Upsert), None);
        assert!(mode_refusal(&recs, Mode::Append).expect("refused").contains("keyed"));
        let event = row("streaming_events", "m1", "{}");
        assert!(mode_refusal(&event, Mode::Upsert).expect("refused").contains("append-only"));
        assert_eq!(mode_refusal(&event, Mode::Append), None);
        let wrong_key = row("realtime_user_recs", "u2", r#"{"user_id":"u1"}"#);
        assert!(mode_refusal(&wrong_key, Mode::Upsert).expect("refused").contains("must be its key"));
    }
}
