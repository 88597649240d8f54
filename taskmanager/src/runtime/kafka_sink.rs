//! `sink.kafka`: writes records to a Kafka topic as Flink's `KafkaSink` does, with its three
//! delivery guarantees.
//!
//! - **Encoding.** A batch is encoded at once into one byte buffer per part (key, value) with
//!   a length per record ([`Blobs`]): `json` is one object per record (arrow-json's encoders
//!   per column; bytes in base64 as Flink's JSON format writes them; nulls as `null`), `csv`
//!   the fields in order through the `csv` crate (RFC 4180 quoting where needed; null is an
//!   empty field; bytes in base64), `raw` the single string or bytes field as it is (a null
//!   value is a tombstone, a null key no key).
//! - **Partitions** (`sink.partitioner`). `default`: librdkafka's `murmur2_random`
//!   partitioner (the Java client's: murmur2 of the key, random without a key) unless the job
//!   sets `properties.partitioner`; `fixed`: subtask `i` writes partition `i % partitions`;
//!   `round-robin`: each record the next partition. The partition count is read once, with
//!   the first batch.
//! - **Client.** `properties.*` go to librdkafka as they are; an unknown property or a bad
//!   value fails the task (fatal) with librdkafka's message, which names it. `client.id` is
//!   `flint-<job>-<operator>-<subtask>` unless given. The producer queue is bounded
//!   (`queue.buffering.max.*`): when it is full the task serves delivery reports and retries,
//!   which is back-pressure; no record is ever dropped.
//!
//! # Delivery guarantees
//!
//! - `none`: records are handed to the producer; nothing waits for them, except at the end
//!   of the input (as Flink flushes then).
//! - `at-least-once` (the default): as `none`, and `snapshot_state` waits until every record
//!   handed over so far is acknowledged. A failed delivery, reported by a callback, fails the
//!   task (retryable) with the next batch or at the next snapshot at the latest.
//! - `exactly-once`: librdkafka cannot resume another producer's open transaction (Flink does
//!   that with the Java client, by reflection), so the sink writes ahead instead, which stays
//!   exactly-once across crashes:
//!   - The records of the current checkpoint epoch are encoded (key, value, partition when the
//!     sink chooses it) and kept in memory. `snapshot_state(c)` makes them an [`Entry`]
//!     `{origin, checkpoint_id: c, records}` (origin: this subtask) and writes every entry not
//!     known to be committed into the list state [`PENDING_STATE`].
//!   - `notify_checkpoint_complete(c)` hands the entries of checkpoints `≤ c`, in order, to
//!     the sink's **committer thread**, which owns the transactional producer
//!     `<prefix>-<origin>` and writes each entry in one Kafka transaction. In the same
//!     transaction it commits offset `c` of partition 0 of the topic for the consumer group
//!     `<prefix>-<origin>`: the **marker** "checkpoint `c` of origin `origin` is committed",
//!     atomic with the records. An entry is dropped once the thread confirms its commit; the
//!     task never waits for the thread, except at the end of the input.
//!   - `restore_state`: the entries in the state all belong to completed checkpoints. For
//!     each origin it now owns, the thread creates the producer `<prefix>-<origin>`, calls
//!     `init_transactions` (which fences zombies with that id and aborts their open
//!     transaction), reads the marker and commits exactly the entries above it, in order.
//!   - `finish` (end of a bounded input): whatever is left is committed, the records since
//!     the last checkpoint in a last transaction with marker `last checkpoint + 1`, and the
//!     task waits for the thread.
//!   - The records held in memory are bounded by [`MAX_BUFFERED_BYTES`]; beyond it the task
//!     fails (retryable), saying that no checkpoint completed to release them.
//!   - A fatal transaction error (e.g. fenced by another producer with the same id) fails the
//!     task for good with the broker's message; an abortable one aborts the transaction and
//!     fails the task (retryable): the entries are still in the state and the restore redoes
//!     them.
//!
//! Who owns which origin. Pending entries are a [`Redistribution::Union`] list, not a
//! `Split` one: `Split` deals single elements round robin, so entries of one origin could
//! reach two new subtasks (two producers with one transactional id fence each other, and a
//! later marker would hide an earlier entry committed elsewhere), or reach a subtask other
//! than the one that uses that id for its new records. With `Union` every restored subtask
//! sees every entry and keeps those whose origin `o` has `o % parallelism == subtask`: its
//! own id is always its own, ids above the new parallelism go to exactly one subtask.
//! (`restore_stores` reads every old state file on every subtask anyway; entries of other
//! origins are dropped at once.) The union list [`SUBTASKS_STATE`] records, per subtask, the
//! parallelism, how many ids may have been used, the checkpoint id and the **lineage**: a
//! random id drawn when the job starts without state and kept across restores. So a
//! rescaled restore also opens (and so cleans up) the ids above the new parallelism that
//! have no entries left.
//!
//! The marker carries the lineage as its offset metadata, and only a marker of this lineage
//! counts: a stale marker left by another job with the same prefix never hides an entry.
//! When a restore finds a marker beyond the checkpoint it restores from (the job went back to
//! an older checkpoint or savepoint), it moves the marker back to that checkpoint in an
//! empty transaction, so later entries are never taken for committed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::array::{Array, AsArray, BinaryArray, StringArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, FieldRef, SchemaRef};
use arrow::json::writer::{make_encoder, EncoderOptions, NullableEncoder};
use arrow::record_batch::RecordBatch;
use flint_common::job::catalog::{property, DeliveryGuarantee, KafkaFormat, KafkaSinkSpec, SinkPartitioner};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::operator::{Collector, Operator, OperatorContext, TaskError};
use super::sinks::Column;
use crate::state::{decode_value, encode_value, Redistribution, StateStore};

/// Union list of the exactly-once sink: every [`Entry`] not known to be committed.
const PENDING_STATE: &str = "kafka-sink-pending";
/// Union list of the exactly-once sink: one [`SubtaskRecord`] per subtask.
const SUBTASKS_STATE: &str = "kafka-sink-subtasks";
/// The accumulator counting records acknowledged by Kafka (exactly-once: committed).
pub const RECORDS_WRITTEN: &str = "kafka-records-written";
/// The most bytes of encoded records an exactly-once sink keeps in memory (the current epoch
/// plus entries not committed yet). Checkpoints release them; 512 MiB is several checkpoint
/// intervals of a busy subtask, and far below a TaskManager's memory.
pub const MAX_BUFFERED_BYTES: usize = 512 << 20;
/// How long a transactional call (init, send offsets, commit, abort) may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a metadata or committed-offset request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts of a transactional call that fails with a retriable error.
const TXN_ATTEMPTS: usize = 3;
/// How long a full producer queue, or a flush, waits between polls of delivery reports.
/// (rdkafka's `poll(timeout)` runs to the end of its timeout and spins through its last
/// millisecond, so the sink polls without waiting and sleeps between polls.)
const POLL_PAUSE: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------
// Encoded records
// ---------------------------------------------------------------------------------------

/// Bytes serialized as one MessagePack `bin` (serde's default for `Vec<u8>` is an array of
/// integers: larger and slower).
#[derive(Debug, Default, Clone, PartialEq)]
struct ByteBuf(Vec<u8>);

impl Serialize for ByteBuf {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

/// One part (keys or values) of a run of records: their bytes back to back, a length per
/// record, and which records are null (empty when none is).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Blobs {
    bytes: ByteBuf,
    lens: Vec<u32>,
    nulls: Vec<bool>,
}

impl Blobs {
    fn len(&self) -> usize {
        self.lens.len()
    }

    fn memory(&self) -> usize {
        self.bytes.0.len() + self.lens.len() * 4 + self.nulls.len()
    }

    /// Records the validity of `n` records just appended (`None`: all valid).
    fn extend_nulls(&mut self, before: usize, n: usize, validity: Option<&NullBuffer>) {
        match validity.filter(|v| v.null_count() > 0) {
            Some(validity) => {
                self.nulls.resize(before, false);
                self.nulls.extend(validity.iter().take(n).map(|valid| !valid));
            }
            None if !self.nulls.is_empty() => self.nulls.resize(before + n, false),
            None => {}
        }
    }

    fn clear(&mut self) {
        self.bytes.0.clear();
        self.lens.clear();
        self.nulls.clear();
    }

    /// Whether the lengths, nulls and bytes agree on `n` records (restored state is checked
    /// before use, so a corrupt entry is an error, never a panic).
    fn is_consistent(&self, n: usize) -> bool {
        self.lens.len() == n
            && (self.nulls.is_empty() || self.nulls.len() == n)
            && self.lens.iter().map(|&l| l as u64).sum::<u64>() == self.bytes.0.len() as u64
    }

    fn iter(&self) -> impl Iterator<Item = Option<&[u8]>> + '_ {
        let mut pos = 0usize;
        self.lens.iter().enumerate().map(move |(i, &len)| {
            let bytes = &self.bytes.0[pos..pos + len as usize];
            pos += len as usize;
            if self.nulls.get(i).copied().unwrap_or(false) {
                None
            } else {
                Some(bytes)
            }
        })
    }
}

fn to_len(n: usize) -> u32 {
    u32::try_from(n).expect("a Kafka record part larger than 4 GiB")
}

/// Encoded records: values, keys (when the sink has a key) and the partition of each record
/// (empty when the producer's partitioner chooses).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Records {
    keys: Option<Blobs>,
    values: Blobs,
    partitions: Vec<i32>,
}

impl Records {
    fn len(&self) -> usize {
        self.values.len()
    }

    fn is_empty(&self) -> bool {
        self.values.len() == 0
    }

    fn memory(&self) -> usize {
        self.values.memory() + self.keys.as_ref().map_or(0, Blobs::memory) + self.partitions.len() * 4
    }

    /// Empties the records, keeping the allocations.
    fn clear(&mut self) {
        self.values.clear();
        if let Some(keys) = &mut self.keys {
            keys.clear();
        }
        self.partitions.clear();
    }

    fn is_consistent(&self) -> bool {
        let n = self.len();
        self.values.is_consistent(n)
            && self.keys.as_ref().is_none_or(|k| k.is_consistent(n))
            && (self.partitions.is_empty() || self.partitions.len() == n)
    }

    /// `(partition, key, value)` of each record, in order.
    fn iter(&self) -> impl Iterator<Item = (Option<i32>, Option<&[u8]>, Option<&[u8]>)> + '_ {
        let mut keys = self.keys.as_ref().map(|k| k.iter());
        self.values.iter().enumerate().map(move |(i, value)| {
            let key = keys.as_mut().and_then(|k| k.next()).flatten();
            (self.partitions.get(i).copied(), key, value)
        })
    }
}

/// A record part's encoding: the format and the input columns it takes.
struct PartEncoder {
    format: KafkaFormat,
    columns: Vec<usize>,
    /// The Arrow type of each column, checked per batch (a mismatch is an error, not a panic).
    types: Vec<DataType>,
    /// For json: `"name":` per field, with the separating comma before all but the first.
    json_names: Vec<Vec<u8>>,
}

