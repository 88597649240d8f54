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
//! records). Every source reports its progress through `position()`: records emitted,
//! except the file source which reports bytes consumed.

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
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::operator::{SourceOperator, TaskError};

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

fn limit(throttle: &Option<Throttle>, batch_size: usize) -> usize {
    throttle.as_ref().map_or(batch_size, |t| t.batch_limit(batch_size))
}

/// `source.sequence`.
pub struct SequenceSource {
    schema: SchemaRef,
    /// The next value (i128: stepping past `i64::MAX` must not overflow).
    next: i128,
    last: i128,
    step: i128,
    emitted: u64,
    batch_size: usize,
    throttle: Option<Throttle>,
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
        Self {
            schema,
            next: i128::from(from) + i128::from(subtask),
            last: i128::from(to.unwrap_or(i64::MAX)),
            step: i128::from(parallelism.max(1)),
            emitted: 0,
            batch_size: batch_size.max(1),
            throttle: Throttle::for_instance(rate, parallelism),
        }
    }

    /// Records emitted so far.
    pub fn position(&self) -> u64 {
        self.emitted
    }

    fn make_batch(&mut self) -> Result<Option<RecordBatch>, TaskError> {
        if self.next > self.last {
            return Ok(None);
        }
        let remaining = (self.last - self.next) / self.step + 1;
        let n = remaining.min(limit(&self.throttle, self.batch_size) as i128) as i64;
        let (start, step) = (self.next as i64, self.step as i64);
        let values = Int64Array::from_iter_values((0..n).map(|k| start + k * step));
        self.next += i128::from(n) * self.step;
        self.emitted += n as u64;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), vec![Arc::new(values)])?))
    }
}

impl SourceOperator for SequenceSource {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<RecordBatch>, TaskError>> {
        Box::pin(async move {
            if let Some(throttle) = &mut self.throttle {
                throttle.wait(self.emitted).await;
            }
            self.make_batch()
        })
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

/// `source.datagen`.
pub struct DatagenSource {
    schema: SchemaRef,
    fields: Vec<(Generator, Stream)>,
    /// The next global row of this instance.
    next_row: u64,
    step: u64,
    rows: Option<u64>,
    emitted: u64,
    batch_size: usize,
    throttle: Option<Throttle>,
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
        Self {
            schema,
            fields: fields.iter().enumerate().map(|(i, f)| (f.generator.clone(), Stream::new(seed, i))).collect(),
            next_row: u64::from(subtask),
            step: u64::from(parallelism.max(1)),
            rows,
            emitted: 0,
            batch_size,
            throttle: Throttle::for_instance(rate, parallelism),
        }
    }

    /// Rows emitted so far.
    pub fn position(&self) -> u64 {
        self.emitted
    }

    fn make_batch(&mut self) -> Result<Option<RecordBatch>, TaskError> {
        let max = limit(&self.throttle, self.batch_size) as u64;
        let n = match self.rows {
            Some(rows) if self.next_row >= rows => return Ok(None),
            Some(rows) => ((rows - self.next_row).div_ceil(self.step)).min(max),
            None => max,
        };
        let (first, step) = (self.next_row, self.step);
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
        self.next_row += n * self.step;
        self.emitted += n;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

impl SourceOperator for DatagenSource {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<RecordBatch>, TaskError>> {
        Box::pin(async move {
            if let Some(throttle) = &mut self.throttle {
                throttle.wait(self.emitted).await;
            }
            self.make_batch()
        })
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
    let io = |e: std::io::Error| TaskError::new(format!("reading {}: {e}", path.display()));
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
        let io = |e: std::io::Error| TaskError::new(format!("reading {}: {e}", split.path.display()));
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
                    return Err(TaskError::new(format!("reading {}: {e}", self.path.display())));
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
        Ok(Self { schema, format, batch_size, splits: splits.into(), reader: None, json, consumed: 0, emitted: 0 })
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
            |e: arrow::error::ArrowError| TaskError::new(format!("reading JSON from {}: {e}", path.display()));
        reader.read_lines(self.batch_size, &mut |line| {
            let mut data = line;
            while !data.is_empty() {
                let used = decoder.decode(data).map_err(json_error)?;
                if used == 0 {
                    return Err(TaskError::new(format!(
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
}

/// `source.socket`.
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
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};
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

    #[test]
    fn socket_source_fails_when_it_cannot_connect() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut source = SocketSource::new(line_schema(), "127.0.0.1", port, 4096);
        let err = rt.block_on(source.next_batch()).unwrap_err();
        assert!(err.message.contains(&format!("127.0.0.1:{port}")), "{}", err.message);
    }
}
