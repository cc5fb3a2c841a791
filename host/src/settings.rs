//! `wasi:config/store` for functions: each function reads the `[functions.<name>]` table of the host's
//! configuration (under Spin, the same keys are component variables). Read-only, no secrets: the
//! host's own credentials never appear here.

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::config_store;
use crate::push::PushState;

/// One function's settings, as (key, value) text.
#[derive(Debug, Clone, Default)]
pub struct Settings(pub Vec<(String, String)>);

/// Links `wasi:config/store` once, at start.
pub fn add_to_linker(linker: &mut Linker<PushState>) -> wasmtime::Result<()> {
    config_store::add_to_linker::<PushState, HasSelf<PushState>>(linker, |s| s)
}

impl config_store::Host for PushState {
    fn get(&mut self, key: String) -> Result<Option<String>, config_store::Error> {
        Ok(self.settings.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()))
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config_store::Error> {
        Ok(self.settings.0.clone())
    }
}
