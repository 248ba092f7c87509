//! The run's parameters, read-only to the task.

use std::collections::BTreeMap;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::caisson::task::params as wit;

/// The parameters of one run.
#[derive(Debug, Clone, Default)]
pub struct ParamsCtx {
    params: BTreeMap<String, String>,
}

impl ParamsCtx {
    pub fn new(params: BTreeMap<String, String>) -> Self {
        ParamsCtx { params }
    }
}

impl wit::Host for ParamsCtx {
    async fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.params.get(&name).cloned())
    }

    async fn all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Adds the `caisson:task/params` interface to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    f: fn(&mut T) -> &mut ParamsCtx,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<ParamsCtx>>(linker, f)
}

/// `wasi:config/store`, for components written for other hosts: the
/// configuration is the run's parameters.
impl crate::standard_bindings::wasi::config::store::Host for ParamsCtx {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, crate::wit::config_store::Error>> {
        Ok(Ok(self.params.get(&key).cloned()))
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, crate::wit::config_store::Error>> {
        Ok(Ok(self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}

/// Adds `wasi:config/store` to `linker`, answering from the run's parameters.
pub fn add_config_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    f: fn(&mut T) -> &mut ParamsCtx,
) -> wasmtime::Result<()> {
    crate::standard_bindings::wasi::config::store::add_to_linker::<T, HasSelf<ParamsCtx>>(linker, f)
}
