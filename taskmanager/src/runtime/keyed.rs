//! Keys of keyed streams: encoding, hashing, key groups, hash partitioning and keyed state.
//!
//! A key is the values of a record's key fields. Work on keys is done per batch:
//!
//! - [`KeyEncoder`] turns the key columns of a batch into one canonical byte string per
//!   row (written into reusable buffers, no allocation per row) and hashes each with
//!   xxh3-64 under the fixed seed [`KEY_HASH_SEED`], so a key has the same hash in every
//!   process and run. [`KeyColumnsBuilder`] turns encoded keys back into columns.
//! - Key groups follow Flink's `KeyGroupRangeAssignment`: the 64-bit hash is folded to 32
//!   bits and mixed with Flink's murmur hash, `key_group = murmur(hash) % max_parallelism`
//!   ([`key_group_for_hash`]); key group `kg` belongs to subtask
//!   `kg * parallelism / max_parallelism` ([`subtask_for_key_group`]), so every subtask
//!   owns one contiguous [`key_group_range`].
//! - [`HashPartitioner`] splits a batch into one sub-batch per consumer of a hash edge.
//! - [`KeyMap`] interns keys into dense ids (`u32`): keyed state lives in columns indexed
//!   by those ids (see the aggregate and window operators). Each key keeps its hash, so its
//!   key group is always derivable (snapshots are taken per key group).
//!
//! The canonical key encoding (hashed, compared and stored) depends only on the key's
//! field types:
//!
//! - one `integer`/`float`/`boolean` field: the value's little-endian bytes (8, 8 or 1;
//!   floats with every NaN made the same NaN); null is the empty string;
//! - one `string` field: its UTF-8 bytes; null is the single byte `0xFF` (never valid
//!   UTF-8); one `null` field: always empty;
//! - anything else (several fields, or `bytes`): per field, `0x00` for null, else `0x01`
//!   followed by the fixed-width bytes, or by a `u32` little-endian length and the bytes.

pub use flint_common::keygroups::{key_group_range, subtask_for_key_group};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, Float64Array, Float64Builder,
    Int64Array, Int64Builder, NullArray, StringArray, StringBuilder, UInt32Array,
};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use flint_common::job::{FieldType, Schema};
use hashbrown::hash_table::{Entry, HashTable};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::operator::TaskError;
use super::partition::Partitioner;
/// The Flint-to-Arrow type mapping lives in `schema`; re-exported for callers of this module.
pub use super::schema::{arrow_schema, arrow_type};

/// The seed of every key hash. Changing it moves every key to another key group, which
/// breaks restoring state written before the change.
pub const KEY_HASH_SEED: u64 = 0x666c_696e_745f_6b79;

/// `column` as `ty`: the same array when it already has that type, else a cast.
pub(crate) fn as_type(column: &ArrayRef, ty: &DataType) -> Result<ArrayRef, TaskError> {
    if column.data_type() == ty {
        Ok(Arc::clone(column))
    } else {
        cast(column, ty)
            .map_err(|e| TaskError::fatal(format!("cannot read a {} column as {ty}: {e}", column.data_type())))
    }
}

/// The hash of one canonically encoded key.
#[inline]
pub fn hash_key(encoded: &[u8]) -> u64 {
    xxh3_64_with_seed(encoded, KEY_HASH_SEED)
}

/// Flink's `MathUtils.murmurHash`: murmur3's mixing of one 32-bit value, made non-negative.
pub fn flink_murmur_hash(code: i32) -> i32 {
    let mut h = (code as u32).wrapping_mul(0xcc9e_2d51);
    h = h.rotate_left(15).wrapping_mul(0x1b87_3593);
    h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    h ^= 4;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    let h = h as i32;
    if h >= 0 {
        h
    } else if h != i32::MIN {
        -h
    } else {
        0
    }
}

/// The key group of a key whose Java-style 32-bit hash code is `hash_code` (Flink's
/// `computeKeyGroupForKeyHash`).
pub fn key_group_for_hash_code(hash_code: i32, max_parallelism: u32) -> u32 {
    debug_assert!(max_parallelism > 0);
    flink_murmur_hash(hash_code) as u32 % max_parallelism
}

/// The key group of a key with 64-bit hash `hash`: the hash folded to 32 bits, then as
/// [`key_group_for_hash_code`].
#[inline]
pub fn key_group_for_hash(hash: u64, max_parallelism: u32) -> u32 {
    key_group_for_hash_code((hash ^ (hash >> 32)) as u32 as i32, max_parallelism)
}

/// The subtask (of `parallelism`) that owns keys with hash `hash`.
#[inline]
pub fn subtask_for_hash(hash: u64, max_parallelism: u32, parallelism: u32) -> u32 {
    subtask_for_key_group(key_group_for_hash(hash, max_parallelism), max_parallelism, parallelism)
}

