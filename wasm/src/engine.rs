//! The process's engine, its epoch ticker, the module cache and the instance limits.
//!
//! One [`Engine`] serves every job of a process. It is configured for epoch interruption: a
//! background thread advances the epoch every [`EPOCH_TICK`], and each call into a guest
//! sets a deadline of `wasm.call.timeout` worth of ticks, so a guest that loops forever is
//! interrupted within one tick of its timeout. Epochs cost a load and compare at loop heads
//! and function entries; fuel would cost a counter update per basic block.
//!
//! [`compile`] turns module bytes (binary, or WebAssembly text) into a [`Module`], once per
//! process per distinct module: the cache is keyed by the sha256 of the bytes and holds
//! [`CACHED_MODULES`] modules; subtasks that need the same module at the same time wait for
//! one compilation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Module};

use crate::WasmError;

/// How often the epoch advances.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The largest module accepted, in bytes (binary or text).
pub const MAX_MODULE_BYTES: usize = 32 << 20;
/// Modules kept compiled per process.
pub const CACHED_MODULES: usize = 64;

/// What every instance runs under (`wasm.memory.max`, `wasm.call.timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory per instance, in bytes.
    pub memory_max: u64,
    /// The longest a single call into the guest may run.
    pub call_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { memory_max: 64 << 20, call_timeout: Duration::from_secs(10) }
    }
}

impl Limits {
    /// The epoch deadline of one call, in ticks (at least 1).
    pub fn deadline_ticks(&self) -> u64 {
        (self.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
    }
}

/// The process's engine (created, with its ticker, on first use).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Guests get a bounded native stack; deep recursion traps as a stack overflow.
        config.max_wasm_stack(1 << 20);
        let engine = Engine::new(&config).expect("the WebAssembly engine configuration is valid");
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match ticker.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            })
            .expect("spawning the WebAssembly epoch thread");
        engine
    })
}

/// The compiled module of `bytes` (WebAssembly binary or text), from the cache when this
/// process compiled the same bytes before. `name` is the module's name in the job (for
/// messages).
pub fn compile(name: &str, bytes: &[u8]) -> Result<Module, WasmError> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(WasmError::Compile {
            module: name.to_string(),
            reason: format!("{} bytes; at most {MAX_MODULE_BYTES} are accepted", bytes.len()),
        });
    }
    type Slot = Arc<OnceLock<Result<Module, WasmError>>>;
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Slot>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let hash: [u8; 32] = Sha256::digest(bytes).into();
    // One slot per module: the subtasks that start together wait for one compilation
    // (outside the cache's lock, so other modules stay available meanwhile).
    let slot: Slot = {
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.contains_key(&hash) && cache.len() >= CACHED_MODULES {
            if let Some(evict) = cache.keys().next().copied() {
                cache.remove(&evict);
            }
        }
        cache.entry(hash).or_default().clone()
    };
    slot.get_or_init(|| {
        let module = Module::new(engine(), bytes)
            .map_err(|e| WasmError::Compile { module: name.to_string(), reason: first_line(&e) })?;
        tracing::info!(module = name, sha256 = %hex::encode(hash), bytes = bytes.len(), "WebAssembly module compiled");
        Ok(module)
    })
    .clone()
    .map_err(|e| match e {
        // The cached failure, under this caller's name for the module.
        WasmError::Compile { reason, .. } => WasmError::Compile { module: name.to_string(), reason },
        other => other,
    })
}

/// An engine error as one readable line (wasmtime chains its causes).
pub(crate) fn first_line(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    let line = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
    if line.len() > 1000 {
        let mut end = 1000;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &line[..end])
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_compile_once_from_text_or_binary() {
        let text = "(module (func (export \"f\") (result i32) i32.const 7))";
        let a = compile("m", text.as_bytes()).unwrap();
        let b = compile("m", text.as_bytes()).unwrap();
        assert!(Module::same(&a, &b), "the second compile comes from the cache");
        let binary = wat::parse_str(text).unwrap();
        assert!(compile("m", &binary).is_ok());
    }

    #[test]
    fn malformed_and_oversized_modules_are_refused() {
        let err = compile("bad", b"\0asm\x01\0\0\0garbage").unwrap_err();
        assert!(matches!(err, WasmError::Compile { ref module, .. } if module == "bad"), "{err}");
        let err = compile("text", b"(module (func (export \"f\") i32.add))").unwrap_err();
        assert!(err.to_string().contains("does not compile"), "{err}");
        let big = vec![0u8; MAX_MODULE_BYTES + 1];
        assert!(compile("big", &big).unwrap_err().to_string().contains("at most"));
    }

    #[test]
    fn deadlines_cover_the_timeout() {
        let limits = Limits { memory_max: 1 << 20, call_timeout: Duration::from_millis(100) };
        assert_eq!(limits.deadline_ticks(), 11);
        let tiny = Limits { memory_max: 1 << 20, call_timeout: Duration::from_millis(1) };
        assert_eq!(tiny.deadline_ticks(), 2);
    }
}
