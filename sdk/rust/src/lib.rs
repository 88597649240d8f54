//! Guest SDK for Flint's WebAssembly user code (the ABI is `docs/wasm.md`).
//!
//! A guest is a `cdylib` crate built for `wasm32-unknown-unknown` or `wasm32-wasip1`:
//!
//! ```ignore
//! use flint_guest::{Batch, Output, Params, Type};
//!
//! flint_guest::guest_module!();                  // flint_alloc
//! flint_guest::export_open!(open);               // flint_open (optional)
//! flint_guest::export_batch!(map => double);     // the operator's export
//!
//! static FACTOR: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(2);
//!
//! fn open(params: &Params) -> Result<(), String> {
//!     if let Some(f) = params.get("factor") {
//!         FACTOR.store(f.parse().map_err(|_| format!("factor '{f}' is not an integer"))?, Ordering::Relaxed);
//!     }
//!     Ok(())
//! }
//!
//! fn double(input: &Batch, out: &mut Output) {
//!     let n = input.ints(0);
//!     let column = out.reset(&[Type::Integer]).column(0);
//!     for row in 0..input.rows() {
//!         match input.is_valid(0, row) {
//!             true => column.push_int(n[row] * FACTOR.load(Ordering::Relaxed)),
//!             false => column.push_null(),
//!         }
//!     }
//! }
//! ```
//!
//! [`Batch`] reads an input batch where the host wrote it; [`Output`] builds the output
//! batch in the guest's memory and keeps it until the next call (the host copies it when the
//! call returns). [`host`] wraps the host functions (log, counters, keyed state, timers);
//! it exists only on `wasm32` targets. Everything else is plain Rust and is tested natively
//! against the host's own batch encoder and decoder.

use std::ops::Range;

/// A column type (the ABI's type codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Type {
    Integer = 1,
    Float = 2,
    String = 3,
    Boolean = 4,
    Bytes = 5,
    Null = 6,
}

impl Type {
    /// The type of an ABI type code.
    pub fn from_code(code: u32) -> Option<Type> {
        Some(match code {
            1 => Type::Integer,
            2 => Type::Float,
            3 => Type::String,
            4 => Type::Boolean,
            5 => Type::Bytes,
            6 => Type::Null,
            _ => return None,
        })
    }

    fn variable_width(self) -> bool {
        matches!(self, Type::String | Type::Bytes)
    }

    /// Bytes per value in `values` (offsets for strings and bytes).
    fn width(self) -> usize {
        match self {
            Type::Integer | Type::Float => 8,
            Type::Boolean => 1,
            Type::String | Type::Bytes => 4,
            Type::Null => 0,
        }
    }
}

/// Bytes of a batch header.
pub const HEADER_BYTES: usize = 24;
/// Bytes of a column descriptor.
pub const COLUMN_BYTES: usize = 16;

/// An input batch, read in place.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// The address of the linear memory's first byte as seen by this code (0 inside a
    /// module; a buffer's address in native tests).
    base: usize,
    ptr: u32,
}

impl Batch {
    /// The batch at address `ptr` of a memory starting at `base` (0 in a module).
    ///
    /// # Safety
    /// `ptr` must be the address of a batch laid out as `docs/wasm.md` says, with every
    /// address inside the memory, integer and float values 8-byte aligned and offsets
    /// 4-byte aligned (as the host writes input batches), alive while the `Batch` is used.
    pub unsafe fn from_raw(base: usize, ptr: u32) -> Batch {
        Batch { base, ptr }
    }

    fn addr(&self, at: u32) -> *const u8 {
        (self.base + at as usize) as *const u8
    }

    fn u32_at(&self, at: u32) -> u32 {
        // SAFETY: within the batch the host wrote (see `from_raw`).
        unsafe { std::ptr::read_unaligned(self.addr(at) as *const u32) }
    }