impl PartEncoder {
    fn new(
        what: &str,
        format: KafkaFormat,
        fields: &[String],
        schema: &SchemaRef,
        options: &EncoderOptions,
    ) -> Result<Self, TaskError> {
        let mut columns = Vec::with_capacity(fields.len());
        let mut types = Vec::with_capacity(fields.len());
        for name in fields {
            let (index, field) = schema.column_with_name(name).ok_or_else(|| {
                TaskError::fatal(format!("sink.kafka: the {what} field '{name}' is not a field of the input"))
            })?;
            let ok = match format {
                KafkaFormat::Raw => matches!(field.data_type(), DataType::Utf8 | DataType::Binary),
                _ => matches!(
                    field.data_type(),
                    DataType::Int64
                        | DataType::Float64
                        | DataType::Utf8
                        | DataType::Boolean
                        | DataType::Binary
                        | DataType::Null
                ),
            };
            if !ok {
                return Err(TaskError::fatal(format!(
                    "sink.kafka: the {what} field '{name}' has Arrow type {}, which format {format:?} cannot write",
                    field.data_type()
                )));
            }
            columns.push(index);
            types.push(field.data_type().clone());
        }
        if format == KafkaFormat::Raw && columns.len() != 1 {
            return Err(TaskError::fatal(format!("sink.kafka: {what} format 'raw' needs exactly one field")));
        }
        // Field names as JSON strings, escaped by arrow-json (serde_json underneath).
        let names = StringArray::from_iter_values(fields.iter());
        let name_field: FieldRef = Arc::new(arrow::datatypes::Field::new("name", DataType::Utf8, false));
        let mut escape = make_encoder(&name_field, &names, options).map_err(|e| TaskError::arrow("sink.kafka", &e))?;
        let json_names = (0..fields.len())
            .map(|i| {
                let mut name = Vec::new();
                if i > 0 {
                    name.push(b',');
                }
                escape.encode(i, &mut name);
                name.push(b':');
                name
            })
            .collect();
        Ok(Self { format, columns, types, json_names })
    }

    /// Appends one encoded record per row of `batch` to `out`.
    fn encode(&self, batch: &RecordBatch, options: &EncoderOptions, out: &mut Blobs) -> Result<(), TaskError> {
        let n = batch.num_rows();
        let before = out.len();
        for (&c, ty) in self.columns.iter().zip(&self.types) {
            let found = batch.columns().get(c).map(|a| a.data_type());
            if found != Some(ty) {
                return Err(TaskError::fatal(format!(
                    "sink.kafka: input column {c} has type {found:?}, the sink was built for {ty}"
                )));
            }
        }
        match self.format {
            KafkaFormat::Raw => {
                let column = batch.column(self.columns[0]);
                match column.data_type() {
                    DataType::Utf8 => {
                        let a = column.as_string::<i32>();
                        append_raw(a.offsets(), a.values(), out);
                    }
                    _ => {
                        let a: &BinaryArray = column.as_binary::<i32>();
                        append_raw(a.offsets(), a.values(), out);
                    }
                }
                out.extend_nulls(before, n, column.logical_nulls().as_ref());
            }
            KafkaFormat::Json => self.encode_json(batch, options, out)?,
            KafkaFormat::Csv { delimiter } => self.encode_csv(batch, delimiter, out)?,
        }
        Ok(())
    }

    fn encode_json(&self, batch: &RecordBatch, options: &EncoderOptions, out: &mut Blobs) -> Result<(), TaskError> {
        enum JsonColumn<'a> {
            Arrow(NullableEncoder<'a>),
            Base64(&'a BinaryArray),
        }
        let schema = batch.schema_ref();
        let mut columns = Vec::with_capacity(self.columns.len());
        for &c in &self.columns {
            let array = batch.column(c);
            columns.push(match array.data_type() {
                DataType::Binary => JsonColumn::Base64(array.as_binary::<i32>()),
                _ => JsonColumn::Arrow(
                    make_encoder(&schema.fields()[c], array.as_ref(), options)
                        .map_err(|e| TaskError::arrow("sink.kafka: encoding JSON", &e))?,
                ),
            });
        }
        let bytes = &mut out.bytes.0;
        for row in 0..batch.num_rows() {
            let start = bytes.len();
            bytes.push(b'{');
            for (column, name) in columns.iter_mut().zip(&self.json_names) {
                bytes.extend_from_slice(name);
                match column {
                    JsonColumn::Arrow(e) if e.is_null(row) => bytes.extend_from_slice(b"null"),
                    JsonColumn::Arrow(e) => e.encode(row, bytes),
                    JsonColumn::Base64(a) if a.is_null(row) => bytes.extend_from_slice(b"null"),
                    JsonColumn::Base64(a) => {
                        bytes.push(b'"');
                        base64(a.value(row), bytes);
                        bytes.push(b'"');
                    }
                }
            }
            bytes.push(b'}');
            out.lens.push(to_len(bytes.len() - start));
        }
        out.extend_nulls(out.lens.len() - batch.num_rows(), batch.num_rows(), None);
        Ok(())
    }

    fn encode_csv(&self, batch: &RecordBatch, delimiter: u8, out: &mut Blobs) -> Result<(), TaskError> {
        let columns: Vec<Column<'_>> = self.columns.iter().map(|&c| Column::of(batch.column(c).as_ref())).collect();
        let csv_error = |e: csv::Error| TaskError::fatal(format!("sink.kafka: encoding CSV: {e}"));
        let mut field = Vec::new();
        let mut ints = itoa::Buffer::new();
        // One writer per batch, writing into a buffer shared through a cell, so that each
        // record's terminator can be taken off again.
        let bytes = std::cell::RefCell::new(std::mem::take(&mut out.bytes.0));
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .delimiter(delimiter)
            .quote_style(csv::QuoteStyle::Necessary)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(CellWriter(&bytes));
        let mut result = Ok(());
        for row in 0..batch.num_rows() {
            let start = bytes.borrow().len();
            let mut write = || {
                for column in &columns {
                    match column.text(row, &mut ints, &mut field) {
                        Some(text) => writer.write_field(text),
                        None => writer.write_field(&field),
                    }
                    .map_err(csv_error)?;
                }
                writer.write_record(None::<&[u8]>).map_err(csv_error)?;
                writer.flush().map_err(|e| TaskError::fatal(format!("sink.kafka: encoding CSV: {e}")))
            };
            if let Err(e) = write() {
                result = Err(e);
                break;
            }
            let mut buf = bytes.borrow_mut();
            buf.pop(); // the record terminator
            out.lens.push(to_len(buf.len() - start));
        }
        drop(writer);
        out.bytes.0 = bytes.into_inner();
        result?;
        out.extend_nulls(out.lens.len() - batch.num_rows(), batch.num_rows(), None);
        Ok(())
    }
}

/// A `Write` into a shared buffer (see [`PartEncoder::encode_csv`]).
struct CellWriter<'a>(&'a std::cell::RefCell<Vec<u8>>);

impl std::io::Write for CellWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Appends the values of a string or binary array (whole value buffer at once).
fn append_raw(offsets: &[i32], values: &[u8], out: &mut Blobs) {
    let (first, last) = (offsets[0] as usize, offsets[offsets.len() - 1] as usize);
    out.bytes.0.extend_from_slice(&values[first..last]);
    out.lens.extend(offsets.windows(2).map(|w| (w[1] - w[0]) as u32));
}

/// CSV text of the file sink's resolved columns.
impl Column<'_> {
    /// The field's text: borrowed when it is in the array, else written into `scratch`
    /// (`None` returned). Null is the empty field.
    #[inline]
    fn text<'s>(&'s self, row: usize, ints: &'s mut itoa::Buffer, scratch: &mut Vec<u8>) -> Option<&'s [u8]> {
        scratch.clear();
        match self {
            Column::Int(a) if a.is_valid(row) => Some(ints.format(a.value(row)).as_bytes()),
            Column::Float(a) if a.is_valid(row) => {
                use std::io::Write;
                let _ = write!(scratch, "{:?}", a.value(row));
                None
            }
            Column::Str(a) if a.is_valid(row) => Some(a.value(row).as_bytes()),
            Column::Bool(a) if a.is_valid(row) => Some(if a.value(row) { &b"true"[..] } else { &b"false"[..] }),
            Column::Bytes(a) if a.is_valid(row) => {
                base64(a.value(row), scratch);
                None
            }
            _ => Some(&b""[..]),
        }
    }
}

