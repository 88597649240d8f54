//! The sources: [`SourceOperator`]s emitting batches of up to `batch_size` rows
//! ([`DEFAULT_BATCH_SIZE`] unless set).
//!
//! - [`SequenceSource`] (`source.sequence`): instance `i` of `p` emits `from+i, from+i+p,
//!   ...` up to `to` inclusive (or `i64::MAX` without `to`); each batch is one tight loop.
//! - [`DatagenSource`] (`source.datagen`): instance `i` of `p` generates the global rows
//!   `i, i+p, ...` (below `rows`). Every value is a pure function of (seed, field, global
//!   row), so the data set does not depend on the parallelism or the batch size.
//! - [`FileSource`] (`source.file`): text lines or JSON lines from a file or a directory.
//!   A directory's files (sorted by name; names starting with `.` or `_` are skipped, as
//!   Flink does) go round-robin to the instances; a single file is cut into `p` byte
//!   ranges and instance `i` reads the lines that *start* in its range, so every line is
//!   read exactly once. Reads are 1 MiB
//!   blocking reads (each task runs on its own thread); lines are found with `memchr` and
//!   copied into the batch's one value buffer, validated as UTF-8 once per batch
//!   (invalid UTF-8 is replaced, as Flink's decoder does). A trailing `\r` is dropped.
//!   JSON lines are parsed by arrow-json's decoder against the declared schema.
//! - [`SocketSource`] (`source.socket`): lines from a TCP server; a batch holds the lines
//!   that have arrived (up to `batch_size`); ends when the peer closes. It needs a tokio
//!   runtime with I/O enabled.
//!
//! `rate` (records per second for the whole source) is split evenly among the instances
//! and enforced per batch by a [`Throttle`] (batches then hold at most about 100 ms of
//! records). With `rate_until_checkpoints` (sequence and datagen) the limit is lifted for
//! good once that many checkpoints have completed. Every source reports its progress through
//! `position()`: records emitted, except the file source which reports bytes consumed.
//!
//! # Checkpoints
//!
//! As with Flink's FLIP-27 sources, the sequence, datagen and file sources describe the work
//! an instance has left as a list of splits, kept in operator list state with
//! [`Redistribution::Split`] (so a restore deals the splits of all old instances round-robin
//! over the new ones, at any parallelism):
//!
//! - `sequence-splits`: strided ranges `(next, last, step)`;
//! - `datagen-splits`: global row ranges `(next, end, step)` (`end` absent when unbounded);
//! - `file-splits`: `(path, start, end)`: the lines of `path` that start in `start..end`,
//!   `start` being the first unread line of a partly read split.
//!
//! A snapshot holds exactly the splits not emitted yet, the partly read one at its current
//! position. A fresh instance computes its one split from its subtask index and
//! parallelism (the behaviour described above); a restored instance takes the splits it
//! was dealt and is finished at once when it got none. Sequence and datagen take turns
//! over their splits a batch at a time (they may be unbounded); the file source reads them
//! one after another. An instance whose restored store has no split list at all (the
//! operator was not part of the checkpoint) starts fresh. Each instance also writes the
//! number of checkpoints it saw complete into the [`Redistribution::Union`] list
//! `completed-checkpoints`; a restored instance continues from the largest, plus one for
//! the checkpoint it is restored from (which completed by definition), so that
//! `rate_until_checkpoints` does not throttle again once it was reached. The socket source
//! cannot replay and has no state: it is at most once.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, StringBuilder};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::SchemaRef;
use arrow::json::reader::Decoder as JsonDecoder;
use arrow::json::ReaderBuilder;
use arrow::record_batch::RecordBatch;
use flint_common::job::catalog::{FileFormat, GeneratedField, Generator};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::operator::{SourceOperator, TaskError};
use crate::state::{decode_value, encode_value, Redistribution, StateError, StateStore};

/// Rows per batch unless configured otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 4096;

/// Paces a source to `rate` records per second: a batch may leave once the records
/// before it have had their time.
#[derive(Debug, Clone)]
pub struct Throttle {
    rate: f64,
    start: Option<Instant>,
}

impl Throttle {
    /// `rate` records per second (positive).
    pub fn new(rate: f64) -> Self {
        Self { rate, start: None }
    }

    /// The rate of one of `parallelism` instances of a source limited to `rate` in total.
    pub fn for_instance(rate: Option<f64>, parallelism: u32) -> Option<Self> {
        rate.map(|r| Self::new(r / f64::from(parallelism.max(1))))
    }

    /// At most about 100 ms of records per batch, and at least one.
    pub fn batch_limit(&self, batch_size: usize) -> usize {
        ((self.rate / 10.0).ceil() as usize).clamp(1, batch_size.max(1))
    }

    /// How long to wait, `elapsed` after the first batch, before sending a batch that
    /// follows `emitted` records.
    pub fn delay(&self, elapsed: Duration, emitted: u64) -> Duration {
        Duration::from_secs_f64(emitted as f64 / self.rate).saturating_sub(elapsed)
    }

    /// Waits until a batch following `emitted` records is due.
    pub async fn wait(&mut self, emitted: u64) {
        let start = *self.start.get_or_insert_with(Instant::now);
        let delay = self.delay(start.elapsed(), emitted);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// A source instance's `rate` limit, lifted for good once `rate_until_checkpoints`
/// checkpoints have completed.
#[derive(Debug, Clone)]
struct Pacing {
    throttle: Option<Throttle>,
    until: Option<u64>,
    /// Checkpoints completed (notified here, or before the restore).
    completed: u64,
}

impl Pacing {
    fn new(rate: Option<f64>, parallelism: u32) -> Self {
        Self { throttle: Throttle::for_instance(rate, parallelism), until: None, completed: 0 }
    }

    fn set_until(&mut self, until: Option<u64>) {
        self.until = until;
        self.lift();
    }

    fn lift(&mut self) {
        if self.until.is_some_and(|n| self.completed >= n) {
            self.throttle = None;
        }
    }

    fn checkpoint_completed(&mut self) {
        self.completed = self.completed.saturating_add(1);
        self.lift();
    }

    /// After a restore: `completed` checkpoints had completed (see [`read_source_state`]).
    fn restored(&mut self, completed: Option<u64>) {
        if let Some(completed) = completed {
            self.completed = self.completed.max(completed);
            self.lift();
        }
    }

    fn limit(&self, batch_size: usize) -> usize {
        self.throttle.as_ref().map_or(batch_size, |t| t.batch_limit(batch_size))
    }

    async fn wait(&mut self, emitted: u64) {
        if let Some(throttle) = &mut self.throttle {
            throttle.wait(emitted).await;
        }
    }
}

const SEQUENCE_SPLITS: &str = "sequence-splits";
const DATAGEN_SPLITS: &str = "datagen-splits";
const FILE_SPLITS: &str = "file-splits";
const COMPLETED_CHECKPOINTS: &str = "completed-checkpoints";

fn state_error(what: &'static str) -> impl Fn(StateError) -> TaskError {
    move |e| TaskError::fatal(format!("{what}: {e}"))
}

/// Writes a source's snapshot: its remaining `splits` into the split list `name` and the
/// checkpoints it saw complete into the union list [`COMPLETED_CHECKPOINTS`].
fn write_source_state<T: Serialize>(
    state: &mut StateStore,
    name: &str,
    splits: impl IntoIterator<Item = T>,
    completed: u64,
) -> Result<(), TaskError> {
    let error = state_error("snapshotting the source position");
    let encoded = splits.into_iter().map(|split| encode_value(name, &split)).collect::<Result<Vec<_>, _>>();
    let list = state.operator.list_state(name, Redistribution::Split).map_err(&error)?;
    *list = encoded.map_err(&error)?;
    let count = encode_value(COMPLETED_CHECKPOINTS, &completed).map_err(&error)?;
    *state.operator.list_state(COMPLETED_CHECKPOINTS, Redistribution::Union).map_err(&error)? = vec![count];
    Ok(())
}

/// What [`write_source_state`] wrote, as dealt to this instance: its splits (`None` when the
/// checkpoint has no split list `name`: the source was not part of it), and the number of
/// checkpoints completed: the most any old instance saw, plus the one restored from.
fn read_source_state<T: DeserializeOwned>(
    state: &StateStore,
    name: &str,
) -> Result<(Option<Vec<T>>, Option<u64>), TaskError> {
    let error = state_error("restoring the source position");
    let splits = match state.operator.get(name) {
        Some(elements) => {
            Some(elements.iter().map(|e| decode_value(name, e)).collect::<Result<Vec<T>, _>>().map_err(&error)?)
        }
        None => None,
    };
    let mut completed = None;
    for element in state.operator.get(COMPLETED_CHECKPOINTS).unwrap_or_default() {
        let count: u64 = decode_value(COMPLETED_CHECKPOINTS, element).map_err(&error)?;
        completed = completed.max(Some(count.saturating_add(1)));
    }
    Ok((splits, completed))
}

/// A split of `source.sequence`: `next, next+step, ...` up to `last` (i128: stepping past
/// `i64::MAX` must not overflow). Kept only while not exhausted (`next <= last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stride {
    next: i128,
    last: i128,
    step: i128,
}

/// [`Stride`] in the checkpoint (an unexhausted stride fits `i64`).
#[derive(Debug, Serialize, Deserialize)]
struct StrideState {
    next: i64,
    last: i64,
    step: i64,
}

impl Stride {
    fn is_done(&self) -> bool {
        self.next > self.last
    }

