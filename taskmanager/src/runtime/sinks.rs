//! The sinks: operators that write records out of the job and emit nothing downstream.
//!
//! - [`PrintSink`] (`sink.print`): each record as one line on the taskmanager's standard
//!   output, its fields comma-separated (`42,hello,1.5,true`), prefixed with `<subtask+1>> `
//!   when the sink runs with parallelism above 1, as Flink's `print()` does (`2> 42,hello`).
//!   A batch is formatted into one buffer and written with one locked write.
//! - [`FileSink`] (`sink.file`): exactly-once part files, like Flink's `FileSink`. `text`:
//!   the fields tab-separated, one record per line; `json`: one JSON object per line
//!   (arrow-json; null fields are left out). See below.
//! - [`BlackholeSink`] (`sink.blackhole`): counts the records and drops them.
//!
//! # The file sink's part files
//!
//! Every sink instance (each subtask of each attempt or restore) draws a `<uid>` of 8
//! random hex digits, so no two instances ever write the same file name. Records go through
//! a 1 MiB buffer into the hidden **in-progress** file `<path>/.part-<uid>-<subtask>-<n>.inprogress`
//! (opened with the first record after the last close; the directory is created). Then:
//!
//! - `snapshot_state(c)`: the in-progress file (if any) is flushed, fsynced and closed; it
//!   becomes **pending** for checkpoint `c` under its final name `part-<uid>-<subtask>-<n>`
//!   (`n` counts up per instance). Every pending file goes into the list state
//!   `pending-part-files` (one [`PendingPart`] per element, `Split` on restore).
//! - `notify_checkpoint_complete(c)`: the pending files of checkpoints `≤ c` are
//!   **committed**: renamed to their final, visible names.
//! - `restore_state`: the pending files in the restored state all belong to a completed
//!   checkpoint (the one restored from, or earlier): they are committed at once. Commits are
//!   idempotent ([`FileCommit::apply`]), so a file committed before the failure is fine.
//! - `finish()`: the in-progress file is closed as pending (no checkpoint yet), and
//!   `final_commits()` hands every pending file to the JobMaster, which commits them once
//!   the whole job finished. Without checkpointing, a job's output appears then.
//!
//! Records written after the last checkpoint of a failed instance live only in its
//! in-progress file, which is never committed; it stays behind as a hidden file (as Flink
//! leaves `.inprogress` files). Readers of the output must ignore hidden (`.`-prefixed)
//! files. fsync happens only when a file is closed (and the directory after closes and
//! commits), never per batch.
//!
//! Field formatting in text output: integers in decimal, floats in Rust's shortest
//! round-trip form with a fraction (`1.0`, `0.1`, `1e20`, `NaN`, `inf`), booleans as
//! `true`/`false`, strings as they are (no quoting or escaping), bytes as lowercase hex,
//! nulls as `null`.
//!
//! Every sink counts the records it took ([`PrintSink::records`], ...); the blackhole's
//! count can be shared ([`BlackholeSink::counter`]) so a test or benchmark can read it
//! while the task owns the sink.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::json::LineDelimitedWriter;
use arrow::record_batch::RecordBatch;
use flint_common::job::catalog::FileFormat;
use flint_common::messages::FileCommit;
use serde::{Deserialize, Serialize};

use super::operator::{Collector, Operator, TaskError};
use crate::state::{decode_value, encode_value, Redistribution, StateStore};

