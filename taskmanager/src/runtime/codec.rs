//! Record batches as network buffers.
//!
//! A buffer is one Arrow IPC record-batch message without the schema, which both ends
//! know from the plan:
//!
//! ```text
//! +----------------+------------------------------+---------+------------------------+
//! | u32 LE: meta   | IPC `Message` flatbuffer     | padding | body: the column       |
//! | length (bytes) | (RecordBatch header: lengths,| to 8    | buffers (validity,     |
//! |                | null counts, buffer offsets) | bytes   | offsets, values)       |
//! +----------------+------------------------------+---------+------------------------+
//! ```
//!
//! Encoding copies each column buffer once into the body (no per-row work); decoding
//! verifies the flatbuffer and slices the body into arrays (one copy of the body into an
//! aligned Arrow buffer for [`decode_batch`], none for [`decode_batch_bytes`]). The
//! header is a few hundred bytes for a handful of columns. Malformed bytes never panic:
//! they are a [`TaskError`].

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::read_record_batch;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow::ipc::{root_as_message, MessageHeader};
use bytes::{BufMut, Bytes, BytesMut};

use super::operator::TaskError;

/// Length of the prefix holding the metadata length.
const PREFIX: usize = 4;

/// The most rows one buffer may claim. Flint's batches hold thousands; a claim of more
/// (possible without bytes for columns of type null) is refused before anything is built.
const MAX_BATCH_ROWS: i64 = 1 << 24;

/// Encodes `batch` as one self-contained network buffer (see the module docs).
pub fn encode_batch(batch: &RecordBatch) -> Result<Bytes, TaskError> {
    let options = IpcWriteOptions::default();
    let mut tracker = DictionaryTracker::new(false);
    let mut context = IpcWriteContext::default();
    let (dictionaries, encoded) = IpcDataGenerator::default()
        .encode(batch, &mut tracker, &options, &mut context)
        .map_err(|e| TaskError::fatal(format!("encoding a record batch: {e}")))?;
    if !dictionaries.is_empty() {
        return Err(TaskError::fatal("encoding a record batch: dictionary-encoded columns are not supported"));
    }
    let meta = encoded.ipc_message.len();
    let padded = (PREFIX + meta).next_multiple_of(8);
    let mut out = BytesMut::with_capacity(padded + encoded.arrow_data.len());
    out.put_u32_le(u32::try_from(meta).map_err(|_| TaskError::fatal("record batch metadata over 4 GiB"))?);
    out.put_slice(&encoded.ipc_message);
    out.put_bytes(0, padded - PREFIX - meta);
    out.put_slice(&encoded.arrow_data);
    Ok(out.freeze())
}

/// Decodes a buffer written by [`encode_batch`] for a batch of `schema`.
pub fn decode_batch(bytes: &[u8], schema: &SchemaRef) -> Result<arrow::record_batch::RecordBatch, TaskError> {
    let (meta, body_start) = split(bytes)?;
    // One copy into an Arrow-owned (aligned) buffer; the arrays slice it.
    let body = Buffer::from(&bytes[body_start..]);
    decode(meta, &body, schema)
}

/// [`decode_batch`] without copying: the arrays keep `bytes` alive and point into it.
pub fn decode_batch_bytes(bytes: Bytes, schema: &SchemaRef) -> Result<arrow::record_batch::RecordBatch, TaskError> {
    let (meta, body_start) = split(&bytes)?;
    let meta = meta.to_vec();
    let body = Buffer::from(bytes.slice(body_start..));
    decode(&meta, &body, schema)
}

fn malformed(detail: impl std::fmt::Display) -> TaskError {
    TaskError::new(format!("malformed record batch buffer: {detail}"))
}

/// The metadata and where the body starts.
fn split(bytes: &[u8]) -> Result<(&[u8], usize), TaskError> {
    let prefix: [u8; PREFIX] =
        bytes.get(..PREFIX).and_then(|p| p.try_into().ok()).ok_or_else(|| malformed("shorter than its header"))?;
    let meta = u32::from_le_bytes(prefix) as usize;
    let body_start = (PREFIX + meta).next_multiple_of(8);
    if body_start > bytes.len() {
        return Err(malformed(format!("metadata of {meta} bytes in a buffer of {} bytes", bytes.len())));
    }
    Ok((&bytes[PREFIX..PREFIX + meta], body_start))
}

