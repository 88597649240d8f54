//! The sinks: operators that write records out of the job and emit nothing downstream.
//!
//! - [`PrintSink`] (`sink.print`): each record as one line on the taskmanager's standard
//!   output, its fields comma-separated (`42,hello,1.5,true`), prefixed with `<subtask+1>> `
//!   when the sink runs with parallelism above 1, as Flink's `print()` does (`2> 42,hello`).
//!   A batch is formatted into one buffer and written with one locked write.
//! - [`FileSink`] (`sink.file`): one part file per subtask, `<path>/part-<subtask>-0`
//!   (the directory is created), written through a 1 MiB buffer and flushed when the
//!   input ends. `text`: the fields tab-separated, one record per line; `json`: one JSON
//!   object per line (arrow-json; null fields are left out).
//! - [`BlackholeSink`] (`sink.blackhole`): counts the records and drops them.
//!
//! Field formatting in text output: integers in decimal, floats in Rust's shortest
//! round-trip form with a fraction (`1.0`, `0.1`, `1e20`, `NaN`, `inf`), booleans as
//! `true`/`false`, strings as they are (no quoting or escaping), bytes as lowercase hex,
//! nulls as `null`.
//!
//! Every sink counts the records it took ([`PrintSink::records`], ...); the blackhole's
//! count can be shared ([`BlackholeSink::counter`]) so a test or benchmark can read it
//! while the task owns the sink.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::json::LineDelimitedWriter;
use arrow::record_batch::RecordBatch;
use flint_common::job::catalog::FileFormat;

use super::operator::{Collector, Operator, TaskError};