/// Standard base64 with padding (what Flink's JSON and CSV formats write for bytes).
fn base64(input: &[u8], out: &mut Vec<u8>) {
    use base64::Engine;
    let start = out.len();
    out.resize(start + base64::encoded_len(input.len(), true).unwrap_or(0), 0);
    let written = base64::engine::general_purpose::STANDARD.encode_slice(input, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

/// Encodes batches into [`Records`].
struct RecordEncoder {
    key: Option<PartEncoder>,
    value: PartEncoder,
    options: EncoderOptions,
}

impl RecordEncoder {
    fn new(spec: &KafkaSinkSpec, schema: &SchemaRef) -> Result<Self, TaskError> {
        let options = EncoderOptions::default();
        let value = PartEncoder::new("value", spec.format, &spec.value_fields, schema, &options)?;
        let key = match &spec.key {
            Some((format, fields)) => Some(PartEncoder::new("key", *format, fields, schema, &options)?),
            None => None,
        };
        Ok(Self { key, value, options })
    }

    fn empty_records(&self) -> Records {
        Records { keys: self.key.as_ref().map(|_| Blobs::default()), ..Default::default() }
    }

    /// Appends the records of `batch` to `out`, with partitions from `partitions`.
    fn encode(&self, batch: &RecordBatch, partitions: &mut Partitions, out: &mut Records) -> Result<(), TaskError> {
        self.value.encode(batch, &self.options, &mut out.values)?;
        if let (Some(key), Some(keys)) = (&self.key, out.keys.as_mut()) {
            key.encode(batch, &self.options, keys)?;
        }
        partitions.assign(batch.num_rows(), &mut out.partitions);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Partitions
// ---------------------------------------------------------------------------------------

/// Who chooses each record's partition.
struct Partitions {
    partitioner: SinkPartitioner,
    subtask: u32,
    /// The topic's partition count (`fixed`, `round-robin`), read with the first batch.
    count: Option<i32>,
    next: u64,
}

impl Partitions {
    /// Reads the partition count once, when the partitioner needs it.
    fn prepare<C: ClientContext>(&mut self, client: &rdkafka::client::Client<C>, topic: &str) -> Result<(), TaskError> {
        if self.partitioner == SinkPartitioner::Default || self.count.is_some() {
            return Ok(());
        }
        let metadata = client
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|e| TaskError::new(format!("sink.kafka: reading the partitions of topic '{topic}': {e}")))?;
        let count = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
        if count == 0 {
            return Err(TaskError::new(format!("sink.kafka: topic '{topic}' has no partitions (does it exist?)")));
        }
        self.count = Some(count as i32);
        // Round robin starts at the subtask, so subtasks do not all begin with partition 0.
        self.next = self.subtask as u64;
        info!(topic, partitions = count, "kafka sink partitions");
        Ok(())
    }

    fn assign(&mut self, n: usize, out: &mut Vec<i32>) {
        let Some(count) = self.count else { return };
        match self.partitioner {
            SinkPartitioner::Default => {}
            SinkPartitioner::Fixed => out.extend(std::iter::repeat_n((self.subtask % count as u32) as i32, n)),
            SinkPartitioner::RoundRobin => {
                let count = count as u64;
                out.extend((0..n as u64).map(|i| ((self.next + i) % count) as i32));
                self.next = (self.next + n as u64) % count;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Producing
// ---------------------------------------------------------------------------------------

/// Hands every record of `records` to `producer`, in order. A full queue is back-pressure:
/// `on_full` runs (serving delivery reports) and the send is retried.
fn produce<C: ProducerContext>(
    producer: &BaseProducer<C>,
    topic: &str,
    records: &Records,
    mut on_full: impl FnMut() -> Result<(), TaskError>,
) -> Result<(), TaskError>
where
    C::DeliveryOpaque: Default,
{
    for (partition, key, value) in records.iter() {
        let mut record: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque> =
            BaseRecord::with_opaque_to(topic, Default::default());
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(POLL_PAUSE);
                    on_full()?;
                }
                Err((e, _)) => return Err(produce_error(topic, e)),
            }
        }
    }
    Ok(())
}

fn produce_error(topic: &str, e: KafkaError) -> TaskError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => TaskError::fatal(format!(
            "sink.kafka: a record for topic '{topic}' is larger than the producer allows ('properties.message.max.bytes'): {e}"
        )),
        _ => TaskError::new(format!("sink.kafka: producing to topic '{topic}': {e}")),
    }
}

/// Delivery reports of the non-transactional producer.
#[derive(Default)]
struct DeliveryContext {
    acknowledged: Arc<AtomicU64>,
    failures: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl DeliveryContext {
    fn fail(&self, message: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.first_failure.lock().expect("poisoned").get_or_insert(message);
    }

    /// A retryable error if any delivery failed.
    fn check(&self, topic: &str) -> Result<(), TaskError> {
        let failures = self.failures.load(Ordering::Relaxed);
        if failures == 0 {
            return Ok(());
        }
        let first = self.first_failure.lock().expect("poisoned").clone().unwrap_or_default();
        Err(TaskError::new(format!(
            "sink.kafka: {failures} record(s) could not be delivered to topic '{topic}'; the first error: {first}"
        )))
    }
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.fail(format!("fatal producer error: {reason}"));
        } else {
            warn!(%error, reason, "kafka sink client error");
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => self.fail(e.to_string()),
        }
    }
}

/// `none` and `at-least-once`: one producer, used from the task thread.
struct Direct {
    producer: BaseProducer<DeliveryContext>,
    /// Encoded records of the current batch (reused).
    scratch: Records,
    wait_at_snapshot: bool,
}

impl Direct {
    fn check(&self, topic: &str) -> Result<(), TaskError> {
        self.producer.context().check(topic)
    }

    /// Waits until every record handed over is acknowledged (or failed).
    ///
    /// Not rdkafka's `flush(timeout)`: it polls in steps of 100 ms that always run to their
    /// end, which stalled every at-least-once checkpoint for 100 ms (and the end-to-end p99
    /// with it). `flush(ZERO)` makes librdkafka send what lingers at once; the delivery
    /// reports are then served as they arrive.
    fn flush(&self, topic: &str) -> Result<(), TaskError> {
        loop {
            match self.producer.flush(Duration::ZERO) {
                Ok(()) => break,
                // librdkafka's message.timeout.ms bounds how long a record can be in flight;
                // a record that timed out fails the task through the delivery report.
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => self.check(topic)?,
                Err(e) => return Err(TaskError::new(format!("sink.kafka: flushing topic '{topic}': {e}"))),
            }
            // One poll serves one event of delivery reports; the count in flight (records
            // and unserved reports) drops when it served one. Pause only when nothing came.
            let before = self.producer.in_flight_count();
            self.producer.poll(Duration::ZERO);
            if self.producer.in_flight_count() >= before {
                std::thread::sleep(POLL_PAUSE);
            }
        }
        self.check(topic)
    }
}

// ---------------------------------------------------------------------------------------
// Exactly once: state
// ---------------------------------------------------------------------------------------

/// The records of one checkpoint epoch of one origin subtask, committed in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    origin: u32,
    checkpoint_id: u64,
    records: Records,
}

/// What each subtask writes into [`SUBTASKS_STATE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SubtaskRecord {
    subtask: u32,
    parallelism: u32,
    /// Transactional ids `0..ids` may have been used and may need cleaning up.
    ids: u32,
    checkpoint_id: u64,
    lineage: String,
}

