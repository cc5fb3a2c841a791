//! The `sink` capability: guests write rows through the host's [`GroupCommit`]; the call returns when
//! the flush holding the rows has committed. `write` appends to append-only tables, `upsert` replaces
//! rows of keyed tables; each call refuses, per row, rows meant for the other kind of table.

use tributary_model as model;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{sink, types};
use crate::group_commit::{GroupCommit, Mode};

/// One instance's `sink`: the shared group commit.
#[derive(Clone)]
pub struct SinkCtx {
    group_commit: GroupCommit,
}

impl SinkCtx {
    pub fn new(group_commit: GroupCommit) -> Self {
        Self { group_commit }
    }
}

/// Links the `sink` import into any store whose data holds a [`SinkCtx`] (`get` finds it).
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut SinkCtx,
) -> wasmtime::Result<()> {
    sink::add_to_linker::<T, HasSelf<SinkCtx>>(linker, get)
}

impl types::Host for SinkCtx {}

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

impl sink::Host for SinkCtx {
    async fn write(&mut self, rows: Vec<types::Row>) -> Result<Vec<types::RowError>, sink::WriteError> {
        to_wit(self.group_commit.write_mode(to_model(rows), Mode::Append).await)
    }

    async fn upsert(&mut self, rows: Vec<types::Row>) -> Result<Vec<types::RowError>, sink::WriteError> {
        to_wit(self.group_commit.write_mode(to_model(rows), Mode::Upsert).await)
    }
}
