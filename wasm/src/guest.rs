//! One instance of a module for one subtask.
//!
//! [`Guest::new`] instantiates the module in its own [`Store`] under the [`Limits`] (memory
//! through a [`ResourceLimiter`], time through the epoch deadline), links Flint's host
//! functions and denies WASI, then calls `flint_open` with the operator's parameters.
//! [`Guest::call`] writes a batch into the guest's input region, calls the operator's export
//! and reads the batch it returns. Every failure becomes a [`WasmError`] naming the module
//! and the function; nothing a guest does can fail the process.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use wasmtime::{Caller, Extern, ExternType, Linker, Memory, Module, ResourceLimiter, Store, Trap, TypedFunc};

use crate::abi::{self, ALLOC_EXPORT, CLOSE_EXPORT, HOST_MODULE, MEMORY_EXPORT, OPEN_EXPORT, WASI_MODULE};
use crate::engine::{engine, first_line, Limits};
use crate::keyed::{KeyedState, StateKind};
use crate::WasmError;

/// Which operator a guest serves: what its export takes and returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRole {
    /// `map.wasm`: as many rows out as in.
    Map,
    /// `flat_map.wasm`: any number of rows out.
    FlatMap,
    /// `process.wasm`: keyed, with state and timers.
    Process,
    /// Scalar functions in expressions: one column per argument in, one column out, as
    /// many rows out as in.
    Scalar,
}

impl GuestRole {
    pub fn op_type(self) -> &'static str {
        match self {
            GuestRole::Map => "map.wasm",
            GuestRole::FlatMap => "flat_map.wasm",
            GuestRole::Process => "process.wasm",
            GuestRole::Scalar => "a scalar function",
        }
    }
}

/// The longest log message kept (longer ones are cut).
pub const MAX_LOG_BYTES: usize = 4096;
/// Log messages per second per instance; more are counted and reported as suppressed.
pub const LOG_MESSAGES_PER_SECOND: u32 = 100;
/// Distinct counters per instance.
pub const MAX_COUNTERS: usize = 64;
/// The largest value, list element, map key or map value a guest may store.
pub const MAX_STATE_VALUE: usize = 16 << 20;

/// What host functions reach.
pub struct HostState {
    module: String,
    memory_max: u64,
    /// Set when a memory growth was refused (the guest may trap on it afterwards).
    memory_refused: bool,
    /// Why a host function failed the call (shown instead of wasmtime's trap text).
    failure: Option<String>,
    keyed: Option<KeyedState>,
    counters: BTreeMap<String, u64>,
    log_window: Instant,
    log_count: u32,
    log_suppressed: u64,
}

impl ResourceLimiter for HostState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_max {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl HostState {
    fn fail(&mut self, message: String) -> wasmtime::Error {
        let error = wasmtime::Error::msg(message.clone());
        self.failure.get_or_insert(message);
        error
    }

    fn keyed(&mut self, function: &str) -> Result<&mut KeyedState, wasmtime::Error> {
        if self.keyed.is_none() {
            return Err(self.fail(format!("flint.{function}: keyed state and timers exist only in process.wasm")));
        }
        Ok(self.keyed.as_mut().expect("checked"))
    }

    fn log(&mut self, level: i32, message: &str) {
        let now = Instant::now();
        if now.duration_since(self.log_window) >= Duration::from_secs(1) {
            if self.log_suppressed > 0 {
                tracing::warn!(module = %self.module, suppressed = self.log_suppressed, "guest log messages suppressed (more than {LOG_MESSAGES_PER_SECOND} per second)");
            }
            self.log_window = now;
            self.log_count = 0;
            self.log_suppressed = 0;
        }
        if self.log_count >= LOG_MESSAGES_PER_SECOND {
            self.log_suppressed += 1;
            return;
        }
        self.log_count += 1;
        let module = &self.module;
        match level {
            i32::MIN..=0 => tracing::trace!(target: "flint_wasm::guest", module = %module, "{message}"),
            1 => tracing::debug!(target: "flint_wasm::guest", module = %module, "{message}"),
            2 => tracing::info!(target: "flint_wasm::guest", module = %module, "{message}"),
            3 => tracing::warn!(target: "flint_wasm::guest", module = %module, "{message}"),
            _ => tracing::error!(target: "flint_wasm::guest", module = %module, "{message}"),
        }
    }
}

/// The guest's memory as a slice, or a failure naming what was asked.
fn memory<'a>(caller: &'a mut Caller<'_, HostState>) -> Result<(&'a mut [u8], &'a mut HostState), wasmtime::Error> {
    match caller.get_export(MEMORY_EXPORT) {
        Some(Extern::Memory(m)) => Ok(m.data_and_store_mut(caller)),
        _ => Err(wasmtime::Error::msg("the module exports no memory")),
    }
}

