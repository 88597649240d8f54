//! The SDK against the host's own batch encoder and decoder (`flint_wasm::abi`), in a
//! native buffer standing in for the module's linear memory.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::*;

/// A zeroed, 8-byte aligned memory of `bytes` bytes.
struct Memory(Vec<u64>);

impl Memory {
    fn new(bytes: usize) -> Self {
        Memory(vec![0; bytes.div_ceil(8)])
    }
    fn bytes(&mut self) -> &mut [u8] {
        let len = self.0.len() * 8;
        // SAFETY: a u64 buffer viewed as its bytes.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut u8, len) }
    }
    fn base(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()))
}

fn input() -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![Some(1), None, Some(-3), Some(i64::MAX)])),
        Arc::new(Float64Array::from(vec![0.5, 1.5, f64::NAN, -0.0])),
        Arc::new(StringArray::from(vec![Some("a"), Some(""), None, Some("Zoë")])),
        Arc::new(BooleanArray::from(vec![true, false, true, false])),
        Arc::new(BinaryArray::from(vec![&b"\x00\xff"[..], b"", b"x", b"yz"])),
    ];
    let s = schema(&[
        ("n", DataType::Int64),
        ("x", DataType::Float64),
        ("s", DataType::Utf8),
        ("b", DataType::Boolean),
        ("raw", DataType::Binary),
    ]);
    RecordBatch::try_new(s, columns).unwrap()
}

#[test]
fn reads_every_type_of_a_batch_the_host_wrote() {
    let batch = input();
    let groups = [0u32, 1, 4];
    let mut mem = Memory::new(64 * 1024);
    let ptr = flint_wasm::abi::write_batch(mem.bytes(), 1024, &batch, &groups).unwrap();
    // SAFETY: the host's encoder wrote a batch at `ptr` of this memory.
    let b = unsafe { Batch::from_raw(mem.base(), ptr) };
    assert_eq!((b.rows(), b.columns(), b.groups()), (4, 5, 2));
    assert_eq!(
        (0..5).map(|c| b.column_type(c)).collect::<Vec<_>>(),
        [Type::Integer, Type::Float, Type::String, Type::Boolean, Type::Bytes].map(Some)
    );
    assert_eq!((b.ints(0)[0], b.ints(0)[2], b.ints(0)[3]), (1, -3, i64::MAX));
    assert_eq!((0..4).map(|r| b.is_valid(0, r)).collect::<Vec<_>>(), [true, false, true, true]);
    let x = b.floats(1);
    assert!(x[0] == 0.5 && x[1] == 1.5 && x[2].is_nan() && x[3].to_bits() == (-0.0f64).to_bits());
    assert_eq!((b.str(2, 0), b.str(2, 1), b.str(2, 3)), ("a", "", "Zoë"));
    assert!(!b.is_valid(2, 2));
    assert_eq!(b.bools(3), [1, 0, 1, 0]);
    assert_eq!((b.bytes(4, 0), b.bytes(4, 3)), (&b"\x00\xff"[..], &b"yz"[..]));
    assert_eq!((b.group_rows(0), b.group_rows(1)), (0..1, 1..4));
}

#[test]
fn an_output_batch_reads_back_through_the_host_decoder() {
    let mut out = Output::new();
    out.reset(&[Type::Integer, Type::Float, Type::String, Type::Boolean, Type::Bytes, Type::Null]);
    for row in 0..5i64 {
        let valid = row != 3;
        let c = out.column(0);
        if valid {
            c.push_int(row * 10)
        } else {
            c.push_null()
        }
        out.column(1).push_float(row as f64 / 2.0);
        let c = out.column(2);
        if valid {
            c.push_str(&"é".repeat(row as usize))
        } else {
            c.push_null()
        }
        out.column(3).push_bool(row % 2 == 0);
        out.column(4).push_bytes(&[row as u8; 3]);
        out.column(5).push_null();
    }
    let s = schema(&[
        ("n", DataType::Int64),
        ("x", DataType::Float64),
        ("s", DataType::Utf8),
        ("b", DataType::Boolean),
        ("raw", DataType::Binary),
        ("z", DataType::Null),
    ]);
    let mut mem = Memory::new(64 * 1024);
    let mut encoded = Vec::new();
    out.encode_at(4096, &mut encoded);
    assert_eq!(encoded.len(), out.encoded_len());
    mem.bytes()[4096..4096 + encoded.len()].copy_from_slice(&encoded);
    let batch = flint_wasm::abi::read_batch(mem.bytes(), 4096, &s).unwrap();
    assert_eq!(batch.num_rows(), 5);
    let n: Vec<Option<i64>> = batch.column(0).as_primitive::<Int64Type>().iter().collect();
    assert_eq!(n, [Some(0), Some(10), Some(20), None, Some(40)]);
    let x: Vec<f64> = batch.column(1).as_primitive::<Float64Type>().values().to_vec();
    assert_eq!(x, [0.0, 0.5, 1.0, 1.5, 2.0]);
    let text: Vec<Option<&str>> = batch.column(2).as_string::<i32>().iter().collect();
    assert_eq!(text, [Some(""), Some("é"), Some("éé"), None, Some("éééé")]);
    let b: Vec<Option<bool>> = batch.column(3).as_boolean().iter().collect();
    assert_eq!(b, [Some(true), Some(false), Some(true), Some(false), Some(true)]);
    assert_eq!(batch.column(4).as_binary::<i32>().value(4), [4u8; 3]);
    assert_eq!((batch.column(5).data_type(), batch.column(5).logical_null_count()), (&DataType::Null, 5));
}

#[test]
fn a_batch_written_by_the_sdk_reads_back_in_the_sdk() {
    // What a map guest does: read the host's batch, write one row per input row.
    let batch = input();
    let mut mem = Memory::new(64 * 1024);
    let ptr = flint_wasm::abi::write_batch(mem.bytes(), 64, &batch, &[]).unwrap();
    // SAFETY: the host's encoder wrote a batch at `ptr` of this memory.
    let b = unsafe { Batch::from_raw(mem.base(), ptr) };
    let mut out = Output::new();
    out.reset(&[Type::String]);
    for row in 0..b.rows() {
        if b.is_valid(2, row) {
            out.column(0).push_str(&b.str(2, row).to_uppercase());
        } else {
            out.column(0).push_null();
        }
    }
    let mut encoded = Vec::new();
    out.encode_at(8192, &mut encoded);
    mem.bytes()[8192..8192 + encoded.len()].copy_from_slice(&encoded);
    let back = flint_wasm::abi::read_batch(mem.bytes(), 8192, &schema(&[("s", DataType::Utf8)])).unwrap();
    let text: Vec<Option<&str>> = back.column(0).as_string::<i32>().iter().collect();
    assert_eq!(text, [Some("A"), Some(""), None, Some("ZOË")]);
}

#[test]
#[should_panic(expected = "column 1 has 0 rows, column 0 has 1")]
fn columns_of_different_lengths_are_refused() {
    let mut out = Output::new();
    out.reset(&[Type::Integer, Type::Integer]).column(0).push_int(1);
    out.encode_at(0, &mut Vec::new());
}

#[test]
fn parameters_parse_from_open_lines() {
    let p = Params::parse("small=1.0\nname=a=b\nbroken\nlarge=500\n");
    assert_eq!(p.get("small"), Some("1.0"));
    assert_eq!(p.get("name"), Some("a=b"));
    assert_eq!(p.get("large"), Some("500"));
    assert_eq!(p.get("broken"), None);
    assert_eq!(p.iter().count(), 3);
}
