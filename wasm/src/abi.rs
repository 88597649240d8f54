//! The boundary between the host and a guest: how batches lie in linear memory, and what a
//! module imports and exports. `docs/wasm.md` documents the same for guest authors.
//!
//! A batch is a header followed by one descriptor per column; every number is a
//! little-endian `u32` and every pointer an address in the guest's linear memory:
//!
//! ```text
//! header (24 bytes): rows, columns, groups, group_offsets, 0, 0
//! column (16 bytes): type, validity, values, data
//! ```
//!
//! | type | code | `values` | `data` |
//! | --- | --- | --- | --- |
//! | integer | 1 | `i64[rows]` | 0 |
//! | float | 2 | `f64[rows]` | 0 |
//! | string | 3 | `i32 offsets[rows + 1]` | UTF-8 bytes |
//! | boolean | 4 | `u8[rows]` (0 or 1) | 0 |
//! | bytes | 5 | `i32 offsets[rows + 1]` | bytes |
//! | null | 6 | 0 | 0 |
//!
//! `validity` is 0 when no value is null, else a `u8[rows]` with 1 for a value and 0 for a
//! null. `groups`/`group_offsets` are set on the batches of `process.wasm` and `on_timer`:
//! rows `offsets[g]..offsets[g+1]` share key group `g`; elsewhere both are 0. Offsets of
//! string columns start at 0. The host writes its input batches 8-byte aligned into memory
//! it got from the guest's `flint_alloc`, and reads the guest's output batch (a pointer the
//! export returns; 0 means no rows) before the next call, checking every pointer and length
//! against the memory's size.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, NullArray, StringArray};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use wasmtime::ValType;

pub const HEADER_BYTES: usize = 24;
pub const COLUMN_BYTES: usize = 16;
/// The most rows one output batch may have.
pub const MAX_OUTPUT_ROWS: usize = 1 << 22;

/// The type code of an Arrow type Flint uses.
pub fn type_code(data_type: &DataType) -> Option<u32> {
    Some(match data_type {
        DataType::Int64 => 1,
        DataType::Float64 => 2,
        DataType::Utf8 => 3,
        DataType::Boolean => 4,
        DataType::Binary => 5,
        DataType::Null => 6,
        _ => return None,
    })
}

/// The Flint type name of a type code (for messages).
pub fn type_name(code: u32) -> &'static str {
    match code {
        1 => "integer",
        2 => "float",
        3 => "string",
        4 => "boolean",
        5 => "bytes",
        6 => "null",
        _ => "unknown",
    }
}

/// The import module of Flint's host functions.
pub const HOST_MODULE: &str = "flint";
/// Imports from this module are linked to functions that fail the call with a message
/// naming the import: a guest built against WASI instantiates, and a guest that tries to
/// open a file, read the clock or the environment fails instead.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

use ValType::{I32, I64};

/// Every host function: name, parameters, results.
pub const HOST_FUNCTIONS: &[(&str, &[ValType], &[ValType])] = &[
    ("log", &[I32, I32, I32], &[]),
    ("counter_add", &[I32, I32, I64], &[]),
    ("fail", &[I32, I32], &[]),
    ("state", &[I32, I32, I32], &[I32]),
    ("key", &[I32], &[]),
    ("value_get_i64", &[I32, I64], &[I64]),
    ("value_set_i64", &[I32, I64], &[]),
    ("value_get", &[I32, I32, I32], &[I32]),
    ("value_set", &[I32, I32, I32], &[]),
    ("clear", &[I32], &[]),
    ("list_add", &[I32, I32, I32], &[]),
    ("list_len", &[I32], &[I32]),
    ("list_get", &[I32, I32, I32, I32], &[I32]),
    ("map_put", &[I32, I32, I32, I32, I32], &[]),
    ("map_get", &[I32, I32, I32, I32, I32], &[I32]),
    ("map_remove", &[I32, I32, I32], &[I32]),
    ("map_len", &[I32], &[I32]),
    ("map_key_at", &[I32, I32, I32, I32], &[I32]),
    ("timer_register", &[I64], &[]),
    ("timer_delete", &[I64], &[]),
    ("watermark", &[], &[I64]),
];

/// Exports: the allocator the host writes input batches into.
pub const ALLOC_EXPORT: &str = "flint_alloc";
/// Optional `flint_open(params_ptr, params_len) -> i32` (0 = ready).
pub const OPEN_EXPORT: &str = "flint_open";
/// Optional `flint_close()`.
pub const CLOSE_EXPORT: &str = "flint_close";
/// The linear memory.
pub const MEMORY_EXPORT: &str = "memory";