/// One column, resolved to its concrete array type once per batch.
enum Column<'a> {
    Int(&'a Int64Array),
    Float(&'a Float64Array),
    Str(&'a StringArray),
    Bool(&'a BooleanArray),
    Bytes(&'a BinaryArray),
    Null,
}

impl<'a> Column<'a> {
    fn of(array: &'a dyn Array) -> Self {
        match array.data_type() {
            DataType::Int64 => Column::Int(array.as_primitive::<Int64Type>()),
            DataType::Float64 => Column::Float(array.as_primitive::<Float64Type>()),
            DataType::Utf8 => Column::Str(array.as_string::<i32>()),
            DataType::Boolean => Column::Bool(array.as_boolean()),
            DataType::Binary => Column::Bytes(array.as_binary::<i32>()),
            _ => Column::Null,
        }
    }

    #[inline]
    fn write(&self, row: usize, ints: &mut itoa::Buffer, out: &mut Vec<u8>) {
        match self {
            Column::Int(a) if a.is_valid(row) => out.extend_from_slice(ints.format(a.value(row)).as_bytes()),
            Column::Float(a) if a.is_valid(row) => {
                let _ = write!(out, "{:?}", a.value(row));
            }
            Column::Str(a) if a.is_valid(row) => out.extend_from_slice(a.value(row).as_bytes()),
            Column::Bool(a) if a.is_valid(row) => out.extend_from_slice(if a.value(row) { b"true" } else { b"false" }),
            Column::Bytes(a) if a.is_valid(row) => {
                for byte in a.value(row) {
                    let _ = write!(out, "{byte:02x}");
                }
            }
            _ => out.extend_from_slice(b"null"),
        }
    }
}

/// Appends the rows of `batch` to `out`, one line per row: `prefix`, then the fields
/// separated by `separator` (formatted as the module documentation says).
pub fn format_rows(batch: &RecordBatch, prefix: &[u8], separator: u8, out: &mut Vec<u8>) {
    let columns: Vec<Column<'_>> = batch.columns().iter().map(|c| Column::of(c.as_ref())).collect();
    let mut ints = itoa::Buffer::new();
    for row in 0..batch.num_rows() {
        out.extend_from_slice(prefix);
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                out.push(separator);
            }
            column.write(row, &mut ints, out);
        }
        out.push(b'\n');
    }
}

/// `sink.print`.
pub struct PrintSink {
    prefix: Vec<u8>,
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    records: u64,
}

impl PrintSink {
    /// Prints to the process's standard output.
    pub fn new(subtask: u32, parallelism: u32) -> Self {
        Self::with_writer(subtask, parallelism, Box::new(std::io::stdout()))
    }

    /// Prints to `out` (tests).
    pub fn with_writer(subtask: u32, parallelism: u32, out: Box<dyn Write + Send>) -> Self {
        let prefix = if parallelism > 1 { format!("{}> ", subtask + 1).into_bytes() } else { Vec::new() };
        Self { prefix, out, buf: Vec::new(), records: 0 }
    }

    /// Records printed so far.
    pub fn records(&self) -> u64 {
        self.records
    }
}

impl Operator for PrintSink {
    fn process_batch(
        &mut self,
        _input: usize,
        _channel: usize,
        batch: RecordBatch,
        _out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        self.buf.clear();
        format_rows(&batch, &self.prefix, b',', &mut self.buf);
        // One write: `Stdout` takes its lock once for the whole batch.
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        self.records += batch.num_rows() as u64;
        Ok(())
    }

    fn process_watermark(&mut self, _: usize, _: usize, _: i64, _: &mut dyn Collector) -> Result<(), TaskError> {
        Ok(())
    }
}

/// `sink.file`.
pub struct FileSink {
    path: PathBuf,
    format: FileFormat,
    writer: Option<BufWriter<File>>,
    buf: Vec<u8>,
    records: u64,
}

impl FileSink {
    /// Writes `<dir>/part-<subtask>-0`; the file is created with the first batch or at
    /// the end of the input, whichever comes first.
    pub fn new(dir: &str, format: FileFormat, subtask: u32) -> Self {
        Self {
            path: PathBuf::from(dir).join(format!("part-{subtask}-0")),
            format,
            writer: None,
            buf: Vec::new(),
            records: 0,
        }
    }

    /// The part file this sink writes.
    pub fn file(&self) -> &std::path::Path {
        &self.path
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn writer(&mut self) -> Result<&mut BufWriter<File>, TaskError> {
        if self.writer.is_none() {
            let io = |e: std::io::Error| TaskError::new(format!("writing {}: {e}", self.path.display()));
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let file = File::create(&self.path).map_err(io)?;
            self.writer = Some(BufWriter::with_capacity(1 << 20, file));
        }
        Ok(self.writer.as_mut().expect("created above"))
    }
}

impl Operator for FileSink {
    fn process_batch(
        &mut self,
        _input: usize,
        _channel: usize,
        batch: RecordBatch,
        _out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        let path = self.path.clone();
        let io = move |e: std::io::Error| TaskError::new(format!("writing {}: {e}", path.display()));
        match self.format {
            FileFormat::Text => {
                let mut buf = std::mem::take(&mut self.buf);
                buf.clear();
                format_rows(&batch, b"", b'\t', &mut buf);
                let written = self.writer()?.write_all(&buf).map_err(io);
                self.buf = buf;
                written?;
            }
            FileFormat::Json => {
                let path = self.path.clone();
                let mut json = LineDelimitedWriter::new(self.writer()?);
                json.write(&batch)
                    .and_then(|_| json.finish())
                    .map_err(|e| TaskError::new(format!("writing {}: {e}", path.display())))?;
            }
        }
        self.records += batch.num_rows() as u64;
        Ok(())
    }

    fn process_watermark(&mut self, _: usize, _: usize, _: i64, _: &mut dyn Collector) -> Result<(), TaskError> {
        Ok(())
    }

    fn finish(&mut self, _out: &mut dyn Collector) -> Result<(), TaskError> {
        let path = self.path.clone();
        self.writer()?.flush().map_err(|e| TaskError::new(format!("writing {}: {e}", path.display())))
    }
}

/// `sink.blackhole`.
#[derive(Default)]
pub struct BlackholeSink {
    records: Arc<AtomicU64>,
    /// Records per second this sink takes at most (`rate`); it sleeps when ahead.
    rate: Option<f64>,
    started: Option<std::time::Instant>,
}

impl BlackholeSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink that takes at most `rate` records per second (a slow consumer, for
    /// back-pressure tests), or any number when `None`.
    pub fn with_rate(rate: Option<f64>) -> Self {
        Self { rate, ..Self::default() }
    }

    /// The shared count of records taken.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.records)
    }

    /// Records taken so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

impl Operator for BlackholeSink {
    fn process_batch(
        &mut self,
        _input: usize,
        _channel: usize,
        batch: RecordBatch,
        _out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        let taken = self.records.fetch_add(batch.num_rows() as u64, Ordering::Relaxed) + batch.num_rows() as u64;
        if let Some(rate) = self.rate {
            // Sleeping blocks this task's thread: upstream fills its queues and waits.
            let started = *self.started.get_or_insert_with(std::time::Instant::now);
            let due = std::time::Duration::from_secs_f64(taken as f64 / rate);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
        Ok(())
    }

    fn process_watermark(&mut self, _: usize, _: usize, _: i64, _: &mut dyn Collector) -> Result<(), TaskError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::runtime::transforms::tests::VecCollector;
    use arrow::array::ArrayRef;
    use arrow::datatypes::{Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("word", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("raw", DataType::Binary, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(42), Some(-1), None])),
            Arc::new(StringArray::from(vec![Some("hello"), None, Some("a b")])),
            Arc::new(Float64Array::from(vec![Some(1.5), Some(2.0), Some(1e20)])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(BinaryArray::from(vec![Some(&b"\x01\xab"[..]), Some(b""), None])),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn print_format() {
        let shared = Shared::default();
        let mut sink = PrintSink::with_writer(1, 2, Box::new(shared.clone()));
        let mut out = VecCollector::default();
        sink.process_batch(0, 0, batch(), &mut out).unwrap();
        sink.process_watermark(0, 0, 5, &mut out).unwrap();
        sink.finish(&mut out).unwrap();
        let text = String::from_utf8(shared.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "2> 42,hello,1.5,true,01ab\n2> -1,null,2.0,false,\n2> null,a b,1e20,null,null\n");
        assert_eq!(sink.records(), 3);
        assert_eq!(out.rows(), 0);
        assert!(out.watermarks.is_empty());
        let shared = Shared::default();
        let mut sink = PrintSink::with_writer(0, 1, Box::new(shared.clone()));
        sink.process_batch(0, 0, batch().slice(0, 1), &mut out).unwrap();
        assert_eq!(String::from_utf8(shared.0.lock().unwrap().clone()).unwrap(), "42,hello,1.5,true,01ab\n");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flint-sinks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn file_sink_writes_text_part_files() {
        let dir = temp_dir("text").join("nested");
        let mut sink = FileSink::new(dir.to_str().unwrap(), FileFormat::Text, 3);
        let mut out = VecCollector::default();
        sink.process_batch(0, 0, batch(), &mut out).unwrap();
        sink.process_batch(0, 0, batch().slice(1, 1), &mut out).unwrap();
        sink.finish(&mut out).unwrap();
        let text = std::fs::read_to_string(dir.join("part-3-0")).unwrap();
        assert_eq!(
            text,
            "42\thello\t1.5\ttrue\t01ab\n-1\tnull\t2.0\tfalse\t\nnull\ta b\t1e20\tnull\tnull\n-1\tnull\t2.0\tfalse\t\n"
        );
        assert_eq!(sink.records(), 4);
        assert_eq!(out.rows(), 0);
        // No input still leaves an (empty) part file.
        let mut empty = FileSink::new(dir.to_str().unwrap(), FileFormat::Text, 4);
        empty.finish(&mut out).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("part-4-0")).unwrap(), "");
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn file_sink_writes_json_lines() {
        let dir = temp_dir("json");
        let mut sink = FileSink::new(dir.to_str().unwrap(), FileFormat::Json, 0);
        let mut out = VecCollector::default();
        let b = batch();
        let b = b.project(&[0, 1, 2, 3]).unwrap();
        sink.process_batch(0, 0, b, &mut out).unwrap();
        sink.finish(&mut out).unwrap();
        let text = std::fs::read_to_string(dir.join("part-0-0")).unwrap();
        assert_eq!(
            text,
            "{\"n\":42,\"word\":\"hello\",\"x\":1.5,\"ok\":true}\n{\"n\":-1,\"x\":2.0,\"ok\":false}\n{\"word\":\"a b\",\"x\":1.0e20}\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn blackhole_counts() {
        let mut sink = BlackholeSink::new();
        let counter = sink.counter();
        let mut out = VecCollector::default();
        sink.process_batch(0, 0, batch(), &mut out).unwrap();
        sink.process_batch(0, 0, batch(), &mut out).unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 6);
        assert_eq!(sink.records(), 6);
        assert_eq!(out.rows(), 0);
    }
}