fn guest_bytes<'a>(mem: &'a [u8], ptr: i32, len: i32, limit: usize, what: &str) -> Result<&'a [u8], String> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    if len > limit {
        return Err(format!("{what}: {len} bytes, at most {limit}"));
    }
    start
        .checked_add(len)
        .and_then(|end| mem.get(start..end))
        .ok_or_else(|| format!("{what}: {len} bytes at {start} are outside the memory ({} bytes)", mem.len()))
}

/// Copies `value` into the guest's buffer `buf..buf+cap`; returns its length, or -1 when absent.
/// A value longer than `cap` is not copied: the guest calls again with a larger buffer.
fn copy_out(mem: &mut [u8], buf: i32, cap: i32, value: Option<&[u8]>) -> Result<i32, String> {
    let Some(value) = value else { return Ok(-1) };
    if value.len() <= cap as u32 as usize {
        let start = buf as u32 as usize;
        let dest = start
            .checked_add(value.len())
            .and_then(|end| mem.get_mut(start..end))
            .ok_or_else(|| format!("the buffer at {start} is outside the memory"))?;
        dest.copy_from_slice(value);
    }
    Ok(value.len() as i32)
}

/// Runs a host function body that may fail; a failure traps with its message.
macro_rules! host {
    ($caller:ident, $name:literal, $body:expr) => {{
        let result: Result<_, String> = $body;
        result.map_err(|e| $caller.data_mut().fail(format!("flint.{}: {}", $name, e)))
    }};
}