fn decode(meta: &[u8], body: &Buffer, schema: &SchemaRef) -> Result<arrow::record_batch::RecordBatch, TaskError> {
    let message = root_as_message(meta).map_err(malformed)?;
    if message.header_type() != MessageHeader::RecordBatch {
        return Err(malformed(format!("expected a record batch message, got {:?}", message.header_type())));
    }
    let header = message.header_as_record_batch().ok_or_else(|| malformed("no record batch header"))?;
    if header.length() < 0 || header.length() > MAX_BATCH_ROWS {
        return Err(malformed(format!("{} rows (at most {MAX_BATCH_ROWS} in one buffer)", header.length())));
    }
    if header.compression().is_some() {
        return Err(malformed("compressed buffers are not supported"));
    }
    // The reader slices the body without checking: every buffer must lie inside it.
    for buffer in header.buffers().into_iter().flatten() {
        let (offset, length) = (buffer.offset(), buffer.length());
        let end = offset.checked_add(length).ok_or_else(|| malformed("a buffer range overflows"))?;
        if offset < 0 || length < 0 || end as u64 > body.len() as u64 {
            return Err(malformed(format!("a buffer at {offset}+{length} lies outside the {}-byte body", body.len())));
        }
    }
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_record_batch(body, header, Arc::clone(schema), &HashMap::new(), None, &message.version())
    }));
    match decoded {
        Ok(batch) => batch.map_err(malformed),
        Err(_) => Err(malformed("the reader rejected it")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use arrow::array::{Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, NullArray, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn all_types() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("raw", DataType::Binary, true),
            Field::new("z", DataType::Null, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(i64::MIN), Some(i64::MAX)])),
            Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN), None, Some(-0.0)])),
            Arc::new(StringArray::from(vec![Some("a"), Some(""), None, Some("ünïcode ✓")])),
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false), Some(true)])),
            Arc::new(BinaryArray::from(vec![Some(&b"\x00\xff"[..]), None, Some(b""), Some(b"xyz")])),
            Arc::new(NullArray::new(4)),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn round_trips_every_type_with_nulls() {
        let batch = all_types();
        let bytes = encode_batch(&batch).unwrap();
        let back = decode_batch(&bytes, batch.schema_ref()).unwrap();
        assert_eq!(back.num_rows(), 4);
        for (a, b) in batch.columns().iter().zip(back.columns()) {
            assert_eq!(a.to_data(), b.to_data(), "{:?}", a.data_type());
        }
        let back = decode_batch_bytes(bytes, batch.schema_ref()).unwrap();
        assert_eq!(back.column(2).as_ref(), batch.column(2).as_ref());
    }

    #[test]
    fn round_trips_empty_and_sliced_batches() {
        let batch = all_types();
        for part in [batch.slice(0, 0), batch.slice(1, 2), batch.slice(3, 1)] {
            let back = decode_batch(&encode_batch(&part).unwrap(), part.schema_ref()).unwrap();
            assert_eq!(back.num_rows(), part.num_rows());
            for (a, b) in part.columns().iter().zip(back.columns()) {
                assert_eq!(a.as_ref(), b.as_ref());
            }
        }
    }

    #[test]
    fn malformed_buffers_are_errors_not_panics() {
        let batch = all_types();
        let bytes = encode_batch(&batch).unwrap();
        assert!(decode_batch(&[], batch.schema_ref()).is_err());
        assert!(decode_batch(&[255, 255, 255, 255, 0], batch.schema_ref()).is_err());
        assert!(decode_batch(&bytes[..bytes.len() / 2], batch.schema_ref()).is_err());
        let mut garbage = bytes.to_vec();
        for b in garbage.iter_mut().skip(4).take(64) {
            *b = 0xAB;
        }
        assert!(decode_batch(&garbage, batch.schema_ref()).is_err());
    }

    /// The worst buffers: a claim of 2^40 rows (columns of type null need no bytes for it),
    /// buffer offsets far outside the body, and 20,000 random mutations of a real buffer.
    /// Each is an error or a batch no larger than its bytes allow, never a panic.
    #[test]
    fn hostile_buffers_are_refused_in_bounded_time() {
        let nulls = Arc::new(Schema::new(vec![Field::new("z", DataType::Null, true)]));
        let huge = RecordBatch::try_new(nulls.clone(), vec![Arc::new(NullArray::new(1 << 40))]).unwrap();
        let err = decode_batch(&encode_batch(&huge).unwrap(), &nulls).unwrap_err();
        assert!(err.to_string().contains("rows"), "{err}");

        let batch = all_types();
        let good = encode_batch(&batch).unwrap().to_vec();
        let started = Instant::now();
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases: 20_000,
            failure_persistence: None,
            ..Default::default()
        });
        let mutations = (proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), any::<usize>());
        let decoded = std::cell::Cell::new(0u32);
        runner
            .run(&mutations, |(flips, cut)| {
                let mut bytes = good.clone();
                for (at, value) in flips {
                    let i = at % bytes.len();
                    bytes[i] = value;
                }
                bytes.truncate(1 + cut % bytes.len());
                if let Ok(back) = decode_batch(&bytes, batch.schema_ref()) {
                    prop_assert!(back.num_rows() as i64 <= MAX_BATCH_ROWS);
                    decoded.set(decoded.get() + 1);
                }
                Ok(())
            })
            .unwrap();
        eprintln!("20,000 mutated record batch buffers in {:?} ({} still decoded)", started.elapsed(), decoded.get());
    }

    /// Prints encode + decode throughput for a 4096-row (int64, utf8) batch.
    #[test]
    fn codec_throughput() {
        let n = 4096;
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let ints = Int64Array::from_iter_values(0..n as i64);
        let strs = StringArray::from_iter_values((0..n).map(|i| format!("{i:016}")));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ints), Arc::new(strs)]).unwrap();
        let size = encode_batch(&batch).unwrap().len();
        let rounds = 500;
        let start = Instant::now();
        for _ in 0..rounds {
            let bytes = encode_batch(&batch).unwrap();
            let back = decode_batch(&bytes, &schema).unwrap();
            assert_eq!(back.num_rows(), n);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "codec: {size} bytes per 4096-row batch, encode+decode {:.1} M rows/s, {:.2} GB/s",
            (rounds * n) as f64 / secs / 1e6,
            (rounds * size) as f64 / secs / 1e9
        );
    }
}