    fn descriptor(&self, column: usize, field: u32) -> u32 {
        assert!(column < self.columns(), "column {column} of a batch of {} columns", self.columns());
        self.u32_at(self.ptr + (HEADER_BYTES + column * COLUMN_BYTES) as u32 + field)
    }

    pub fn rows(&self) -> usize {
        self.u32_at(self.ptr) as usize
    }

    pub fn columns(&self) -> usize {
        self.u32_at(self.ptr + 4) as usize
    }

    /// The type of `column` (`None` for a code this SDK does not know).
    pub fn column_type(&self, column: usize) -> Option<Type> {
        Type::from_code(self.descriptor(column, 0))
    }

    /// Whether `column` has a value (not null) at `row`.
    pub fn is_valid(&self, column: usize, row: usize) -> bool {
        assert!(row < self.rows(), "row {row} of a batch of {} rows", self.rows());
        if self.column_type(column) == Some(Type::Null) {
            return false;
        }
        match self.descriptor(column, 4) {
            0 => true,
            validity => {
                // SAFETY: validity is u8[rows] inside the batch.
                unsafe { *self.addr(validity + row as u32) != 0 }
            }
        }
    }

    fn values<T>(&self, column: usize, ty: Type) -> &[T] {
        assert_eq!(self.column_type(column), Some(ty), "column {column} is not of type {ty:?}");
        let rows = self.rows();
        if rows == 0 {
            return &[];
        }
        let at = self.addr(self.descriptor(column, 8));
        assert_eq!(at as usize % std::mem::align_of::<T>(), 0, "column {column}'s values are not aligned");
        // SAFETY: values is T[rows], aligned (checked), inside the batch.
        unsafe { std::slice::from_raw_parts(at as *const T, rows) }
    }

    /// An integer column's values (a null row holds an unspecified value).
    pub fn ints(&self, column: usize) -> &[i64] {
        self.values(column, Type::Integer)
    }

    /// A float column's values.
    pub fn floats(&self, column: usize) -> &[f64] {
        self.values(column, Type::Float)
    }

    /// A boolean column's values, 0 or 1.
    pub fn bools(&self, column: usize) -> &[u8] {
        self.values(column, Type::Boolean)
    }

    /// The bytes of row `row` of a string or bytes column.
    pub fn bytes(&self, column: usize, row: usize) -> &[u8] {
        let ty = self.column_type(column);
        assert!(matches!(ty, Some(Type::String | Type::Bytes)), "column {column} is {ty:?}, not string or bytes");
        assert!(row < self.rows(), "row {row} of a batch of {} rows", self.rows());
        let offsets = self.descriptor(column, 8) + 4 * row as u32;
        let (start, end) = (self.u32_at(offsets), self.u32_at(offsets + 4));
        // SAFETY: data[offsets[row]..offsets[row + 1]] is inside the batch.
        unsafe { std::slice::from_raw_parts(self.addr(self.descriptor(column, 12) + start), (end - start) as usize) }
    }

    /// Row `row` of a string column (the host writes valid UTF-8).
    pub fn str(&self, column: usize, row: usize) -> &str {
        let bytes = self.bytes(column, row);
        std::str::from_utf8(bytes).unwrap_or_else(|_| panic!("column {column} row {row} is not UTF-8"))
    }

    /// Key groups of a `process.wasm` or timer batch (0 elsewhere).
    pub fn groups(&self) -> usize {
        self.u32_at(self.ptr + 8) as usize
    }

    /// The rows of key group `group`.
    pub fn group_rows(&self, group: usize) -> Range<usize> {
        assert!(group < self.groups(), "group {group} of {}", self.groups());
        let offsets = self.u32_at(self.ptr + 12) + 4 * group as u32;
        self.u32_at(offsets) as usize..self.u32_at(offsets + 4) as usize
    }
}