fn link_host(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let m = HOST_MODULE;
    linker.func_wrap(m, "log", |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
        let (mem, state) = memory(&mut caller)?;
        let len = (len as u32 as usize).min(MAX_LOG_BYTES) as i32;
        match guest_bytes(mem, ptr, len, MAX_LOG_BYTES, "log message") {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(bytes).into_owned();
                state.log(level, &text);
                Ok(())
            }
            Err(e) => Err(state.fail(format!("flint.log: {e}"))),
        }
    })?;
    linker.func_wrap(m, "counter_add", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32, delta: i64| {
        let (mem, state) = memory(&mut caller)?;
        let name = match guest_bytes(mem, ptr, len, 128, "counter name") {
            Ok(b) => String::from_utf8_lossy(b).into_owned(),
            Err(e) => return Err(state.fail(format!("flint.counter_add: {e}"))),
        };
        if delta < 0 {
            return Err(state.fail(format!("flint.counter_add: counter '{name}' cannot go down ({delta})")));
        }
        if !state.counters.contains_key(&name) && state.counters.len() >= MAX_COUNTERS {
            return Err(state.fail(format!("flint.counter_add: at most {MAX_COUNTERS} counters")));
        }
        let c = state.counters.entry(name).or_default();
        *c = c.saturating_add(delta as u64);
        Ok(())
    })?;
    linker.func_wrap(m, "fail", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
        let (mem, state) = memory(&mut caller)?;
        let len = (len as u32 as usize).min(MAX_LOG_BYTES) as i32;
        let text = guest_bytes(mem, ptr, len, MAX_LOG_BYTES, "failure message")
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|e| e);
        Err(state.fail(format!("the guest failed: {text}")))
    })?;
    linker.func_wrap(m, "state", |mut caller: Caller<'_, HostState>, kind: i32, ptr: i32, len: i32| {
        let (mem, state) = memory(&mut caller)?;
        let name = guest_bytes(mem, ptr, len, crate::keyed::MAX_STATE_NAME, "state name")
            .and_then(|b| String::from_utf8(b.to_vec()).map_err(|_| "the state name is not UTF-8".to_string()));
        let kind = StateKind::from_code(kind).ok_or(format!("{kind} is not a state kind (0 value, 1 list, 2 map)"));
        let keyed = state.keyed("state")?;
        let result = name.and_then(|name| keyed.register(kind?, &name));
        result.map(|h| h as i32).map_err(|e| state.fail(format!("flint.state: {e}")))
    })?;
    linker.func_wrap(m, "key", |mut caller: Caller<'_, HostState>, group: i32| {
        let state = caller.data_mut();
        let r = state.keyed("key")?.select(group);
        host!(caller, "key", r)
    })?;
    linker.func_wrap(m, "value_get_i64", |mut caller: Caller<'_, HostState>, h: i32, default: i64| {
        let state = caller.data_mut();
        let r = state.keyed("value_get_i64")?.value(h).and_then(|v| match v {
            None => Ok(default),
            Some(b) => {
                b.try_into().map(i64::from_le_bytes).map_err(|_| format!("the value has {} bytes, not 8", b.len()))
            }
        });
        host!(caller, "value_get_i64", r)
    })?;
    linker.func_wrap(m, "value_set_i64", |mut caller: Caller<'_, HostState>, h: i32, v: i64| {
        let state = caller.data_mut();
        let r = state.keyed("value_set_i64")?.set_value(h, &v.to_le_bytes());
        host!(caller, "value_set_i64", r)
    })?;
    linker.func_wrap(m, "value_get", |mut caller: Caller<'_, HostState>, h: i32, buf: i32, cap: i32| {
        let (mem, state) = memory(&mut caller)?;
        let keyed = state.keyed("value_get")?;
        let r = keyed.value(h).and_then(|v| copy_out(mem, buf, cap, v));
        r.map_err(|e| state.fail(format!("flint.value_get: {e}")))
    })?;
    linker.func_wrap(m, "value_set", |mut caller: Caller<'_, HostState>, h: i32, ptr: i32, len: i32| {
        let (mem, state) = memory(&mut caller)?;
        let keyed = state.keyed("value_set")?;
        let r = guest_bytes(mem, ptr, len, MAX_STATE_VALUE, "value").and_then(|b| keyed.set_value(h, b));
        r.map_err(|e| state.fail(format!("flint.value_set: {e}")))
    })?;
    linker.func_wrap(m, "clear", |mut caller: Caller<'_, HostState>, h: i32| {
        let state = caller.data_mut();
        let r = state.keyed("clear")?.clear(h);
        host!(caller, "clear", r)
    })?;
    linker.func_wrap(m, "list_add", |mut caller: Caller<'_, HostState>, h: i32, ptr: i32, len: i32| {
        let (mem, state) = memory(&mut caller)?;
        let keyed = state.keyed("list_add")?;
        let r = guest_bytes(mem, ptr, len, MAX_STATE_VALUE, "element").and_then(|b| keyed.list_add(h, b));
        r.map_err(|e| state.fail(format!("flint.list_add: {e}")))
    })?;
    linker.func_wrap(m, "list_len", |mut caller: Caller<'_, HostState>, h: i32| {
        let state = caller.data_mut();
        let r = state.keyed("list_len")?.list_len(h).map(|n| n as i32);
        host!(caller, "list_len", r)
    })?;
    linker.func_wrap(m, "list_get", |mut caller: Caller<'_, HostState>, h: i32, i: i32, buf: i32, cap: i32| {
        let (mem, state) = memory(&mut caller)?;
        let keyed = state.keyed("list_get")?;
        let r = keyed.list_get(h, i).and_then(|v| copy_out(mem, buf, cap, v));
        r.map_err(|e| state.fail(format!("flint.list_get: {e}")))
    })?;
    linker.func_wrap(
        m,
        "map_put",
        |mut caller: Caller<'_, HostState>, h: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
            let (mem, state) = memory(&mut caller)?;
            let keyed = state.keyed("map_put")?;
            let r = guest_bytes(mem, kp, kl, MAX_STATE_VALUE, "map key").and_then(|k| {
                guest_bytes(mem, vp, vl, MAX_STATE_VALUE, "map value").and_then(|v| keyed.map_put(h, k, v))
            });
            r.map_err(|e| state.fail(format!("flint.map_put: {e}")))
        },
    )?;
    linker.func_wrap(
        m,
        "map_get",
        |mut caller: Caller<'_, HostState>, h: i32, kp: i32, kl: i32, buf: i32, cap: i32| {
            let (mem, state) = memory(&mut caller)?;
            let keyed = state.keyed("map_get")?;
            let r = guest_bytes(mem, kp, kl, MAX_STATE_VALUE, "map key").map(<[u8]>::to_vec).and_then(|k| {
                let v = keyed.map_get(h, &k)?.map(<[u8]>::to_vec);
                copy_out(mem, buf, cap, v.as_deref())
            });
            r.map_err(|e| state.fail(format!("flint.map_get: {e}")))
        },
    )?;
    linker.func_wrap(m, "map_remove", |mut caller: Caller<'_, HostState>, h: i32, kp: i32, kl: i32| {
        let (mem, state) = memory(&mut caller)?;
        let keyed = state.keyed("map_remove")?;
        let r = guest_bytes(mem, kp, kl, MAX_STATE_VALUE, "map key").and_then(|k| keyed.map_remove(h, k));
        r.map(i32::from).map_err(|e| state.fail(format!("flint.map_remove: {e}")))
    })?;
    linker.func_wrap(m, "map_len", |mut caller: Caller<'_, HostState>, h: i32| {
        let state = caller.data_mut();
        let r = state.keyed("map_len")?.map_len(h).map(|n| n as i32);
        host!(caller, "map_len", r)
    })?;
    linker.func_wrap(m, "map_key_at", |mut caller: Caller<'_, HostState>, h: i32, i: i32, buf: i32, cap: i32| {
        let (mem, state) = memory(&mut caller)?;
        let keyed = state.keyed("map_key_at")?;
        let r = keyed.map_key_at(h, i).and_then(|v| copy_out(mem, buf, cap, v));
        r.map_err(|e| state.fail(format!("flint.map_key_at: {e}")))
    })?;
    linker.func_wrap(m, "timer_register", |mut caller: Caller<'_, HostState>, ts: i64| {
        let state = caller.data_mut();
        let r = state.keyed("timer_register")?.register_timer(ts);
        host!(caller, "timer_register", r)
    })?;
    linker.func_wrap(m, "timer_delete", |mut caller: Caller<'_, HostState>, ts: i64| {
        let state = caller.data_mut();
        let r = state.keyed("timer_delete")?.delete_timer(ts);
        host!(caller, "timer_delete", r)
    })?;
    linker.func_wrap(m, "watermark", |mut caller: Caller<'_, HostState>| {
        Ok(caller.data_mut().keyed("watermark")?.watermark())
    })?;
    Ok(())
}