/// Bytes `write_batch` needs for `batch` (with `groups` key groups), including alignment slack.
pub fn batch_size(batch: &RecordBatch, groups: usize) -> usize {
    let rows = batch.num_rows();
    let mut size = HEADER_BYTES + COLUMN_BYTES * batch.num_columns() + 8;
    if groups > 0 {
        size += align8(4 * (groups + 1));
    }
    for column in batch.columns() {
        if column.null_count() > 0 {
            size += align8(rows);
        }
        size += match column.data_type() {
            DataType::Int64 | DataType::Float64 => 8 * rows,
            DataType::Boolean => align8(rows),
            DataType::Utf8 | DataType::Binary => align8(4 * (rows + 1)) + align8(value_bytes(column)),
            _ => 0,
        };
    }
    size
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn value_bytes(column: &ArrayRef) -> usize {
    let offsets = offsets_of(column);
    match offsets {
        Some(o) if !o.is_empty() => (o[o.len() - 1] - o[0]) as usize,
        _ => 0,
    }
}

fn offsets_of(column: &ArrayRef) -> Option<&[i32]> {
    match column.data_type() {
        DataType::Utf8 => column.as_any().downcast_ref::<StringArray>().map(|a| a.value_offsets()),
        DataType::Binary => column.as_any().downcast_ref::<BinaryArray>().map(|a| a.value_offsets()),
        _ => None,
    }
}

/// Writes `batch` at `base` (the region `base..base + batch_size(..)` of `mem`); returns the
/// header's address. `group_offsets` are the row offsets of the key groups (`groups + 1`
/// entries) or empty.
pub fn write_batch(mem: &mut [u8], base: usize, batch: &RecordBatch, group_offsets: &[u32]) -> Result<u32, String> {
    let end = base
        .checked_add(batch_size(batch, group_offsets.len().saturating_sub(1)))
        .filter(|&end| end <= mem.len())
        .ok_or("the input batch does not fit the guest's buffer")?;
    let header = align8(base);
    let rows = batch.num_rows();
    let mut at = header + HEADER_BYTES + COLUMN_BYTES * batch.num_columns();
    let put = |mem: &mut [u8], at: usize, v: u32| mem[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put(mem, header, rows as u32);
    put(mem, header + 4, batch.num_columns() as u32);
    let groups = group_offsets.len().saturating_sub(1);
    put(mem, header + 8, groups as u32);
    put(mem, header + 16, 0);
    put(mem, header + 20, 0);
    if groups > 0 {
        at = align8(at);
        put(mem, header + 12, at as u32);
        for (i, o) in group_offsets.iter().enumerate() {
            put(mem, at + 4 * i, *o);
        }
        at += 4 * group_offsets.len();
    } else {
        put(mem, header + 12, 0);
    }
    for (c, column) in batch.columns().iter().enumerate() {
        let desc = header + HEADER_BYTES + COLUMN_BYTES * c;
        let code = type_code(column.data_type())
            .ok_or_else(|| format!("column {c} has type {}, which guests cannot take", column.data_type()))?;
        put(mem, desc, code);
        let mut validity = 0u32;
        if let Some(nulls) = column.nulls().filter(|n| n.null_count() > 0) {
            at = align8(at);
            validity = at as u32;
            for (i, valid) in nulls.iter().enumerate() {
                mem[at + i] = valid as u8;
            }
            at += rows;
        }
        put(mem, desc + 4, validity);
        at = align8(at);
        let (values, data) = match column.data_type() {
            DataType::Int64 => {
                let a = column.as_any().downcast_ref::<Int64Array>().ok_or("not an Int64Array")?;
                let bytes = a.values().inner().as_slice();
                mem[at..at + bytes.len()].copy_from_slice(bytes);
                let v = at;
                at += bytes.len();
                (v, 0)
            }
            DataType::Float64 => {
                let a = column.as_any().downcast_ref::<Float64Array>().ok_or("not a Float64Array")?;
                let bytes = a.values().inner().as_slice();
                mem[at..at + bytes.len()].copy_from_slice(bytes);
                let v = at;
                at += bytes.len();
                (v, 0)
            }
            DataType::Boolean => {
                let a = column.as_any().downcast_ref::<BooleanArray>().ok_or("not a BooleanArray")?;
                for (i, b) in a.values().iter().enumerate() {
                    mem[at + i] = b as u8;
                }
                let v = at;
                at += rows;
                (v, 0)
            }
            DataType::Utf8 | DataType::Binary => {
                let offsets = offsets_of(column).ok_or("not a string array")?;
                let first = offsets[0];
                let v = at;
                for (i, o) in offsets.iter().enumerate() {
                    mem[at + 4 * i..at + 4 * i + 4].copy_from_slice(&(o - first).to_le_bytes());
                }
                at = align8(at + 4 * offsets.len());
                let bytes = match column.data_type() {
                    DataType::Utf8 => column.as_any().downcast_ref::<StringArray>().map(|a| a.values().as_slice()),
                    _ => column.as_any().downcast_ref::<BinaryArray>().map(|a| a.values().as_slice()),
                }
                .ok_or("not a string array")?;
                let bytes = &bytes[first as usize..offsets[offsets.len() - 1] as usize];
                mem[at..at + bytes.len()].copy_from_slice(bytes);
                let d = at;
                at += bytes.len();
                (v, d)
            }
            _ => (0, 0),
        };
        put(mem, desc + 8, values as u32);
        put(mem, desc + 12, data as u32);
    }
    debug_assert!(at <= end);
    Ok(header as u32)
}

fn u32_at(mem: &[u8], at: usize) -> Result<u32, String> {
    mem.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| format!("address {at} is outside the memory ({} bytes)", mem.len()))
}

fn region<'a>(mem: &'a [u8], ptr: u32, len: usize, what: &str) -> Result<&'a [u8], String> {
    let start = ptr as usize;
    start
        .checked_add(len)
        .and_then(|end| mem.get(start..end))
        .ok_or_else(|| format!("{what} at {ptr} with {len} bytes is outside the memory ({} bytes)", mem.len()))
}

