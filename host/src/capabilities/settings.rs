//! The `wasi:config/store` capability: each function reads the `[functions.<name>]` table of the host's
//! configuration (under Spin, the same keys are component variables). Read-only, no secrets: the
//! host's own credentials never appear here.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::config_store;

/// One function's settings, as (key, text value) pairs.
#[derive(Debug, Clone, Default)]
pub struct SettingsCtx(Arc<Vec<(String, String)>>);

impl SettingsCtx {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(Arc::new(pairs))
    }
}

/// Links `wasi:config/store` into any store whose data holds a [`SettingsCtx`] (`get` finds it).
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut SettingsCtx,
) -> wasmtime::Result<()> {
    config_store::add_to_linker::<T, HasSelf<SettingsCtx>>(linker, get)
}

impl config_store::Host for SettingsCtx {
    fn get(&mut self, key: String) -> Result<Option<String>, config_store::Error> {
        Ok(self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()))
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config_store::Error> {
        Ok(self.0.as_ref().clone())
    }
}