/// A running instance.
pub struct Guest {
    module: String,
    function: String,
    timer_function: Option<String>,
    store: Store<HostState>,
    instance: wasmtime::Instance,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    call: TypedFunc<i32, i32>,
    on_timer: Option<TypedFunc<i32, i32>>,
    close: Option<TypedFunc<(), ()>>,
    /// The input region the guest gave the host: address and size.
    input: (u32, usize),
    output: SchemaRef,
    limits: Limits,
}

impl Guest {
    /// Instantiates `module` (named `name` in the job) for `role`, with `function` as the
    /// batch export (and `timer_function` for `process.wasm` timers, when the module
    /// exports it), and calls `flint_open` with `params`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        module: &Module,
        role: GuestRole,
        function: &str,
        timer_function: Option<&str>,
        params: &[(String, String)],
        output: SchemaRef,
        limits: Limits,
    ) -> Result<Self, WasmError> {
        let link = |reason: String| WasmError::Link { module: name.to_string(), reason };
        let state = HostState {
            module: name.to_string(),
            memory_max: limits.memory_max,
            memory_refused: false,
            failure: None,
            keyed: (role == GuestRole::Process).then(KeyedState::new),
            counters: BTreeMap::new(),
            log_window: Instant::now(),
            log_count: 0,
            log_suppressed: 0,
        };
        let mut store = Store::new(engine(), state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        store.set_epoch_deadline(limits.deadline_ticks());
        let mut linker = Linker::new(engine());
        link_host(&mut linker).map_err(|e| link(first_line(&e)))?;
        for import in module.imports() {
            if import.module() != WASI_MODULE {
                continue;
            }
            let ExternType::Func(ty) = import.ty() else { continue };
            let what = format!("{WASI_MODULE}::{}", import.name());
            linker
                .func_new(WASI_MODULE, import.name(), ty, move |mut caller, _, _| {
                    Err(caller.data_mut().fail(format!(
                        "the guest called {what}: Flint grants no file system, network, clock or environment access"
                    )))
                })
                .map_err(|e| link(first_line(&e)))?;
        }
        let guest_call = |what: &str, store: &mut Store<HostState>, r: wasmtime::Result<wasmtime::Instance>| {
            r.map_err(|e| classify(name, what, store, &e, &limits))
        };
        let instance = linker.instantiate(&mut store, module);
        let instance = guest_call("instantiation", &mut store, instance)?;
        let memory = instance
            .get_memory(&mut store, MEMORY_EXPORT)
            .ok_or_else(|| link("the module exports no memory named 'memory'".into()))?;
        let typed = |store: &mut Store<HostState>, export: &str| {
            instance
                .get_typed_func::<i32, i32>(store, export)
                .map_err(|e| link(format!("export '{export}': {}", first_line(&e))))
        };
        let alloc = typed(&mut store, ALLOC_EXPORT)?;
        let call = typed(&mut store, function)?;
        let on_timer = match timer_function {
            Some(t) if instance.get_export(&mut store, t).is_some() => Some(typed(&mut store, t)?),
            _ => None,
        };
        let close = match instance.get_export(&mut store, CLOSE_EXPORT) {
            Some(_) => Some(
                instance
                    .get_typed_func::<(), ()>(&mut store, CLOSE_EXPORT)
                    .map_err(|e| link(format!("export '{CLOSE_EXPORT}': {}", first_line(&e))))?,
            ),
            None => None,
        };
        let open = match instance.get_export(&mut store, OPEN_EXPORT) {
            Some(_) => Some(
                instance
                    .get_typed_func::<(i32, i32), i32>(&mut store, OPEN_EXPORT)
                    .map_err(|e| link(format!("export '{OPEN_EXPORT}': {}", first_line(&e))))?,
            ),
            None => None,
        };
        let mut guest = Guest {
            module: name.to_string(),
            function: function.to_string(),
            timer_function: timer_function.map(str::to_string),
            store,
            instance,
            memory,
            alloc,
            call,
            on_timer,
            close,
            input: (0, 0),
            output,
            limits,
        };
        if let Some(open) = open {
            let text: String = params.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            let ptr = guest.reserve(text.len().max(1))?;
            guest.memory.data_mut(&mut guest.store)[ptr as usize..ptr as usize + text.len()]
                .copy_from_slice(text.as_bytes());
            let status = guest.guarded(OPEN_EXPORT, |store| open.call(store, (ptr as i32, text.len() as i32)))?;
            if status != 0 {
                return Err(WasmError::Trap {
                    module: guest.module.clone(),
                    function: OPEN_EXPORT.into(),
                    reason: format!("returned {status} (0 means ready)"),
                });
            }
        }
        Ok(guest)
    }

    pub fn module(&self) -> &str {
        &self.module
    }

    pub fn function(&self) -> &str {
        &self.function
    }

    /// Whether the module exports the timer function.
    pub fn has_timer_function(&self) -> bool {
        self.on_timer.is_some()
    }

    /// The keyed state (`process.wasm` only).
    pub fn keyed(&mut self) -> Option<&mut KeyedState> {
        self.store.data_mut().keyed.as_mut()
    }

    /// The counters the guest bumped, with their totals.
    pub fn counters(&self) -> &BTreeMap<String, u64> {
        &self.store.data().counters
    }

    /// The guest's linear memory size in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    /// Runs `f` under a fresh epoch deadline and turns its failure into a [`WasmError`].
    fn guarded<R>(
        &mut self,
        function: &str,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, WasmError> {
        self.store.set_epoch_deadline(self.limits.deadline_ticks());
        let data = self.store.data_mut();
        data.failure = None;
        data.memory_refused = false;
        f(&mut self.store).map_err(|e| classify(&self.module, function, &mut self.store, &e, &self.limits))
    }

    /// An input region of at least `size` bytes (asking the guest for a larger one when needed).
    fn reserve(&mut self, size: usize) -> Result<u32, WasmError> {
        if size <= self.input.1 {
            return Ok(self.input.0);
        }
        let want = size.max(self.input.1 * 2).max(4096);
        let requested =
            i32::try_from(want).map_err(|_| self.abi_error(ALLOC_EXPORT, format!("{want} bytes do not fit an i32")))?;
        let alloc = self.alloc.clone();
        let ptr = self.guarded(ALLOC_EXPORT, |store| alloc.call(store, requested))? as u32;
        let end = ptr as usize + want;
        if ptr == 0 || end > self.memory.data_size(&self.store) {
            return Err(self.abi_error(
                ALLOC_EXPORT,
                format!("flint_alloc({want}) returned {ptr}, not a region inside the memory"),
            ));
        }
        self.input = (ptr, want);
        Ok(ptr)
    }

    fn abi_error(&self, function: &str, reason: String) -> WasmError {
        WasmError::Abi { module: self.module.clone(), function: function.to_string(), reason }
    }

    /// Calls the batch export with `batch` (key groups by `group_offsets`, `groups + 1`
    /// row offsets, for `process.wasm`); returns the guest's output (`None`: no rows).
    pub fn call(&mut self, batch: &RecordBatch, group_offsets: &[u32]) -> Result<Option<RecordBatch>, WasmError> {
        let call = self.call.clone();
        let function = self.function.clone();
        let output = self.output.clone();
        self.call_export(&function, call, batch, group_offsets, &output)
    }

    /// Calls export `function` (any `(i32) -> i32` export, as a scalar function) with
    /// `batch` and reads the batch it returns as `output`.
    pub fn call_function(
        &mut self,
        function: &str,
        batch: &RecordBatch,
        output: &SchemaRef,
    ) -> Result<Option<RecordBatch>, WasmError> {
        let export = self.instance.get_typed_func::<i32, i32>(&mut self.store, function).map_err(|e| {
            WasmError::Link { module: self.module.clone(), reason: format!("export '{function}': {}", first_line(&e)) }
        })?;
        self.call_export(function, export, batch, &[], output)
    }

    /// Calls the timer export with a batch of the firing timers' keys and timestamps.
    pub fn call_timers(
        &mut self,
        batch: &RecordBatch,
        group_offsets: &[u32],
    ) -> Result<Option<RecordBatch>, WasmError> {
        let Some(on_timer) = self.on_timer.clone() else { return Ok(None) };
        let function = self.timer_function.clone().unwrap_or_default();
        let output = self.output.clone();
        self.call_export(&function, on_timer, batch, group_offsets, &output)
    }

    fn call_export(
        &mut self,
        function: &str,
        export: TypedFunc<i32, i32>,
        batch: &RecordBatch,
        group_offsets: &[u32],
        output: &SchemaRef,
    ) -> Result<Option<RecordBatch>, WasmError> {
        let size = abi::batch_size(batch, group_offsets.len().saturating_sub(1));
        let base = self.reserve(size)?;
        let mem = self.memory.data_mut(&mut self.store);
        let ptr = abi::write_batch(mem, base as usize, batch, group_offsets).map_err(|reason| WasmError::Abi {
            module: self.module.clone(),
            function: function.to_string(),
            reason,
        })?;
        let out = self.guarded(function, |store| export.call(store, ptr as i32))?;
        if out == 0 {
            return Ok(None);
        }
        let mem = self.memory.data(&self.store);
        abi::read_batch(mem, out as u32, output).map(Some).map_err(|reason| WasmError::Abi {
            module: self.module.clone(),
            function: function.to_string(),
            reason,
        })
    }

    /// Calls `flint_close` if the module exports it.
    pub fn close(&mut self) -> Result<(), WasmError> {
        match self.close.take() {
            Some(close) => self.guarded(CLOSE_EXPORT, |store| close.call(store, ())),
            None => Ok(()),
        }
    }
}

/// The [`WasmError`] of a failed call.
fn classify(
    module: &str,
    function: &str,
    store: &mut Store<HostState>,
    e: &wasmtime::Error,
    limits: &Limits,
) -> WasmError {
    let (module, function) = (module.to_string(), function.to_string());
    let data = store.data_mut();
    if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
        return WasmError::Timeout { module, function, timeout_ms: limits.call_timeout.as_millis() as u64 };
    }
    if let Some(reason) = data.failure.take() {
        return WasmError::Trap { module, function, reason };
    }
    if data.memory_refused {
        return WasmError::Memory { module, function, max_bytes: limits.memory_max };
    }
    let reason = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => first_line(e),
    };
    WasmError::Trap { module, function, reason }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    /// A process guest exercising value, list and map state: per group `g` it appends each
    /// row's `n` to list "seen" and puts it into map "index" (8-byte key → 8-byte value),
    /// keeps a 3-byte value "tag", and emits one row per group: list length × 1000 +
    /// map length × 100 + the length `value_get` reports for "tag" with a 2-byte buffer × 10
    /// + (1 if the smallest map key read back by `map_key_at` is the group's first `n`).
    const STATES: &str = r#"(module
        (import "flint" "state" (func $state (param i32 i32 i32) (result i32)))
        (import "flint" "key" (func $key (param i32)))
        (import "flint" "list_add" (func $list_add (param i32 i32 i32)))
        (import "flint" "list_len" (func $list_len (param i32) (result i32)))
        (import "flint" "list_get" (func $list_get (param i32 i32 i32 i32) (result i32)))
        (import "flint" "map_put" (func $map_put (param i32 i32 i32 i32 i32)))
        (import "flint" "map_len" (func $map_len (param i32) (result i32)))
        (import "flint" "map_key_at" (func $map_key_at (param i32 i32 i32 i32) (result i32)))
        (import "flint" "value_set" (func $value_set (param i32 i32 i32)))
        (import "flint" "value_get" (func $value_get (param i32 i32 i32) (result i32)))
        (import "flint" "log" (func $log (param i32 i32 i32)))
        (import "flint" "watermark" (func $watermark (result i64)))
        (memory (export "memory") 2)
        (data (i32.const 16) "seen")
        (data (i32.const 24) "index")
        (data (i32.const 32) "tag")
        (data (i32.const 40) "abc")
        (data (i32.const 48) "opened")
        (global $seen (mut i32) (i32.const 0))
        (global $index (mut i32) (i32.const 0))
        (global $tag (mut i32) (i32.const 0))
        (func (export "flint_alloc") (param i32) (result i32) i32.const 4096)
        (func (export "flint_open") (param i32 i32) (result i32)
          (global.set $seen (call $state (i32.const 1) (i32.const 16) (i32.const 4)))
          (global.set $index (call $state (i32.const 2) (i32.const 24) (i32.const 5)))
          (global.set $tag (call $state (i32.const 0) (i32.const 32) (i32.const 3)))
          (call $log (i32.const 2) (i32.const 48) (i32.const 6))
          (i32.const 0))
        (func (export "process") (param $in i32) (result i32)
          (local $groups i32) (local $offsets i32) (local $vals i32) (local $g i32) (local $r i32)
          (local $end i32) (local $out i32) (local $first i64) (local $score i64)
          (if (i64.ne (call $watermark) (i64.const -9223372036854775808)) (then unreachable))
          (local.set $groups (i32.load offset=8 (local.get $in)))
          (local.set $offsets (i32.load offset=12 (local.get $in)))
          (local.set $vals (i32.load offset=32 (local.get $in)))
          (local.set $out (i32.const 65536))
          (i32.store (local.get $out) (local.get $groups))
          (i32.store offset=4 (local.get $out) (i32.const 1))
          (i64.store offset=8 (local.get $out) (i64.const 0))
          (i64.store offset=16 (local.get $out) (i64.const 0))
          (i32.store offset=24 (local.get $out) (i32.const 1))
          (i32.store offset=28 (local.get $out) (i32.const 0))
          (i32.store offset=32 (local.get $out) (i32.const 65600))
          (i32.store offset=36 (local.get $out) (i32.const 0))
          (block $done (loop $group
            (br_if $done (i32.ge_u (local.get $g) (local.get $groups)))
            (call $key (local.get $g))
            (local.set $r (i32.load (i32.add (local.get $offsets) (i32.shl (local.get $g) (i32.const 2)))))
            (local.set $end (i32.load offset=4 (i32.add (local.get $offsets) (i32.shl (local.get $g) (i32.const 2)))))
            (local.set $first (i64.load (i32.add (local.get $vals) (i32.shl (local.get $r) (i32.const 3)))))
            (block $rows_done (loop $row
              (br_if $rows_done (i32.ge_u (local.get $r) (local.get $end)))
              (call $list_add (global.get $seen) (i32.add (local.get $vals) (i32.shl (local.get $r) (i32.const 3))) (i32.const 8))
              (call $map_put (global.get $index)
                (i32.add (local.get $vals) (i32.shl (local.get $r) (i32.const 3))) (i32.const 8)
                (i32.add (local.get $vals) (i32.shl (local.get $r) (i32.const 3))) (i32.const 8))
              (local.set $r (i32.add (local.get $r) (i32.const 1)))
              (br $row)))
            (call $value_set (global.get $tag) (i32.const 40) (i32.const 3))
            ;; The list's last element reads back as the group's last n.
            (drop (call $list_get (global.get $seen) (i32.sub (call $list_len (global.get $seen)) (i32.const 1))
              (i32.const 56) (i32.const 8)))
            (if (i64.ne (i64.load (i32.const 56))
                  (i64.load (i32.add (local.get $vals) (i32.shl (i32.sub (local.get $end) (i32.const 1)) (i32.const 3)))))
              (then unreachable))
            (local.set $score (i64.add
              (i64.add
                (i64.mul (i64.extend_i32_u (call $list_len (global.get $seen))) (i64.const 1000))
                (i64.mul (i64.extend_i32_u (call $map_len (global.get $index))) (i64.const 100)))
              (i64.mul (i64.extend_i32_s (call $value_get (global.get $tag) (i32.const 64) (i32.const 2))) (i64.const 10))))
            (drop (call $map_key_at (global.get $index) (i32.const 0) (i32.const 72) (i32.const 8)))
            (if (i64.eq (i64.load (i32.const 72)) (local.get $first))
              (then (local.set $score (i64.add (local.get $score) (i64.const 1)))))
            (i64.store (i32.add (i32.const 65600) (i32.shl (local.get $g) (i32.const 3))) (local.get $score))
            (local.set $g (i32.add (local.get $g) (i32.const 1)))
            (br $group)))
          (local.get $out)))"#;

    #[test]
    fn list_map_and_value_state_through_host_functions() {
        let module = crate::compile("states.wat", STATES.as_bytes()).unwrap();
        let output = Arc::new(Schema::new(vec![Field::new("score", DataType::Int64, true)]));
        let mut guest = Guest::new(
            "states.wat",
            &module,
            GuestRole::Process,
            "process",
            None,
            &[("a".into(), "1".into())],
            output,
            Limits::default(),
        )
        .unwrap();
        let input = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        // Two keys (ids 7 and 9): rows 0..3 and 3..4; then key 7 again with one more row.
        let batch = RecordBatch::try_new(input.clone(), vec![Arc::new(Int64Array::from(vec![5, 3, 5, 8]))]).unwrap();
        guest.keyed().unwrap().set_groups(&[7, 9]);
        let out = guest.call(&batch, &[0, 3, 4]).unwrap().unwrap();
        // key 7: list 3, map 2 distinct (5, 3), tag length 3; smallest key (3 as LE bytes: 0x03 < 0x05) is not the first (5).
        assert_eq!(out.column(0).as_primitive::<Int64Type>().values().to_vec(), vec![3230, 1131]);
        let batch = RecordBatch::try_new(input, vec![Arc::new(Int64Array::from(vec![1]))]).unwrap();
        guest.keyed().unwrap().set_groups(&[7]);
        let out = guest.call(&batch, &[0, 1]).unwrap().unwrap();
        // Key 7 now: list 4, map 3 (5, 3, 1), and its smallest key is this group's first n (1).
        assert_eq!(out.column(0).as_primitive::<Int64Type>().values().to_vec(), vec![4331]);
        // Keyed imports are refused outside process.wasm at run time too.
        let module = crate::compile("states.wat", STATES.as_bytes()).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("score", DataType::Int64, true)]));
        let err = Guest::new("states.wat", &module, GuestRole::Map, "process", None, &[], schema, Limits::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("keyed state and timers exist only in process.wasm"), "{err}");
    }

    #[test]
    fn a_module_whose_initial_memory_is_over_the_cap_does_not_start() {
        let text = r#"(module (memory (export "memory") 100)
            (func (export "flint_alloc") (param i32) (result i32) i32.const 8)
            (func (export "map") (param i32) (result i32) i32.const 0))"#;
        let module = crate::compile("big.wat", text.as_bytes()).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let limits = Limits { memory_max: 1 << 20, call_timeout: std::time::Duration::from_secs(1) };
        let err = Guest::new("big.wat", &module, GuestRole::Map, "map", None, &[], schema, limits).err().unwrap();
        assert!(matches!(err, WasmError::Memory { max_bytes: 1048576, .. }), "{err}");
    }
}