/// One column, resolved to its concrete array type once per batch.
pub(crate) enum Column<'a> {
    Int(&'a Int64Array),
    Float(&'a Float64Array),
    Str(&'a StringArray),
    Bool(&'a BooleanArray),
    Bytes(&'a BinaryArray),
    Null,
}

impl<'a> Column<'a> {
    pub(crate) fn of(array: &'a dyn Array) -> Self {
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

/// The list state of [`FileSink`]: its pending part files, each a [`PendingPart`] as
/// MessagePack, split over the new subtasks on restore (whoever gets one commits it).
const PENDING_STATE: &str = "pending-part-files";

/// A closed part file waiting to be committed (renamed from `from`, hidden, to `to`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPart {
    /// The checkpoint whose completion commits it; `None` for a file closed at the end of
    /// the input that no checkpoint covers yet.
    pub checkpoint_id: Option<u64>,
    pub from: String,
    pub to: String,
}

impl PendingPart {
    fn commit(&self) -> FileCommit {
        FileCommit { from: self.from.clone(), to: self.to.clone() }
    }
}

/// The part file being written.
struct InProgress {
    from: PathBuf,
    to: PathBuf,
    writer: BufWriter<File>,
}

/// `sink.file`: exactly-once part files, committed when a checkpoint completes (see the
/// module documentation).
pub struct FileSink {
    dir: PathBuf,
    format: FileFormat,
    subtask: u32,
    /// 8 random hex digits, new for every instance (every attempt and restore).
    uid: String,
    /// The number of the next part file.
    next_part: u64,
    current: Option<InProgress>,
    pending: Vec<PendingPart>,
    buf: Vec<u8>,
    records: u64,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> TaskError + '_ {
    move |e| TaskError::io(format_args!("writing {}", path.display()), &e)
}

/// Commits one part file (idempotent). A part whose file is gone under both names was
/// committed and then removed (an old savepoint restored after the output was cleaned up):
/// like Flink, that is not an error.
fn commit(part: &PendingPart) -> Result<(), TaskError> {
    match part.commit().apply() {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!("part file {} is gone under both names ({e}); nothing to commit", part.to);
            Ok(())
        }
        Err(e) => Err(TaskError::io(format_args!("committing {}", part.to), &e)),
    }
}

/// Makes renames and new files in `dir` durable (best effort where a directory cannot be
/// opened, e.g. not on Unix).
fn sync_dir(dir: &Path) -> Result<(), TaskError> {
    match File::open(dir) {
        Ok(d) => d.sync_all().map_err(io_error(dir)),
        Err(_) => Ok(()),
    }
}

impl FileSink {
    /// Writes part files into `dir` (created with the first record or at the end of the input).
    pub fn new(dir: &str, format: FileFormat, subtask: u32) -> Self {
        let uid = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        Self {
            dir: PathBuf::from(dir),
            format,
            subtask,
            uid,
            next_part: 0,
            current: None,
            pending: Vec::new(),
            buf: Vec::new(),
            records: 0,
        }
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This instance's part file id (`part-<uid>-<subtask>-<n>`).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Closed part files not committed yet.
    pub fn pending(&self) -> &[PendingPart] {
        &self.pending
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The in-progress file, opened when the first record after the last close comes.
    fn writer(&mut self) -> Result<&mut BufWriter<File>, TaskError> {
        if self.current.is_none() {
            let name = format!("part-{}-{}-{}", self.uid, self.subtask, self.next_part);
            let from = self.dir.join(format!(".{name}.inprogress"));
            std::fs::create_dir_all(&self.dir).map_err(io_error(&self.dir))?;
            let file = File::options().write(true).create_new(true).open(&from).map_err(io_error(&from))?;
            self.next_part += 1;
            let writer = BufWriter::with_capacity(1 << 20, file);
            self.current = Some(InProgress { from, to: self.dir.join(name), writer });
        }
        Ok(&mut self.current.as_mut().expect("opened above").writer)
    }

    fn write_error(&self, e: TaskError) -> TaskError {
        let path = self.current.as_ref().map_or(self.dir.as_path(), |c| c.from.as_path());
        TaskError { message: format!("writing {}: {}", path.display(), e.message), ..e }
    }

    /// Flushes, fsyncs and closes the in-progress file (if any) into the pending list.
    /// Returns whether there was one.
    fn close_current(&mut self) -> Result<bool, TaskError> {
        let Some(InProgress { from, to, writer }) = self.current.take() else { return Ok(false) };
        let file = writer.into_inner().map_err(|e| io_error(&from)(e.into_error()))?;
        file.sync_all().map_err(io_error(&from))?;
        drop(file);
        self.pending.push(PendingPart {
            checkpoint_id: None,
            from: from.to_string_lossy().into_owned(),
            to: to.to_string_lossy().into_owned(),
        });
        Ok(true)
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
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match self.format {
            FileFormat::Text => {
                let mut buf = std::mem::take(&mut self.buf);
                buf.clear();
                format_rows(&batch, b"", b'\t', &mut buf);
                let written = self.writer()?.write_all(&buf);
                self.buf = buf;
                written.map_err(|e| self.write_error(e.into()))?;
            }
            FileFormat::Json => {
                let written = {
                    let mut json = LineDelimitedWriter::new(self.writer()?);
                    json.write(&batch).and_then(|_| json.finish())
                };
                written.map_err(|e| self.write_error(e.into()))?;
            }
        }
        self.records += batch.num_rows() as u64;
        Ok(())
    }

    fn process_watermark(&mut self, _: usize, _: usize, _: i64, _: &mut dyn Collector) -> Result<(), TaskError> {
        Ok(())
    }

    /// Closes the in-progress file into the pending list; the JobMaster commits what is
    /// still pending when the job finished ([`Operator::final_commits`]).
    fn finish(&mut self, _out: &mut dyn Collector) -> Result<(), TaskError> {
        std::fs::create_dir_all(&self.dir).map_err(io_error(&self.dir))?;
        if self.close_current()? {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Closes the in-progress file (durably) as pending for `checkpoint_id` and stores every
    /// pending file.
    fn snapshot_state(&mut self, checkpoint_id: u64, state: &mut StateStore) -> Result<(), TaskError> {
        if self.close_current()? {
            sync_dir(&self.dir)?;
        }
        for part in self.pending.iter_mut().filter(|p| p.checkpoint_id.is_none()) {
            part.checkpoint_id = Some(checkpoint_id);
        }
        let encoded = self
            .pending
            .iter()
            .map(|p| encode_value(PENDING_STATE, p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TaskError::fatal(e.to_string()))?;
        let list = state
            .operator
            .list_state(PENDING_STATE, Redistribution::Split)
            .map_err(|e| TaskError::fatal(e.to_string()))?;
        *list = encoded;
        Ok(())
    }

    /// The pending files of a checkpoint belong to a completed one (the one restored from, or
    /// an earlier one): commit them now.
    fn restore_state(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        let mut committed = BTreeSet::new();
        for element in state.operator.get(PENDING_STATE).unwrap_or_default() {
            let part: PendingPart =
                decode_value(PENDING_STATE, element).map_err(|e| TaskError::fatal(e.to_string()))?;
            commit(&part)?;
            if let Some(dir) = Path::new(&part.to).parent() {
                committed.insert(dir.to_path_buf());
            }
        }
        for dir in committed {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Commits the pending files of `checkpoint_id` and of every earlier checkpoint.
    fn notify_checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<(), TaskError> {
        let mut result = Ok(());
        let mut committed = false;
        self.pending.retain(|part| {
            let due = part.checkpoint_id.is_some_and(|c| c <= checkpoint_id);
            if !due || result.is_err() {
                return true;
            }
            match commit(part) {
                Ok(()) => {
                    committed = true;
                    false
                }
                Err(e) => {
                    result = Err(e);
                    true
                }
            }
        });
        if committed {
            sync_dir(&self.dir)?;
        }
        result
    }

    /// Every pending file. They stay pending here too (a later checkpoint may still store
    /// them), which is harmless: commits are idempotent.
    fn final_commits(&mut self) -> Vec<FileCommit> {
        self.pending.iter().map(PendingPart::commit).collect()
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
    use crate::runtime::transforms::tests::{checkpoint_and_restore, VecCollector};
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
        std::env::temp_dir().join(format!("flint-sinks-{name}-{}", uuid::Uuid::new_v4().simple()))
    }

    /// The visible (committed) files of `dir`, name → content, by name.
    fn visible(dir: &Path) -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .map(|name| (name.clone(), std::fs::read_to_string(dir.join(&name)).unwrap()))
            .collect();
        files.sort();
        files
    }

    /// The hidden files of `dir`, by name.
    fn hidden(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// Every record of every visible file (text of one integer field), sorted.
    fn visible_records(dir: &Path) -> Vec<i64> {
        let mut records: Vec<i64> =
            visible(dir).iter().flat_map(|(_, text)| text.lines().map(|l| l.parse::<i64>().unwrap())).collect();
        records.sort();
        records
    }

    fn ints(range: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(range))]).unwrap()
    }

    fn write(sink: &mut FileSink, range: std::ops::Range<i64>) {
        sink.process_batch(0, 0, ints(range), &mut VecCollector::default()).unwrap();
    }

    /// The pending parts in a snapshot of the sink.
    fn stored(state: &StateStore) -> Vec<PendingPart> {
        state.operator.get(PENDING_STATE).unwrap().iter().map(|e| decode_value(PENDING_STATE, e).unwrap()).collect()
    }

    fn apply(commits: &[FileCommit]) {
        for commit in commits {
            commit.apply().unwrap();
        }
    }

    #[test]
    fn file_sink_writes_text_part_files() {
        let dir = temp_dir("text").join("nested");
        let mut sink = FileSink::new(dir.to_str().unwrap(), FileFormat::Text, 3);
        let uid = sink.uid().to_owned();
        assert_eq!(uid.len(), 8);
        assert!(uid.chars().all(|c| c.is_ascii_hexdigit()));
        let mut out = VecCollector::default();
        sink.process_batch(0, 0, batch(), &mut out).unwrap();
        sink.process_batch(0, 0, batch().slice(1, 1), &mut out).unwrap();
        sink.process_batch(0, 0, batch().slice(0, 0), &mut out).unwrap();
        assert_eq!(hidden(&dir), vec![format!(".part-{uid}-3-0.inprogress")]);
        sink.finish(&mut out).unwrap();
        // Closed but not committed: the JobMaster commits it when the job finished.
        assert!(visible(&dir).is_empty());
        let commits = sink.final_commits();
        assert_eq!(
            commits,
            vec![FileCommit {
                from: dir.join(format!(".part-{uid}-3-0.inprogress")).to_string_lossy().into_owned(),
                to: dir.join(format!("part-{uid}-3-0")).to_string_lossy().into_owned(),
            }]
        );
        apply(&commits);
        apply(&commits);
        assert_eq!(
            visible(&dir),
            vec![(
                format!("part-{uid}-3-0"),
                "42\thello\t1.5\ttrue\t01ab\n-1\tnull\t2.0\tfalse\t\nnull\ta b\t1e20\tnull\tnull\n-1\tnull\t2.0\tfalse\t\n"
                    .to_string()
            )]
        );
        assert!(hidden(&dir).is_empty());
        assert_eq!(sink.records(), 4);
        assert_eq!(out.rows(), 0);
        // No input: the directory exists, without part files.
        let empty_dir = dir.parent().unwrap().join("empty");
        let mut empty = FileSink::new(empty_dir.to_str().unwrap(), FileFormat::Text, 4);
        empty.finish(&mut out).unwrap();
        assert!(empty.final_commits().is_empty());
        assert_eq!(std::fs::read_dir(&empty_dir).unwrap().count(), 0);
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
        apply(&sink.final_commits());
        let text = std::fs::read_to_string(dir.join(format!("part-{}-0-0", sink.uid()))).unwrap();
        assert_eq!(
            text,
            "{\"n\":42,\"word\":\"hello\",\"x\":1.5,\"ok\":true}\n{\"n\":-1,\"x\":2.0,\"ok\":false}\n{\"word\":\"a b\",\"x\":1.0e20}\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_sink_commits_on_checkpoint_completion() {
        let dir = temp_dir("commit");
        let mut sink = FileSink::new(dir.to_str().unwrap(), FileFormat::Text, 0);
        let uid = sink.uid().to_owned();
        // Nothing written: nothing to close or store.
        let mut state = StateStore::new(0, 1, 128);
        sink.snapshot_state(1, &mut state).unwrap();
        assert!(stored(&state).is_empty());
        assert!(!dir.exists());

        write(&mut sink, 0..10);
        let mut state = StateStore::new(0, 1, 128);
        sink.snapshot_state(2, &mut state).unwrap();
        let part0 = PendingPart {
            checkpoint_id: Some(2),
            from: dir.join(format!(".part-{uid}-0-0.inprogress")).to_string_lossy().into_owned(),
            to: dir.join(format!("part-{uid}-0-0")).to_string_lossy().into_owned(),
        };
        assert_eq!(stored(&state), vec![part0.clone()]);
        write(&mut sink, 10..20);
        assert!(visible(&dir).is_empty(), "nothing is visible before the checkpoint completes");
        // An older checkpoint's completion does not commit a later one's files.
        sink.notify_checkpoint_complete(1).unwrap();
        assert!(visible(&dir).is_empty());
        sink.notify_checkpoint_complete(2).unwrap();
        assert_eq!(visible(&dir), vec![(format!("part-{uid}-0-0"), (0..10).map(|n| format!("{n}\n")).collect())]);
        assert_eq!(hidden(&dir), vec![format!(".part-{uid}-0-1.inprogress")]);
        assert!(sink.pending().is_empty());

        // Checkpoint 3 is never confirmed; checkpoint 4 stores its file too, and its
        // completion commits both.
        write(&mut sink, 20..25);
        sink.snapshot_state(3, &mut StateStore::new(0, 1, 128)).unwrap();
        write(&mut sink, 25..30);
        let mut state = StateStore::new(0, 1, 128);
        sink.snapshot_state(4, &mut state).unwrap();
        assert_eq!(stored(&state).iter().map(|p| p.checkpoint_id).collect::<Vec<_>>(), vec![Some(3), Some(4)]);
        sink.notify_checkpoint_complete(4).unwrap();
        assert_eq!(visible_records(&dir), (0..30).collect::<Vec<_>>());
        // Repeated and late notifications are harmless.
        sink.notify_checkpoint_complete(3).unwrap();
        sink.notify_checkpoint_complete(4).unwrap();

        write(&mut sink, 30..35);
        sink.finish(&mut VecCollector::default()).unwrap();
        let commits = sink.final_commits();
        assert_eq!(commits.len(), 1);
        apply(&commits);
        assert_eq!(visible_records(&dir), (0..35).collect::<Vec<_>>());
        assert_eq!(visible(&dir).len(), 4);
        assert!(hidden(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A sink fails after a checkpoint whose completion it never heard of; the instance
    /// restored from that checkpoint commits its file, the records after it come again
    /// from the (rewound) input, and the output holds every record exactly once.
    #[test]
    fn file_sink_restore_commits_pending_files_exactly_once() {
        let dir = temp_dir("restore");
        let path = dir.to_str().unwrap();
        let mut failed = FileSink::new(path, FileFormat::Text, 0);
        write(&mut failed, 0..10);
        let mut state = StateStore::new(0, 1, 128);
        failed.snapshot_state(1, &mut state).unwrap();
        write(&mut failed, 10..20);
        let failed_uid = failed.uid().to_owned();
        drop(failed);
        assert!(visible(&dir).is_empty());

        let mut restored = checkpoint_and_restore("out", std::slice::from_ref(&state), 1);
        let mut sink = FileSink::new(path, FileFormat::Text, 0);
        assert_ne!(sink.uid(), failed_uid);
        sink.restore_state(&mut restored[0]).unwrap();
        assert_eq!(
            visible(&dir),
            vec![(format!("part-{failed_uid}-0-0"), (0..10).map(|n| format!("{n}\n")).collect())]
        );
        // What the failed instance wrote after the checkpoint stays hidden, never committed.
        assert_eq!(hidden(&dir), vec![format!(".part-{failed_uid}-0-1.inprogress")]);
        assert_eq!(std::fs::read_to_string(dir.join(&hidden(&dir)[0])).unwrap().lines().count(), 10);

        // The restored instance replays the records after the checkpoint and more, then fails
        // too before the next checkpoint: its in-progress file stays hidden.
        write(&mut sink, 10..25);
        let second_uid = sink.uid().to_owned();
        drop(sink);
        assert_eq!(visible(&dir).len(), 1);
        assert_eq!(hidden(&dir).len(), 2);

        // Restored from checkpoint 1 again: committing the same file again is fine.
        let mut restored = checkpoint_and_restore("out", std::slice::from_ref(&state), 1);
        let mut sink = FileSink::new(path, FileFormat::Text, 0);
        sink.restore_state(&mut restored[0]).unwrap();
        assert_eq!(visible(&dir).len(), 1);
        write(&mut sink, 10..25);
        sink.finish(&mut VecCollector::default()).unwrap();
        // The JobMaster commits the rest when the job finished (possibly more than once).
        let commits = sink.final_commits();
        apply(&commits);
        apply(&commits);
        assert_eq!(visible_records(&dir), (0..25).collect::<Vec<_>>(), "every record exactly once");
        let names: Vec<String> = visible(&dir).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names.len(), 2);
        assert!(names.iter().all(|n| !n.contains(&second_uid)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Two sink subtasks checkpoint; restored at parallelism 1 or 3, every pending file is
    /// committed exactly once.
    #[test]
    fn file_sink_rescaled_restore_commits_every_pending_file() {
        let dir = temp_dir("rescale");
        let path = dir.to_str().unwrap();
        let states: Vec<StateStore> = (0..2u32)
            .map(|subtask| {
                let mut sink = FileSink::new(path, FileFormat::Text, subtask);
                let base = i64::from(subtask) * 100;
                write(&mut sink, base..base + 10);
                sink.snapshot_state(1, &mut StateStore::new(subtask, 2, 128)).unwrap();
                write(&mut sink, base + 10..base + 20);
                let mut state = StateStore::new(subtask, 2, 128);
                sink.snapshot_state(2, &mut state).unwrap();
                assert_eq!(stored(&state).len(), 2);
                // After checkpoint 2: never visible.
                write(&mut sink, base + 20..base + 30);
                state
            })
            .collect();
        assert!(visible(&dir).is_empty());
        let expected: Vec<i64> = (0..20).chain(100..120).collect();

        // 2 → 1: the one subtask gets (and commits) all four files.
        let mut one = checkpoint_and_restore("out", &states, 1);
        assert_eq!(stored(&one[0]).len(), 4);
        FileSink::new(path, FileFormat::Text, 0).restore_state(&mut one[0]).unwrap();
        assert_eq!(visible_records(&dir), expected);
        assert_eq!(visible(&dir).len(), 4);

        // 2 → 3: the files are dealt out, each to exactly one subtask.
        for file in std::fs::read_dir(&dir).unwrap().flatten() {
            if !file.file_name().to_string_lossy().starts_with('.') {
                std::fs::remove_file(file.path()).unwrap();
            }
        }
        let mut three = checkpoint_and_restore("out", &states, 3);
        assert_eq!(three.iter().map(|s| stored(s).len()).sum::<usize>(), 4);
        // (The files were committed and then deleted above: like Flink, not an error.)
        for (subtask, store) in three.iter_mut().enumerate() {
            FileSink::new(path, FileFormat::Text, subtask as u32).restore_state(store).unwrap();
        }
        assert!(visible(&dir).is_empty());
        assert_eq!(hidden(&dir).len(), 2, "the two in-progress files after checkpoint 2");
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