/// Reads the guest's batch at `ptr` as a batch of `schema`: the column count and types must
/// match, and every region must lie inside `mem`.
pub fn read_batch(mem: &[u8], ptr: u32, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let at = ptr as usize;
    let rows = u32_at(mem, at)? as usize;
    let columns = u32_at(mem, at + 4)? as usize;
    if rows > MAX_OUTPUT_ROWS {
        return Err(format!("{rows} rows; at most {MAX_OUTPUT_ROWS} per batch"));
    }
    if columns != schema.fields().len() {
        return Err(format!("{columns} columns where the schema declares {}", schema.fields().len()));
    }
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns);
    for (c, field) in schema.fields().iter().enumerate() {
        let desc = at + HEADER_BYTES + COLUMN_BYTES * c;
        let code = u32_at(mem, desc)?;
        let want = type_code(field.data_type()).ok_or("unsupported schema type")?;
        let name = field.name();
        if code != want {
            return Err(format!(
                "column '{name}' has type {} ({code}) where the schema declares {}",
                type_name(code),
                type_name(want)
            ));
        }
        let validity = u32_at(mem, desc + 4)?;
        let values = u32_at(mem, desc + 8)?;
        let data = u32_at(mem, desc + 12)?;
        let nulls = if validity == 0 || code == 6 {
            None
        } else {
            let bytes = region(mem, validity, rows, &format!("the validity of '{name}'"))?;
            Some(NullBuffer::new(BooleanBuffer::from_iter(bytes.iter().map(|b| *b != 0))))
        };
        if nulls.as_ref().is_some_and(|n| n.null_count() > 0) && !field.is_nullable() {
            return Err(format!("column '{name}' has nulls"));
        }
        let array: ArrayRef = match code {
            1 | 2 => {
                let bytes = region(mem, values, rows * 8, &format!("the values of '{name}'"))?;
                let buffer = Buffer::from_slice_ref(bytes);
                if code == 1 {
                    Arc::new(Int64Array::new(ScalarBuffer::new(buffer, 0, rows), nulls))
                } else {
                    Arc::new(Float64Array::new(ScalarBuffer::new(buffer, 0, rows), nulls))
                }
            }
            4 => {
                let bytes = region(mem, values, rows, &format!("the values of '{name}'"))?;
                Arc::new(BooleanArray::new(BooleanBuffer::from_iter(bytes.iter().map(|b| *b != 0)), nulls))
            }
            3 | 5 => {
                let raw = region(mem, values, 4 * (rows + 1), &format!("the offsets of '{name}'"))?;
                let offsets: Vec<i32> =
                    raw.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
                if offsets[0] != 0 || offsets.windows(2).any(|w| w[1] < w[0]) {
                    return Err(format!("the offsets of '{name}' do not start at 0 and ascend"));
                }
                let len = offsets[rows] as usize;
                let bytes = region(mem, data, len, &format!("the data of '{name}'"))?;
                let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
                let buffer = Buffer::from_slice_ref(bytes);
                if code == 3 {
                    Arc::new(
                        StringArray::try_new(offsets, buffer, nulls)
                            .map_err(|e| format!("column '{name}' is not UTF-8: {e}"))?,
                    )
                } else {
                    Arc::new(BinaryArray::try_new(offsets, buffer, nulls).map_err(|e| e.to_string())?)
                }
            }
            _ => Arc::new(NullArray::new(rows)),
        };
        arrays.push(array);
    }
    RecordBatch::try_new_with_options(schema.clone(), arrays, &RecordBatchOptions::new().with_row_count(Some(rows)))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn sample() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, false),
            Field::new("raw", DataType::Binary, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(-3)])),
                Arc::new(Float64Array::from(vec![0.5, 1.5, 2.5])),
                Arc::new(StringArray::from(vec![Some("a"), Some("héllo"), None])),
                Arc::new(BooleanArray::from(vec![true, false, true])),
                Arc::new(BinaryArray::from(vec![&b"\x00"[..], b"", b"xyz"])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn batches_round_trip_through_memory() {
        let batch = sample();
        for b in [batch.clone(), batch.slice(1, 2)] {
            let mut mem = vec![0u8; 4096];
            let size = batch_size(&b, 2);
            let ptr = write_batch(&mut mem, 3, &b, &[0, 1, b.num_rows() as u32]).unwrap();
            assert_eq!(ptr % 8, 0);
            assert!(ptr as usize + HEADER_BYTES <= 3 + size);
            assert_eq!(u32_at(&mem, ptr as usize + 8).unwrap(), 2, "groups");
            let back = read_batch(&mem, ptr, &b.schema()).unwrap();
            assert_eq!(back, b);
        }
    }

    #[test]
    fn bad_output_batches_are_refused_with_a_reason() {
        let batch = sample();
        let mut mem = vec![0u8; 4096];
        let ptr = write_batch(&mut mem, 0, &batch, &[]).unwrap() as usize;
        let schema = batch.schema();
        let set = |mem: &mut Vec<u8>, at: usize, v: u32| mem[at..at + 4].copy_from_slice(&v.to_le_bytes());
        // (address, new u32 there, expected reason)
        let cases = [
            (ptr + 4, 2, "2 columns"),
            (ptr + HEADER_BYTES, 2, "has type float"),
            (ptr + HEADER_BYTES + 8, 4090, "outside the memory"),
            (ptr, 1 << 23, "rows; at most"),
            // Column 'x' is not nullable: point its validity at zeros (the header's group fields).
            (ptr + HEADER_BYTES + COLUMN_BYTES + 4, ptr as u32 + 8, "has nulls"),
        ];
        for (at, value, expected) in cases {
            let mut m = mem.clone();
            set(&mut m, at, value);
            let err = read_batch(&m, ptr as u32, &schema).unwrap_err();
            assert!(err.contains(expected), "{err} (expected {expected})");
        }
        // Offsets that descend, and bytes that are not UTF-8.
        let s = ptr + HEADER_BYTES + 2 * COLUMN_BYTES;
        let offsets = u32_at(&mem, s + 8).unwrap() as usize;
        let mut m = mem.clone();
        set(&mut m, offsets + 4, 9);
        assert!(read_batch(&m, ptr as u32, &schema).unwrap_err().contains("ascend"));
        let data = u32_at(&mem, s + 12).unwrap() as usize;
        let mut m = mem.clone();
        m[data] = 0xff;
        assert!(read_batch(&m, ptr as u32, &schema).unwrap_err().contains("UTF-8"));
        assert!(read_batch(&mem, 4094, &schema).unwrap_err().contains("outside"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Whatever a guest leaves in its memory and returns as a pointer, reading it as a
        /// batch is an answer (a batch or a reason), never a panic or an allocation beyond
        /// the memory's size.
        #[test]
        fn reading_arbitrary_guest_memory_never_panics(
            mut mem in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            ptr in 0u32..2100,
            small in proptest::collection::vec(0u32..64, 0..24),
        ) {
            // Plant small plausible numbers (row counts, pointers, type codes) at the start.
            for (i, v) in small.iter().enumerate() {
                if let Some(slot) = mem.get_mut(4 * i..4 * i + 4) {
                    slot.copy_from_slice(&v.to_le_bytes());
                }
            }
            let batch = sample();
            let _ = read_batch(&mem, ptr, &batch.schema());
            let _ = read_batch(&mem, 0, &batch.schema());
        }
    }
}