    fn state(&self) -> StrideState {
        StrideState { next: self.next as i64, last: self.last as i64, step: self.step as i64 }
    }

    fn from_state(s: StrideState) -> Result<Self, TaskError> {
        if s.step < 1 {
            return Err(TaskError::fatal(format!("restoring the source position: sequence step {}", s.step)));
        }
        Ok(Self { next: s.next.into(), last: s.last.into(), step: s.step.into() })
    }
}

/// `source.sequence`.
pub struct SequenceSource {
    schema: SchemaRef,
    /// The splits left, none exhausted; the first is read next.
    splits: VecDeque<Stride>,
    emitted: u64,
    batch_size: usize,
    pacing: Pacing,
}

impl SequenceSource {
    /// Instance `subtask` of `parallelism`, emitting `from..=to` (to `i64::MAX` without
    /// `to`) at most `rate` records per second in total.
    pub fn new(
        schema: SchemaRef,
        from: i64,
        to: Option<i64>,
        rate: Option<f64>,
        subtask: u32,
        parallelism: u32,
        batch_size: usize,
    ) -> Self {
        let split = Stride {
            next: i128::from(from) + i128::from(subtask),
            last: i128::from(to.unwrap_or(i64::MAX)),
            step: i128::from(parallelism.max(1)),
        };
        Self {
            schema,
            splits: Some(split).filter(|s| !s.is_done()).into_iter().collect(),
            emitted: 0,
            batch_size: batch_size.max(1),
            pacing: Pacing::new(rate, parallelism),
        }
    }

    /// The `rate` applies only until `until` checkpoints have completed.
    pub fn with_rate_until_checkpoints(mut self, until: Option<u64>) -> Self {
        self.pacing.set_until(until);
        self
    }

    /// Records emitted so far.
    pub fn position(&self) -> u64 {
        self.emitted
    }

    /// Whether the `rate` limit applies (now).
    pub fn is_throttled(&self) -> bool {
        self.pacing.throttle.is_some()
    }

    fn make_batch(&mut self) -> Result<Option<RecordBatch>, TaskError> {
        let max = self.pacing.limit(self.batch_size) as i128;
        let Some(mut split) = self.splits.pop_front() else { return Ok(None) };
        let remaining = (split.last - split.next) / split.step + 1;
        let n = remaining.min(max) as i64;
        let (start, step) = (split.next as i64, split.step as i64);
        let values = Int64Array::from_iter_values((0..n).map(|k| start + k * step));
        split.next += i128::from(n) * split.step;
        if !split.is_done() {
            // Several splits (after a restore) take turns.
            self.splits.push_back(split);
        }
        self.emitted += n as u64;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), vec![Arc::new(values)])?))
    }
}

impl SourceOperator for SequenceSource {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<RecordBatch>, TaskError>> {
        Box::pin(async move {
            self.pacing.wait(self.emitted).await;
            self.make_batch()
        })
    }

    fn snapshot_state(&mut self, _checkpoint_id: u64, state: &mut StateStore) -> Result<(), TaskError> {
        write_source_state(state, SEQUENCE_SPLITS, self.splits.iter().map(Stride::state), self.pacing.completed)
    }

    fn restore_state(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        let (splits, completed) = read_source_state::<StrideState>(state, SEQUENCE_SPLITS)?;
        if let Some(splits) = splits {
            self.splits = VecDeque::new();
            for split in splits {
                let split = Stride::from_state(split)?;
                if !split.is_done() {
                    self.splits.push_back(split);
                }
            }
        }
        self.pacing.restored(completed);
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> Result<(), TaskError> {
        self.pacing.checkpoint_completed();
        Ok(())
    }
}

/// SplitMix64's finalizer: a well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The random stream of one field: `value(row)` is the SplitMix64 output number `row`.
#[derive(Debug, Clone, Copy)]
struct Stream(u64);

impl Stream {
    fn new(seed: i64, field: usize) -> Self {
        Stream(mix((seed as u64) ^ mix((field as u64 + 1).wrapping_mul(GOLDEN))))
    }

