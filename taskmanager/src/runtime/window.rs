//! The `window` operator: tumbling and sliding windows per key, in processing or event time.
//!
//! Windows are `[start, start + size)` with `start` a multiple of `slide` (`slide = size`
//! for tumbling windows; starts are floored, so negative times work). A record with time
//! `t` belongs to every window whose start is in `(t - size, t]`.
//!
//! State is one [`Pane`] per window start, in a `BTreeMap` ordered by start (so by end: all
//! windows have one size): the keys of the window interned in a [`KeyMap`] and their
//! accumulators in columns indexed by the key's slot. A batch is assigned to windows in one
//! pass, then handled window by window (one map lookup per window and batch, one hash
//! lookup per row and window). Firing a window turns its pane into output rows and returns
//! the pane's buffers to a pool, so steady state allocates no memory per window.
//!
//! Time:
//! - **processing**: a batch belongs to the windows of the clock's time when it arrives;
//!   [`Operator::on_processing_time`] fires windows with `end - 1 <= now`. Upstream
//!   watermarks are combined (minimum over channels) and forwarded.
//! - **event**: times are the `timestamp_field` (epoch ms; rows where it is null are dropped
//!   and counted). Each upstream channel (`ctx.input_channels[0]` of them; the channel index
//!   comes with every batch and watermark) has a watermark: the larger of the last
//!   watermark received from it and `max timestamp seen on it - max_out_of_orderness - 1`.
//!   The operator's watermark is the minimum over channels (never going back); when it
//!   advances, every window with `end - 1 <= watermark` fires, then the watermark is
//!   emitted downstream. A record is dropped as late (and counted) when all its windows
//!   have already fired.
//!
//! [`Operator::finish`] fires every window left (and, in event time, emits the final
//! watermark `i64::MAX`).
//!
//! Checkpoints: the panes stay the live state; they are only converted at snapshot and
//! restore.
//! - Keyed raw state [`WINDOW_STATE`], per key group of the key's hash (the hash the
//!   `HashPartitioner` routes by): `window start (i64 big-endian, sign bit flipped) |
//!   canonically encoded key → slot (u32 LE) | accumulators` (the aggregate operator's slot
//!   encoding, see `aggregate`). One entry per open window and key; the end is
//!   `start + size`. On restore, keys are re-interned per window in old slot order, so a
//!   restored window emits its rows in the order an uninterrupted run would.
//! - Event time only, operator state [`WINDOW_WATERMARK_STATE`] (union list): elements
//!   `u32 first key group | u32 last key group | i64 watermark` (LE), saying windows up to
//!   that watermark had fired for those key groups. The restored watermark is the lowest
//!   floor of the subtask's key groups, so records late before the checkpoint stay late
//!   and nothing fires twice; when old subtasks had reached different watermarks (restore
//!   at another parallelism), each row is judged late by its key group's floor until the
//!   watermark passes them all. Per-channel watermarks are not restored (as in Flink: they
//!   start over), so the watermark advances again once every channel has sent data.
//! - Processing time restores only the panes; windows whose end passed during the downtime
//!   fire at the first [`Operator::on_processing_time`] after the restore.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Builder};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use flint_common::job::catalog::{OperatorKind, OperatorSpec, WindowTime};
use flint_common::job::FieldType;

use super::aggregate::{keyed_output_schema, Accumulators, OutColumn};
use super::keyed::{as_type, hash_key, key_group_for_hash, KeyColumnsBuilder, KeyEncoder, KeyMap};
use super::operator::{Collector, Operator, OperatorContext, TaskError};
use super::schema::{arrow_schema, arrow_type};
use crate::state::{KeyGroupRange, Redistribution, StateStore};

/// The keyed raw state of the open windows: `window start | key → slot | accumulators`.
pub const WINDOW_STATE: &str = "window";
/// The operator state (union list) of how far event time had fired windows, per key groups.
pub const WINDOW_WATERMARK_STATE: &str = "window-watermark";

/// Rows per output batch when many windows fire at once.
const OUTPUT_BATCH_ROWS: usize = 8192;
/// Fired panes kept for reuse.
const PANE_POOL: usize = 8;

/// The state of one window: its keys and their accumulators (slot = key id).
#[derive(Debug, Clone)]
struct Pane {
    keys: KeyMap,
    accs: Accumulators,
}

/// Which clock assigns records to windows.
enum Time {
    Processing,
    Event { column: usize, max_out_of_orderness: i64 },
}

/// Event time progress of one upstream channel.
#[derive(Clone, Copy, Debug)]
struct ChannelTime {
    max_timestamp: i64,
    received_watermark: i64,
}

impl ChannelTime {
    const START: ChannelTime = ChannelTime { max_timestamp: i64::MIN, received_watermark: i64::MIN };
}

/// After a restore from old subtasks that had reached different watermarks: the watermark
/// of each key group's old owner. Windows up to there had fired for that key group's keys,
/// so records for them stay late. Dropped once the operator's watermark passes `max`.
#[derive(Debug)]
struct LateFloors {
    max_parallelism: u32,
    /// The first key group of `floors`.
    first: u32,
    floors: Vec<i64>,
    max: i64,
}

impl LateFloors {
    /// The floor of key group `key_group` (`i64::MIN` outside the restored range).
    fn of_group(&self, key_group: u32) -> i64 {
        key_group.checked_sub(self.first).and_then(|i| self.floors.get(i as usize)).copied().unwrap_or(i64::MIN)
    }
}

/// An element of [`WINDOW_WATERMARK_STATE`]: key groups `start..=end` had fired windows up
/// to `watermark`; `u32` start, `u32` end, `i64` watermark, little-endian.
fn encode_floor(start: u32, end: u32, watermark: i64) -> Vec<u8> {
    let mut element = Vec::with_capacity(16);
    element.extend_from_slice(&start.to_le_bytes());
    element.extend_from_slice(&end.to_le_bytes());
    element.extend_from_slice(&watermark.to_le_bytes());
    element
}

fn decode_floor(element: &[u8]) -> Result<(u32, u32, i64), TaskError> {
    let bytes: &[u8; 16] = element.try_into().map_err(|_| corrupt_state("watermark element is not 16 bytes"))?;
    let (start, rest) = bytes.split_at(4);
    let (end, watermark) = rest.split_at(4);
    Ok((
        u32::from_le_bytes(start.try_into().expect("4 bytes")),
        u32::from_le_bytes(end.try_into().expect("4 bytes")),
        i64::from_le_bytes(watermark.try_into().expect("8 bytes")),
    ))
}