fn state_error(what: &'static str) -> impl Fn(crate::state::StateError) -> TaskError {
    move |e| TaskError::fatal(format!("sink.kafka: {what}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Exactly once: the committer thread
// ---------------------------------------------------------------------------------------

enum Command {
    /// Open transactional id `<prefix>-<origin>` (fencing zombies, aborting their open
    /// transaction) and commit the entries above its marker. `restored`: the checkpoint the
    /// job restored from (`None` on a fresh start: no marker is read). The first command is
    /// always the recovery of the own origin; it sets the lineage markers carry.
    Recover { origin: u32, entries: Vec<Arc<Entry>>, restored: Option<u64>, lineage: String },
    /// Commit an entry of this subtask's own origin.
    Commit(Arc<Entry>),
    /// Answer [`Report::Drained`] once every earlier command is done.
    Drain,
}

enum Report {
    Committed { origin: u32, checkpoint_id: u64 },
    Recovered { origin: u32 },
    Drained,
    Failed(TaskError),
}

/// Why a transactional step failed, and whether the transaction must be aborted.
struct TxnFailure {
    error: TaskError,
    abort: bool,
}

/// The thread that owns the transactional producers of one sink instance.
struct Committer {
    /// The job's client properties (with `client.id`), without `transactional.id`.
    config: ClientConfig,
    prefix: String,
    topic: String,
    lineage: String,
    own_origin: u32,
    own: Arc<BaseProducer>,
    own_group: Option<ConsumerGroupMetadata>,
    stop: Arc<AtomicBool>,
    reports: mpsc::Sender<Report>,
    written: Arc<AtomicU64>,
}

impl Committer {
    fn run(mut self, commands: mpsc::Receiver<Command>) {
        while let Ok(command) = commands.recv() {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let result = match command {
                Command::Recover { origin, entries, restored, lineage } => {
                    self.lineage = lineage;
                    self.recover(origin, &entries, restored)
                }
                Command::Commit(entry) => self.commit_own(&entry),
                Command::Drain => {
                    let _ = self.reports.send(Report::Drained);
                    Ok(())
                }
            };
            if let Err(e) = result {
                if !self.stop.load(Ordering::Relaxed) {
                    warn!(topic = %self.topic, error = %e.message, "kafka sink commit failed");
                }
                let _ = self.reports.send(Report::Failed(e));
                break;
            }
        }
    }

    fn transactional_id(&self, origin: u32) -> String {
        format!("{}-{origin}", self.prefix)
    }

    fn recover(&mut self, origin: u32, entries: &[Arc<Entry>], restored: Option<u64>) -> Result<(), TaskError> {
        let id = self.transactional_id(origin);
        let foreign;
        let producer: &BaseProducer = if origin == self.own_origin {
            &self.own
        } else {
            let mut config = self.config.clone();
            config.set("transactional.id", &id);
            foreign = config.create::<BaseProducer>().map_err(|e| {
                TaskError::fatal(format!("sink.kafka: creating the transactional producer '{id}': {e}"))
            })?;
            &foreign
        };
        retry(|| producer.init_transactions(TXN_TIMEOUT))
            .map_err(|e| txn_failure(&id, "initializing transactions", e).error)?;
        let needs_group = origin == self.own_origin || !entries.is_empty();
        let (mut marker, group) = match (needs_group, restored) {
            (false, _) => (-1, None),
            (true, None) => (-1, Some(self.group_metadata(&id, false)?.1)),
            (true, Some(_)) => {
                let (marker, group) = self.group_metadata(&id, true)?;
                (marker, Some(group))
            }
        };
        if let Some(group) = &group {
            for entry in entries {
                if entry.checkpoint_id as i64 > marker {
                    self.commit(producer, &id, group, entry, entry.checkpoint_id)?;
                    marker = entry.checkpoint_id as i64;
                } else {
                    info!(transactional_id = %id, checkpoint = entry.checkpoint_id, marker, "kafka sink entry already committed");
                }
                let _ = self.reports.send(Report::Committed { origin, checkpoint_id: entry.checkpoint_id });
            }
            if let Some(restored) = restored.filter(|r| marker > *r as i64) {
                // The job went back to an older checkpoint: later entries of this origin must
                // not be taken for committed.
                info!(transactional_id = %id, marker, restored, "kafka sink moves its marker back");
                self.transaction(producer, &id, group, None, restored)?;
            }
        }
        if origin == self.own_origin {
            self.own_group = group;
        }
        let _ = self.reports.send(Report::Recovered { origin });
        Ok(())
    }

    /// The committed marker of group `id` (when `read`; `-1` when none of this lineage) and
    /// the group's metadata for `send_offsets_to_transaction`.
    fn group_metadata(&self, id: &str, read: bool) -> Result<(i64, ConsumerGroupMetadata), TaskError> {
        let mut config = self.config.clone();
        config.set("group.id", id).set("enable.auto.commit", "false");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| TaskError::fatal(format!("sink.kafka: creating the marker consumer of group '{id}': {e}")))?;
        let mut marker = -1;
        if read {
            let mut partitions = TopicPartitionList::new();
            partitions.add_partition(&self.topic, 0);
            let committed = consumer.committed_offsets(partitions, REQUEST_TIMEOUT).map_err(|e| {
                TaskError::new(format!("sink.kafka: reading the committed marker of group '{id}': {e}"))
            })?;
            if let Some(elem) = committed.find_partition(&self.topic, 0) {
                match (elem.error(), elem.offset()) {
                    (Ok(()), Offset::Offset(offset)) if elem.metadata() == self.lineage => marker = offset,
                    (Ok(()), Offset::Offset(offset)) => {
                        info!(group = %id, offset, metadata = elem.metadata(), "kafka sink ignores a marker of another job")
                    }
                    (Ok(()), _) => {}
                    (Err(e), _) => info!(group = %id, error = %e, "kafka sink found no marker"),
                }
            }
        }
        let group = consumer
            .group_metadata()
            .ok_or_else(|| TaskError::fatal(format!("sink.kafka: no consumer group metadata for group '{id}'")))?;
        Ok((marker, group))
    }

    fn commit_own(&mut self, entry: &Entry) -> Result<(), TaskError> {
        let id = self.transactional_id(self.own_origin);
        let group = self.own_group.take().ok_or_else(|| {
            TaskError::fatal(format!("sink.kafka: transactional producer '{id}' used before it was initialized"))
        })?;
        let result = self.commit(&self.own, &id, &group, entry, entry.checkpoint_id);
        self.own_group = Some(group);
        result?;
        let _ = self.reports.send(Report::Committed { origin: entry.origin, checkpoint_id: entry.checkpoint_id });
        Ok(())
    }

    fn commit(
        &self,
        producer: &BaseProducer,
        id: &str,
        group: &ConsumerGroupMetadata,
        entry: &Entry,
        marker: u64,
    ) -> Result<(), TaskError> {
        self.transaction(producer, id, group, Some(&entry.records), marker)?;
        self.written.fetch_add(entry.records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// One transaction: `records` (if any) and the marker `marker` of group `id`.
    fn transaction(
        &self,
        producer: &BaseProducer,
        id: &str,
        group: &ConsumerGroupMetadata,
        records: Option<&Records>,
        marker: u64,
    ) -> Result<(), TaskError> {
        producer.begin_transaction().map_err(|e| txn_failure(id, "beginning a transaction", e).error)?;
        let result = (|| {
            if let Some(records) = records {
                let stop = &self.stop;
                produce(producer, &self.topic, records, || {
                    if stop.load(Ordering::Relaxed) {
                        Err(TaskError::new("sink.kafka: stopped"))
                    } else {
                        Ok(())
                    }
                })
                .map_err(|error| TxnFailure { error, abort: true })?;
            }
            let mut offsets = TopicPartitionList::new();
            offsets
                .add_partition_offset(&self.topic, 0, Offset::Offset(marker as i64))
                .map_err(|e| txn_failure(id, "preparing the marker", e))?;
            if let Some(mut elem) = offsets.find_partition(&self.topic, 0) {
                elem.set_metadata(self.lineage.as_str());
            }
            retry(|| producer.send_offsets_to_transaction(&offsets, group, TXN_TIMEOUT))
                .map_err(|e| txn_failure(id, "committing the marker", e))?;
            retry(|| producer.commit_transaction(TXN_TIMEOUT)).map_err(|e| txn_failure(id, "committing", e))
        })();
        match result {
            Ok(()) => Ok(()),
            Err(failure) => {
                if failure.abort {
                    if let Err(e) = producer.abort_transaction(TXN_TIMEOUT) {
                        warn!(transactional_id = id, error = %e, "kafka sink could not abort a transaction");
                    }
                }
                Err(failure.error)
            }
        }
    }
}

/// Runs `call` again (up to [`TXN_ATTEMPTS`] times) while it fails with a retriable
/// transaction error.
fn retry<T>(mut call: impl FnMut() -> KafkaResult<T>) -> KafkaResult<T> {
    let mut attempt = 1;
    loop {
        match call() {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < TXN_ATTEMPTS => attempt += 1,
            other => return other,
        }
    }
}

fn txn_failure(id: &str, what: &str, e: KafkaError) -> TxnFailure {
    match &e {
        KafkaError::Transaction(err) if err.is_fatal() => TxnFailure {
            error: TaskError::fatal(format!("sink.kafka: transactional producer '{id}': {what} failed fatally: {err}")),
            abort: false,
        },
        KafkaError::Transaction(err) => TxnFailure {
            error: TaskError::new(format!("sink.kafka: transactional producer '{id}': {what} failed: {err}")),
            abort: err.txn_requires_abort() || !err.is_retriable(),
        },
        _ => TxnFailure {
            error: TaskError::new(format!("sink.kafka: transactional producer '{id}': {what} failed: {e}")),
            abort: true,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Exactly once: the task side
// ---------------------------------------------------------------------------------------

struct Pending {
    entry: Arc<Entry>,
    /// Handed to the committer thread.
    sent: bool,
    memory: usize,
}

struct ExactlyOnce {
    commands: mpsc::Sender<Command>,
    reports: mpsc::Receiver<Report>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// This subtask: the origin of its new entries.
    own: u32,
    /// The own transactional producer, shared with the thread (here only for metadata).
    producer: Arc<BaseProducer>,
    started: bool,
    epoch: Records,
    pending: Vec<Pending>,
    pending_memory: usize,
    lineage: String,
    /// Ids `0..ids` may have been used (see [`SubtaskRecord::ids`]).
    ids: u32,
    /// Origins of other ids still being recovered by the thread.
    foreign_recovering: usize,
    last_checkpoint: u64,
    failure: Option<TaskError>,
    /// [`Command::Drain`]s sent and answered.
    drains_sent: u64,
    drains_answered: u64,
    max_buffered: usize,
}

impl ExactlyOnce {
    /// A fresh start (no restore came before the first call): open the own id.
    fn start(&mut self) {
        if !self.started {
            self.started = true;
            let lineage = self.lineage.clone();
            self.send(Command::Recover { origin: self.own, entries: Vec::new(), restored: None, lineage });
        }
    }

    fn send(&mut self, command: Command) {
        if self.commands.send(command).is_err() && self.failure.is_none() {
            self.failure = Some(TaskError::new("sink.kafka: the committer thread stopped"));
        }
    }

    fn handle(&mut self, report: Report) {
        match report {
            Report::Committed { origin, checkpoint_id } => {
                let (mut freed, pending) = (0, std::mem::take(&mut self.pending));
                self.pending = pending
                    .into_iter()
                    .filter(|p| {
                        let done = p.entry.origin == origin && p.entry.checkpoint_id == checkpoint_id;
                        if done {
                            freed += p.memory;
                        }
                        !done
                    })
                    .collect();
                self.pending_memory -= freed;
            }
            Report::Recovered { origin } => {
                if origin != self.own && self.foreign_recovering > 0 {
                    self.foreign_recovering -= 1;
                }
            }
            Report::Drained => self.drains_answered += 1,
            Report::Failed(e) => {
                self.failure.get_or_insert(e);
            }
        }
    }

    /// Takes the thread's reports; its failure, if any.
    fn poll(&mut self) -> Result<(), TaskError> {
        while let Ok(report) = self.reports.try_recv() {
            self.handle(report);
        }
        match &self.failure {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Waits until the thread has done every command sent so far.
    fn drain(&mut self) -> Result<(), TaskError> {
        self.drains_sent += 1;
        self.send(Command::Drain);
        loop {
            self.poll()?;
            if self.drains_answered >= self.drains_sent {
                return Ok(());
            }
            match self.reports.recv() {
                Ok(report) => self.handle(report),
                Err(_) => {
                    return Err(self
                        .failure
                        .clone()
                        .unwrap_or_else(|| TaskError::new("sink.kafka: the committer thread stopped")))
                }
            }
        }
    }

    fn check_memory(&self, name: &str) -> Result<(), TaskError> {
        let held = self.epoch.memory() + self.pending_memory;
        if held > self.max_buffered {
            return Err(TaskError::new(format!(
                "sink.kafka '{name}': {} MiB of records wait for a checkpoint to complete (exactly-once holds at most {} MiB); \
                 no checkpoint completed to release them: is checkpointing on ('execution.checkpointing.interval') and are checkpoints completing?",
                held >> 20,
                self.max_buffered >> 20
            )));
        }
        Ok(())
    }

    fn push_entry(&mut self, origin: u32, checkpoint_id: u64) {
        if self.epoch.is_empty() {
            return;
        }
        let fresh = Records { keys: self.epoch.keys.as_ref().map(|_| Blobs::default()), ..Default::default() };
        let records = std::mem::replace(&mut self.epoch, fresh);
        let memory = records.memory();
        self.pending_memory += memory;
        self.pending.push(Pending { entry: Arc::new(Entry { origin, checkpoint_id, records }), sent: false, memory });
    }

    /// Hands the entries of checkpoints `≤ checkpoint_id` (all with `None`) to the thread.
    fn send_due(&mut self, checkpoint_id: Option<u64>) {
        let mut due = Vec::new();
        for p in self.pending.iter_mut().filter(|p| !p.sent && checkpoint_id.is_none_or(|c| p.entry.checkpoint_id <= c))
        {
            p.sent = true;
            due.push(p.entry.clone());
        }
        for entry in due {
            self.send(Command::Commit(entry));
        }
    }
}

impl Drop for ExactlyOnce {
    fn drop(&mut self) {
        // Whatever the thread is doing is abandoned: the entries are in the last checkpoint,
        // and a restore fences this producer and redoes them.
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.commands.send(Command::Drain);
        drop(self.thread.take());
    }
}

// ---------------------------------------------------------------------------------------
// The operator
// ---------------------------------------------------------------------------------------

enum Mode {
    Direct(Direct),
    ExactlyOnce(ExactlyOnce),
}

/// `sink.kafka` (see the module documentation).
pub struct KafkaSink {
    /// `<operator id>` for messages.
    name: String,
    topic: String,
    subtask: u32,
    parallelism: u32,
    encoder: RecordEncoder,
    partitions: Partitions,
    mode: Mode,
    /// Records acknowledged by Kafka (exactly-once: committed).
    written: Arc<AtomicU64>,
    /// A final checkpoint follows the end of the input: exactly-once commits the records
    /// left at `finish` through it ([`Operator::expect_final_checkpoint`]).
    final_checkpoint: bool,
}

impl KafkaSink {
    pub fn new(spec: &KafkaSinkSpec, input_schema: SchemaRef, ctx: &OperatorContext) -> Result<Self, TaskError> {
        let encoder = RecordEncoder::new(spec, &input_schema)?;
        let mut config = ClientConfig::new();
        for (key, value) in &spec.properties {
            config.set(key, value);
        }
        if property(&spec.properties, "client.id").is_none() {
            config.set("client.id", format!("flint-{}-{}-{}", ctx.job_name, ctx.operator_id, ctx.subtask));
        }
        let create_error = |e: KafkaError| {
            let detail = match &e {
                KafkaError::ClientConfig(_, desc, key, value) => {
                    format!("client property '{key}' = '{value}' is not accepted: {desc}")
                }
                KafkaError::ClientCreation(message) => message.clone(),
                other => other.to_string(),
            };
            TaskError::fatal(format!(
                "sink.kafka '{}': the Kafka producer cannot be created: {detail}",
                ctx.operator_id
            ))
        };
        let written = Arc::new(AtomicU64::new(0));
        let mode = match spec.delivery {
            DeliveryGuarantee::None | DeliveryGuarantee::AtLeastOnce => {
                let mut producer_config = config.clone();
                if spec.partitioner == SinkPartitioner::Default && property(&spec.properties, "partitioner").is_none() {
                    producer_config.set("partitioner", "murmur2_random");
                }
                let context = DeliveryContext { acknowledged: written.clone(), ..Default::default() };
                let producer: BaseProducer<DeliveryContext> =
                    producer_config.create_with_context(context).map_err(create_error)?;
                Mode::Direct(Direct {
                    producer,
                    scratch: encoder.empty_records(),
                    wait_at_snapshot: spec.delivery == DeliveryGuarantee::AtLeastOnce,
                })
            }
            DeliveryGuarantee::ExactlyOnce => {
                let prefix = spec.transactional_id_prefix.clone().ok_or_else(|| {
                    TaskError::fatal("sink.kafka: 'exactly-once' needs 'sink.transactional-id-prefix'")
                })?;
                let mut producer_config = config.clone();
                if spec.partitioner == SinkPartitioner::Default && property(&spec.properties, "partitioner").is_none() {
                    producer_config.set("partitioner", "murmur2_random");
                }
                let own = Arc::new(
                    producer_config
                        .clone()
                        .set("transactional.id", format!("{prefix}-{}", ctx.subtask))
                        .create::<BaseProducer>()
                        .map_err(create_error)?,
                );
                let (commands, command_rx) = mpsc::channel();
                let (report_tx, reports) = mpsc::channel();
                let stop = Arc::new(AtomicBool::new(false));
                // A fresh start's lineage; a restore replaces it by the restored one.
                let lineage = uuid::Uuid::new_v4().simple().to_string();
                let committer = Committer {
                    config: producer_config,
                    prefix,
                    topic: spec.topic.clone(),
                    lineage: String::new(),
                    own_origin: ctx.subtask,
                    own: own.clone(),
                    own_group: None,
                    stop: stop.clone(),
                    reports: report_tx,
                    written: written.clone(),
                };
                let thread = std::thread::Builder::new()
                    .name(format!("kafka-sink-{}-{}", ctx.operator_id, ctx.subtask))
                    .spawn(move || committer.run(command_rx))
                    .map_err(|e| TaskError::new(format!("sink.kafka: starting the committer thread: {e}")))?;
                Mode::ExactlyOnce(ExactlyOnce {
                    commands,
                    reports,
                    stop,
                    thread: Some(thread),
                    own: ctx.subtask,
                    producer: own,
                    started: false,
                    epoch: encoder.empty_records(),
                    pending: Vec::new(),
                    pending_memory: 0,
                    lineage,
                    ids: ctx.parallelism,
                    foreign_recovering: 0,
                    last_checkpoint: 0,
                    failure: None,
                    drains_sent: 0,
                    drains_answered: 0,
                    max_buffered: MAX_BUFFERED_BYTES,
                })
            }
        };
        Ok(Self {
            name: ctx.operator_id.clone(),
            topic: spec.topic.clone(),
            subtask: ctx.subtask,
            parallelism: ctx.parallelism.max(1),
            encoder,
            partitions: Partitions { partitioner: spec.partitioner, subtask: ctx.subtask, count: None, next: 0 },
            mode,
            written,
            final_checkpoint: false,
        })
    }

    /// Records acknowledged by Kafka so far (exactly-once: committed).
    pub fn records_written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

impl Operator for KafkaSink {
    fn process_batch(
        &mut self,
        _input: usize,
        _channel: usize,
        batch: RecordBatch,
        _out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match &mut self.mode {
            Mode::Direct(direct) => {
                direct.check(&self.topic)?;
                self.partitions.prepare(direct.producer.client(), &self.topic)?;
                direct.scratch.clear();
                self.encoder.encode(&batch, &mut self.partitions, &mut direct.scratch)?;
                let context = direct.producer.context();
                produce(&direct.producer, &self.topic, &direct.scratch, || context.check(&self.topic))?;
                direct.producer.poll(Duration::ZERO);
                Ok(())
            }
            Mode::ExactlyOnce(eo) => {
                eo.start();
                eo.poll()?;
                self.partitions.prepare(eo.producer.client(), &self.topic)?;
                self.encoder.encode(&batch, &mut self.partitions, &mut eo.epoch)?;
                eo.check_memory(&self.name)
            }
        }
    }

    fn process_watermark(&mut self, _: usize, _: usize, _: i64, _: &mut dyn Collector) -> Result<(), TaskError> {
        Ok(())
    }

    fn on_processing_time(&mut self, _now_ms: i64, _out: &mut dyn Collector) -> Result<(), TaskError> {
        match &mut self.mode {
            Mode::Direct(direct) => {
                direct.producer.poll(Duration::ZERO);
                direct.check(&self.topic)
            }
            Mode::ExactlyOnce(eo) => eo.poll(),
        }
    }

    /// End of the input: everything is written and acknowledged (exactly-once: committed).
    fn expect_final_checkpoint(&mut self) {
        self.final_checkpoint = true;
    }

    /// At-least-once: flushes. Exactly-once: the records since the last checkpoint go into
    /// the final checkpoint when one follows; without one (checkpointing off, or
    /// `checkpoints-after-tasks-finish` false) they are committed here, and a failure of the
    /// job after this point writes them again.
    fn finish(&mut self, _out: &mut dyn Collector) -> Result<(), TaskError> {
        match &mut self.mode {
            Mode::Direct(direct) => direct.flush(&self.topic),
            Mode::ExactlyOnce(eo) if self.final_checkpoint => {
                eo.start();
                eo.poll()
            }
            Mode::ExactlyOnce(eo) => {
                eo.start();
                eo.poll()?;
                let last = eo.last_checkpoint + 1;
                eo.push_entry(self.subtask, last);
                eo.send_due(None);
                eo.drain()
            }
        }
    }

    fn snapshot_state(&mut self, checkpoint_id: u64, state: &mut StateStore) -> Result<(), TaskError> {
        let eo = match &mut self.mode {
            Mode::Direct(direct) => {
                direct.producer.poll(Duration::ZERO);
                return if direct.wait_at_snapshot { direct.flush(&self.topic) } else { direct.check(&self.topic) };
            }
            Mode::ExactlyOnce(eo) => eo,
        };
        eo.start();
        eo.poll()?;
        eo.push_entry(self.subtask, checkpoint_id);
        eo.last_checkpoint = eo.last_checkpoint.max(checkpoint_id);
        let error = state_error("snapshotting the pending records");
        let entries = eo.pending.iter().map(|p| encode_value(PENDING_STATE, &*p.entry)).collect::<Result<Vec<_>, _>>();
        *state.operator.list_state(PENDING_STATE, Redistribution::Union).map_err(&error)? = entries.map_err(&error)?;
        let ids = if eo.foreign_recovering == 0 { self.parallelism } else { eo.ids.max(self.parallelism) };
        let record = SubtaskRecord {
            subtask: self.subtask,
            parallelism: self.parallelism,
            ids,
            checkpoint_id,
            lineage: eo.lineage.clone(),
        };
        let record = encode_value(SUBTASKS_STATE, &record).map_err(&error)?;
        *state.operator.list_state(SUBTASKS_STATE, Redistribution::Union).map_err(&error)? = vec![record];
        Ok(())
    }

    fn restore_state(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        let Mode::ExactlyOnce(eo) = &mut self.mode else {
            let left = state.operator.get(PENDING_STATE).map_or(0, <[Vec<u8>]>::len);
            if left > 0 {
                warn!(operator = %self.name, entries = left, "kafka sink no longer exactly-once: pending records of the checkpoint are dropped");
            }
            return Ok(());
        };
        if eo.started {
            return Err(TaskError::fatal("sink.kafka: restore_state after the sink started"));
        }
        let error = state_error("restoring the pending records");
        let records: Vec<SubtaskRecord> = state
            .operator
            .get(SUBTASKS_STATE)
            .unwrap_or_default()
            .iter()
            .map(|e| decode_value(SUBTASKS_STATE, e))
            .collect::<Result<_, _>>()
            .map_err(&error)?;
        let Some(restored) = records.iter().map(|r| r.checkpoint_id).max() else {
            return Ok(()); // no state of this sink: a fresh start
        };
        let lineage = records.iter().max_by_key(|r| r.checkpoint_id).map(|r| r.lineage.clone()).unwrap_or_default();
        let old_ids = records.iter().map(|r| r.ids.max(r.parallelism)).max().unwrap_or(0);
        let (p, me) = (self.parallelism, self.subtask);
        let mut mine: std::collections::BTreeMap<(u32, u64), Entry> = std::collections::BTreeMap::new();
        for element in state.operator.get(PENDING_STATE).unwrap_or_default() {
            let (origin, checkpoint_id, _): (u32, u64, serde::de::IgnoredAny) =
                decode_value(PENDING_STATE, element).map_err(&error)?;
            if origin % p == me && !mine.contains_key(&(origin, checkpoint_id)) {
                let entry: Entry = decode_value(PENDING_STATE, element).map_err(&error)?;
                if !entry.records.is_consistent() {
                    return Err(TaskError::fatal(format!(
                        "sink.kafka: restoring the pending records: the entry of origin {origin}, checkpoint {checkpoint_id} is corrupt"
                    )));
                }
                mine.insert((origin, checkpoint_id), entry);
            }
        }
        // The entries of other origins are not ours: free them now.
        if let Ok(list) = state.operator.list_state(PENDING_STATE, Redistribution::Union) {
            list.clear();
        }
        eo.lineage = lineage;
        eo.ids = old_ids.max(p);
        eo.last_checkpoint = restored;
        eo.started = true;
        let mut by_origin: std::collections::BTreeMap<u32, Vec<Arc<Entry>>> = std::collections::BTreeMap::new();
        by_origin.insert(me, Vec::new());
        for origin in (0..old_ids).filter(|o| o % p == me) {
            by_origin.entry(origin).or_default();
        }
        for ((origin, _), entry) in mine {
            let entry = Arc::new(entry);
            let memory = entry.records.memory();
            eo.pending_memory += memory;
            eo.pending.push(Pending { entry: entry.clone(), sent: true, memory });
            by_origin.entry(origin).or_default().push(entry);
        }
        info!(
            operator = %self.name, subtask = me, restored, origins = by_origin.len(), entries = eo.pending.len(),
            "kafka sink restores its pending transactions"
        );
        // Own id first: its recovery must precede the commits of new entries.
        let own = by_origin.remove(&me).unwrap_or_default();
        let lineage = eo.lineage.clone();
        eo.send(Command::Recover { origin: me, entries: own, restored: Some(restored), lineage: lineage.clone() });
        eo.foreign_recovering = by_origin.len();
        for (origin, entries) in by_origin {
            eo.send(Command::Recover { origin, entries, restored: Some(restored), lineage: lineage.clone() });
        }
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), TaskError> {
        match &mut self.mode {
            Mode::Direct(direct) => {
                direct.producer.poll(Duration::ZERO);
                direct.check(&self.topic)
            }
            Mode::ExactlyOnce(eo) => {
                eo.start();
                eo.poll()?;
                eo.send_due(Some(checkpoint_id));
                Ok(())
            }
        }
    }

    /// Exactly-once: waits until the transactions handed to the committer (the final
    /// checkpoint's) are committed.
    fn close(&mut self) -> Result<(), TaskError> {
        match &mut self.mode {
            Mode::Direct(direct) => direct.flush(&self.topic),
            Mode::ExactlyOnce(eo) => {
                eo.start();
                eo.drain()
            }
        }
    }

    fn accumulators(&self, out: &mut Vec<(String, u64)>) {
        out.push((RECORDS_WRITTEN.to_owned(), self.records_written()));
    }
}

#[cfg(test)]
mod tests {
    //! Encoding without a broker; everything else against librdkafka's mock cluster
    //! (`rdkafka::mocking::MockCluster`), a broker in-process. What the mock implements of
    //! transactions is in [`MOCK`], checked by `mock_cluster_implements_what_the_tests_assume`;
    //! assertions that need more are made only when [`MOCK`] says the mock has it.

    use std::time::Instant;

    use arrow::array::{ArrayRef, BinaryArray, NullArray};
    use arrow::datatypes::{Field, Schema};
    use rdkafka::consumer::CommitMode;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rdkafka::Message;

    use super::*;
    use crate::runtime::transforms::tests::{ctx, VecCollector};
    use crate::state::OperatorSnapshot;
    use arrow::array::{BooleanArray, Float64Array, Int64Array};

    /// What librdkafka's mock cluster (librdkafka 2.12, `rdkafka_mock_handlers.c`) does with
    /// transactions.
    struct MockFeatures {
        /// TxnOffsetCommit offsets are stored and returned by OffsetFetch. The mock parses
        /// and acknowledges TxnOffsetCommit but stores nothing.
        stores_transactional_offsets: bool,
        /// Records of aborted (or open) transactions are hidden from `read_committed`
        /// consumers. The mock's Fetch answers LastStableOffset = high watermark and no
        /// aborted transactions, and EndTxn writes no control records.
        isolates_transactions: bool,
        /// `init_transactions` of a new producer with the same transactional id fences the
        /// old one. The mock gives every new producer a new producer id (epoch 0) and keeps
        /// the old one valid.
        fences_zombies: bool,
    }

    const MOCK: MockFeatures =
        MockFeatures { stores_transactional_offsets: false, isolates_transactions: false, fences_zombies: false };

    const TOPIC: &str = "out";
    const WAIT: Duration = Duration::from_secs(30);

    fn cluster(partitions: i32) -> (MockCluster<'static, DefaultProducerContext>, String) {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic(TOPIC, partitions, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        (cluster, bootstrap)
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("data", DataType::Binary, true),
            Field::new("nothing", DataType::Null, true),
        ]))
    }

    fn all_fields() -> Vec<String> {
        schema().fields().iter().map(|f| f.name().clone()).collect()
    }

    /// Three rows: every type with values that need escaping or quoting, then all nulls.
    fn mixed_batch() -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("a,b \"q\""), None, Some("é\n")])),
            Arc::new(Float64Array::from(vec![Some(1.5), None, Some(-0.25)])),
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            Arc::new(BinaryArray::from(vec![Some(&[0u8, 1, 2, 3][..]), None, Some(&[255u8][..])])),
            Arc::new(NullArray::new(3)),
        ];
        RecordBatch::try_new(schema(), columns).unwrap()
    }

    /// Rows `from..from+n`: `id` = i, `name` = `r<i>`, the rest null.
    fn numbered(from: i64, n: i64) -> RecordBatch {
        let ids: Vec<i64> = (from..from + n).collect();
        let n = n as usize;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("r{i}")))),
            Arc::new(Float64Array::from(vec![None; n])),
            Arc::new(BooleanArray::from(vec![None; n])),
            Arc::new(BinaryArray::from(vec![None::<&[u8]>; n])),
            Arc::new(NullArray::new(n)),
        ];
        RecordBatch::try_new(schema(), columns).unwrap()
    }

    /// A sink spec writing `name` raw (so values are `r<i>`).
    fn spec(bootstrap: &str, delivery: DeliveryGuarantee) -> KafkaSinkSpec {
        KafkaSinkSpec {
            topic: TOPIC.into(),
            properties: vec![("bootstrap.servers".into(), bootstrap.into())],
            format: KafkaFormat::Raw,
            value_fields: vec!["name".into()],
            key: None,
            partitioner: SinkPartitioner::Default,
            delivery,
            transactional_id_prefix: (delivery == DeliveryGuarantee::ExactlyOnce).then(|| "tx".to_owned()),
        }
    }

    fn encode(spec: &KafkaSinkSpec, batch: &RecordBatch) -> Records {
        let encoder = RecordEncoder::new(spec, &schema()).unwrap();
        let mut records = encoder.empty_records();
        let mut partitions = Partitions { partitioner: SinkPartitioner::Default, subtask: 0, count: None, next: 0 };
        encoder.encode(batch, &mut partitions, &mut records).unwrap();
        records
    }

    fn texts(records: &Records) -> Vec<(Option<String>, Option<String>)> {
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
        records.iter().map(|(_, k, v)| (text(k), text(v))).collect()
    }

    fn values(records: &Records) -> Vec<Option<String>> {
        texts(records).into_iter().map(|(_, v)| v).collect()
    }

    fn sink(spec: &KafkaSinkSpec, subtask: u32, parallelism: u32) -> KafkaSink {
        KafkaSink::new(spec, schema(), &ctx(subtask, parallelism)).unwrap()
    }

    fn write(sink: &mut KafkaSink, batch: RecordBatch) {
        sink.process_batch(0, 0, batch, &mut VecCollector::default()).unwrap();
    }

    fn eo(sink: &mut KafkaSink) -> &mut ExactlyOnce {
        match &mut sink.mode {
            Mode::ExactlyOnce(eo) => eo,
            Mode::Direct(_) => panic!("not an exactly-once sink"),
        }
    }

    /// Waits until the committer thread has done everything it was given.
    fn settle(sink: &mut KafkaSink) {
        let eo = eo(sink);
        eo.start();
        eo.drain().unwrap();
    }

    /// `snapshot_state(c)`, through the snapshot's bytes as a checkpoint would store it.
    fn snapshot(sink: &mut KafkaSink, c: u64) -> OperatorSnapshot {
        let mut store = StateStore::new(sink.subtask, sink.parallelism, 128);
        sink.snapshot_state(c, &mut store).unwrap();
        OperatorSnapshot::decode(&store.snapshot().1.encode()).unwrap()
    }

    /// A new instance `subtask` of `parallelism` restored from the snapshots of all old subtasks.
    fn restored(spec: &KafkaSinkSpec, snapshots: &[OperatorSnapshot], subtask: u32, parallelism: u32) -> KafkaSink {
        let mut sink = sink(spec, subtask, parallelism);
        let mut store = StateStore::new(subtask, parallelism, 128);
        store.operator.restore(subtask, parallelism, snapshots).unwrap();
        sink.restore_state(&mut store).unwrap();
        sink
    }

    fn lineage(snapshot: &OperatorSnapshot) -> String {
        let list = snapshot.states.iter().find(|s| s.name == SUBTASKS_STATE).unwrap();
        decode_value::<SubtaskRecord>(SUBTASKS_STATE, &list.elements[0]).unwrap().lineage
    }

    struct Read {
        partition: i32,
        key: Option<Vec<u8>>,
        value: Option<String>,
    }

    /// Every record of the topic a `read_committed` consumer reads (up to the high watermarks).
    fn read_all(bootstrap: &str) -> Vec<Read> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(Some(TOPIC), WAIT).unwrap();
        let partitions = metadata.topics()[0].partitions().len() as i32;
        let mut assignment = TopicPartitionList::new();
        let mut highs = Vec::new();
        for p in 0..partitions {
            highs.push(consumer.fetch_watermarks(TOPIC, p, WAIT).unwrap().1);
            assignment.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let deadline = Instant::now() + WAIT;
        let mut out = Vec::new();
        loop {
            let position = consumer.position().unwrap();
            let done = (0..partitions).all(|p| {
                let high = highs[p as usize];
                high == 0
                    || matches!(position.find_partition(TOPIC, p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= high)
            });
            if done {
                return out;
            }
            assert!(Instant::now() < deadline, "reading the topic took longer than {WAIT:?}");
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let m = message.unwrap();
                out.push(Read {
                    partition: m.partition(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(|v| String::from_utf8(v.to_vec()).unwrap()),
                });
            }
        }
    }

    /// The values read, sorted.
    fn read_values(bootstrap: &str) -> Vec<String> {
        let mut values: Vec<String> = read_all(bootstrap).into_iter().filter_map(|r| r.value).collect();
        values.sort();
        values
    }

    fn expected(ids: impl IntoIterator<Item = i64>) -> Vec<String> {
        let mut values: Vec<String> = ids.into_iter().map(|i| format!("r{i}")).collect();
        values.sort();
        values
    }

    /// The marker of group `group`: offset and metadata (`None` when there is none).
    fn marker(bootstrap: &str, group: &str) -> Option<(i64, String)> {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(TOPIC, 0);
        let committed = consumer.committed_offsets(tpl, WAIT).unwrap();
        let elem = committed.find_partition(TOPIC, 0)?;
        match elem.offset() {
            Offset::Offset(o) => Some((o, elem.metadata().to_owned())),
            _ => None,
        }
    }

    /// Commits a marker outside any transaction (a plain OffsetCommit, which the mock stores):
    /// what a transaction of the sink leaves on a real broker.
    fn commit_marker(bootstrap: &str, group: &str, offset: i64, metadata: &str) {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, 0, Offset::Offset(offset)).unwrap();
        tpl.find_partition(TOPIC, 0).unwrap().set_metadata(metadata);
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    }

    // ---- encoding ----

    #[test]
    fn json_values_encode_every_type_with_nulls_and_bytes_in_base64() {
        let spec = KafkaSinkSpec {
            format: KafkaFormat::Json,
            value_fields: all_fields(),
            ..spec("x", DeliveryGuarantee::None)
        };
        let got = values(&encode(&spec, &mixed_batch()));
        assert_eq!(
            got,
            vec![
                Some(
                    r#"{"id":1,"name":"a,b \"q\"","score":1.5,"ok":true,"data":"AAECAw==","nothing":null}"#.to_owned()
                ),
                Some(r#"{"id":2,"name":null,"score":null,"ok":null,"data":null,"nothing":null}"#.to_owned()),
                Some(r#"{"id":3,"name":"é\n","score":-0.25,"ok":false,"data":"/w==","nothing":null}"#.to_owned()),
            ]
        );
    }

    #[test]
    fn csv_values_quote_when_needed_and_write_null_as_an_empty_field() {
        let comma = KafkaSinkSpec {
            format: KafkaFormat::Csv { delimiter: b',' },
            value_fields: all_fields(),
            ..spec("x", DeliveryGuarantee::None)
        };
        let got = values(&encode(&comma, &mixed_batch()));
        assert_eq!(
            got,
            vec![
                Some("1,\"a,b \"\"q\"\"\",1.5,true,AAECAw==,".to_owned()),
                Some("2,,,,,".to_owned()),
                Some("3,\"é\n\",-0.25,false,/w==,".to_owned()),
            ]
        );
        let semicolon = KafkaSinkSpec {
            format: KafkaFormat::Csv { delimiter: b';' },
            value_fields: vec!["name".into(), "id".into()],
            ..spec("x", DeliveryGuarantee::None)
        };
        let got = values(&encode(&semicolon, &numbered(7, 2)));
        assert_eq!(got, vec![Some("r7;7".to_owned()), Some("r8;8".to_owned())]);
    }

    #[test]
    fn raw_values_are_the_bytes_and_null_is_a_tombstone() {
        let text = spec("x", DeliveryGuarantee::None);
        assert_eq!(values(&encode(&text, &mixed_batch())), vec![Some("a,b \"q\"".into()), None, Some("é\n".into())]);
        let bytes = KafkaSinkSpec { value_fields: vec!["data".into()], ..text.clone() };
        let records = encode(&bytes, &mixed_batch());
        let got: Vec<Option<Vec<u8>>> = records.iter().map(|(_, _, v)| v.map(<[u8]>::to_vec)).collect();
        assert_eq!(got, vec![Some(vec![0, 1, 2, 3]), None, Some(vec![255])]);
        // A raw field of another type is refused when the sink is built.
        let wrong = KafkaSinkSpec { value_fields: vec!["id".into()], ..text };
        let err = RecordEncoder::new(&wrong, &schema()).err().unwrap();
        assert!(!err.retryable && err.message.contains("'id'"), "{}", err.message);
    }

    #[test]
    fn key_fields_are_encoded_with_the_key_format() {
        let base = spec("x", DeliveryGuarantee::None);
        let json = KafkaSinkSpec { key: Some((KafkaFormat::Json, vec!["id".into(), "ok".into()])), ..base.clone() };
        let keys: Vec<Option<String>> = texts(&encode(&json, &mixed_batch())).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![
                Some(r#"{"id":1,"ok":true}"#.into()),
                Some(r#"{"id":2,"ok":null}"#.into()),
                Some(r#"{"id":3,"ok":false}"#.into())
            ]
        );
        let raw = KafkaSinkSpec { key: Some((KafkaFormat::Raw, vec!["name".into()])), ..base.clone() };
        let keys: Vec<Option<String>> = texts(&encode(&raw, &mixed_batch())).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![Some("a,b \"q\"".into()), None, Some("é\n".into())]);
        let csv = KafkaSinkSpec {
            key: Some((KafkaFormat::Csv { delimiter: b',' }, vec!["id".into(), "name".into()])),
            ..base
        };
        let got = texts(&encode(&csv, &numbered(0, 2)));
        assert_eq!(got, vec![(Some("0,r0".into()), Some("r0".into())), (Some("1,r1".into()), Some("r1".into()))]);
    }

    #[test]
    fn pending_entries_round_trip_through_state_bytes() {
        let spec =
            KafkaSinkSpec { key: Some((KafkaFormat::Raw, vec!["name".into()])), ..spec("x", DeliveryGuarantee::None) };
        let mut records = encode(&spec, &mixed_batch());
        records.partitions = vec![2, 0, 1];
        let entry = Entry { origin: 3, checkpoint_id: 9, records };
        let bytes = encode_value(PENDING_STATE, &entry).unwrap();
        assert_eq!(decode_value::<Entry>(PENDING_STATE, &bytes).unwrap(), entry);
        let (origin, checkpoint, _): (u32, u64, serde::de::IgnoredAny) = decode_value(PENDING_STATE, &bytes).unwrap();
        assert_eq!((origin, checkpoint), (3, 9));
        // Lengths that do not add up are caught before use (a corrupt state is an error).
        assert!(entry.records.is_consistent());
        let mut corrupt = entry.records.clone();
        corrupt.values.lens[0] += 1;
        assert!(!corrupt.is_consistent());
        let mut base = Vec::new();
        base64(b"any carnal pleas", &mut base);
        assert_eq!(base, b"YW55IGNhcm5hbCBwbGVhcw==");
    }

    // ---- client properties ----

    #[test]
    fn an_unknown_or_bad_client_property_fails_fatally_naming_it() {
        for delivery in [DeliveryGuarantee::AtLeastOnce, DeliveryGuarantee::ExactlyOnce] {
            for (key, value) in [("no.such.property", "1"), ("acks", "banana")] {
                let mut spec = spec("localhost:9", delivery);
                spec.properties.push((key.into(), value.into()));
                let err = KafkaSink::new(&spec, schema(), &ctx(0, 1)).err().unwrap();
                assert!(!err.retryable, "{}", err.message);
                assert!(err.message.contains(key), "{}", err.message);
            }
        }
    }

    // ---- at least once, partitions ----

    #[test]
    fn at_least_once_snapshot_waits_until_every_record_is_acknowledged() {
        let (_cluster, bootstrap) = cluster(3);
        let mut sink = sink(&spec(&bootstrap, DeliveryGuarantee::AtLeastOnce), 0, 1);
        for b in 0..10 {
            write(&mut sink, numbered(b * 100, 100));
        }
        snapshot(&mut sink, 1);
        assert_eq!(sink.records_written(), 1000, "acknowledged when the snapshot returns");
        let mut acc = Vec::new();
        sink.accumulators(&mut acc);
        assert_eq!(acc, vec![(RECORDS_WRITTEN.to_owned(), 1000)]);
        assert_eq!(read_values(&bootstrap), expected(0..1000));
    }

    #[test]
    fn a_failed_delivery_fails_the_snapshot() {
        let (cluster, bootstrap) = cluster(1);
        cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED]);
        let mut sink = sink(&spec(&bootstrap, DeliveryGuarantee::AtLeastOnce), 0, 1);
        write(&mut sink, numbered(0, 10));
        let mut store = StateStore::new(0, 1, 128);
        let err = sink.snapshot_state(1, &mut store).unwrap_err();
        assert!(err.retryable && err.message.contains("could not be delivered"), "{}", err.message);
    }

    #[test]
    fn fixed_writes_one_partition_per_subtask_and_round_robin_rotates() {
        let (_cluster, bootstrap) = cluster(3);
        let fixed =
            KafkaSinkSpec { partitioner: SinkPartitioner::Fixed, ..spec(&bootstrap, DeliveryGuarantee::AtLeastOnce) };
        let mut sink4 = sink(&fixed, 4, 8);
        write(&mut sink4, numbered(0, 20));
        sink4.finish(&mut VecCollector::default()).unwrap();
        let read = read_all(&bootstrap);
        assert_eq!(read.len(), 20);
        assert!(read.iter().all(|r| r.partition == 1), "subtask 4 % 3 partitions = partition 1");

        let (_cluster, bootstrap) = cluster(3);
        let rr =
            KafkaSinkSpec { partitioner: SinkPartitioner::RoundRobin, ..spec(&bootstrap, DeliveryGuarantee::None) };
        let mut sink = sink(&rr, 0, 1);
        write(&mut sink, numbered(0, 7));
        write(&mut sink, numbered(7, 23));
        sink.finish(&mut VecCollector::default()).unwrap();
        let mut per_partition = [0; 3];
        for r in read_all(&bootstrap) {
            per_partition[r.partition as usize] += 1;
        }
        assert_eq!(per_partition, [10, 10, 10]);
    }

    /// `murmur2_random`, as Kafka's Java client: partition = (murmur2(key) & 0x7fffffff) % n.
    /// The hashes are those of librdkafka's own unit test (`rdmurmur2.c`), which checks them
    /// against the Java client.
    #[test]
    fn the_default_partitioner_places_keys_as_the_java_client_does() {
        let (_cluster, bootstrap) = cluster(3);
        let keyed = KafkaSinkSpec {
            key: Some((KafkaFormat::Raw, vec!["name".into()])),
            ..spec(&bootstrap, DeliveryGuarantee::AtLeastOnce)
        };
        let mut sink = sink(&keyed, 0, 1);
        let names = ["kafka", "giberish123456789", "1234"];
        let batch = || {
            let mut columns = numbered(0, 3).columns().to_vec();
            columns[1] = Arc::new(StringArray::from(names.to_vec()));
            RecordBatch::try_new(schema(), columns).unwrap()
        };
        write(&mut sink, batch());
        write(&mut sink, batch());
        sink.finish(&mut VecCollector::default()).unwrap();
        let read = read_all(&bootstrap);
        assert_eq!(read.len(), 6);
        for r in read {
            let java = match r.key.as_deref() {
                Some(b"kafka") => 1,             // 0xd067cf64
                Some(b"giberish123456789") => 2, // 0x8f552b0c
                Some(b"1234") => 0,              // 0x9fc97b14
                other => panic!("unexpected key {other:?}"),
            };
            assert_eq!(r.partition, java, "key {:?}", r.value);
        }
    }

    // ---- exactly once ----

    #[test]
    fn exactly_once_records_appear_only_after_the_checkpoint_completes() {
        let (_cluster, bootstrap) = cluster(2);
        let spec = spec(&bootstrap, DeliveryGuarantee::ExactlyOnce);
        let mut sink = sink(&spec, 0, 1);
        write(&mut sink, numbered(0, 100));
        snapshot(&mut sink, 1);
        write(&mut sink, numbered(100, 50));
        settle(&mut sink);
        assert!(read_all(&bootstrap).is_empty(), "nothing is produced before the checkpoint completes");
        sink.notify_checkpoint_complete(1).unwrap();
        settle(&mut sink);
        assert_eq!(read_values(&bootstrap), expected(0..100), "checkpoint 1's records, not the later ones");
        assert_eq!(sink.records_written(), 100);
        assert!(eo(&mut sink).pending.is_empty());
        snapshot(&mut sink, 2);
        sink.notify_checkpoint_complete(2).unwrap();
        settle(&mut sink);
        assert_eq!(read_values(&bootstrap), expected(0..150));
        if MOCK.stores_transactional_offsets {
            let lineage = eo(&mut sink).lineage.clone();
            assert_eq!(marker(&bootstrap, "tx-0"), Some((2, lineage)));
        }
    }

    #[test]
    fn exactly_once_restore_commits_uncommitted_entries_once_and_committed_ones_never_again() {
        let (_cluster, bootstrap) = cluster(2);
        let spec = spec(&bootstrap, DeliveryGuarantee::ExactlyOnce);
        let mut first = sink(&spec, 0, 1);
        write(&mut first, numbered(0, 50));
        let checkpoint = snapshot(&mut first, 1);
        write(&mut first, numbered(50, 30)); // never checkpointed: lost with the crash, replayed later
        drop(first); // crash before notify_checkpoint_complete(1)

        let mut second = restored(&spec, std::slice::from_ref(&checkpoint), 0, 1);
        settle(&mut second);
        assert_eq!(read_values(&bootstrap), expected(0..50), "checkpoint 1's entry committed once");
        assert!(eo(&mut second).pending.is_empty());
        let lineage = lineage(&checkpoint);
        if MOCK.stores_transactional_offsets {
            assert_eq!(marker(&bootstrap, "tx-0"), Some((1, lineage.clone())));
        } else {
            // What the transaction left on a real broker.
            commit_marker(&bootstrap, "tx-0", 1, &lineage);
        }
        drop(second); // crash again after the commit, before the next checkpoint

        let mut third = restored(&spec, std::slice::from_ref(&checkpoint), 0, 1);
        settle(&mut third);
        assert_eq!(read_values(&bootstrap), expected(0..50), "the marker says checkpoint 1 is committed");
        assert_eq!(third.records_written(), 0);
        assert!(eo(&mut third).pending.is_empty());
    }

    #[test]
    fn a_marker_of_another_job_with_the_same_prefix_is_ignored() {
        let (_cluster, bootstrap) = cluster(1);
        let spec = spec(&bootstrap, DeliveryGuarantee::ExactlyOnce);
        commit_marker(&bootstrap, "tx-0", 99, "another-job");
        let mut first = sink(&spec, 0, 1);
        write(&mut first, numbered(0, 10));
        let checkpoint = snapshot(&mut first, 1);
        drop(first);
        let mut second = restored(&spec, &[checkpoint], 0, 1);
        settle(&mut second);
        assert_eq!(read_values(&bootstrap), expected(0..10));
    }

    #[test]
    fn exactly_once_restore_at_another_parallelism_commits_every_entry_once() {
        let (_cluster, bootstrap) = cluster(3);
        let spec = spec(&bootstrap, DeliveryGuarantee::ExactlyOnce);
        // Four subtasks, each with entries of checkpoints 1 and 2 (none committed).
        let mut snapshots = Vec::new();
        for s in 0..4u32 {
            let mut sink = sink(&spec, s, 4);
            let base = s as i64 * 1000;
            write(&mut sink, numbered(base, 20));
            snapshot(&mut sink, 1);
            write(&mut sink, numbered(base + 20, 5 + s as i64));
            snapshots.push(snapshot(&mut sink, 2));
        }
        let all: Vec<i64> = (0..4).flat_map(|s| (s * 1000)..(s * 1000 + 25 + s)).collect();
        // Restored at parallelism 2: subtask 0 takes origins 0 and 2, subtask 1 origins 1 and 3.
        let mut sinks: Vec<KafkaSink> = (0..2).map(|s| restored(&spec, &snapshots, s, 2)).collect();
        for sink in &mut sinks {
            settle(sink);
            assert!(eo(sink).pending.is_empty());
            assert_eq!(eo(sink).foreign_recovering, 0);
        }
        assert_eq!(read_values(&bootstrap), expected(all.clone()));
        assert_eq!(sinks.iter().map(KafkaSink::records_written).sum::<u64>(), all.len() as u64);
        // They go on with their own ids; the next snapshot no longer needs ids 2 and 3.
        for (s, sink) in (0..).zip(sinks.iter_mut()) {
            write(sink, numbered(10_000 + s, 1));
            let snap = snapshot(sink, 3);
            let list = snap.states.iter().find(|l| l.name == SUBTASKS_STATE).unwrap();
            let record: SubtaskRecord = decode_value(SUBTASKS_STATE, &list.elements[0]).unwrap();
            assert_eq!((record.parallelism, record.ids, record.checkpoint_id), (2, 2, 3));
            sink.notify_checkpoint_complete(3).unwrap();
            settle(sink);
        }
        assert_eq!(read_values(&bootstrap).len(), all.len() + 2);
    }

    #[test]
    fn exactly_once_restore_aborts_a_lingering_transaction() {
        let (_cluster, bootstrap) = cluster(1);
        let spec = spec(&bootstrap, DeliveryGuarantee::ExactlyOnce);
        let mut first = sink(&spec, 0, 1);
        write(&mut first, numbered(0, 10));
        let checkpoint = snapshot(&mut first, 1);
        drop(first);
        // The crashed instance had opened a transaction with its id and written into it.
        let zombie: BaseProducer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).set("transactional.id", "tx-0").create().unwrap();
        zombie.init_transactions(WAIT).unwrap();
        zombie.begin_transaction().unwrap();
        for i in 0..5 {
            zombie.send(BaseRecord::<[u8], [u8]>::to(TOPIC).payload(format!("zombie{i}").as_bytes())).unwrap();
        }
        zombie.flush(WAIT).unwrap();

        let mut second = restored(&spec, &[checkpoint], 0, 1);
        settle(&mut second);
        let values = read_values(&bootstrap);
        let (zombies, ours): (Vec<String>, Vec<String>) = values.into_iter().partition(|v| v.starts_with("zombie"));
        assert_eq!(ours, expected(0..10), "the restored entry, once");
        if MOCK.isolates_transactions {
            assert!(zombies.is_empty(), "the lingering transaction was aborted: {zombies:?}");
        }
        if MOCK.fences_zombies {
            assert!(zombie.commit_transaction(WAIT).is_err(), "the zombie is fenced");
        }
    }

    #[test]
    fn finish_commits_what_no_checkpoint_covers() {
        let (_cluster, bootstrap) = cluster(1);
        let spec = spec(&bootstrap, DeliveryGuarantee::ExactlyOnce);
        let mut sink = sink(&spec, 0, 1);
        write(&mut sink, numbered(0, 10));
        snapshot(&mut sink, 1); // its checkpoint never completes
        write(&mut sink, numbered(10, 10));
        sink.finish(&mut VecCollector::default()).unwrap();
        assert_eq!(read_values(&bootstrap), expected(0..20));
        assert!(eo(&mut sink).pending.is_empty());
    }

    /// With a final checkpoint to come, the end of the input commits nothing: the tail goes
    /// into the final checkpoint and is committed when it completes, so a job that fails
    /// between the end of input and that checkpoint replays the tail without duplicates.
    #[test]
    fn with_a_final_checkpoint_the_tail_is_committed_by_it_not_at_finish() {
        let (_cluster, bootstrap) = cluster(1);
        let spec = spec(&bootstrap, DeliveryGuarantee::ExactlyOnce);
        let mut first = sink(&spec, 0, 1);
        write(&mut first, numbered(0, 10));
        let checkpoint = snapshot(&mut first, 1);
        first.notify_checkpoint_complete(1).unwrap();
        write(&mut first, numbered(10, 10));
        first.expect_final_checkpoint();
        first.finish(&mut VecCollector::default()).unwrap();
        settle(&mut first);
        assert_eq!(read_values(&bootstrap), expected(0..10), "the tail waits for the final checkpoint");
        drop(first); // the job fails before its final checkpoint
        if !MOCK.stores_transactional_offsets {
            // What checkpoint 1's transaction left on a real broker.
            commit_marker(&bootstrap, "tx-0", 1, &lineage(&checkpoint));
        }

        // The restart replays the tail from checkpoint 1 and ends with a final checkpoint.
        let mut second = restored(&spec, std::slice::from_ref(&checkpoint), 0, 1);
        write(&mut second, numbered(10, 10));
        second.expect_final_checkpoint();
        second.finish(&mut VecCollector::default()).unwrap();
        snapshot(&mut second, 2);
        second.notify_checkpoint_complete(2).unwrap();
        second.close().unwrap();
        assert_eq!(read_values(&bootstrap), expected(0..20), "every record once");
        assert!(eo(&mut second).pending.is_empty());
    }

    #[test]
    fn exactly_once_buffer_is_bounded() {
        let (_cluster, bootstrap) = cluster(1);
        let mut sink = sink(&spec(&bootstrap, DeliveryGuarantee::ExactlyOnce), 0, 1);
        eo(&mut sink).max_buffered = 1000;
        write(&mut sink, numbered(0, 10));
        let err = sink.process_batch(0, 0, numbered(10, 1000), &mut VecCollector::default()).unwrap_err();
        assert!(err.retryable && err.message.contains("no checkpoint completed"), "{}", err.message);
    }

    /// Throughput of the at-least-once sink against a plain `BaseProducer` sending the same
    /// (pre-encoded) JSON values to the same mock cluster. Prints figures; asserts nothing
    /// about time. `cargo nextest run --release -p flint-taskmanager kafka_sink_throughput
    /// --run-ignored only --no-capture`.
    #[test]
    #[ignore = "benchmark: prints figures"]
    fn kafka_sink_throughput_against_a_plain_producer() {
        const BATCHES: i64 = 200;
        const ROWS: i64 = 4096;
        let total = (BATCHES * ROWS) as f64;
        let json = |bootstrap: &str| KafkaSinkSpec {
            format: KafkaFormat::Json,
            value_fields: all_fields(),
            ..spec(bootstrap, DeliveryGuarantee::AtLeastOnce)
        };
        let batches: Vec<RecordBatch> = (0..BATCHES).map(|b| numbered(b * ROWS, ROWS)).collect();
        for round in 0..2 {
            // Plain producer: values encoded beforehand, so only producing is measured.
            let (_cluster, bootstrap) = cluster(4);
            let encoded: Vec<Records> = batches.iter().map(|b| encode(&json(&bootstrap), b)).collect();
            let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
            let started = Instant::now();
            for records in &encoded {
                for (_, _, value) in records.iter() {
                    let mut record = BaseRecord::<[u8], [u8]>::to(TOPIC).payload(value.unwrap());
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((_, back)) => {
                                record = back;
                                producer.poll(Duration::ZERO);
                                std::thread::sleep(POLL_PAUSE);
                            }
                        }
                    }
                }
                producer.poll(Duration::ZERO);
            }
            producer.flush(WAIT).unwrap();
            let plain = total / started.elapsed().as_secs_f64();

            // The sink: encoding from Arrow included.
            let (_cluster, bootstrap) = cluster(4);
            let mut sink = sink(&json(&bootstrap), 0, 1);
            let started = Instant::now();
            for batch in &batches {
                write(&mut sink, batch.clone());
            }
            sink.finish(&mut VecCollector::default()).unwrap();
            let ours = total / started.elapsed().as_secs_f64();
            assert_eq!(sink.records_written(), total as u64);
            eprintln!(
                "round {round}: plain producer {:.0} records/s, sink.kafka (json, at-least-once) {:.0} records/s: {:.0}%",
                plain,
                ours,
                100.0 * ours / plain
            );
        }
    }

    /// Probes the mock for what [`MOCK`] says it lacks; when a librdkafka upgrade adds it,
    /// this fails: set the flag, and the stronger assertions above switch on.
    #[test]
    fn mock_cluster_implements_what_the_tests_assume() {
        let (_cluster, bootstrap) = cluster(1);
        let producer = |id: &str| -> BaseProducer {
            let p: BaseProducer =
                ClientConfig::new().set("bootstrap.servers", &bootstrap).set("transactional.id", id).create().unwrap();
            p.init_transactions(WAIT).unwrap();
            p
        };
        let group: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", "probe").create().unwrap();
        let group = group.group_metadata().unwrap();
        let old = producer("probe-0");
        old.begin_transaction().unwrap();
        old.send(BaseRecord::<[u8], [u8]>::to(TOPIC).payload(&b"committed"[..])).unwrap();
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(TOPIC, 0, Offset::Offset(7)).unwrap();
        old.send_offsets_to_transaction(&offsets, &group, WAIT).unwrap();
        old.commit_transaction(WAIT).unwrap();
        old.begin_transaction().unwrap();
        old.send(BaseRecord::<[u8], [u8]>::to(TOPIC).payload(&b"aborted"[..])).unwrap();
        old.flush(WAIT).unwrap();
        old.abort_transaction(WAIT).unwrap();

        let stored = marker(&bootstrap, "probe").is_some();
        let isolated = !read_all(&bootstrap).iter().any(|r| r.value.as_deref() == Some("aborted"));
        let _new = producer("probe-0");
        let fenced = old.begin_transaction().is_err()
            || old.send(BaseRecord::<[u8], [u8]>::to(TOPIC).payload(&b"late"[..])).is_err()
            || old.commit_transaction(WAIT).is_err();
        assert_eq!(stored, MOCK.stores_transactional_offsets, "TxnOffsetCommit stored");
        assert_eq!(isolated, MOCK.isolates_transactions, "aborted records hidden from read_committed");
        assert_eq!(fenced, MOCK.fences_zombies, "old producer fenced");
    }
}