/// One output column under construction.
#[derive(Debug, Clone)]
pub struct ColumnBuilder {
    ty: Type,
    len: usize,
    values: Vec<u8>,
    /// Strings and bytes: `len + 1` offsets into `data`.
    offsets: Vec<i32>,
    data: Vec<u8>,
    validity: Vec<u8>,
    nulls: usize,
}

impl ColumnBuilder {
    pub fn new(ty: Type) -> Self {
        let offsets = if ty.variable_width() { vec![0] } else { Vec::new() };
        ColumnBuilder { ty, len: 0, values: Vec::new(), offsets, data: Vec::new(), validity: Vec::new(), nulls: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn pushed(&mut self, valid: bool) {
        self.validity.push(valid as u8);
        self.nulls += usize::from(!valid);
        self.len += 1;
    }

    fn expect(&self, ty: Type) {
        assert_eq!(self.ty, ty, "pushing a {ty:?} value into a {:?} column", self.ty);
    }

    pub fn push_int(&mut self, value: i64) {
        self.expect(Type::Integer);
        self.values.extend_from_slice(&value.to_le_bytes());
        self.pushed(true);
    }

    pub fn push_float(&mut self, value: f64) {
        self.expect(Type::Float);
        self.values.extend_from_slice(&value.to_le_bytes());
        self.pushed(true);
    }

    pub fn push_bool(&mut self, value: bool) {
        self.expect(Type::Boolean);
        self.values.push(value as u8);
        self.pushed(true);
    }

    pub fn push_str(&mut self, value: &str) {
        self.expect(Type::String);
        self.push_var(value.as_bytes());
    }

    pub fn push_bytes(&mut self, value: &[u8]) {
        self.expect(Type::Bytes);
        self.push_var(value);
    }

    fn push_var(&mut self, value: &[u8]) {
        self.data.extend_from_slice(value);
        let end = i32::try_from(self.data.len()).expect("at most 2 GiB of string data per column");
        self.offsets.push(end);
        self.pushed(true);
    }

    /// A null (any type).
    pub fn push_null(&mut self) {
        match self.ty {
            Type::String | Type::Bytes => self.offsets.push(*self.offsets.last().unwrap_or(&0)),
            ty => self.values.extend(std::iter::repeat_n(0u8, ty.width())),
        }
        self.pushed(false);
    }

    /// Bytes of this column's regions when encoded (each 8-byte aligned).
    fn encoded_len(&self) -> usize {
        let pad = |n: usize| n.next_multiple_of(8);
        let validity = if self.nulls > 0 { pad(self.len) } else { 0 };
        let values = match self.ty {
            Type::String | Type::Bytes => pad(4 * (self.len + 1)) + pad(self.data.len()),
            ty => pad(ty.width() * self.len),
        };
        validity + values
    }
}

/// An output batch under construction; [`Output::finish`] lays it out in the module's memory.
#[derive(Debug, Clone, Default)]
pub struct Output {
    columns: Vec<ColumnBuilder>,
    buffer: Vec<u8>,
}

impl Output {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a new batch with columns of `types` (the operator's `schema`, in order).
    pub fn reset(&mut self, types: &[Type]) -> &mut Self {
        self.columns = types.iter().map(|t| ColumnBuilder::new(*t)).collect();
        self
    }

    /// Column `c` of the batch under construction.
    pub fn column(&mut self, c: usize) -> &mut ColumnBuilder {
        &mut self.columns[c]
    }

    /// Rows so far (every column must have as many when the batch is finished).
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, ColumnBuilder::len)
    }

    /// Bytes of the encoded batch.
    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES
            + COLUMN_BYTES * self.columns.len()
            + self.columns.iter().map(ColumnBuilder::encoded_len).sum::<usize>()
    }