    #[inline]
    fn value(self, row: u64) -> u64 {
        mix(self.0.wrapping_add(row.wrapping_add(1).wrapping_mul(GOLDEN)))
    }
}

const ALPHANUMERIC: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A split of `source.datagen`: the global rows `next, next+step, ...` below `end` (without
/// end when unbounded). Kept only while not exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RowRange {
    next: u64,
    end: Option<u64>,
    step: u64,
}

impl RowRange {
    fn is_done(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }
}

/// `source.datagen`.
pub struct DatagenSource {
    schema: SchemaRef,
    fields: Vec<(Generator, Stream)>,
    /// The splits left, none exhausted; the first is read next.
    splits: VecDeque<RowRange>,
    emitted: u64,
    batch_size: usize,
    pacing: Pacing,
}

impl DatagenSource {
    /// Instance `subtask` of `parallelism`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        schema: SchemaRef,
        fields: &[GeneratedField],
        seed: i64,
        rows: Option<u64>,
        rate: Option<f64>,
        subtask: u32,
        parallelism: u32,
        batch_size: usize,
    ) -> Self {
        // Strings are limited so that a batch's values stay far below 2 GiB.
        let longest = fields
            .iter()
            .map(|f| match f.generator {
                Generator::RandomString { length } => length as usize,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let batch_size = batch_size.clamp(1, ((1usize << 30) / longest.max(1)).max(1));
        let split = RowRange { next: u64::from(subtask), end: rows, step: u64::from(parallelism.max(1)) };
        Self {
            schema,
            fields: fields.iter().enumerate().map(|(i, f)| (f.generator.clone(), Stream::new(seed, i))).collect(),
            splits: Some(split).filter(|s| !s.is_done()).into_iter().collect(),
            emitted: 0,
            batch_size,
            pacing: Pacing::new(rate, parallelism),
        }
    }

    /// The `rate` applies only until `until` checkpoints have completed.
    pub fn with_rate_until_checkpoints(mut self, until: Option<u64>) -> Self {
        self.pacing.set_until(until);
        self
    }

    /// Rows emitted so far.
    pub fn position(&self) -> u64 {
        self.emitted
    }

    /// Whether the `rate` limit applies (now).
    pub fn is_throttled(&self) -> bool {
        self.pacing.throttle.is_some()
    }

    fn make_batch(&mut self) -> Result<Option<RecordBatch>, TaskError> {
        let max = self.pacing.limit(self.batch_size) as u64;
        let Some(mut split) = self.splits.pop_front() else { return Ok(None) };
        let n = match split.end {
            Some(end) => (end - split.next).div_ceil(split.step).min(max),
            None => max,
        };
        let (first, step) = (split.next, split.step);
        split.next += n * step;
        if !split.is_done() {
            // Several splits (after a restore) take turns.
            self.splits.push_back(split);
        }
        let rows = move || (0..n).map(move |k| first + k * step);
        let columns: Vec<ArrayRef> = self
            .fields
            .iter()
            .map(|(generator, stream)| -> ArrayRef {
                let stream = *stream;
                match *generator {
                    Generator::Sequence { start, end } => {
                        let span = (i128::from(end) - i128::from(start) + 1) as u128;
                        Arc::new(Int64Array::from_iter_values(
                            rows().map(|r| (i128::from(start) + (u128::from(r) % span) as i128) as i64),
                        ))
                    }
                    Generator::RandomInt { min, max } => {
                        let span = (i128::from(max) - i128::from(min) + 1) as u128;
                        Arc::new(Int64Array::from_iter_values(rows().map(|r| {
                            let offset = (u128::from(stream.value(r)) * span) >> 64;
                            (i128::from(min) + offset as i128) as i64
                        })))
                    }
                    Generator::RandomFloat { min, max } => Arc::new(Float64Array::from_iter_values(rows().map(|r| {
                        let unit = (stream.value(r) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
                        let v = min + unit * (max - min);
                        if v < max {
                            v
                        } else {
                            max.next_down()
                        }
                    }))),
                    Generator::RandomString { length } => {
                        let length = length as usize;
                        let mut values = Vec::with_capacity(n as usize * length);
                        for r in rows() {
                            let mut bits = 0u64;
                            for j in 0..length {
                                if j % 10 == 0 {
                                    bits = stream.value(r.wrapping_mul(0x1_0000_0001).wrapping_add(j as u64 / 10));
                                }
                                values.push(ALPHANUMERIC[(((bits & 63) * 62) >> 6) as usize]);
                                bits >>= 6;
                            }
                        }
                        let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(length, n as usize));
                        Arc::new(
                            StringArray::try_new(offsets, Buffer::from_vec(values), None)
                                .expect("alphanumeric bytes are UTF-8"),
                        )
                    }
                }
            })
            .collect();
        self.emitted += n;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

impl SourceOperator for DatagenSource {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<RecordBatch>, TaskError>> {
        Box::pin(async move {
            self.pacing.wait(self.emitted).await;
            self.make_batch()
        })
    }

    fn snapshot_state(&mut self, _checkpoint_id: u64, state: &mut StateStore) -> Result<(), TaskError> {
        write_source_state(state, DATAGEN_SPLITS, self.splits.iter(), self.pacing.completed)
    }

    fn restore_state(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        let (splits, completed) = read_source_state::<RowRange>(state, DATAGEN_SPLITS)?;
        if let Some(splits) = splits {
            if let Some(bad) = splits.iter().find(|s| s.step == 0) {
                return Err(TaskError::fatal(format!("restoring the source position: datagen split {bad:?}")));
            }
            self.splits = splits.into_iter().filter(|s| !s.is_done()).collect();
        }
        self.pacing.restored(completed);
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> Result<(), TaskError> {
        self.pacing.checkpoint_completed();
        Ok(())
    }
}

/// A part of the input of one file source instance: the lines of `path` that start in
/// `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSplit {
    pub path: PathBuf,
    pub start: u64,
    pub end: u64,
}

/// The splits of instance `subtask` of `parallelism` reading `path`.
pub fn file_splits(path: &Path, subtask: u32, parallelism: u32) -> Result<Vec<FileSplit>, TaskError> {
    let io = |e: std::io::Error| TaskError::io(format_args!("reading {}", path.display()), &e);
    let meta = std::fs::metadata(path).map_err(io)?;
    let (i, p) = (u64::from(subtask), u64::from(parallelism.max(1)));
    if meta.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io)? {
            let entry = entry.map_err(io)?;
            let hidden = entry.file_name().to_string_lossy().starts_with(['.', '_']);
            if !hidden && entry.file_type().map_err(io)?.is_file() {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files
            .into_iter()
            .enumerate()
            .filter(|(j, _)| *j as u64 % p == i)
            .map(|(_, path)| FileSplit { path, start: 0, end: u64::MAX })
            .collect())
    } else {
        let len = meta.len();
        let start = (u128::from(len) * u128::from(i) / u128::from(p)) as u64;
        let end = (u128::from(len) * u128::from(i + 1) / u128::from(p)) as u64;
        Ok(if start < end { vec![FileSplit { path: path.to_owned(), start, end }] } else { vec![] })
    }
}

/// [`FileSplit`] in the checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct FileSplitState {
    /// The path's bytes (any path, not only UTF-8 ones).
    path: Vec<u8>,
    start: u64,
    end: u64,
}

impl FileSplit {
    fn state(&self) -> FileSplitState {
        FileSplitState { path: path_bytes(&self.path), start: self.start, end: self.end }
    }

    fn from_state(s: FileSplitState) -> Self {
        FileSplit { path: path_from_bytes(s.path), start: s.start, end: s.end }
    }
}

#[cfg(unix)]
fn path_bytes(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().to_vec()
}

#[cfg(unix)]
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

#[cfg(not(unix))]
fn path_bytes(path: &Path) -> Vec<u8> {
    path.to_string_lossy().into_owned().into_bytes()
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}

const READ_CHUNK: usize = 1 << 20;

/// Reads the lines of one split in large chunks.
struct LineReader {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    head: usize,
    /// File offset of `buf[0]`.
    buf_pos: u64,
    /// File offset where reading began.
    begin: u64,
    end: u64,
    eof: bool,
    done: bool,
}

impl LineReader {
    fn open(split: &FileSplit) -> Result<Self, TaskError> {
        let io = |e: std::io::Error| TaskError::io(format_args!("reading {}", split.path.display()), &e);
        let mut file = File::open(&split.path).map_err(io)?;
        // The line that starts at `start` is ours only if the byte before it ends a line.
        let begin = split.start.saturating_sub(1);
        if begin > 0 {
            file.seek(SeekFrom::Start(begin)).map_err(io)?;
        }
        let mut reader = Self {
            path: split.path.clone(),
            file,
            buf: Vec::with_capacity(READ_CHUNK),
            head: 0,
            buf_pos: begin,
            begin,
            end: split.end,
            eof: false,
            done: false,
        };
        if split.start > 0 {
            loop {
                if let Some(p) = memchr::memchr(b'\n', &reader.buf[reader.head..]) {
                    reader.head += p + 1;
                    break;
                }
                reader.head = reader.buf.len();
                if reader.eof {
                    reader.done = true;
                    break;
                }
                reader.refill()?;
            }
        }
        Ok(reader)
    }

    /// Bytes read (or skipped) since opening.
    fn consumed(&self) -> u64 {
        self.offset() - self.begin
    }

    /// The file offset of the next unread byte.
    fn offset(&self) -> u64 {
        self.buf_pos + self.head as u64
    }

    /// Drops the consumed bytes and reads up to another chunk.
    fn refill(&mut self) -> Result<(), TaskError> {
        if self.head > 0 {
            self.buf.drain(..self.head);
            self.buf_pos += self.head as u64;
            self.head = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let read = loop {
            match self.file.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(TaskError::io(format_args!("reading {}", self.path.display()), &e));
                }
            }
        };
        self.buf.truncate(old + read);
        self.eof = read == 0;
        Ok(())
    }

    /// Calls `line` for up to `max` lines (without the line break and a trailing `\r`);
    /// returns how many.
    fn read_lines(
        &mut self,
        max: usize,
        line: &mut dyn FnMut(&[u8]) -> Result<(), TaskError>,
    ) -> Result<usize, TaskError> {
        let mut count = 0;
        while count < max && !self.done {
            if self.offset() >= self.end {
                self.done = true;
                break;
            }
            match memchr::memchr(b'\n', &self.buf[self.head..]) {
                Some(p) => {
                    line(strip_cr(&self.buf[self.head..self.head + p]))?;
                    self.head += p + 1;
                    count += 1;
                }
                None if self.eof => {
                    if self.head < self.buf.len() {
                        line(strip_cr(&self.buf[self.head..]))?;
                        count += 1;
                    }
                    self.head = self.buf.len();
                    self.done = true;
                }
                None => self.refill()?,
            }
        }
        Ok(count)
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `source.file`.
pub struct FileSource {
    schema: SchemaRef,
    format: FileFormat,
    batch_size: usize,
    splits: VecDeque<FileSplit>,
    reader: Option<LineReader>,
    json: Option<JsonDecoder>,
    /// Bytes of finished splits.
    consumed: u64,
    emitted: u64,
    /// Checkpoints completed (only recorded in the state, see the module documentation).
    completed: u64,
}

impl FileSource {
    /// Instance `subtask` of `parallelism` reading `path` (see [`file_splits`]).
    pub fn new(
        schema: SchemaRef,
        path: &str,
        format: FileFormat,
        subtask: u32,
        parallelism: u32,
        batch_size: usize,
    ) -> Result<Self, TaskError> {
        let splits = file_splits(Path::new(path), subtask, parallelism)?;
        Self::with_splits(schema, splits, format, batch_size)
    }

    /// A source reading the given splits in order.
    pub fn with_splits(
        schema: SchemaRef,
        splits: Vec<FileSplit>,
        format: FileFormat,
        batch_size: usize,
    ) -> Result<Self, TaskError> {
        let batch_size = batch_size.max(1);
        let json = match format {
            FileFormat::Text => None,
            FileFormat::Json => Some(
                ReaderBuilder::new(schema.clone())
                    .with_batch_size(batch_size)
                    .build_decoder()
                    .map_err(|e| TaskError::fatal(format!("the JSON schema cannot be read: {e}")))?,
            ),
        };
        Ok(Self {
            schema,
            format,
            batch_size,
            splits: splits.into(),
            reader: None,
            json,
            consumed: 0,
            emitted: 0,
            completed: 0,
        })
    }

    /// The splits not read yet: the open one from its first unread line, then the others.
    fn remaining_splits(&self) -> Vec<FileSplit> {
        let open = self.reader.as_ref().filter(|r| !r.done && r.offset() < r.end);
        open.map(|r| FileSplit { path: r.path.clone(), start: r.offset(), end: r.end })
            .into_iter()
            .chain(self.splits.iter().cloned())
            .collect()
    }

    /// Bytes consumed so far (over all splits).
    pub fn position(&self) -> u64 {
        self.consumed + self.reader.as_ref().map_or(0, LineReader::consumed)
    }

    /// Records emitted so far.
    pub fn records(&self) -> u64 {
        self.emitted
    }

    /// The next batch of lines of the current or following splits.
    fn make_batch(&mut self) -> Result<Option<RecordBatch>, TaskError> {
        loop {
            if self.reader.is_none() {
                let Some(split) = self.splits.pop_front() else { return Ok(None) };
                self.reader = Some(LineReader::open(&split)?);
            }
            let batch = match self.format {
                FileFormat::Text => self.text_batch()?,
                FileFormat::Json => self.json_batch()?,
            };
            let reader = self.reader.as_ref().expect("opened above");
            if reader.done {
                self.consumed += reader.consumed();
                self.reader = None;
            }
            if let Some(batch) = batch.filter(|b| b.num_rows() > 0) {
                self.emitted += batch.num_rows() as u64;
                return Ok(Some(batch));
            }
        }
    }

    fn text_batch(&mut self) -> Result<Option<RecordBatch>, TaskError> {
        let reader = self.reader.as_mut().expect("a split is open");
        let mut values: Vec<u8> = Vec::with_capacity(self.batch_size * 64);
        let mut offsets: Vec<i32> = Vec::with_capacity(self.batch_size + 1);
        offsets.push(0);
        let path = reader.path.clone();
        reader.read_lines(self.batch_size, &mut |line| {
            values.extend_from_slice(line);
            let end = i32::try_from(values.len())
                .map_err(|_| TaskError::fatal(format!("{}: lines of over 2 GiB per batch", path.display())))?;
            offsets.push(end);
            Ok(())
        })?;
        if offsets.len() == 1 {
            return Ok(None);
        }
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        let values = Buffer::from_vec(values);
        let lines = match StringArray::try_new(offsets.clone(), values.clone(), None) {
            Ok(lines) => lines,
            Err(_) => {
                // Invalid UTF-8: replace the bad sequences, line by line.
                let mut out = StringBuilder::with_capacity(offsets.len() - 1, values.len());
                for w in offsets.windows(2) {
                    out.append_value(String::from_utf8_lossy(&values[w[0] as usize..w[1] as usize]));
                }
                out.finish()
            }
        };
        Ok(Some(RecordBatch::try_new(self.schema.clone(), vec![Arc::new(lines)])?))
    }

    fn json_batch(&mut self) -> Result<Option<RecordBatch>, TaskError> {
        let reader = self.reader.as_mut().expect("a split is open");
        let decoder = self.json.as_mut().expect("JSON format has a decoder");
        let path = reader.path.clone();
        let json_error =
            |e: arrow::error::ArrowError| TaskError::arrow(format_args!("reading JSON from {}", path.display()), &e);
        reader.read_lines(self.batch_size, &mut |line| {
            let mut data = line;
            while !data.is_empty() {
                let used = decoder.decode(data).map_err(json_error)?;
                if used == 0 {
                    return Err(TaskError::fatal(format!(
                        "reading JSON from {}: a line holds more records than a batch",
                        path.display()
                    )));
                }
                data = &data[used..];
            }
            decoder.decode(b"\n").map_err(json_error)?;
            Ok(())
        })?;
        decoder.flush().map_err(json_error)
    }
}

impl SourceOperator for FileSource {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<RecordBatch>, TaskError>> {
        Box::pin(async move { self.make_batch() })
    }

    /// Between batches the open split's reader stands at the start of a line, and every
    /// line before it was emitted (JSON batches are flushed whole).
    fn snapshot_state(&mut self, _checkpoint_id: u64, state: &mut StateStore) -> Result<(), TaskError> {
        let splits = self.remaining_splits();
        write_source_state(state, FILE_SPLITS, splits.iter().map(FileSplit::state), self.completed)
    }

    fn restore_state(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        let (splits, completed) = read_source_state::<FileSplitState>(state, FILE_SPLITS)?;
        if let Some(splits) = splits {
            self.reader = None;
            self.splits = splits.into_iter().map(FileSplit::from_state).filter(|s| s.start < s.end).collect();
        }
        if let Some(completed) = completed {
            self.completed = self.completed.max(completed);
        }
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, _checkpoint_id: u64) -> Result<(), TaskError> {
        self.completed = self.completed.saturating_add(1);
        Ok(())
    }
}

/// `source.socket`. It cannot replay what it read, so it keeps no state: at most once.
pub struct SocketSource {
    schema: SchemaRef,
    host: String,
    port: u16,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned for a line break.
    scanned: usize,
    closed: bool,
    batch_size: usize,
    emitted: u64,
}

impl SocketSource {
    pub fn new(schema: SchemaRef, host: &str, port: u16, batch_size: usize) -> Self {
        Self {
            schema,
            host: host.to_owned(),
            port,
            stream: None,
            buf: Vec::with_capacity(64 * 1024),
            scanned: 0,
            closed: false,
            batch_size: batch_size.max(1),
            emitted: 0,
        }
    }

    /// Records emitted so far.
    pub fn position(&self) -> u64 {
        self.emitted
    }

    /// The complete lines in the buffer (up to `batch_size`), or at the end the rest.
    fn take_lines(&mut self) -> Result<Option<RecordBatch>, TaskError> {
        let mut out = StringBuilder::new();
        let mut start = 0;
        let mut count = 0;
        while count < self.batch_size {
            let Some(p) = memchr::memchr(b'\n', &self.buf[start.max(self.scanned)..]) else { break };
            let end = start.max(self.scanned) + p;
            out.append_value(String::from_utf8_lossy(strip_cr(&self.buf[start..end])));
            start = end + 1;
            count += 1;
        }
        if count == 0 && self.closed && !self.buf.is_empty() {
            out.append_value(String::from_utf8_lossy(strip_cr(&self.buf)));
            start = self.buf.len();
            count = 1;
        }
        self.buf.drain(..start);
        self.scanned = if count == 0 { self.buf.len() } else { 0 };
        if count == 0 {
            return Ok(None);
        }
        self.emitted += count as u64;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), vec![Arc::new(out.finish())])?))
    }

    async fn next(&mut self) -> Result<Option<RecordBatch>, TaskError> {
        let address = format!("{}:{}", self.host, self.port);
        if self.stream.is_none() && !self.closed {
            let stream = TcpStream::connect(&address)
                .await
                .map_err(|e| TaskError::new(format!("connecting to the socket source at {address}: {e}")))?;
            self.stream = Some(stream);
        }
        loop {
            if let Some(batch) = self.take_lines()? {
                return Ok(Some(batch));
            }
            let Some(stream) = self.stream.as_mut() else { return Ok(None) };
            let read = stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| TaskError::new(format!("reading the socket source at {address}: {e}")))?;
            if read == 0 {
                self.closed = true;
                self.stream = None;
            } else if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
        }
    }
}