/// The canonical kind of a key field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Int,
    Float,
    Bool,
    Str,
    Bytes,
    Null,
}

impl KeyKind {
    fn of(ty: FieldType) -> KeyKind {
        match ty {
            FieldType::Int => KeyKind::Int,
            FieldType::Float => KeyKind::Float,
            FieldType::Bool => KeyKind::Bool,
            FieldType::String => KeyKind::Str,
            FieldType::Bytes => KeyKind::Bytes,
            FieldType::Null => KeyKind::Null,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            KeyKind::Int => DataType::Int64,
            KeyKind::Float => DataType::Float64,
            KeyKind::Bool => DataType::Boolean,
            KeyKind::Str => DataType::Utf8,
            KeyKind::Bytes => DataType::Binary,
            KeyKind::Null => DataType::Null,
        }
    }
}

/// One key column of a batch, downcast to its canonical array type.
enum KeyColumn<'a> {
    Int(&'a Int64Array),
    Float(&'a Float64Array),
    Bool(&'a BooleanArray),
    Str(&'a StringArray),
    Bytes(&'a BinaryArray),
    Null,
}

impl<'a> KeyColumn<'a> {
    fn new(kind: KeyKind, array: &'a ArrayRef) -> Result<Self, TaskError> {
        let any = array.as_any();
        let column = match kind {
            KeyKind::Int => any.downcast_ref().map(KeyColumn::Int),
            KeyKind::Float => any.downcast_ref().map(KeyColumn::Float),
            KeyKind::Bool => any.downcast_ref().map(KeyColumn::Bool),
            KeyKind::Str => any.downcast_ref().map(KeyColumn::Str),
            KeyKind::Bytes => any.downcast_ref().map(KeyColumn::Bytes),
            KeyKind::Null => Some(KeyColumn::Null),
        };
        column.ok_or_else(|| TaskError::fatal(format!("key column of type {} is not {kind:?}", array.data_type())))
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            KeyColumn::Int(a) => a.is_null(row),
            KeyColumn::Float(a) => a.is_null(row),
            KeyColumn::Bool(a) => a.is_null(row),
            KeyColumn::Str(a) => a.is_null(row),
            KeyColumn::Bytes(a) => a.is_null(row),
            KeyColumn::Null => true,
        }
    }

    /// Appends the value of `row` (not null): fixed-width bytes, or for `tagged` strings
    /// and bytes a length prefix and the bytes.
    #[inline]
    fn write_value(&self, row: usize, tagged: bool, out: &mut Vec<u8>) {
        match self {
            KeyColumn::Int(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
            KeyColumn::Float(a) => out.extend_from_slice(&canonical_float_bits(a.value(row)).to_le_bytes()),
            KeyColumn::Bool(a) => out.push(u8::from(a.value(row))),
            KeyColumn::Str(a) => write_var(a.value(row).as_bytes(), tagged, out),
            KeyColumn::Bytes(a) => write_var(a.value(row), tagged, out),
            KeyColumn::Null => {}
        }
    }
}

#[inline]
fn canonical_float_bits(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

#[inline]
fn write_var(bytes: &[u8], tagged: bool, out: &mut Vec<u8>) {
    if tagged {
        // Keys longer than 4 GiB cannot occur: an Arrow string column holds less.
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}

/// The null marker of a single string key.
const NULL_STRING_KEY: u8 = 0xFF;

/// Encodes and hashes the key columns of batches (see the module comment for the
/// encoding). Buffers are reused from batch to batch.
#[derive(Debug)]
pub struct KeyEncoder {
    /// The key fields' positions in the input.
    columns: Vec<usize>,
    kinds: Vec<KeyKind>,
    /// Per-field tags and length prefixes (several fields, or `bytes`).
    tagged: bool,
    bytes: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` is row `i`'s key.
    offsets: Vec<usize>,
    hashes: Vec<u64>,
}

impl KeyEncoder {
    /// An encoder for the fields `key` of records with schema `input`.
    pub fn new(input: &Schema, key: &[String]) -> Result<Self, TaskError> {
        if key.is_empty() {
            return Err(TaskError::fatal("a key needs at least one field"));
        }
        let mut columns = Vec::with_capacity(key.len());
        let mut kinds = Vec::with_capacity(key.len());
        for name in key {
            let index = input.index_of(name).ok_or_else(|| {
                TaskError::fatal(format!("unknown key field '{name}' (input fields: {})", input.names_list()))
            })?;
            columns.push(index);
            kinds.push(KeyKind::of(input.fields[index].ty));
        }
        let tagged = kinds.len() > 1 || kinds[0] == KeyKind::Bytes;
        Ok(Self { columns, kinds, tagged, bytes: Vec::new(), offsets: vec![0], hashes: Vec::new() })
    }

    /// The positions of the key fields in the input.
    pub fn key_columns(&self) -> &[usize] {
        &self.columns
    }

    /// Encodes and hashes the key of every row of `batch`.
    pub fn encode(&mut self, batch: &RecordBatch) -> Result<EncodedKeys<'_>, TaskError> {
        let rows = batch.num_rows();
        self.bytes.clear();
        self.offsets.clear();
        self.offsets.push(0);
        self.hashes.clear();
        let mut arrays = Vec::with_capacity(self.columns.len());
        for (&index, kind) in self.columns.iter().zip(&self.kinds) {
            let column = batch.columns().get(index).ok_or_else(|| {
                TaskError::fatal(format!("key column {index} is missing (the batch has {})", batch.num_columns()))
            })?;
            arrays.push(as_type(column, &kind.data_type())?);
        }
        let columns =
            arrays.iter().zip(&self.kinds).map(|(a, &k)| KeyColumn::new(k, a)).collect::<Result<Vec<_>, _>>()?;
        if self.tagged {
            self.encode_tagged(&columns, rows);
        } else {
            self.encode_single(&columns[0], rows);
        }
        self.hashes.extend(self.offsets.windows(2).map(|w| hash_key(&self.bytes[w[0]..w[1]])));
        Ok(EncodedKeys { bytes: &self.bytes, offsets: &self.offsets, hashes: &self.hashes })
    }

    fn encode_single(&mut self, column: &KeyColumn<'_>, rows: usize) {
        let (bytes, offsets) = (&mut self.bytes, &mut self.offsets);
        offsets.reserve(rows);
        match column {
            // The common case: the key bytes are the column's value buffer.
            KeyColumn::Str(a) if a.null_count() == 0 => {
                let offs = a.value_offsets();
                let first = offs[0];
                bytes.extend_from_slice(&a.value_data()[first as usize..offs[rows] as usize]);
                offsets.extend(offs[1..=rows].iter().map(|&o| (o - first) as usize));
            }
            KeyColumn::Str(a) => {
                for row in 0..rows {
                    if a.is_null(row) {
                        bytes.push(NULL_STRING_KEY);
                    } else {
                        bytes.extend_from_slice(a.value(row).as_bytes());
                    }
                    offsets.push(bytes.len());
                }
            }
            KeyColumn::Int(a) if a.null_count() == 0 => {
                bytes.reserve(rows * 8);
                for v in a.values().iter() {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                offsets.extend((1..=rows).map(|i| i * 8));
            }
            KeyColumn::Null => offsets.extend(std::iter::repeat_n(0, rows)),
            column => {
                for row in 0..rows {
                    if !column.is_null(row) {
                        column.write_value(row, false, bytes);
                    }
                    offsets.push(bytes.len());
                }
            }
        }
    }

    fn encode_tagged(&mut self, columns: &[KeyColumn<'_>], rows: usize) {
        let (bytes, offsets) = (&mut self.bytes, &mut self.offsets);
        offsets.reserve(rows);
        for row in 0..rows {
            for column in columns {
                if column.is_null(row) {
                    bytes.push(0);
                } else {
                    bytes.push(1);
                    column.write_value(row, true, bytes);
                }
            }
            offsets.push(bytes.len());
        }
    }

    /// A builder of key columns (canonical Arrow types) from encoded keys.
    pub fn columns_builder(&self, capacity: usize) -> KeyColumnsBuilder {
        let builders = self
            .kinds
            .iter()
            .map(|kind| match kind {
                KeyKind::Int => KeyBuilder::Int(Int64Builder::with_capacity(capacity)),
                KeyKind::Float => KeyBuilder::Float(Float64Builder::with_capacity(capacity)),
                KeyKind::Bool => KeyBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
                KeyKind::Str => KeyBuilder::Str(StringBuilder::with_capacity(capacity, capacity * 8)),
                KeyKind::Bytes => KeyBuilder::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 8)),
                KeyKind::Null => KeyBuilder::Null(0),
            })
            .collect();
        KeyColumnsBuilder { builders, tagged: self.tagged }
    }
}

/// The encoded keys and hashes of one batch's rows.
#[derive(Clone, Copy, Debug)]
pub struct EncodedKeys<'a> {
    bytes: &'a [u8],
    offsets: &'a [usize],
    hashes: &'a [u64],
}

impl<'a> EncodedKeys<'a> {
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The encoded key of `row`.
    #[inline]
    pub fn key(&self, row: usize) -> &'a [u8] {
        &self.bytes[self.offsets[row]..self.offsets[row + 1]]
    }

    /// The hash of `row`'s key.
    #[inline]
    pub fn hash(&self, row: usize) -> u64 {
        self.hashes[row]
    }

    /// Every row's hash, in row order.
    pub fn hashes(&self) -> &'a [u64] {
        self.hashes
    }
}

enum KeyBuilder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    Bytes(BinaryBuilder),
    Null(usize),
}

/// Decodes encoded keys into key columns; made by [`KeyEncoder::columns_builder`].
pub struct KeyColumnsBuilder {
    builders: Vec<KeyBuilder>,
    tagged: bool,
}

fn corrupt_key() -> TaskError {
    TaskError::fatal("corrupt encoded key in keyed state")
}

/// Splits `n` bytes off the front of `rest`.
fn split<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], TaskError> {
    if rest.len() < n {
        return Err(corrupt_key());
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn read_u64(bytes: &[u8]) -> Result<u64, TaskError> {
    bytes.try_into().map(u64::from_le_bytes).map_err(|_| corrupt_key())
}

fn read_str(bytes: &[u8]) -> Result<&str, TaskError> {
    std::str::from_utf8(bytes).map_err(|_| corrupt_key())
}

impl KeyColumnsBuilder {
    /// Appends one encoded key (as written by the [`KeyEncoder`] that made this builder).
    pub fn append(&mut self, key: &[u8]) -> Result<(), TaskError> {
        if self.tagged {
            let mut rest = key;
            for builder in &mut self.builders {
                let valid = split(&mut rest, 1)?[0] != 0;
                match builder {
                    KeyBuilder::Null(n) => *n += 1,
                    _ if !valid => append_null(builder),
                    KeyBuilder::Int(b) => b.append_value(read_u64(split(&mut rest, 8)?)? as i64),
                    KeyBuilder::Float(b) => b.append_value(f64::from_bits(read_u64(split(&mut rest, 8)?)?)),
                    KeyBuilder::Bool(b) => b.append_value(split(&mut rest, 1)?[0] != 0),
                    KeyBuilder::Str(b) => {
                        let len = u32::from_le_bytes(split(&mut rest, 4)?.try_into().map_err(|_| corrupt_key())?);
                        b.append_value(read_str(split(&mut rest, len as usize)?)?);
                    }
                    KeyBuilder::Bytes(b) => {
                        let len = u32::from_le_bytes(split(&mut rest, 4)?.try_into().map_err(|_| corrupt_key())?);
                        b.append_value(split(&mut rest, len as usize)?);
                    }
                }
            }
            return if rest.is_empty() { Ok(()) } else { Err(corrupt_key()) };
        }
        match &mut self.builders[0] {
            KeyBuilder::Null(n) => *n += 1,
            KeyBuilder::Str(b) if key == [NULL_STRING_KEY] => b.append_null(),
            KeyBuilder::Str(b) => b.append_value(read_str(key)?),
            builder if key.is_empty() => append_null(builder),
            KeyBuilder::Int(b) => b.append_value(read_u64(key)? as i64),
            KeyBuilder::Float(b) => b.append_value(f64::from_bits(read_u64(key)?)),
            KeyBuilder::Bool(b) if key.len() == 1 => b.append_value(key[0] != 0),
            KeyBuilder::Bool(_) | KeyBuilder::Bytes(_) => return Err(corrupt_key()),
        }
        Ok(())
    }

    /// Appends every key of `keys`, in id order.
    pub fn append_all(&mut self, keys: &KeyMap) -> Result<(), TaskError> {
        if let (false, [KeyBuilder::Int(b)]) = (self.tagged, self.builders.as_mut_slice()) {
            // Single integer keys without nulls: the arena is the values, 8 bytes each.
            if keys.bytes.len() == keys.len() * 8 {
                for chunk in keys.bytes.chunks_exact(8) {
                    b.append_value(i64::from_le_bytes(chunk.try_into().map_err(|_| corrupt_key())?));
                }
                return Ok(());
            }
        }
        keys.iter().try_for_each(|(_, key)| self.append(key))
    }

    /// The key columns of the keys appended since the last call.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.builders
            .iter_mut()
            .map(|builder| -> ArrayRef {
                match builder {
                    KeyBuilder::Int(b) => Arc::new(b.finish()),
                    KeyBuilder::Float(b) => Arc::new(b.finish()),
                    KeyBuilder::Bool(b) => Arc::new(b.finish()),
                    KeyBuilder::Str(b) => Arc::new(b.finish()),
                    KeyBuilder::Bytes(b) => Arc::new(b.finish()),
                    KeyBuilder::Null(n) => Arc::new(NullArray::new(std::mem::take(n))),
                }
            })
            .collect()
    }
}

fn append_null(builder: &mut KeyBuilder) {
    match builder {
        KeyBuilder::Int(b) => b.append_null(),
        KeyBuilder::Float(b) => b.append_null(),
        KeyBuilder::Bool(b) => b.append_null(),
        KeyBuilder::Str(b) => b.append_null(),
        KeyBuilder::Bytes(b) => b.append_null(),
        KeyBuilder::Null(n) => *n += 1,
    }
}

/// Interned keys: each distinct encoded key gets a dense id (`0, 1, 2, ...` in insertion
/// order) under which keyed state keeps its values (columns indexed by id). Key bytes live
/// in one arena; the table holds ids and is probed with the precomputed key hashes, so a
/// lookup hashes nothing and allocates nothing.
#[derive(Debug, Default, Clone)]
pub struct KeyMap {
    table: HashTable<u32>,
    hashes: Vec<u64>,
    /// `offsets[id]..offsets[id + 1]` is key `id`'s bytes (after the leading 0).
    offsets: Vec<usize>,
    bytes: Vec<u8>,
}

impl KeyMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The id of `key` (whose hash is `hash`), adding it if it is new; `true` when added.
    #[inline]
    pub fn intern(&mut self, hash: u64, key: &[u8]) -> (u32, bool) {
        let Self { table, hashes, offsets, bytes } = self;
        if offsets.is_empty() {
            offsets.push(0);
        }
        let eq = |&id: &u32| &bytes[offsets[id as usize]..offsets[id as usize + 1]] == key;
        match table.entry(hash, eq, |&id| hashes[id as usize]) {
            Entry::Occupied(entry) => (*entry.get(), false),
            Entry::Vacant(entry) => {
                let id = u32::try_from(hashes.len()).expect("more than 4 billion keys in one keyed state");
                entry.insert(id);
                hashes.push(hash);
                bytes.extend_from_slice(key);
                offsets.push(bytes.len());
                (id, true)
            }
        }
    }

    /// The id of `key`, if present.
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.table.find(hash, |&id| self.key(id) == key).copied()
    }

    /// The encoded key with id `id`.
    #[inline]
    pub fn key(&self, id: u32) -> &[u8] {
        &self.bytes[self.offsets[id as usize]..self.offsets[id as usize + 1]]
    }

    /// The hash of key `id`.
    pub fn hash(&self, id: u32) -> u64 {
        self.hashes[id as usize]
    }

    /// The key group of key `id`.
    pub fn key_group(&self, id: u32, max_parallelism: u32) -> u32 {
        key_group_for_hash(self.hash(id), max_parallelism)
    }

    /// Every key with its id, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        (0..self.len() as u32).map(|id| (id, self.key(id)))
    }

    /// Removes every key, keeping the allocated memory.
    pub fn clear(&mut self) {
        self.table.clear();
        self.hashes.clear();
        self.offsets.clear();
        self.bytes.clear();
    }
}

/// Splits batches by key for a hash edge: row `r` goes to consumer
/// `subtask_for_hash(hash(key(r)), max_parallelism, consumers)`.
#[derive(Debug)]
pub struct HashPartitioner {
    encoder: KeyEncoder,
    max_parallelism: u32,
    targets: Vec<u32>,
    counts: Vec<usize>,
}

impl HashPartitioner {
    /// Partitions records of schema `input` on the fields `key`.
    pub fn new(input: &Schema, key: &[String], max_parallelism: u32) -> Result<Self, TaskError> {
        if max_parallelism == 0 {
            return Err(TaskError::fatal("max parallelism must be positive"));
        }
        let encoder = KeyEncoder::new(input, key)?;
        Ok(Self { encoder, max_parallelism, targets: Vec::new(), counts: Vec::new() })
    }

    /// The consumer of every row of `batch`, in row order.
    pub fn targets(&mut self, batch: &RecordBatch, num_channels: usize) -> Result<&[u32], TaskError> {
        let channels = u32::try_from(num_channels)
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| TaskError::fatal(format!("a hash edge needs 1 to 2^32-1 consumers, got {num_channels}")))?;
        let keys = self.encoder.encode(batch)?;
        let max = self.max_parallelism;
        self.targets.clear();
        self.targets.extend(keys.hashes().iter().map(|&h| subtask_for_hash(h, max, channels)));
        Ok(&self.targets)
    }
}

impl Partitioner for HashPartitioner {
    /// Appends `(consumer, rows for it)` pairs in consumer order, leaving out consumers
    /// that get no rows. Rows keep their order.
    fn partition(
        &mut self,
        batch: &RecordBatch,
        num_channels: usize,
        out: &mut Vec<(usize, RecordBatch)>,
    ) -> Result<(), TaskError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if num_channels == 1 {
            out.push((0, batch.clone()));
            return Ok(());
        }
        self.targets(batch, num_channels)?;
        self.counts.clear();
        self.counts.resize(num_channels, 0);
        for &t in &self.targets {
            self.counts[t as usize] += 1;
        }
        if let Some(only) = self.counts.iter().position(|&c| c == batch.num_rows()) {
            out.push((only, batch.clone()));
            return Ok(());
        }
        // A counting sort of the row indices by consumer, in one buffer; each consumer's
        // indices are a slice of it.
        let mut cursor = Vec::with_capacity(num_channels);
        let mut next = 0;
        for &count in &self.counts {
            cursor.push(next);
            next += count;
        }
        let mut indices = vec![0u32; batch.num_rows()];
        for (row, &t) in self.targets.iter().enumerate() {
            indices[cursor[t as usize]] = row as u32;
            cursor[t as usize] += 1;
        }
        let buffer = Buffer::from_vec(indices);
        for (channel, (&end, &count)) in cursor.iter().zip(&self.counts).enumerate() {
            if count > 0 {
                let rows = UInt32Array::new(ScalarBuffer::new(buffer.clone(), end - count, count), None);
                out.push((channel, take_record_batch(batch, &rows)?));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use arrow::array::{AsArray, BinaryArray};
    use arrow::datatypes::Int64Type;
    use flint_common::job::Field;

    use super::*;

    fn schema(fields: &[(&str, FieldType)]) -> Schema {
        Schema::new(fields.iter().map(|(n, t)| Field::nullable(*n, *t)).collect())
    }

    fn batch(schema: &Schema, columns: Vec<ArrayRef>) -> RecordBatch {
        RecordBatch::try_new(arrow_schema(schema), columns).unwrap()
    }

    fn keys(key: &[&str], schema: &Schema, b: &RecordBatch) -> Vec<(Vec<u8>, u64)> {
        let key: Vec<String> = key.iter().map(|s| s.to_string()).collect();
        let mut enc = KeyEncoder::new(schema, &key).unwrap();
        let keys = enc.encode(b).unwrap();
        (0..keys.len()).map(|i| (keys.key(i).to_vec(), keys.hash(i))).collect()
    }

    #[test]
    fn hashes_are_fixed() {
        // These values are part of the state format: a change moves keys between key groups.
        let s = schema(&[("s", FieldType::String), ("n", FieldType::Int)]);
        let b = batch(
            &s,
            vec![
                Arc::new(StringArray::from(vec![Some("k0"), Some("k1"), Some(""), None])),
                Arc::new(Int64Array::from(vec![Some(0), Some(1), Some(-1), None])),
            ],
        );
        let by_string: Vec<u64> = keys(&["s"], &s, &b).into_iter().map(|(_, h)| h).collect();
        let by_int: Vec<u64> = keys(&["n"], &s, &b).into_iter().map(|(_, h)| h).collect();
        let by_both: Vec<u64> = keys(&["s", "n"], &s, &b).into_iter().map(|(_, h)| h).collect();
        assert_eq!(by_string, [0x51c5059eb00ee801, 0xac1bd49055119c5d, 0x43359dde41c49eeb, 0x1adcaba027c04654]);
        assert_eq!(by_int, [0x0bb028f94220b330, 0xc375b63f91f2dc2c, 0x3c8a060a0da5f7a8, 0x43359dde41c49eeb]);
        assert_eq!(by_both, [0x20207b2e1cfee4b9, 0x7b07223e1bf732b7, 0xe67e28781f501a88, 0x31d0e7e490686972]);
        let groups: Vec<u32> = by_string.iter().map(|&h| key_group_for_hash(h, 128)).collect();
        assert_eq!(groups, [15, 53, 11, 10]);
        assert_eq!(hash_key(b"k0"), by_string[0]);
        assert_eq!(hash_key(&0i64.to_le_bytes()), by_int[0]);
    }

    #[test]
    fn encodings_are_canonical_and_decode() {
        let s = schema(&[("s", FieldType::String), ("n", FieldType::Int), ("f", FieldType::Float)]);
        let b = batch(
            &s,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None, Some(""), Some("a")])),
                Arc::new(Int64Array::from(vec![Some(7), Some(7), None, Some(7)])),
                Arc::new(Float64Array::from(vec![Some(f64::NAN), Some(-f64::NAN), Some(0.5), None])),
            ],
        );
        let strings = keys(&["s"], &s, &b);
        assert_eq!(strings[0].0, b"a");
        assert_eq!(strings[1].0, [NULL_STRING_KEY]);
        assert_eq!(strings[2].0, b"");
        assert_eq!(strings[0], strings[3]);
        let floats = keys(&["f"], &s, &b);
        assert_eq!(floats[0], floats[1], "every NaN is one key");
        assert!(floats[3].0.is_empty(), "null float");
        let all = keys(&["s", "n", "f"], &s, &b);
        assert_eq!(all[1].0, [0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f]);
        let distinct: HashSet<_> = all.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(distinct.len(), 4);

        // Decoding gives the (canonical) columns back.
        for key in [&["s"][..], &["n"], &["f"], &["s", "n", "f"]] {
            let names: Vec<String> = key.iter().map(|s| s.to_string()).collect();
            let mut enc = KeyEncoder::new(&s, &names).unwrap();
            let encoded: Vec<Vec<u8>> = {
                let keys = enc.encode(&b).unwrap();
                (0..keys.len()).map(|i| keys.key(i).to_vec()).collect()
            };
            let mut builder = enc.columns_builder(4);
            for k in &encoded {
                builder.append(k).unwrap();
            }
            let columns = builder.finish();
            for (column, name) in columns.iter().zip(key) {
                let original = b.column(s.index_of(name).unwrap());
                if *name == "f" {
                    let (a, o) = (
                        column.as_primitive::<arrow::datatypes::Float64Type>(),
                        original.as_primitive::<arrow::datatypes::Float64Type>(),
                    );
                    for i in 0..4 {
                        assert_eq!(a.is_null(i), o.is_null(i));
                        assert!(a.is_null(i) || a.value(i).to_bits() == canonical_float_bits(o.value(i)));
                    }
                } else {
                    assert_eq!(column.as_ref(), original.as_ref(), "{name}");
                }
            }
        }
    }

    #[test]
    fn bytes_and_bool_keys() {
        let s = schema(&[("b", FieldType::Bytes), ("t", FieldType::Bool)]);
        let b = batch(
            &s,
            vec![
                Arc::new(BinaryArray::from(vec![Some(&b"x"[..]), None, Some(b"")])),
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            ],
        );
        let bytes = keys(&["b"], &s, &b);
        assert_eq!(bytes[0].0, [1, 1, 0, 0, 0, b'x']);
        assert_eq!(bytes[1].0, [0]);
        assert_eq!(bytes[2].0, [1, 0, 0, 0, 0]);
        let bools = keys(&["t"], &s, &b);
        assert_eq!(
            (bools[0].0.as_slice(), bools[1].0.as_slice(), bools[2].0.as_slice()),
            (&[1][..], &[0][..], &[][..])
        );
        let mut enc = KeyEncoder::new(&s, &["b".into(), "t".into()]).unwrap();
        let encoded: Vec<Vec<u8>> = {
            let keys = enc.encode(&b).unwrap();
            (0..3).map(|i| keys.key(i).to_vec()).collect()
        };
        let mut builder = enc.columns_builder(3);
        encoded.iter().for_each(|k| builder.append(k).unwrap());
        let columns = builder.finish();
        assert_eq!(columns[0].as_ref(), b.column(0).as_ref());
        assert_eq!(columns[1].as_ref(), b.column(1).as_ref());
        assert!(builder.append(&[1, 9]).is_err(), "corrupt keys are errors");
    }

    #[test]
    fn other_integer_widths_are_cast() {
        let s = schema(&[("n", FieldType::Int)]);
        let narrow =
            RecordBatch::try_from_iter([("n", Arc::new(arrow::array::Int32Array::from(vec![5, 6])) as ArrayRef)])
                .unwrap();
        let wide = batch(&s, vec![Arc::new(Int64Array::from(vec![5, 6]))]);
        assert_eq!(keys(&["n"], &s, &narrow), keys(&["n"], &s, &wide));
    }

    #[test]
    fn murmur_matches_flink() {
        // Flink's MathUtils.murmurHash(1) and (0).
        assert_eq!(flink_murmur_hash(1), 68075478);
        assert_eq!(flink_murmur_hash(0), 593689054);
        for code in [0, 1, -1, 42, i32::MIN, i32::MAX] {
            assert!(flink_murmur_hash(code) >= 0);
        }
        // Flink: assignToKeyGroup(Integer key k, 128) = murmurHash(k) % 128.
        assert_eq!(key_group_for_hash_code(1, 128), 68075478 % 128);
    }

    #[test]
    fn key_groups_and_subtasks() {
        // Flink's computeOperatorIndexForKeyGroup and computeKeyGroupRangeForOperatorIndex.
        assert_eq!(subtask_for_key_group(0, 128, 2), 0);
        assert_eq!(subtask_for_key_group(63, 128, 2), 0);
        assert_eq!(subtask_for_key_group(64, 128, 2), 1);
        assert_eq!(subtask_for_key_group(127, 128, 3), 2);
        assert_eq!(subtask_for_key_group(42, 128, 3), 0);
        assert_eq!(subtask_for_key_group(43, 128, 3), 1);
        assert_eq!(key_group_range(0, 128, 3), 0..=42);
        assert_eq!(key_group_range(1, 128, 3), 43..=85);
        assert_eq!(key_group_range(2, 128, 3), 86..=127);
        assert_eq!(key_group_range(0, 32768, 1), 0..=32767);
        for max in [1, 7, 128, 1000, 32768] {
            for p in [1, 2, 3, 5, 7, 64, 127, 128].into_iter().filter(|&p| p <= max) {
                let mut next = 0;
                for subtask in 0..p {
                    let range = key_group_range(subtask, max, p);
                    assert_eq!(*range.start(), next, "contiguous, max {max} p {p}");
                    for kg in [*range.start(), *range.end()] {
                        assert_eq!(subtask_for_key_group(kg, max, p), subtask, "kg {kg} max {max} p {p}");
                    }
                    next = range.end() + 1;
                }
                assert_eq!(next, max, "every key group has one owner, max {max} p {p}");
            }
        }
        for h in [0u64, 1, u64::MAX, 0x1234_5678_9abc_def0] {
            assert!(key_group_for_hash(h, 128) < 128);
        }
    }

    fn int_string_batch(range: std::ops::Range<i64>) -> (Schema, RecordBatch) {
        let s = schema(&[("k", FieldType::String), ("n", FieldType::Int)]);
        let b = batch(
            &s,
            vec![
                Arc::new(StringArray::from_iter_values(range.clone().map(|n| format!("k{}", n % 97)))),
                Arc::new(Int64Array::from_iter_values(range)),
            ],
        );
        (s, b)
    }

    #[test]
    fn hash_partitioner_sends_each_key_to_one_consumer() {
        let (s, first) = int_string_batch(0..1000);
        let (_, second) = int_string_batch(1000..3000);
        let mut a = HashPartitioner::new(&s, &["k".into()], 128).unwrap();
        let mut b = HashPartitioner::new(&s, &["k".into()], 128).unwrap();
        let mut owner = std::collections::HashMap::new();
        for (which, batch) in [(0, &first), (1, &second), (0, &second)] {
            let partitioner = if which == 0 { &mut a } else { &mut b };
            let mut parts = Vec::new();
            partitioner.partition(batch, 3, &mut parts).unwrap();
            assert!(parts.len() > 1);
            let mut seen = Vec::new();
            for (channel, part) in &parts {
                let keys = part.column(0).as_string::<i32>();
                let ns = part.column(1).as_primitive::<Int64Type>();
                assert!(ns.values().windows(2).all(|w| w[0] < w[1]), "rows keep their order");
                seen.extend(ns.values().iter().copied());
                for key in keys.iter().flatten() {
                    assert_eq!(*owner.entry(key.to_owned()).or_insert(*channel), *channel, "key {key}");
                }
            }
            seen.sort_unstable();
            let expected: Vec<i64> = batch.column(1).as_primitive::<Int64Type>().values().to_vec();
            assert_eq!(seen, expected, "every row exactly once");
        }
        let used: HashSet<usize> = owner.values().copied().collect();
        assert_eq!(used.len(), 3);
        let mut parts = Vec::new();
        a.partition(&first, 1, &mut parts).unwrap();
        assert_eq!((parts.len(), parts[0].0, parts[0].1.num_rows()), (1, 0, 1000));
        assert!(a.partition(&first, 0, &mut parts).is_err());
    }

    #[test]
    fn key_map_decodes_in_id_order() {
        let s = schema(&[("n", FieldType::Int)]);
        for values in [vec![Some(3), Some(-1), Some(3), Some(9)], vec![Some(3), None, Some(3)]] {
            let b = batch(&s, vec![Arc::new(Int64Array::from(values.clone()))]);
            let mut enc = KeyEncoder::new(&s, &["n".into()]).unwrap();
            let mut map = KeyMap::new();
            let keys = enc.encode(&b).unwrap();
            (0..keys.len()).for_each(|i| _ = map.intern(keys.hash(i), keys.key(i)));
            let mut builder = enc.columns_builder(4);
            builder.append_all(&map).unwrap();
            let mut distinct = values.clone();
            distinct.remove(2);
            assert_eq!(builder.finish()[0].as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), distinct);
        }
    }

    #[test]
    fn key_map_interns() {
        let mut map = KeyMap::new();
        let mut ids = Vec::new();
        for i in 0..10_000u32 {
            let key = format!("key{}", i % 2500);
            let (id, added) = map.intern(hash_key(key.as_bytes()), key.as_bytes());
            assert_eq!(added, i < 2500);
            ids.push(id);
        }
        assert_eq!(map.len(), 2500);
        assert_eq!(ids[2501], 1);
        assert_eq!(map.key(7), b"key7");
        assert_eq!(map.get(hash_key(b"key9"), b"key9"), Some(9));
        assert_eq!(map.get(hash_key(b"nope"), b"nope"), None);
        assert_eq!(map.key_group(3, 128), key_group_for_hash(hash_key(b"key3"), 128));
        assert_eq!(map.iter().nth(5).map(|(id, k)| (id, k.to_vec())), Some((5, b"key5".to_vec())));
        map.clear();
        assert!(map.is_empty());
        assert_eq!(map.intern(hash_key(b"x"), b"x"), (0, true));
        assert_eq!(map.key(0), b"x");
    }
}