    /// Appends the encoded batch to `out`, addressed as if `out`'s new bytes started at
    /// address `start` (8-byte aligned) of the module's memory. Panics when columns differ
    /// in length.
    pub fn encode_at(&self, start: u32, out: &mut Vec<u8>) {
        assert_eq!(start % 8, 0, "an output batch starts 8-byte aligned");
        let rows = self.rows();
        for (c, column) in self.columns.iter().enumerate() {
            assert_eq!(column.len, rows, "column {c} has {} rows, column 0 has {rows}", column.len);
        }
        let origin = out.len();
        let addr = |out: &Vec<u8>| start + (out.len() - origin) as u32;
        let put = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        let pad = |out: &mut Vec<u8>| {
            let n = (out.len() - origin).next_multiple_of(8) - (out.len() - origin);
            out.extend(std::iter::repeat_n(0u8, n));
        };
        for v in [rows as u32, self.columns.len() as u32, 0, 0, 0, 0] {
            put(out, v);
        }
        let descriptors = out.len();
        out.resize(out.len() + COLUMN_BYTES * self.columns.len(), 0);
        for (c, column) in self.columns.iter().enumerate() {
            let validity = if column.nulls > 0 {
                let at = addr(out);
                out.extend_from_slice(&column.validity);
                pad(out);
                at
            } else {
                0
            };
            let (values, data) = match column.ty {
                Type::Null => (0, 0),
                Type::String | Type::Bytes => {
                    let values = addr(out);
                    column.offsets.iter().for_each(|o| out.extend_from_slice(&o.to_le_bytes()));
                    pad(out);
                    let data = addr(out);
                    out.extend_from_slice(&column.data);
                    pad(out);
                    (values, data)
                }
                _ => {
                    let values = addr(out);
                    out.extend_from_slice(&column.values);
                    pad(out);
                    (values, 0)
                }
            };
            let d = descriptors + c * COLUMN_BYTES;
            for (i, v) in [column.ty as u32, validity, values, data].into_iter().enumerate() {
                out[d + 4 * i..d + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// Lays the batch out in this module's memory and returns its address, the value an
    /// export returns (0 for a batch without columns: no rows). The batch stays valid until
    /// the next `reset` or `finish`.
    pub fn finish(&mut self) -> u32 {
        if self.columns.is_empty() {
            return 0;
        }
        let len = self.encoded_len();
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        // Room for the batch plus alignment, reserved before its address is taken, so that
        // encoding never moves the buffer.
        buffer.reserve(len + 8);
        let skip = (buffer.as_ptr() as usize).next_multiple_of(8) - buffer.as_ptr() as usize;
        buffer.resize(skip, 0);
        let start = (buffer.as_ptr() as usize + skip) as u32;
        self.encode_at(start, &mut buffer);
        debug_assert!(buffer.len() <= len + 8);
        self.buffer = buffer;
        start
    }
}

/// `flint_open`'s parameters (`name=value` lines).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    entries: Vec<(String, String)>,
}

impl Params {
    pub fn parse(text: &str) -> Params {
        let entries =
            text.lines().filter_map(|line| line.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Params { entries }
    }

    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every parameter, in the job file's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The host functions (import module `flint`), on `wasm32` targets.
#[cfg(target_arch = "wasm32")]
pub mod host {
    mod raw {
        #[link(wasm_import_module = "flint")]
        extern "C" {
            pub fn log(level: i32, ptr: *const u8, len: i32);
            pub fn counter_add(name: *const u8, len: i32, delta: i64);
            pub fn fail(ptr: *const u8, len: i32) -> !;
            pub fn state(kind: i32, name: *const u8, len: i32) -> i32;
            pub fn key(group: i32);
            pub fn value_get_i64(state: i32, absent: i64) -> i64;
            pub fn value_set_i64(state: i32, value: i64);
            pub fn value_get(state: i32, buf: *mut u8, cap: i32) -> i32;
            pub fn value_set(state: i32, ptr: *const u8, len: i32);
            pub fn clear(state: i32);
            pub fn list_add(state: i32, ptr: *const u8, len: i32);
            pub fn list_len(state: i32) -> i32;
            pub fn list_get(state: i32, index: i32, buf: *mut u8, cap: i32) -> i32;
            pub fn map_put(state: i32, k: *const u8, klen: i32, v: *const u8, vlen: i32);
            pub fn map_get(state: i32, k: *const u8, klen: i32, buf: *mut u8, cap: i32) -> i32;
            pub fn map_remove(state: i32, k: *const u8, klen: i32) -> i32;
            pub fn map_len(state: i32) -> i32;
            pub fn map_key_at(state: i32, index: i32, buf: *mut u8, cap: i32) -> i32;
            pub fn timer_register(timestamp: i64);
            pub fn timer_delete(timestamp: i64);
            pub fn watermark() -> i64;
        }
    }

    /// Log levels.
    #[derive(Debug, Clone, Copy)]
    pub enum Level {
        Trace = 0,
        Debug = 1,
        Info = 2,
        Warn = 3,
        Error = 4,
    }

    /// A line in the taskmanager's log.
    pub fn log(level: Level, message: &str) {
        unsafe { raw::log(level as i32, message.as_ptr(), message.len() as i32) }
    }

    /// Adds `delta` to user counter `name` (an accumulator of the job).
    pub fn counter_add(name: &str, delta: u64) {
        unsafe { raw::counter_add(name.as_ptr(), name.len() as i32, delta as i64) }
    }

    /// Fails the task with `message`.
    pub fn fail(message: &str) -> ! {
        unsafe { raw::fail(message.as_ptr(), message.len() as i32) }
    }

    /// Makes key group `group` of the current batch the current key (`process.wasm`).
    pub fn key(group: usize) {
        unsafe { raw::key(group as i32) }
    }

    pub fn timer_register(timestamp: i64) {
        unsafe { raw::timer_register(timestamp) }
    }

    pub fn timer_delete(timestamp: i64) {
        unsafe { raw::timer_delete(timestamp) }
    }

    /// The operator's watermark (`i64::MIN` before the first).
    pub fn watermark() -> i64 {
        unsafe { raw::watermark() }
    }

    /// Reads a value of unknown length through a `(buf, cap) -> len` host call.
    fn read(mut call: impl FnMut(*mut u8, i32) -> i32) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 64];
        loop {
            let len = call(buf.as_mut_ptr(), buf.len() as i32);
            if len < 0 {
                return None;
            }
            if len as usize <= buf.len() {
                buf.truncate(len as usize);
                return Some(buf);
            }
            buf.resize(len as usize, 0);
        }
    }

    /// Value state of the current key.
    #[derive(Debug, Clone, Copy)]
    pub struct ValueState(i32);

    impl ValueState {
        pub fn new(name: &str) -> Self {
            ValueState(unsafe { raw::state(0, name.as_ptr(), name.len() as i32) })
        }
        pub fn get_i64(&self, absent: i64) -> i64 {
            unsafe { raw::value_get_i64(self.0, absent) }
        }
        pub fn set_i64(&self, value: i64) {
            unsafe { raw::value_set_i64(self.0, value) }
        }
        pub fn get(&self) -> Option<Vec<u8>> {
            read(|buf, cap| unsafe { raw::value_get(self.0, buf, cap) })
        }
        pub fn set(&self, value: &[u8]) {
            unsafe { raw::value_set(self.0, value.as_ptr(), value.len() as i32) }
        }
        pub fn clear(&self) {
            unsafe { raw::clear(self.0) }
        }
    }

    /// List state of the current key.
    #[derive(Debug, Clone, Copy)]
    pub struct ListState(i32);

    impl ListState {
        pub fn new(name: &str) -> Self {
            ListState(unsafe { raw::state(1, name.as_ptr(), name.len() as i32) })
        }
        pub fn add(&self, value: &[u8]) {
            unsafe { raw::list_add(self.0, value.as_ptr(), value.len() as i32) }
        }
        pub fn len(&self) -> usize {
            unsafe { raw::list_len(self.0) as usize }
        }
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
        pub fn get(&self, index: usize) -> Option<Vec<u8>> {
            read(|buf, cap| unsafe { raw::list_get(self.0, index as i32, buf, cap) })
        }
        pub fn clear(&self) {
            unsafe { raw::clear(self.0) }
        }
    }

    /// Map state (byte strings to byte strings) of the current key.
    #[derive(Debug, Clone, Copy)]
    pub struct MapState(i32);

    impl MapState {
        pub fn new(name: &str) -> Self {
            MapState(unsafe { raw::state(2, name.as_ptr(), name.len() as i32) })
        }
        pub fn put(&self, key: &[u8], value: &[u8]) {
            unsafe { raw::map_put(self.0, key.as_ptr(), key.len() as i32, value.as_ptr(), value.len() as i32) }
        }
        pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
            read(|buf, cap| unsafe { raw::map_get(self.0, key.as_ptr(), key.len() as i32, buf, cap) })
        }
        pub fn remove(&self, key: &[u8]) -> bool {
            unsafe { raw::map_remove(self.0, key.as_ptr(), key.len() as i32) == 1 }
        }
        pub fn len(&self) -> usize {
            unsafe { raw::map_len(self.0) as usize }
        }
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
        /// The key at `index` in byte order.
        pub fn key_at(&self, index: usize) -> Option<Vec<u8>> {
            read(|buf, cap| unsafe { raw::map_key_at(self.0, index as i32, buf, cap) })
        }
        pub fn clear(&self) {
            unsafe { raw::clear(self.0) }
        }
    }
}

/// Defines `flint_alloc` (the host's input region, from the Rust allocator). Use once per module.
#[macro_export]
macro_rules! guest_module {
    () => {
        #[no_mangle]
        pub extern "C" fn flint_alloc(size: i32) -> i32 {
            let Ok(layout) = ::std::alloc::Layout::from_size_align(size.max(1) as usize, 8) else { return 0 };
            // SAFETY: a non-zero size; the region is the host's for the module's lifetime.
            unsafe { ::std::alloc::alloc(layout) as usize as i32 }
        }
    };
}

/// Defines `flint_open` calling `$f(&Params) -> Result<(), String>`; an error is logged
/// and fails the task.
#[macro_export]
macro_rules! export_open {
    ($f:path) => {
        #[no_mangle]
        pub extern "C" fn flint_open(ptr: i32, len: i32) -> i32 {
            // SAFETY: the host wrote `len` bytes of parameter lines at `ptr`.
            let bytes = unsafe { ::std::slice::from_raw_parts(ptr as usize as *const u8, len as usize) };
            let params = $crate::Params::parse(::std::str::from_utf8(bytes).unwrap_or(""));
            match $f(&params) {
                Ok(()) => 0,
                Err(e) => $crate::host::fail(&e),
            }
        }
    };
}

/// Defines export `$name` (a batch function: `map`, `flat_map`, `process`, `on_timer` or a
/// scalar function) calling `$f(&Batch, &mut Output)`; the output is kept until the next
/// call. An output left without columns means no rows.
#[macro_export]
macro_rules! export_batch {
    ($name:ident => $f:path) => {
        #[no_mangle]
        pub extern "C" fn $name(batch: i32) -> i32 {
            ::std::thread_local! {
                static OUT: ::std::cell::RefCell<$crate::Output> = ::std::cell::RefCell::new($crate::Output::new());
            }
            // SAFETY: the host passes the address of a batch it wrote into this memory.
            let input = unsafe { $crate::Batch::from_raw(0, batch as u32) };
            OUT.with(|out| {
                let mut out = out.borrow_mut();
                out.reset(&[]);
                $f(&input, &mut out);
                out.finish() as i32
            })
        }
    };
}

#[cfg(test)]
mod tests;
