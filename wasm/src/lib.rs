//! WebAssembly user code: functions and keyed process functions written in any language
//! with a WebAssembly target, run sandboxed in the taskmanager (`docs/wasm.md`).
//!
//! - [`engine`]: the one [`wasmtime::Engine`] of a process (Cranelift, epoch interruption
//!   ticked by a background thread), the module cache (compiled once per process, keyed by
//!   the module's sha256) and the [`Limits`] every instance runs under.
//! - [`abi`]: the columnar batch layout in linear memory and the imports and exports a module
//!   may have; both ends of the boundary are checked against it.
//! - [`guest`]: one instance of a module for one subtask: its store, the host functions, and
//!   per-batch calls whose failures name the module and the function.
//! - [`keyed`]: the keyed state and event-time timers a `process.wasm` guest reaches through
//!   host functions, per key id, with the byte encodings its snapshots use.
//! - [`validate`]: the checks run at submission: the module compiles, exports what the job
//!   file says with the right signatures, and imports nothing Flint does not provide.

pub mod abi;
pub mod engine;
pub mod guest;
pub mod keyed;
pub mod validate;

pub use engine::{compile, Limits};
pub use guest::{Guest, GuestRole};
pub use wasmtime::Module;

/// Why WebAssembly user code failed. `retryable` says whether a new attempt of the task can
/// help: a guest that traps, loops or outgrows its memory on some input does so again on the
/// same input, so guest failures are not retryable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WasmError {
    /// The module's bytes are not a valid module (or WebAssembly text that does not parse).
    #[error("module '{module}' does not compile: {reason}")]
    Compile { module: String, reason: String },
    /// The module lacks what the job needs, or asks for what Flint does not provide.
    #[error("module '{module}': {reason}")]
    Link { module: String, reason: String },
    /// The guest trapped (unreachable, out-of-bounds access, division by zero, stack
    /// overflow, a forbidden import, or `flint.fail`).
    #[error("module '{module}' function '{function}' failed: {reason}")]
    Trap { module: String, function: String, reason: String },
    /// A call ran longer than `wasm.call.timeout`.
    #[error("module '{module}' function '{function}' ran longer than {timeout_ms} ms (wasm.call.timeout) and was interrupted")]
    Timeout { module: String, function: String, timeout_ms: u64 },
    /// The guest wanted more linear memory than `wasm.memory.max`.
    #[error("module '{module}' function '{function}' needed more than {max_bytes} bytes of memory (wasm.memory.max)")]
    Memory { module: String, function: String, max_bytes: u64 },
    /// The guest returned a batch that breaks the ABI (bad pointers, types or lengths).
    #[error("module '{module}' function '{function}' returned a bad batch: {reason}")]
    Abi { module: String, function: String, reason: String },
}

impl WasmError {
    /// Guest failures repeat on the same input: none is retryable.
    pub fn is_retryable(&self) -> bool {
        false
    }
}
