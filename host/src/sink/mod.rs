//! The `sink` capability: guests write rows through the host's [`GroupCommit`]; the call returns when
//! the flush holding the rows has committed.

pub mod group_commit;

pub use group_commit::{FlusherThread, GroupCommit};

use tributary_model as model;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{sink, types};
use crate::push::PushState;

/// Links the `sink` import (and the `types` it uses) once, at start.
pub fn add_to_linker(linker: &mut Linker<PushState>) -> wasmtime::Result<()> {
    sink::add_to_linker::<PushState, HasSelf<PushState>>(linker, |s| s)
}

impl types::Host for PushState {}

impl sink::Host for PushState {
    async fn write(&mut self, rows: Vec<types::Row>) -> Result<Vec<types::RowError>, sink::WriteError> {
        let rows =
            rows.into_iter().map(|r| model::Row { table: r.table, insert_id: r.insert_id, json: r.json }).collect();
        match self.sink.write(rows).await {
            Ok(refused) => Ok(refused
                .into_iter()
                .map(|e| types::RowError { index: e.index, reason: e.reason, location: e.location, message: e.message })
                .collect()),
            Err(model::WriteError::Overloaded(m)) => Err(sink::WriteError::Overloaded(m)),
            Err(model::WriteError::Unavailable(m)) => Err(sink::WriteError::Unavailable(m)),
        }
    }
}