fn corrupt_state(reason: impl std::fmt::Display) -> TaskError {
    TaskError::fatal(format!("corrupt or incompatible window state: {reason}"))
}

/// The [`WINDOW_STATE`] key of window `start` and an encoded key: the start big-endian with
/// the sign bit flipped (so entries sort by start), then the key.
fn window_state_key(start: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&((start as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// A clock giving epoch milliseconds.
pub type Clock = Box<dyn FnMut() -> i64 + Send>;

/// Tumbling or sliding windows per key: see the module comment.
pub struct WindowOperator {
    schema: SchemaRef,
    encoder: KeyEncoder,
    /// The output types of the key columns.
    key_types: Vec<DataType>,
    size: i64,
    slide: i64,
    time: Time,
    /// The accumulators of a new pane (empty).
    template: Accumulators,
    panes: BTreeMap<i64, Pane>,
    pool: Vec<Pane>,
    channels: Vec<ChannelTime>,
    /// The operator's watermark (event time), or the combined upstream one (processing).
    watermark: i64,
    /// Per key group lateness after a rescaling restore (event time), until `watermark`
    /// passes them all.
    floors: Option<Box<LateFloors>>,
    late_dropped: u64,
    null_timestamps_dropped: u64,
    clock: Clock,
    /// Scratch: (window start, row) pairs of a batch, and the rows and slots of one window.
    assigned: Vec<(i64, u32)>,
    rows: Vec<u32>,
    slots: Vec<u32>,
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WindowOperator {
    pub fn new(spec: &OperatorSpec, ctx: &OperatorContext) -> Result<Self, TaskError> {
        Self::with_clock(spec, ctx, Box::new(|| flint_common::process::epoch_ms() as i64))
    }

    /// As [`WindowOperator::new`], with `clock` for processing time.
    pub fn with_clock(spec: &OperatorSpec, ctx: &OperatorContext, clock: Clock) -> Result<Self, TaskError> {
        let OperatorKind::Window { key, size, slide, time, aggs } = &spec.kind else {
            return Err(TaskError::fatal(format!("{} is not a window", spec.id)));
        };
        let (input, output) = keyed_output_schema(spec, key)?;
        let bounds = output.fields.get(key.len()..key.len() + 2).unwrap_or_default();
        if output.fields.len() != key.len() + 2 + aggs.len()
            || bounds
                .iter()
                .map(|f| (f.name.as_str(), f.ty))
                .ne([("window_start", FieldType::Int), ("window_end", FieldType::Int)])
        {
            return Err(TaskError::fatal(format!("{}: the output schema does not match the window", spec.id)));
        }
        let (size, slide) = (millis(*size), slide.map_or(millis(*size), millis));
        if size <= 0 || slide <= 0 {
            return Err(TaskError::fatal(format!("{}: window size and slide must be at least 1 ms", spec.id)));
        }
        let time = match time {
            WindowTime::Processing => Time::Processing,
            WindowTime::Event { timestamp_field, max_out_of_orderness } => Time::Event {
                column: input.index_of(timestamp_field).ok_or_else(|| {
                    TaskError::fatal(format!("{}: unknown timestamp field '{timestamp_field}'", spec.id))
                })?,
                max_out_of_orderness: millis(*max_out_of_orderness),
            },
        };
        let channels = ctx.input_channels.first().copied().unwrap_or(1).max(1);
        Ok(Self {
            schema: arrow_schema(&output),
            encoder: KeyEncoder::new(&input, key)?,
            key_types: output.fields[..key.len()].iter().map(|f| arrow_type(f.ty)).collect(),
            size,
            slide,
            time,
            template: Accumulators::new(&input, aggs, &output.fields[key.len() + 2..])?,
            panes: BTreeMap::new(),
            pool: Vec::new(),
            channels: vec![ChannelTime::START; channels],
            watermark: i64::MIN,
            floors: None,
            late_dropped: 0,
            null_timestamps_dropped: 0,
            clock,
            assigned: Vec::new(),
            rows: Vec::new(),
            slots: Vec::new(),
        })
    }

    /// Records dropped because every window they belong to had fired.
    pub fn late_records_dropped(&self) -> u64 {
        self.late_dropped
    }

    /// Records dropped because their timestamp was null (event time).
    pub fn null_timestamps_dropped(&self) -> u64 {
        self.null_timestamps_dropped
    }

    /// The current watermark (`i64::MIN` before the first).
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// Number of windows not fired yet.
    pub fn open_windows(&self) -> usize {
        self.panes.len()
    }

    /// Calls `f` with the start of every window containing `t`, latest first.
    #[inline]
    fn for_each_window(size: i64, slide: i64, t: i64, mut f: impl FnMut(i64)) {
        // The first window of times near i64::MIN starts before it: there is none.
        let Some(mut start) = t.checked_sub(t.rem_euclid(slide)) else { return };
        while i128::from(t) - i128::from(start) < i128::from(size) {
            f(start);
            match start.checked_sub(slide) {
                Some(s) => start = s,
                None => break,
            }
        }
    }

    fn channel(&mut self, channel: usize) -> &mut ChannelTime {
        if channel >= self.channels.len() {
            self.channels.resize(channel + 1, ChannelTime::START);
        }
        &mut self.channels[channel]
    }

    /// Assigns the rows of `batch` to windows (event time), filling `self.assigned`;
    /// returns the largest timestamp.
    fn assign_event_time(&mut self, batch: &RecordBatch, column: usize) -> Result<i64, TaskError> {
        let timestamps = as_type(batch.column(column), &DataType::Int64)?;
        let timestamps = timestamps.as_primitive::<Int64Type>();
        let nulls = timestamps.nulls().filter(|n| n.null_count() > 0);
        let (size, slide, watermark) = (self.size, self.slide, self.watermark);
        let mut max = i64::MIN;
        for (row, &t) in timestamps.values().iter().enumerate() {
            if nulls.is_some_and(|n| n.is_null(row)) {
                self.null_timestamps_dropped += 1;
                continue;
            }
            max = max.max(t);
            let (mut windows, mut accepted) = (0, 0);
            Self::for_each_window(size, slide, t, |start| {
                windows += 1;
                if start.saturating_add(size - 1) > watermark {
                    accepted += 1;
                    self.assigned.push((start, row as u32));
                }
            });
            if windows > 0 && accepted == 0 {
                self.late_dropped += 1;
            }
        }
        Ok(max)
    }

    /// Just after a rescaling restore (see [`LateFloors`]): drops the pairs of
    /// `self.assigned` (this batch's) whose window had fired for the row's key group before
    /// the checkpoint, counting rows left without windows as late.
    fn drop_late_by_floors(&mut self, batch: &RecordBatch) -> Result<(), TaskError> {
        let Some(floors) = self.floors.as_deref() else { return Ok(()) };
        let keys = self.encoder.encode(batch)?;
        let limits: Vec<i64> =
            keys.hashes().iter().map(|&h| floors.of_group(key_group_for_hash(h, floors.max_parallelism))).collect();
        let (mut had, mut kept) = (vec![false; limits.len()], vec![false; limits.len()]);
        let size = self.size;
        self.assigned.retain(|&(start, row)| {
            let row = row as usize;
            had[row] = true;
            let keep = start.saturating_add(size - 1) > limits[row];
            kept[row] |= keep;
            keep
        });
        self.late_dropped += had.iter().zip(&kept).filter(|&(&had, &kept)| had && !kept).count() as u64;
        Ok(())
    }

    /// Adds the rows in `self.assigned` to their windows' panes.
    fn add_assigned(&mut self, batch: &RecordBatch) -> Result<(), TaskError> {
        if self.assigned.is_empty() {
            return Ok(());
        }
        if !self.assigned.is_sorted_by_key(|&(start, _)| start) {
            // Pairs are distinct, so this order is deterministic: by window, then by row.
            self.assigned.sort_unstable();
        }
        let keys = self.encoder.encode(batch)?;
        let inputs = self.template.inputs(batch)?;
        let mut i = 0;
        while i < self.assigned.len() {
            let start = self.assigned[i].0;
            let run = self.assigned[i..].iter().take_while(|&&(s, _)| s == start).count();
            let pane = match self.panes.entry(start) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(
                    self.pool.pop().unwrap_or_else(|| Pane { keys: KeyMap::new(), accs: self.template.clone() }),
                ),
            };
            self.rows.clear();
            self.slots.clear();
            for &(_, row) in &self.assigned[i..i + run] {
                self.rows.push(row);
                self.slots.push(pane.keys.intern(keys.hash(row as usize), keys.key(row as usize)).0);
            }
            pane.accs.grow(pane.keys.len());
            pane.accs.update(&self.rows, &self.slots, &inputs, None)?;
            i += run;
        }
        self.assigned.clear();
        Ok(())
    }

    /// Fires (emits and drops) every window whose last timestamp is at most `limit`, in
    /// order of their ends.
    fn fire_until(&mut self, limit: i64, out: &mut dyn Collector) -> Result<(), TaskError> {
        let (size, mut batch) = (self.size, None);
        while let Some(entry) = self.panes.first_entry() {
            let start = *entry.key();
            if start.saturating_add(size - 1) > limit {
                break;
            }
            let mut pane = entry.remove();
            let output = batch.get_or_insert_with(|| OutputBuilder::new(self));
            output.append(start, start.saturating_add(size), &pane)?;
            if output.rows >= OUTPUT_BATCH_ROWS {
                out.collect(output.finish(self)?)?;
            }
            if self.pool.len() < PANE_POOL {
                pane.keys.clear();
                pane.accs.clear();
                self.pool.push(pane);
            }
        }
        if let Some(mut output) = batch.filter(|b| b.rows > 0) {
            out.collect(output.finish(self)?)?;
        }
        Ok(())
    }

    /// Recomputes the combined watermark; when it advanced, fires windows (event time)
    /// and emits it.
    fn advance_watermark(&mut self, out: &mut dyn Collector) -> Result<(), TaskError> {
        let lag = match self.time {
            Time::Event { max_out_of_orderness, .. } => Some(max_out_of_orderness),
            Time::Processing => None,
        };
        let combined = self
            .channels
            .iter()
            .map(|c| match lag {
                Some(lag) => c.received_watermark.max(c.max_timestamp.saturating_sub(lag).saturating_sub(1)),
                None => c.received_watermark,
            })
            .min()
            .unwrap_or(i64::MIN);
        if combined <= self.watermark {
            return Ok(());
        }
        self.watermark = combined;
        if self.floors.as_ref().is_some_and(|f| combined >= f.max) {
            self.floors = None;
        }
        if lag.is_some() {
            self.fire_until(combined, out)?;
        }
        out.emit_watermark(combined)
    }
}

impl WindowOperator {
    /// How far windows have fired, as [`WINDOW_WATERMARK_STATE`] elements for the key
    /// groups `range`: one element, or after a rescaling restore one per run of key groups
    /// with the same floor. None while nothing has fired.
    fn floor_elements(&self, range: KeyGroupRange) -> Vec<Vec<u8>> {
        let Some(floors) = &self.floors else {
            return if self.watermark == i64::MIN || range.is_empty() {
                Vec::new()
            } else {
                vec![encode_floor(range.start, range.end, self.watermark)]
            };
        };
        let mut elements = Vec::new();
        let mut run: Option<(u32, u32, i64)> = None;
        for key_group in range.iter() {
            let floor = floors.of_group(key_group).max(self.watermark);
            match &mut run {
                Some((_, end, f)) if *f == floor => *end = key_group,
                _ => {
                    if let Some((start, end, f)) = run.take().filter(|r| r.2 > i64::MIN) {
                        elements.push(encode_floor(start, end, f));
                    }
                    run = Some((key_group, key_group, floor));
                }
            }
        }
        if let Some((start, end, f)) = run.filter(|r| r.2 > i64::MIN) {
            elements.push(encode_floor(start, end, f));
        }
        elements
    }

    /// Rebuilds the panes from keyed raw state [`WINDOW_STATE`]. Keys keep their old slot
    /// order within each window (ties between old subtasks broken by key), so windows fire
    /// their rows in the order an uninterrupted run would.
    fn restore_panes(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        struct Restored<'a> {
            start: i64,
            slot: u32,
            key: &'a [u8],
            hash: u64,
            accs: &'a [u8],
        }
        let max_parallelism = state.keyed.max_parallelism();
        let raw = state.keyed.raw_state(WINDOW_STATE);
        let mut entries = Vec::with_capacity(raw.len());
        for (key_group, map) in raw.groups() {
            for (k, v) in map {
                let (Some((start, key)), Some((slot, accs))) = (k.split_first_chunk::<8>(), v.split_first_chunk::<4>())
                else {
                    return Err(corrupt_state("truncated entry"));
                };
                let hash = hash_key(key);
                if key_group_for_hash(hash, max_parallelism) != key_group {
                    return Err(corrupt_state(format!("a key stored in key group {key_group} belongs to another one")));
                }
                let start = (u64::from_be_bytes(*start) ^ (1 << 63)) as i64;
                entries.push(Restored { start, slot: u32::from_le_bytes(*slot), key, hash, accs });
            }
        }
        entries.sort_unstable_by(|a, b| (a.start, a.slot, a.key).cmp(&(b.start, b.slot, b.key)));
        self.panes.clear();
        for window in entries.chunk_by(|a, b| a.start == b.start) {
            let mut pane = Pane { keys: KeyMap::new(), accs: self.template.clone() };
            for entry in window {
                if !pane.keys.intern(entry.hash, entry.key).1 {
                    return Err(corrupt_state("a key is stored twice in one window"));
                }
            }
            pane.accs.grow(pane.keys.len());
            for (slot, entry) in window.iter().enumerate() {
                pane.accs.read_slot(slot, entry.accs)?;
            }
            self.panes.insert(window[0].start, pane);
        }
        Ok(())
    }

    /// Restores how far event time had fired windows, per key group of this subtask: the
    /// watermark becomes the lowest floor, and while floors differ they decide lateness.
    fn restore_floors(&mut self, state: &StateStore) -> Result<(), TaskError> {
        self.watermark = i64::MIN;
        self.floors = None;
        let range = state.keyed.key_group_range();
        let Some(elements) = state.operator.get(WINDOW_WATERMARK_STATE) else { return Ok(()) };
        if range.is_empty() {
            return Ok(());
        }
        let mut floors = vec![i64::MIN; range.len()];
        for element in elements {
            let (start, end, watermark) = decode_floor(element)?;
            for key_group in KeyGroupRange::new(start, end).intersect(&range).iter() {
                let floor = &mut floors[(key_group - range.start) as usize];
                *floor = (*floor).max(watermark);
            }
        }
        let (min, max) = floors.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &f| (lo.min(f), hi.max(f)));
        self.watermark = min;
        if max > min {
            let max_parallelism = state.keyed.max_parallelism();
            self.floors = Some(Box::new(LateFloors { max_parallelism, first: range.start, floors, max }));
        }
        Ok(())
    }
}

/// The output rows of fired windows, built column by column.
struct OutputBuilder {
    keys: KeyColumnsBuilder,
    starts: Int64Builder,
    ends: Int64Builder,
    aggs: Vec<OutColumn>,
    rows: usize,
}

impl OutputBuilder {
    fn new(op: &WindowOperator) -> Self {
        let capacity = OUTPUT_BATCH_ROWS;
        Self {
            keys: op.encoder.columns_builder(capacity),
            starts: Int64Builder::with_capacity(capacity),
            ends: Int64Builder::with_capacity(capacity),
            aggs: op.template.output_columns(capacity),
            rows: 0,
        }
    }

    fn append(&mut self, start: i64, end: i64, pane: &Pane) -> Result<(), TaskError> {
        let n = pane.keys.len();
        self.keys.append_all(&pane.keys)?;
        self.starts.append_value_n(start, n);
        self.ends.append_value_n(end, n);
        pane.accs.emit_all(&mut self.aggs)?;
        self.rows += n;
        Ok(())
    }

    fn finish(&mut self, op: &WindowOperator) -> Result<RecordBatch, TaskError> {
        let mut columns = Vec::with_capacity(op.schema.fields().len());
        for (column, ty) in self.keys.finish().iter().zip(&op.key_types) {
            columns.push(as_type(column, ty)?);
        }
        columns.push(Arc::new(self.starts.finish()) as ArrayRef);
        columns.push(Arc::new(self.ends.finish()) as ArrayRef);
        columns.extend(self.aggs.iter_mut().map(OutColumn::finish));
        self.rows = 0;
        Ok(RecordBatch::try_new(Arc::clone(&op.schema), columns)?)
    }
}

impl Operator for WindowOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        channel: usize,
        batch: RecordBatch,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match self.time {
            Time::Processing => {
                let now = (self.clock)();
                let mut starts = Vec::with_capacity(1);
                Self::for_each_window(self.size, self.slide, now, |s| starts.push(s));
                for &start in starts.iter().rev() {
                    self.assigned.extend((0..batch.num_rows() as u32).map(|row| (start, row)));
                }
                self.add_assigned(&batch)
            }
            Time::Event { column, .. } => {
                let max = self.assign_event_time(&batch, column)?;
                if self.floors.is_some() {
                    self.drop_late_by_floors(&batch)?;
                }
                self.add_assigned(&batch)?;
                let state = self.channel(channel);
                state.max_timestamp = state.max_timestamp.max(max);
                self.advance_watermark(out)
            }
        }
    }

    fn process_watermark(
        &mut self,
        _input: usize,
        channel: usize,
        watermark: i64,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        let state = self.channel(channel);
        state.received_watermark = state.received_watermark.max(watermark);
        self.advance_watermark(out)
    }

    fn on_processing_time(&mut self, now_ms: i64, out: &mut dyn Collector) -> Result<(), TaskError> {
        match self.time {
            Time::Processing => self.fire_until(now_ms, out),
            Time::Event { .. } => Ok(()),
        }
    }

    fn finish(&mut self, out: &mut dyn Collector) -> Result<(), TaskError> {
        self.fire_until(i64::MAX, out)?;
        if matches!(self.time, Time::Event { .. }) && self.watermark < i64::MAX {
            self.watermark = i64::MAX;
            out.emit_watermark(i64::MAX)?;
        }
        Ok(())
    }

    /// Every open window's keys and accumulators into keyed raw state [`WINDOW_STATE`] and,
    /// in event time, how far windows have fired into [`WINDOW_WATERMARK_STATE`].
    fn snapshot_state(&mut self, _checkpoint_id: u64, state: &mut StateStore) -> Result<(), TaskError> {
        let max_parallelism = state.keyed.max_parallelism();
        let raw = state.keyed.raw_state(WINDOW_STATE);
        let range = raw.range();
        let mut value = Vec::new();
        for (&start, pane) in &self.panes {
            for (id, key) in pane.keys.iter() {
                let key_group = pane.keys.key_group(id, max_parallelism);
                let map = raw.group_mut(key_group).ok_or_else(|| {
                    TaskError::fatal(format!(
                        "window key in key group {key_group}, outside this subtask's key groups {}..={}",
                        range.start, range.end
                    ))
                })?;
                value.clear();
                value.extend_from_slice(&id.to_le_bytes());
                pane.accs.write_slot(id as usize, &mut value);
                map.insert(window_state_key(start, key), value.as_slice().to_vec());
            }
        }
        if matches!(self.time, Time::Event { .. }) {
            let elements = self.floor_elements(range);
            if !elements.is_empty() {
                state
                    .operator
                    .list_state(WINDOW_WATERMARK_STATE, Redistribution::Union)
                    .map_err(|e| TaskError::fatal(e.to_string()))?
                    .extend(elements);
            }
        }
        Ok(())
    }

    /// Rebuilds the open windows from the key groups `state` holds; in event time also how
    /// far windows had fired (per-channel watermarks start over, as in Flink). Processing
    /// time windows whose end passed meanwhile fire at the next processing-time tick.
    fn restore_state(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        self.restore_panes(state)?;
        match self.time {
            Time::Event { .. } => self.restore_floors(state),
            Time::Processing => Ok(()),
        }
    }

    fn late_records_dropped(&self) -> Option<u64> {
        Some(self.late_dropped)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Instant;

    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::Float64Type;

    use std::collections::BTreeMap;

    use super::super::aggregate::tests::{
        checkpoint, context, input_batch, restore, route, rows_by_key, spec, Discard, Sink, MAX_PARALLELISM,
    };
    use super::super::keyed::subtask_for_hash;
    use super::*;

    fn ints(values: &[i64]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    /// The output rows as (key, start, end, aggregates...) with integer aggregates.
    fn rows(sink: &Sink) -> Vec<Vec<i64>> {
        let mut rows = Vec::new();
        for batch in &sink.batches {
            for r in 0..batch.num_rows() {
                rows.push(batch.columns().iter().map(|c| c.as_primitive::<Int64Type>().value(r)).collect::<Vec<i64>>());
            }
        }
        rows
    }

    fn event_spec(extra: &str) -> OperatorSpec {
        spec(
            r#"{"k": "integer", "ts": "integer", "v": "integer"}"#,
            &format!(
                r#""op": "window", "key": "k", "time": "event", "timestamp_field": "ts", {extra}
                    "aggs": {{"n": "count()", "total": "sum(v)"}}"#
            ),
        )
    }

    fn batch(spec: &OperatorSpec, k: &[i64], ts: &[i64]) -> RecordBatch {
        let v: Vec<i64> = ts.iter().map(|t| t * 10).collect();
        input_batch(spec, vec![ints(k), ints(ts), ints(&v)])
    }

    #[test]
    fn window_assignment_floors() {
        let starts = |size, slide, t| {
            let mut v = Vec::new();
            WindowOperator::for_each_window(size, slide, t, |s| v.push(s));
            v
        };
        assert_eq!(starts(10, 10, 0), [0]);
        assert_eq!(starts(10, 10, 9), [0]);
        assert_eq!(starts(10, 10, -1), [-10]);
        assert_eq!(starts(10, 10, -10), [-10]);
        assert_eq!(starts(10, 5, 12), [10, 5]);
        assert_eq!(starts(10, 5, -3), [-5, -10]);
        assert_eq!(starts(10, 3, 10), [9, 6, 3]);
        assert_eq!(starts(5, 10, 7), Vec::<i64>::new(), "in a gap between windows");
        assert_eq!(starts(5, 10, 3), [0]);
        assert_eq!(starts(10, 10, i64::MIN), Vec::<i64>::new());
        assert_eq!(starts(8, 8, i64::MIN), [i64::MIN]);
        assert_eq!(starts(10, 10, i64::MAX).len(), 1);
    }

    #[test]
    fn tumbling_event_time_over_two_channels() {
        let spec = event_spec(r#""size": "10 ms","#);
        let mut op = WindowOperator::new(&spec, &context(2)).unwrap();
        let mut sink = Sink::default();
        op.process_batch(0, 0, batch(&spec, &[1, 2, 1], &[1, 5, 12]), &mut sink).unwrap();
        // Channel 1 has seen nothing: no watermark, nothing fires.
        assert!(sink.batches.is_empty() && sink.watermarks.is_empty());
        op.process_batch(0, 1, batch(&spec, &[1], &[3]), &mut sink).unwrap();
        assert_eq!(op.current_watermark(), 2, "min(12, 3) - 1");
        assert!(sink.batches.is_empty());
        assert_eq!(sink.watermarks, [2]);
        op.process_batch(0, 1, batch(&spec, &[2], &[10]), &mut sink).unwrap();
        // min(12, 10) - 1 = 9 >= end - 1 of [0, 10).
        assert_eq!(sink.watermarks, [2, 9]);
        assert_eq!(rows(&sink), vec![vec![1, 0, 10, 2, 40], vec![2, 0, 10, 1, 50]]);
        op.finish(&mut sink).unwrap();
        assert_eq!(&rows(&sink)[2..], [vec![1, 10, 20, 1, 120], vec![2, 10, 20, 1, 100]]);
        assert_eq!(sink.watermarks.last(), Some(&i64::MAX));
        assert_eq!(op.open_windows(), 0);
    }

    #[test]
    fn received_watermarks_and_out_of_orderness() {
        let spec = event_spec(r#""size": "10 ms", "max_out_of_orderness": "5 ms","#);
        let mut op = WindowOperator::new(&spec, &context(1)).unwrap();
        let mut sink = Sink::default();
        op.process_batch(0, 0, batch(&spec, &[1, 1], &[2, 14]), &mut sink).unwrap();
        assert_eq!(op.current_watermark(), 8, "14 - 5 - 1");
        assert!(sink.batches.is_empty());
        // Within the bound: not late.
        op.process_batch(0, 0, batch(&spec, &[1], &[9]), &mut sink).unwrap();
        op.process_batch(0, 0, batch(&spec, &[1], &[15]), &mut sink).unwrap();
        assert_eq!(rows(&sink), vec![vec![1, 0, 10, 2, 110]]);
        // A received watermark ahead of the data moves the channel on.
        op.process_watermark(0, 0, 19, &mut sink).unwrap();
        assert_eq!(rows(&sink).len(), 2);
        assert_eq!(rows(&sink)[1], vec![1, 10, 20, 2, 290]);
        // A lower one changes nothing.
        op.process_watermark(0, 0, 3, &mut sink).unwrap();
        assert_eq!(sink.watermarks, [8, 9, 19]);
    }

    #[test]
    fn late_records_are_dropped_and_counted() {
        let spec = event_spec(r#""size": "10 ms","#);
        let mut op = WindowOperator::new(&spec, &context(1)).unwrap();
        let mut sink = Sink::default();
        op.process_batch(0, 0, batch(&spec, &[1, 1], &[5, 25]), &mut sink).unwrap();
        assert_eq!(op.current_watermark(), 24);
        assert_eq!(rows(&sink), vec![vec![1, 0, 10, 1, 50]]);
        // 3 and 19: windows fired; 22 < watermark, but [20, 30) is open: kept.
        op.process_batch(0, 0, batch(&spec, &[1, 1, 1], &[3, 19, 22]), &mut sink).unwrap();
        assert_eq!(op.late_records_dropped(), 2);
        op.finish(&mut sink).unwrap();
        assert_eq!(rows(&sink)[1], vec![1, 20, 30, 2, 470]);
        assert_eq!(rows(&sink).len(), 2);
    }

    #[test]
    fn sliding_event_time() {
        let spec = event_spec(r#""size": "10 ms", "slide": "5 ms","#);
        let mut op = WindowOperator::new(&spec, &context(1)).unwrap();
        let mut sink = Sink::default();
        op.process_batch(0, 0, batch(&spec, &[1, 2, 1], &[3, 7, 12]), &mut sink).unwrap();
        op.finish(&mut sink).unwrap();
        assert_eq!(
            rows(&sink),
            vec![
                vec![1, -5, 5, 1, 30],
                vec![1, 0, 10, 1, 30],
                vec![2, 0, 10, 1, 70],
                vec![2, 5, 15, 1, 70],
                vec![1, 5, 15, 1, 120],
                vec![1, 10, 20, 1, 120],
            ]
        );
        // With watermark 11, [-5, 5) and [0, 10) had fired; 4 is late only for those two.
        let mut op = WindowOperator::new(&spec, &context(1)).unwrap();
        let mut sink = Sink::default();
        op.process_batch(0, 0, batch(&spec, &[1, 1], &[4, 12]), &mut sink).unwrap();
        assert_eq!(rows(&sink).len(), 2);
        op.process_batch(0, 0, batch(&spec, &[1, 1], &[4, 8]), &mut sink).unwrap();
        assert_eq!(op.late_records_dropped(), 1);
        op.finish(&mut sink).unwrap();
        assert_eq!(&rows(&sink)[2..], [vec![1, 5, 15, 2, 200], vec![1, 10, 20, 1, 120]]);
    }

    #[test]
    fn processing_time_windows() {
        let spec = spec(
            r#"{"user": "string", "v": "float"}"#,
            r#""op": "window", "key": "user", "size": "1 s", "slide": "500 ms", "aggs": {"n": "count()", "m": "max(v)"}"#,
        );
        let now = Arc::new(AtomicI64::new(10_200));
        let clock = Arc::clone(&now);
        let mut op =
            WindowOperator::with_clock(&spec, &context(1), Box::new(move || clock.load(Ordering::SeqCst))).unwrap();
        let mut sink = Sink::default();
        let batch = |users: &[&str], v: &[f64]| {
            input_batch(
                &spec,
                vec![Arc::new(StringArray::from(users.to_vec())), Arc::new(Float64Array::from(v.to_vec()))],
            )
        };
        // At 10200 a batch belongs to [9500, 10500) and [10000, 11000).
        op.process_batch(0, 0, batch(&["a", "b", "a"], &[1.0, 2.0, 3.0]), &mut sink).unwrap();
        op.on_processing_time(10_498, &mut sink).unwrap();
        assert!(sink.batches.is_empty());
        op.on_processing_time(10_499, &mut sink).unwrap();
        now.store(10_700, Ordering::SeqCst);
        op.process_batch(0, 0, batch(&["a"], &[0.5]), &mut sink).unwrap();
        let out = &sink.batches[0];
        assert_eq!(out.schema(), arrow_schema(spec.output_schema.as_ref().unwrap()));
        let users: Vec<_> = out.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(users, ["a", "b"]);
        assert_eq!(out.column(1).as_primitive::<Int64Type>().values().as_ref(), [9_500, 9_500]);
        assert_eq!(out.column(2).as_primitive::<Int64Type>().values().as_ref(), [10_500, 10_500]);
        assert_eq!(out.column(3).as_primitive::<Int64Type>().values().as_ref(), [2, 1]);
        assert_eq!(out.column(4).as_primitive::<Float64Type>().values().as_ref(), [3.0, 2.0]);
        // Upstream watermarks are forwarded (combined), nothing fires by them.
        op.process_watermark(0, 0, 50_000, &mut sink).unwrap();
        assert_eq!(sink.watermarks, [50_000]);
        assert_eq!(sink.batches.len(), 1);
        op.finish(&mut sink).unwrap();
        let counts: Vec<i64> =
            sink.batches[1..].iter().flat_map(|b| b.column(3).as_primitive::<Int64Type>().values().to_vec()).collect();
        assert_eq!(counts, [3, 1, 1], "[10000, 11000): a a b a; [10500, 11500): a");
    }

    /// Rows `range` of an event-time input in batches of 13: keys `n * 7 % 23`, timestamps
    /// mostly rising with `n`, every 11th row 4 ms behind (within the out-of-orderness
    /// bound) and, with `late`, every 17th row 40 ms behind (late).
    fn event_input(spec: &OperatorSpec, range: std::ops::Range<i64>, late: bool) -> Vec<RecordBatch> {
        let rows: Vec<i64> = range.collect();
        rows.chunks(13)
            .map(|chunk| {
                let k: Vec<i64> = chunk.iter().map(|n| n * 7 % 23).collect();
                let ts: Vec<i64> = chunk
                    .iter()
                    .map(|&n| match n {
                        n if late && n % 17 == 16 => n - 40,
                        n if n % 11 == 10 => n - 4,
                        n => n,
                    })
                    .collect();
                batch(spec, &k, &ts)
            })
            .collect()
    }

    fn feed(op: &mut WindowOperator, batches: &[RecordBatch], sink: &mut Sink) {
        for b in batches {
            op.process_batch(0, 0, b.clone(), sink).unwrap();
        }
    }

    #[test]
    fn event_time_snapshot_and_restore_match_an_uninterrupted_run() {
        const N: i64 = 600;
        for windows in [r#""size": "10 ms","#, r#""size": "20 ms", "slide": "5 ms","#] {
            let spec = event_spec(&format!(r#"{windows} "max_out_of_orderness": "5 ms","#));
            let input = event_input(&spec, 0..N, true);
            let mut reference = Sink::default();
            let mut op = WindowOperator::new(&spec, &context(1)).unwrap();
            feed(&mut op, &input, &mut reference);
            op.finish(&mut reference).unwrap();
            let expected_late = op.late_records_dropped();
            assert!(expected_late > 10, "the input has late records");
            assert!(rows(&reference).len() > 100);
            // Checkpoints between batches: before the first, after one, mid-stream, at the end.
            for split in [0, 1, 11, 23, input.len()] {
                let mut sink = Sink::default();
                let mut before = WindowOperator::new(&spec, &context(1)).unwrap();
                feed(&mut before, &input[..split], &mut sink);
                let dir = checkpoint(std::slice::from_mut(&mut before));
                let mut after = WindowOperator::new(&spec, &context(1)).unwrap();
                restore(&dir, &mut after, 0, 1);
                assert_eq!(after.open_windows(), before.open_windows());
                assert_eq!(after.current_watermark(), before.current_watermark());
                feed(&mut after, &input[split..], &mut sink);
                after.finish(&mut sink).unwrap();
                assert_eq!(rows(&sink), rows(&reference), "{windows} split at {split}");
                assert_eq!(sink.watermarks, reference.watermarks, "{windows} split at {split}");
                assert_eq!(before.late_records_dropped() + after.late_records_dropped(), expected_late);
            }
        }
    }

    /// Two subtasks each see the keys routed to them; their checkpoint is restored at
    /// parallelism 1 and 4 and the rest routed accordingly: every key gets the windows of
    /// one uninterrupted operator.
    #[test]
    fn restore_at_another_parallelism_fires_every_keys_windows() {
        const N: i64 = 700;
        let spec = event_spec(r#""size": "20 ms", "slide": "10 ms", "max_out_of_orderness": "5 ms","#);
        let split = 333;
        let mut reference = Sink::default();
        let mut op = WindowOperator::new(&spec, &context(1)).unwrap();
        feed(&mut op, &event_input(&spec, 0..N, false), &mut reference);
        op.finish(&mut reference).unwrap();
        assert_eq!(op.late_records_dropped(), 0);
        let mut expected = BTreeMap::new();
        rows_by_key(&reference.batches, &mut expected);
        assert_eq!(expected.len(), 23);

        let mut before: Vec<_> = (0..2).map(|_| WindowOperator::new(&spec, &context(1)).unwrap()).collect();
        let mut sinks = [Sink::default(), Sink::default()];
        for b in event_input(&spec, 0..split, false) {
            for (subtask, part) in route(&spec, &["k"], &b, 2) {
                before[subtask].process_batch(0, 0, part, &mut sinks[subtask]).unwrap();
            }
        }
        assert!(before.iter().all(|op| op.open_windows() > 0));
        assert!(sinks.iter().all(|sink| !sink.batches.is_empty()), "windows fired before the checkpoint");
        let mut prefix = BTreeMap::new();
        sinks.iter().for_each(|sink| rows_by_key(&sink.batches, &mut prefix));
        let dir = checkpoint(&mut before);

        for parallelism in [1, 4] {
            let mut after: Vec<_> = (0..parallelism)
                .map(|subtask| {
                    let mut op = WindowOperator::new(&spec, &context(1)).unwrap();
                    restore(&dir, &mut op, subtask as u32, parallelism as u32);
                    op
                })
                .collect();
            let mut sinks: Vec<_> = (0..parallelism).map(|_| Sink::default()).collect();
            for b in event_input(&spec, split..N, false) {
                for (subtask, part) in route(&spec, &["k"], &b, parallelism) {
                    after[subtask].process_batch(0, 0, part, &mut sinks[subtask]).unwrap();
                }
            }
            for (op, sink) in after.iter_mut().zip(&mut sinks) {
                op.finish(sink).unwrap();
                assert_eq!(op.late_records_dropped(), 0);
            }
            let mut actual = prefix.clone();
            sinks.iter().for_each(|sink| rows_by_key(&sink.batches, &mut actual));
            assert_eq!(actual, expected, "restored at parallelism {parallelism}");
        }
    }

    /// Old subtasks at different watermarks, restored into one: each key is judged late by
    /// its old owner's watermark, so every key gets what its uninterrupted owner would give.
    #[test]
    fn rescaled_restore_judges_lateness_by_each_key_groups_old_watermark() {
        let spec = event_spec(r#""size": "10 ms","#);
        let owner = |k: i64| subtask_for_hash(hash_key(&k.to_le_bytes()), MAX_PARALLELISM, 2);
        let a = (0..).find(|&k| owner(k) == 0).unwrap();
        let b = (0..).find(|&k| owner(k) == 1).unwrap();
        let before_input = [(a, 5), (a, 35), (b, 12)];
        let after_input = [(a, 25), (b, 25), (a, 36), (b, 14)];

        // The uninterrupted old subtasks.
        let run_old = |subtask: u32, input: &[(i64, i64)], op: &mut WindowOperator, sink: &mut Sink| {
            for &(k, ts) in input.iter().filter(|(k, _)| owner(*k) == subtask) {
                op.process_batch(0, 0, batch(&spec, &[k], &[ts]), sink).unwrap();
            }
        };
        let mut expected = BTreeMap::new();
        let mut expected_late = 0;
        let mut before = Vec::new();
        let mut prefix = BTreeMap::new();
        for subtask in 0..2 {
            let (mut op, mut sink) = (WindowOperator::new(&spec, &context(1)).unwrap(), Sink::default());
            run_old(subtask, &before_input, &mut op, &mut sink);
            rows_by_key(&sink.batches, &mut prefix);
            before.push(op);
            let (mut op, mut sink) = (WindowOperator::new(&spec, &context(1)).unwrap(), Sink::default());
            run_old(subtask, &before_input, &mut op, &mut sink);
            run_old(subtask, &after_input, &mut op, &mut sink);
            op.finish(&mut sink).unwrap();
            rows_by_key(&sink.batches, &mut expected);
            expected_late += op.late_records_dropped();
        }
        assert_eq!((before[0].current_watermark(), before[1].current_watermark()), (34, 11));
        assert_eq!(expected_late, 2, "(a, 25) for subtask 0, (b, 14) for subtask 1");
        let dir = checkpoint(&mut before);

        let mut op = WindowOperator::new(&spec, &context(1)).unwrap();
        restore(&dir, &mut op, 0, 1);
        assert_eq!(op.current_watermark(), 11, "the lowest old watermark");
        let mut sink = Sink::default();
        for &(k, ts) in &after_input {
            op.process_batch(0, 0, batch(&spec, &[k], &[ts]), &mut sink).unwrap();
        }
        op.finish(&mut sink).unwrap();
        assert_eq!(op.late_records_dropped(), expected_late);
        let mut actual = prefix;
        rows_by_key(&sink.batches, &mut actual);
        assert_eq!(actual, expected);
        assert_eq!(actual[&b.to_string()], [format!("{b}|10|20|1|120"), format!("{b}|20|30|1|250")]);
    }

    #[test]
    fn processing_time_windows_fire_after_a_restore() {
        let spec = spec(
            r#"{"user": "string", "v": "float"}"#,
            r#""op": "window", "key": "user", "size": "1 s", "slide": "500 ms", "aggs": {"n": "count()", "m": "max(v)"}"#,
        );
        let input = |users: &[&str], v: &[f64]| {
            input_batch(
                &spec,
                vec![Arc::new(StringArray::from(users.to_vec())), Arc::new(Float64Array::from(v.to_vec()))],
            )
        };
        let now = Arc::new(AtomicI64::new(10_200));
        let operator = || {
            let clock = Arc::clone(&now);
            WindowOperator::with_clock(&spec, &context(1), Box::new(move || clock.load(Ordering::SeqCst))).unwrap()
        };
        // Uninterrupted: a batch at 10200 and one at 10400; the clock jumps to 12000, where
        // the windows [9500, 10500) and [10000, 11000) fire; a batch then; finish.
        let run = |restart: bool| {
            now.store(10_200, Ordering::SeqCst);
            let mut sink = Sink::default();
            let mut op = operator();
            op.process_batch(0, 0, input(&["a", "b", "a"], &[1.0, 2.0, 3.0]), &mut sink).unwrap();
            if restart {
                let dir = checkpoint(std::slice::from_mut(&mut op));
                op = operator();
                restore(&dir, &mut op, 0, 1);
                assert_eq!(op.open_windows(), 2);
            }
            now.store(10_400, Ordering::SeqCst);
            op.process_batch(0, 0, input(&["b", "c"], &[5.0, 0.5]), &mut sink).unwrap();
            now.store(12_000, Ordering::SeqCst);
            op.on_processing_time(12_000, &mut sink).unwrap();
            let fired = sink.rows();
            op.process_batch(0, 0, input(&["a"], &[7.0]), &mut sink).unwrap();
            op.finish(&mut sink).unwrap();
            (fired, sink)
        };
        let (fired, expected) = run(false);
        assert_eq!(fired, 6, "a, b, c in each of the two windows");
        let (fired_after_restore, actual) = run(true);
        assert_eq!(fired_after_restore, fired);
        let batch_rows = |sink: &Sink| {
            let mut rows = BTreeMap::new();
            rows_by_key(&sink.batches, &mut rows);
            rows
        };
        assert_eq!(batch_rows(&actual), batch_rows(&expected));
        assert_eq!(expected.strings("user"), actual.strings("user"));
        assert_eq!(
            batch_rows(&expected)["a"],
            ["a|9500|10500|2|3.0", "a|10000|11000|2|3.0", "a|11500|12500|1|7.0", "a|12000|13000|1|7.0"]
        );
    }

    #[test]
    fn restoring_corrupt_window_state_is_an_error() {
        let spec = event_spec(r#""size": "10 ms","#);
        let mut op = WindowOperator::new(&spec, &context(1)).unwrap();
        op.process_batch(0, 0, batch(&spec, &[1, 2], &[3, 4]), &mut Sink::default()).unwrap();
        let mut store = StateStore::new(0, 1, MAX_PARALLELISM);
        op.snapshot_state(1, &mut store).unwrap();
        assert_eq!(store.keyed.raw_state(WINDOW_STATE).len(), 2);
        for (_, map) in store.keyed.raw_state(WINDOW_STATE).groups_mut() {
            for value in map.values_mut() {
                value.truncate(6);
            }
        }
        let err = WindowOperator::new(&spec, &context(1)).unwrap().restore_state(&mut store).unwrap_err();
        assert!(!err.retryable && err.message.contains("state"), "{err:?}");
    }

    /// Runs the B3 job shape through one window operator: keys n % 1000, ts n ms, 1 s
    /// tumbling count, one channel, batches of `batch` events.
    fn b3(n: i64, batch: i64, out: &mut dyn Collector) -> (WindowOperator, std::time::Duration) {
        let spec = spec(
            r#"{"key": "integer", "ts": "integer"}"#,
            r#""op": "window", "key": "key", "size": "1 s", "time": "event", "timestamp_field": "ts",
                "aggs": {"count": "count()"}"#,
        );
        let mut op = WindowOperator::new(&spec, &context(1)).unwrap();
        let mut busy = std::time::Duration::ZERO;
        for start in (0..n).step_by(batch as usize) {
            let end = (start + batch).min(n);
            let keys = Int64Array::from_iter_values((start..end).map(|i| i % 1000));
            let batch = input_batch(&spec, vec![Arc::new(keys), Arc::new(Int64Array::from_iter_values(start..end))]);
            let t = Instant::now();
            op.process_batch(0, 0, batch, out).unwrap();
            busy += t.elapsed();
        }
        let t = Instant::now();
        op.finish(out).unwrap();
        (op, busy + t.elapsed())
    }

    #[test]
    fn b3_like_totals() {
        let n = 25_500;
        let mut sink = Sink::default();
        b3(n, 777, &mut sink);
        let rows = rows(&sink);
        assert_eq!(rows.iter().map(|r| r[3]).sum::<i64>(), n);
        // Every (key, window) once: 1000 keys per full second, 500 in the last half second.
        assert_eq!(rows.len(), 25 * 1000 + 500);
        let expected_starts: i64 = (0..25).map(|w| w * 1000 * 1000).sum::<i64>() + 25_000 * 500;
        assert_eq!(rows.iter().map(|r| r[1]).sum::<i64>(), expected_starts);
        assert!(rows.iter().all(|r| r[2] == r[1] + 1000 && r[0] < 1000));
        assert!(rows.windows(2).all(|w| w[0][1] <= w[1][1]), "windows fire in order");
    }

    #[test]
    #[ignore = "benchmark: run with --release --ignored --nocapture"]
    fn b3_window_throughput() {
        const N: i64 = 20_000_000;
        let mut sink = Discard::default();
        let (op, busy) = b3(N, 8192, &mut sink);
        assert_eq!(sink.rows, N as usize);
        assert_eq!(sink.sum_of_last_column, N);
        assert_eq!(op.late_records_dropped(), 0);
        println!(
            "b3 tumbling window: {N} events in {:.3} s of operator time: {:.2} M events/s",
            busy.as_secs_f64(),
            N as f64 / busy.as_secs_f64() / 1e6
        );
    }
}