impl SourceOperator for SocketSource {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<RecordBatch>, TaskError>> {
        Box::pin(self.next())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::runtime::schema::arrow_schema;
    use crate::state::{decode_task_state, encode_task_state, restore_stores, OperatorStateSnapshot};
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};
    use flint_common::checkpoint_storage::{
        write_metadata_in, write_state_file_in, CheckpointMetadata, OperatorStateEntry,
    };
    use flint_common::ids::JobId;
    use flint_common::job::{Field, FieldType, Schema};

    fn n_schema() -> SchemaRef {
        arrow_schema(&Schema::new(vec![Field::new("n", FieldType::Int)]))
    }

    fn line_schema() -> SchemaRef {
        arrow_schema(&Schema::new(vec![Field::new("line", FieldType::String)]))
    }

    fn drain(source: &mut dyn SourceOperator) -> Vec<RecordBatch> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut batches = Vec::new();
            while let Some(b) = source.next_batch().await.unwrap() {
                batches.push(b);
            }
            batches
        })
    }

    fn ints(batches: &[RecordBatch], column: usize) -> Vec<i64> {
        batches.iter().flat_map(|b| b.column(column).as_primitive::<Int64Type>().values().to_vec()).collect()
    }

    fn strings(batches: &[RecordBatch], column: usize) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| b.column(column).as_string::<i32>().iter().map(|s| s.unwrap().to_owned()).collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn sequence_splits_across_instances() {
        let mut all = Vec::new();
        for i in 0..3 {
            let mut source = SequenceSource::new(n_schema(), 5, Some(15), None, i, 3, 2);
            let batches = drain(&mut source);
            assert!(batches.iter().all(|b| b.num_rows() <= 2));
            let values = ints(&batches, 0);
            assert_eq!(source.position(), values.len() as u64);
            all.push(values);
        }
        assert_eq!(all, vec![vec![5, 8, 11, 14], vec![6, 9, 12, 15], vec![7, 10, 13]]);
        let mut single = SequenceSource::new(n_schema(), 0, Some(0), None, 0, 1, 4096);
        assert_eq!(ints(&drain(&mut single), 0), vec![0]);
        // Up to i64::MAX without overflowing.
        let mut top = SequenceSource::new(n_schema(), i64::MAX - 2, None, None, 1, 2, 4096);
        assert_eq!(ints(&drain(&mut top), 0), vec![i64::MAX - 1]);
    }

    #[test]
    fn throttle_paces_batches() {
        let t = Throttle::for_instance(Some(2000.0), 2).unwrap();
        assert_eq!(t.batch_limit(4096), 100);
        assert_eq!(Throttle::new(5.0).batch_limit(4096), 1);
        assert_eq!(t.delay(Duration::ZERO, 0), Duration::ZERO);
        assert_eq!(t.delay(Duration::from_millis(40), 100), Duration::from_millis(60));
        assert_eq!(t.delay(Duration::from_millis(150), 100), Duration::ZERO);
    }

    fn datagen(seed: i64, rows: Option<u64>, subtask: u32, parallelism: u32, batch: usize) -> DatagenSource {
        let fields = vec![
            GeneratedField { name: "id".into(), generator: Generator::Sequence { start: 1, end: 4 } },
            GeneratedField { name: "die".into(), generator: Generator::RandomInt { min: 1, max: 6 } },
            GeneratedField { name: "v".into(), generator: Generator::RandomFloat { min: -1.0, max: 1.0 } },
            GeneratedField { name: "s".into(), generator: Generator::RandomString { length: 12 } },
        ];
        let schema =
            arrow_schema(&Schema::new(fields.iter().map(|f| Field::new(&f.name, f.generator.field_type())).collect()));
        DatagenSource::new(schema, &fields, seed, rows, None, subtask, parallelism, batch)
    }

    type Row = (i64, i64, u64, String);

    fn rows(batches: &[RecordBatch]) -> Vec<Row> {
        let mut out = Vec::new();
        for b in batches {
            for i in 0..b.num_rows() {
                out.push((
                    b.column(0).as_primitive::<Int64Type>().value(i),
                    b.column(1).as_primitive::<Int64Type>().value(i),
                    b.column(2).as_primitive::<Float64Type>().value(i).to_bits(),
                    b.column(3).as_string::<i32>().value(i).to_owned(),
                ));
            }
        }
        out
    }

    #[test]
    fn datagen_is_deterministic_by_seed_and_independent_of_parallelism() {
        let one = rows(&drain(&mut datagen(42, Some(1000), 0, 1, 4096)));
        assert_eq!(one.len(), 1000);
        assert_eq!(one, rows(&drain(&mut datagen(42, Some(1000), 0, 1, 7))));
        assert_ne!(one, rows(&drain(&mut datagen(43, Some(1000), 0, 1, 4096))));
        let mut split: Vec<Row> = (0..3).flat_map(|i| rows(&drain(&mut datagen(42, Some(1000), i, 3, 100)))).collect();
        let mut sorted = one.clone();
        split.sort();
        sorted.sort();
        assert_eq!(split, sorted);
        for (k, (id, die, v, s)) in one.iter().enumerate() {
            assert_eq!(*id, 1 + (k as i64 % 4));
            assert!((1..=6).contains(die));
            assert!((-1.0..1.0).contains(&f64::from_bits(*v)));
            assert!(s.len() == 12 && s.bytes().all(|c| c.is_ascii_alphanumeric()));
        }
        let dice: std::collections::HashSet<i64> = one.iter().map(|r| r.1).collect();
        assert_eq!(dice.len(), 6);
        // Unbounded: keeps going.
        let mut endless = datagen(1, None, 0, 1, 10);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for _ in 0..5 {
            assert_eq!(rt.block_on(endless.next_batch()).unwrap().unwrap().num_rows(), 10);
        }
        assert_eq!(endless.position(), 50);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flint-sources-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read_all(path: &Path, parallelism: u32, batch: usize) -> Vec<Vec<String>> {
        (0..parallelism)
            .map(|i| {
                let mut source =
                    FileSource::new(line_schema(), path.to_str().unwrap(), FileFormat::Text, i, parallelism, batch)
                        .unwrap();
                strings(&drain(&mut source), 0)
            })
            .collect()
    }

    #[test]
    fn a_file_is_split_by_lines_across_instances() {
        let dir = temp_dir("split");
        let path = dir.join("lines.txt");
        let expected: Vec<String> = (0..1000)
            .map(|i| if i % 7 == 0 { String::new() } else { format!("line {i} {}", "x".repeat(i % 13)) })
            .collect();
        std::fs::write(&path, expected.join("\n") + "\n").unwrap();
        for p in [1, 2, 3, 7, 64] {
            let parts = read_all(&path, p, 33);
            let all: Vec<String> = parts.concat();
            assert_eq!(all, expected, "parallelism {p}");
        }
        // No trailing newline, CRLF line ends, a line longer than the read chunk.
        let long = "y".repeat(READ_CHUNK + 10);
        std::fs::write(&path, format!("a\r\nb\r\n{long}\nlast")).unwrap();
        for p in [1, 2, 5] {
            assert_eq!(
                read_all(&path, p, 4096).concat(),
                vec!["a".to_owned(), "b".into(), long.clone(), "last".into()]
            );
        }
        std::fs::write(&path, "").unwrap();
        assert_eq!(read_all(&path, 2, 10).concat(), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_is_split_by_files() {
        let dir = temp_dir("dir");
        for f in 0..5 {
            let lines: Vec<String> = (0..10).map(|l| format!("f{f} l{l}")).collect();
            std::fs::write(dir.join(format!("part-{f}")), lines.join("\n")).unwrap();
        }
        std::fs::write(dir.join(".hidden"), "skipped\n").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        let parts = read_all(&dir, 2, 3);
        assert_eq!(parts[0].len(), 30);
        assert_eq!(parts[1].len(), 20);
        assert!(parts[0][0] == "f0 l0" && parts[1][0] == "f1 l0");
        let mut all = parts.concat();
        all.sort();
        let mut expected: Vec<String> = (0..5).flat_map(|f| (0..10).map(move |l| format!("f{f} l{l}"))).collect();
        expected.sort();
        assert_eq!(all, expected);
        let mut source = FileSource::new(line_schema(), dir.to_str().unwrap(), FileFormat::Text, 0, 1, 4096).unwrap();
        drain(&mut source);
        assert_eq!(source.records(), 50);
        assert_eq!(source.position(), 5 * (10 * 6 - 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let dir = temp_dir("utf8");
        let path = dir.join("bad.txt");
        std::fs::File::create(&path).unwrap().write_all(b"ok\nb\xffd\n").unwrap();
        assert_eq!(read_all(&path, 1, 10).concat(), vec!["ok".to_owned(), "b\u{fffd}d".into()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn json_lines_follow_the_schema() {
        let dir = temp_dir("json");
        let path = dir.join("events.json");
        std::fs::write(
            &path,
            "{\"user\": \"a\", \"ts\": 1, \"value\": 0.5, \"ok\": true}\n\n{\"ts\": 2, \"user\": \"b\"}\n{\"user\": null, \"ts\": 3, \"value\": 2, \"extra\": 1}\n",
        )
        .unwrap();
        let schema = arrow_schema(&Schema::new(vec![
            Field::nullable("user", FieldType::String),
            Field::nullable("ts", FieldType::Int),
            Field::nullable("value", FieldType::Float),
            Field::nullable("ok", FieldType::Bool),
        ]));
        for p in [1, 2, 3] {
            let batches: Vec<RecordBatch> = (0..p)
                .flat_map(|i| {
                    let mut s =
                        FileSource::new(schema.clone(), path.to_str().unwrap(), FileFormat::Json, i, p, 2).unwrap();
                    drain(&mut s)
                })
                .collect();
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            assert_eq!(rows, 3);
            let users: Vec<Option<String>> = batches
                .iter()
                .flat_map(|b| b.column(0).as_string::<i32>().iter().map(|s| s.map(str::to_owned)).collect::<Vec<_>>())
                .collect();
            assert_eq!(users, vec![Some("a".into()), Some("b".into()), None]);
            assert_eq!(ints(&batches, 1), vec![1, 2, 3]);
            let values: Vec<Option<f64>> = batches
                .iter()
                .flat_map(|b| b.column(2).as_primitive::<Float64Type>().iter().collect::<Vec<_>>())
                .collect();
            assert_eq!(values, vec![Some(0.5), None, Some(2.0)]);
        }
        std::fs::write(&path, "{\"ts\": \"x\"}\n").unwrap();
        let mut s = FileSource::new(schema, path.to_str().unwrap(), FileFormat::Json, 0, 1, 2).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let err = rt.block_on(s.next_batch()).unwrap_err();
        assert!(err.message.contains("reading JSON from"), "{}", err.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_path_is_an_error() {
        let err = FileSource::new(line_schema(), "/nonexistent/flint/input", FileFormat::Text, 0, 1, 10).err().unwrap();
        assert!(err.message.contains("/nonexistent/flint/input"), "{}", err.message);
    }

    #[test]
    fn socket_source_reads_lines_until_the_peer_closes() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let (mut socket, _) = listener.accept().await.unwrap();
                socket.write_all(b"hello world\r\nsecond").await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                socket.write_all(b" line\n\nlast without newline").await.unwrap();
            });
            let mut source = SocketSource::new(line_schema(), "127.0.0.1", port, 4096);
            let mut lines = Vec::new();
            let deadline = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(b) = source.next_batch().await.unwrap() {
                    lines.extend(strings(&[b], 0));
                }
            });
            deadline.await.expect("the socket source ends when the peer closes");
            server.await.unwrap();
            assert_eq!(lines, vec!["hello world", "second line", "", "last without newline"]);
            assert_eq!(source.position(), 4);
        });
    }

    // ---- checkpoints ----

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// Up to `batches` batches (fewer when the source ends).
    fn take(source: &mut dyn SourceOperator, batches: usize) -> Vec<RecordBatch> {
        let rt = runtime();
        let mut out = Vec::new();
        for _ in 0..batches {
            match rt.block_on(source.next_batch()).unwrap() {
                Some(b) => out.push(b),
                None => break,
            }
        }
        out
    }

    /// Snapshots `sources` (subtask `i` of `sources.len()`) as checkpoint 1 of operator `src`
    /// into a new checkpoint directory, through the task state file format.
    fn checkpoint(name: &str, mut sources: Vec<&mut dyn SourceOperator>) -> PathBuf {
        let dir = temp_dir(&format!("chk-{name}")).join("chk-1");
        std::fs::create_dir_all(&dir).unwrap();
        let mut meta = CheckpointMetadata::new(JobId::generate(), 1, 0, false);
        let parallelism = sources.len() as u32;
        for (subtask, source) in (0..).zip(sources.iter_mut()) {
            let mut store = StateStore::new(subtask, parallelism, 128);
            source.snapshot_state(1, &mut store).unwrap();
            let (keyed, operator) = store.snapshot();
            let snapshot = OperatorStateSnapshot { operator_id: "src".into(), keyed, operator };
            let bytes = encode_task_state(std::slice::from_ref(&snapshot));
            assert_eq!(decode_task_state(&bytes).unwrap(), vec![snapshot]);
            let handle = write_state_file_in(&dir, &format!("src-{subtask}"), &bytes).unwrap();
            meta.operators.push(OperatorStateEntry {
                operator_id: "src".into(),
                subtask,
                parallelism,
                max_parallelism: 128,
                handles: vec![handle],
                key_group_range: None,
            });
        }
        write_metadata_in(&dir, &meta).unwrap();
        dir
    }

    /// Restores subtask `subtask` of `parallelism` from the checkpoint at `dir`.
    fn restore(dir: &Path, source: &mut dyn SourceOperator, subtask: u32, parallelism: u32) {
        let mut stores = restore_stores(dir, &["src".to_string()], subtask, parallelism, 128).unwrap();
        source.restore_state(&mut stores[0]).unwrap();
    }

    /// Runs `old` fresh instances, subtask `i` reading `before(i)` batches (all of them
    /// for `usize::MAX`), checkpoints them, restores at each of `parallelisms` and drains:
    /// what was emitted before plus what was emitted after is exactly `expected`, with no
    /// duplicates. `fresh(subtask, parallelism)` builds an instance; `values` reads batches.
    fn check_rescaling<T: Ord + Clone + std::fmt::Debug>(
        name: &str,
        old: u32,
        parallelisms: &[u32],
        expected: &[T],
        before: impl Fn(u32) -> usize,
        fresh: impl Fn(u32, u32) -> Box<dyn SourceOperator>,
        values: impl Fn(&[RecordBatch]) -> Vec<T>,
    ) {
        let mut sources: Vec<Box<dyn SourceOperator>> = (0..old).map(|i| fresh(i, old)).collect();
        let mut emitted = Vec::new();
        for (i, source) in (0..).zip(sources.iter_mut()) {
            emitted.extend(values(&take(source.as_mut(), before(i))));
        }
        assert!(!emitted.is_empty() && emitted.len() < expected.len(), "{name}: read part of the output first");
        let dir = checkpoint(name, sources.iter_mut().map(|s| s.as_mut() as _).collect());
        let mut expected = expected.to_vec();
        expected.sort();
        for &parallelism in parallelisms {
            let mut all = emitted.clone();
            let mut idle = 0;
            for subtask in 0..parallelism {
                let mut source = fresh(subtask, parallelism);
                restore(&dir, source.as_mut(), subtask, parallelism);
                let after = values(&drain(source.as_mut()));
                idle += usize::from(after.is_empty());
                all.extend(after);
            }
            all.sort();
            assert_eq!(all.len(), expected.len(), "{name}: {old} restored into {parallelism}");
            assert_eq!(all, expected, "{name}: {old} restored into {parallelism}");
            if parallelism > old {
                assert!(idle > 0, "{name}: instances that got no split end at once");
            }
        }
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn sequence_resumes_from_a_checkpoint_at_any_parallelism() {
        let expected: Vec<i64> = (5..=1000).collect();
        check_rescaling(
            "sequence",
            4,
            &[4, 2, 3, 1, 9],
            &expected,
            // Subtask 3 reads everything: its split is gone from the checkpoint.
            |i| if i == 3 { usize::MAX } else { 3 * i as usize + 1 },
            |i, p| Box::new(SequenceSource::new(n_schema(), 5, Some(1000), None, i, p, 7)),
            |b| ints(b, 0),
        );
    }

    #[test]
    fn unbounded_sequence_splits_take_turns_after_a_restore() {
        let mut old: Vec<Box<dyn SourceOperator>> =
            (0..2).map(|i| Box::new(SequenceSource::new(n_schema(), 0, None, None, i, 2, 5)) as _).collect();
        let before: Vec<i64> = old.iter_mut().flat_map(|s| ints(&take(s.as_mut(), 2), 0)).collect();
        let dir = checkpoint("unbounded", old.iter_mut().map(|s| s.as_mut() as _).collect());
        let mut source = SequenceSource::new(n_schema(), 0, None, None, 0, 1, 5);
        restore(&dir, &mut source, 0, 1);
        let batches = take(&mut source, 4);
        assert_eq!(ints(&batches[..1], 0), vec![20, 22, 24, 26, 28]);
        assert_eq!(ints(&batches[1..2], 0), vec![21, 23, 25, 27, 29]);
        let mut all = before;
        all.extend(ints(&batches, 0));
        all.sort();
        assert_eq!(all, (0..40).collect::<Vec<_>>());
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_source_without_state_in_the_checkpoint_starts_fresh() {
        let mut source = SequenceSource::new(n_schema(), 0, Some(9), None, 1, 2, 4096);
        source.restore_state(&mut StateStore::new(1, 2, 128)).unwrap();
        assert_eq!(ints(&drain(&mut source), 0), vec![1, 3, 5, 7, 9]);
        // A restored list without elements: nothing left to do.
        let mut store = StateStore::new(0, 1, 128);
        store.operator.list_state(SEQUENCE_SPLITS, Redistribution::Split).unwrap();
        let mut source = SequenceSource::new(n_schema(), 0, Some(9), None, 0, 1, 4096);
        source.restore_state(&mut store).unwrap();
        assert!(drain(&mut source).is_empty());
    }

    #[test]
    fn datagen_resumes_from_a_checkpoint_at_any_parallelism() {
        let expected = rows(&drain(&mut datagen(42, Some(500), 0, 1, 4096)));
        check_rescaling(
            "datagen",
            4,
            &[4, 2, 3, 6],
            &expected,
            |i| [0, 2, usize::MAX, 5][i as usize],
            |i, p| Box::new(datagen(42, Some(500), i, p, 9)),
            rows,
        );
        // Unbounded: the restored instance takes turns over both old instances' rows.
        let mut old: Vec<Box<dyn SourceOperator>> = (0..2).map(|i| Box::new(datagen(7, None, i, 2, 10)) as _).collect();
        let mut all: Vec<Row> = old.iter_mut().flat_map(|s| rows(&take(s.as_mut(), 3))).collect();
        let dir = checkpoint("datagen-unbounded", old.iter_mut().map(|s| s.as_mut() as _).collect());
        let mut source = datagen(7, None, 0, 1, 10);
        restore(&dir, &mut source, 0, 1);
        all.extend(rows(&take(&mut source, 4)));
        all.sort();
        let mut expected = rows(&drain(&mut datagen(7, Some(100), 0, 1, 4096)));
        expected.sort();
        assert_eq!(all, expected);
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn file_source_resumes_from_a_checkpoint_at_any_parallelism() {
        let dir = temp_dir("resume-file");
        let path = dir.join("lines.txt");
        let expected: Vec<String> = (0..1000).map(|i| format!("line {i} {}", "x".repeat(i % 13))).collect();
        std::fs::write(&path, expected.join("\n") + "\n").unwrap();
        let file = path.to_str().unwrap().to_owned();
        check_rescaling(
            "file",
            4,
            &[4, 2, 3, 7],
            &expected,
            |i| [1, 0, usize::MAX, 4][i as usize],
            |i, p| Box::new(FileSource::new(line_schema(), &file, FileFormat::Text, i, p, 33).unwrap()),
            |b| strings(b, 0),
        );
        // A directory: whole files and partly read ones move to the new instances.
        let files = dir.join("parts");
        std::fs::create_dir(&files).unwrap();
        let mut expected = Vec::new();
        for f in 0..5 {
            let lines: Vec<String> = (0..20).map(|l| format!("f{f} l{l}")).collect();
            std::fs::write(files.join(format!("part-{f}")), lines.join("\n")).unwrap();
            expected.extend(lines);
        }
        let files = files.to_str().unwrap().to_owned();
        check_rescaling(
            "file-dir",
            2,
            &[2, 1, 3, 4],
            &expected,
            |i| [3, 8][i as usize],
            |i, p| Box::new(FileSource::new(line_schema(), &files, FileFormat::Text, i, p, 7).unwrap()),
            |b| strings(b, 0),
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn json_file_source_resumes_mid_file() {
        let dir = temp_dir("resume-json");
        let path = dir.join("events.json");
        let lines: Vec<String> = (0..50).map(|i| format!("{{\"ts\": {i}}}")).collect();
        std::fs::write(&path, lines.join("\n\n")).unwrap();
        let schema = arrow_schema(&Schema::new(vec![Field::nullable("ts", FieldType::Int)]));
        let file = path.to_str().unwrap().to_owned();
        check_rescaling(
            "json",
            3,
            &[3, 2],
            &(0..50).collect::<Vec<i64>>(),
            |i| i as usize + 1,
            |i, p| Box::new(FileSource::new(schema.clone(), &file, FileFormat::Json, i, p, 4).unwrap()),
            |b| ints(b, 0),
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rate_until_checkpoints_lifts_the_limit_and_survives_a_restore() {
        // 1000 records/s on one instance: batches of 100, the second due after 100 ms.
        let throttled = |until| {
            SequenceSource::new(n_schema(), 0, None, Some(1000.0), 0, 1, 4096).with_rate_until_checkpoints(until)
        };
        let mut source = throttled(Some(2));
        let start = std::time::Instant::now();
        let batches = take(&mut source, 2);
        assert!(start.elapsed() >= Duration::from_millis(90), "{:?}", start.elapsed());
        assert!(batches.iter().all(|b| b.num_rows() == 100));
        source.notify_checkpoint_complete(1).unwrap();
        assert!(source.is_throttled());
        assert_eq!(take(&mut source, 1)[0].num_rows(), 100);
        // Snapshot after one completed checkpoint: restoring from it means two completed.
        let dir = checkpoint("rate", vec![&mut source]);
        source.notify_checkpoint_complete(2).unwrap();
        assert!(!source.is_throttled());
        assert!(take(&mut source, 3).iter().all(|b| b.num_rows() == 4096));

        let mut restored = throttled(Some(2));
        restore(&dir, &mut restored, 0, 1);
        assert!(!restored.is_throttled());
        assert_eq!(take(&mut restored, 1)[0].num_rows(), 4096);
        // A higher threshold is not reached by the restore alone.
        let mut restored = throttled(Some(3));
        restore(&dir, &mut restored, 0, 1);
        assert!(restored.is_throttled());
        restored.notify_checkpoint_complete(7).unwrap();
        assert!(!restored.is_throttled());
        // Without the option the rate always applies; datagen behaves the same.
        let mut always = throttled(None);
        for id in 1..=5 {
            always.notify_checkpoint_complete(id).unwrap();
        }
        assert!(always.is_throttled());
        let fields = [GeneratedField { name: "n".into(), generator: Generator::Sequence { start: 0, end: 9 } }];
        let mut gen = DatagenSource::new(n_schema(), &fields, 0, None, Some(1000.0), 0, 1, 4096)
            .with_rate_until_checkpoints(Some(1));
        assert_eq!(take(&mut gen, 1)[0].num_rows(), 100);
        gen.notify_checkpoint_complete(1).unwrap();
        assert!(!gen.is_throttled());
        assert_eq!(take(&mut gen, 1)[0].num_rows(), 4096);
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn socket_source_fails_when_it_cannot_connect() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut source = SocketSource::new(line_schema(), "127.0.0.1", port, 4096);
        let err = rt.block_on(source.next_batch()).unwrap_err();
        assert!(err.message.contains(&format!("127.0.0.1:{port}")), "{}", err.message);
    }
}
