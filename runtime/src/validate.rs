//! Telling a task component from everything else, with messages that say
//! what is wrong and what to do.

use wasmparser::{Parser, Payload};

use crate::RuntimeError;

/// What the header of a wasm binary says, before any compilation.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), RuntimeError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(RuntimeError::InvalidComponent(
            "not a WebAssembly binary (no `\\0asm` header)".into(),
        ));
    }
    if Parser::is_core_wasm(bytes) {
        return Err(RuntimeError::InvalidComponent(
            "this is a core WebAssembly module, not a component: build the task for \
             `wasm32-wasip2`, or wrap the module with `wasm-tools component new`"
                .into(),
        ));
    }
    if !Parser::is_component(bytes) {
        return Err(RuntimeError::InvalidComponent(
            "unsupported WebAssembly binary version or layer".into(),
        ));
    }
    Ok(())
}

/// The `caisson:task` version this host serves.
const CAISSON_TASK_VERSION: &str = "@0.2.1";
/// The versions whose imports it links: 0.2.1 only added to 0.2.0 (see
/// README.md, "The WIT contract and its versions"), and wasmtime's linker
/// serves a `@0.2.0` import from the `@0.2.1` definitions.
const CAISSON_TASK_LINKED: &[&str] = &["@0.2.0", "@0.2.1"];

/// Refuses imports outside Caisson's world and WASI 0.2, and imports of
/// another version of Caisson's world. The linker would
/// refuse most of them too, but not, for example, an import of an empty
/// instance, and its message does not say what a task may import.
pub(crate) fn check_imports(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Result<(), RuntimeError> {
    let imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    // Another major version of Caisson's contract: say so, rather than
    // leave the linker to complain about one mismatched function.
    let other_version: Vec<&str> = imports
        .iter()
        .map(String::as_str)
        .filter(|name| {
            name.starts_with("caisson:task/")
                && !CAISSON_TASK_LINKED.iter().any(|v| name.ends_with(v))
        })
        .collect();
    if !other_version.is_empty() {
        return Err(RuntimeError::InvalidComponent(format!(
            "it imports {}, but this host serves `caisson:task@{}`: rebuild the task \
             against the current SDK",
            other_version.join(", "),
            &CAISSON_TASK_VERSION[1..],
        )));
    }
    let foreign: Vec<String> = imports
        .into_iter()
        .filter(|name| !(name.starts_with("caisson:task/") || name.starts_with("wasi:")))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(RuntimeError::InvalidComponent(format!(
        "it imports {}, which Caisson does not provide; a task may import only \
         `caisson:task/*` interfaces and WASI 0.2",
        foreign.join(", ")
    )))
}

/// Rewrites a linker error into what an author can act on.
pub(crate) fn explain_link_error(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    if text.contains("matching implementation was not found") {
        return format!(
            "it imports something Caisson does not provide ({text}); a task may import only \
             `caisson:task/*` interfaces and WASI 0.2"
        );
    }
    text
}

/// A summary of a component's imports and exports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskInfo {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Lists a component's top-level imports and exports without compiling it.
pub fn inspect(bytes: &[u8]) -> Result<TaskInfo, RuntimeError> {
    check_header(bytes)?;
    let mut info = TaskInfo::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload
            .map_err(|e| RuntimeError::InvalidComponent(format!("malformed component: {e}")))?;
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    let import =
                        import.map_err(|e| RuntimeError::InvalidComponent(e.to_string()))?;
                    info.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    let export =
                        export.map_err(|e| RuntimeError::InvalidComponent(e.to_string()))?;
                    info.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(info)
}
