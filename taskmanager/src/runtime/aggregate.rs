//! The `aggregate` operator (a running aggregate per key) and the accumulators it shares
//! with the window operator.
//!
//! [`Accumulators`] keeps the state of a list of aggregate functions for many slots (keys,
//! or keys of one window) in columns indexed by slot: one typed `Vec` per function, so an
//! update of a batch is one tight loop per function over `(row, slot)` pairs, and the
//! running or final values go straight into Arrow builders.
//!
//! [`AggregateOperator`] interns each row's key in a [`KeyMap`] (one hash lookup per row;
//! a key's id is its slot), updates the accumulators and emits, for a batch of N rows, one
//! batch of N rows: the key fields, then each aggregate's value just after that row.
//!
//! Null inputs are skipped (`count()` counts rows). Until a key has seen a value, `sum`,
//! `min`, `max` and `avg` emit null when their output field is nullable, else `0`, `0.0`
//! or `""`.
//!
//! Checkpoints: live state stays in the [`KeyMap`] and the accumulator columns; it is only
//! converted at snapshot and restore. [`AggregateOperator`] writes keyed raw state
//! [`AGGREGATE_STATE`]: per key group (of the key's hash, the same hash the
//! `HashPartitioner` routes by), `canonically encoded key → encoded slot`. A slot
//! ([`Accumulators::write_slot`]) is every function's state in order, each a tag byte (the
//! function kind: 1 count, 2 sum int, 3 sum float, 4/5 min/max int, 6/7 min/max float,
//! 8/9 min/max string, 10 avg int, 11 avg float; `0x80` set when an optional value is
//! present) followed by little-endian values: count `i64`; sum/min/max the value (`i64`,
//! `f64` bits, or `u32` length and UTF-8) only when present; avg int `i128` sum and `i64`
//! count; avg float `f64` sum and `i64` count. Restoring checks tags, lengths and each
//! key's key group, and rebuilds the key map from whatever key groups the store holds
//! (any parallelism).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Array, Int64Builder, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use flint_common::job::catalog::{AggFunc, AggSpec, OperatorKind, OperatorSpec};
use flint_common::job::{FieldType, Schema};

use super::keyed::{as_type, hash_key, key_group_for_hash, KeyEncoder, KeyMap};
use super::operator::{Collector, Operator, OperatorContext, TaskError};
use super::schema::{arrow_schema, arrow_type};
use crate::state::StateStore;

/// The keyed raw state of the aggregate operator: encoded key → encoded accumulators.
pub const AGGREGATE_STATE: &str = "aggregate";

/// One aggregate function as the accumulators run it.
#[derive(Debug)]
struct AggDef {
    /// The output field (for messages).
    name: String,
    /// The input field's position and type (`None` for `count()`).
    input: Option<(usize, FieldType)>,
    /// Whether the output field may be null (else "no value yet" is a zero).
    nullable: bool,
}

/// The state of one aggregate function for every slot.
#[derive(Debug, Clone)]
enum Acc {
    Count(Vec<i64>),
    SumInt { sums: Vec<i64>, seen: Vec<bool> },
    SumFloat { sums: Vec<f64>, seen: Vec<bool> },
    ExtremeInt { max: bool, values: Vec<i64>, seen: Vec<bool> },
    ExtremeFloat { max: bool, values: Vec<f64>, seen: Vec<bool> },
    ExtremeStr { max: bool, values: Vec<String>, seen: Vec<bool> },
    AvgInt { sums: Vec<i128>, counts: Vec<i64> },
    AvgFloat { sums: Vec<f64>, counts: Vec<i64> },
}

/// Where one aggregate's output values go.
pub(crate) enum OutColumn {
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
}

impl OutColumn {
    fn new(ty: FieldType, capacity: usize) -> OutColumn {
        match ty {
            FieldType::Float => OutColumn::Float(Float64Builder::with_capacity(capacity)),
            FieldType::String => OutColumn::Str(StringBuilder::with_capacity(capacity, capacity * 8)),
            _ => OutColumn::Int(Int64Builder::with_capacity(capacity)),
        }
    }

    fn ints(&mut self) -> Result<&mut Int64Builder, TaskError> {
        match self {
            OutColumn::Int(b) => Ok(b),
            _ => Err(mismatch("integer output")),
        }
    }

    fn floats(&mut self) -> Result<&mut Float64Builder, TaskError> {
        match self {
            OutColumn::Float(b) => Ok(b),
            _ => Err(mismatch("float output")),
        }
    }

    fn strings(&mut self) -> Result<&mut StringBuilder, TaskError> {
        match self {
            OutColumn::Str(b) => Ok(b),
            _ => Err(mismatch("string output")),
        }
    }

    /// The values appended since the last call.
    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            OutColumn::Int(b) => Arc::new(b.finish()),
            OutColumn::Float(b) => Arc::new(b.finish()),
            OutColumn::Str(b) => Arc::new(b.finish()),
        }
    }
}

fn mismatch(what: &str) -> TaskError {
    TaskError::fatal(format!("aggregate state does not match its {what}"))
}

/// Appends "no value yet": null if the field allows it, else the type's zero.
trait AppendEmpty {
    fn append_empty(&mut self, nullable: bool);
}

impl AppendEmpty for Int64Builder {
    fn append_empty(&mut self, nullable: bool) {
        if nullable {
            self.append_null()
        } else {
            self.append_value(0)
        }
    }
}

impl AppendEmpty for Float64Builder {
    fn append_empty(&mut self, nullable: bool) {
        if nullable {
            self.append_null()
        } else {
            self.append_value(0.0)
        }
    }
}

impl AppendEmpty for StringBuilder {
    fn append_empty(&mut self, nullable: bool) {
        if nullable {
            self.append_null()
        } else {
            self.append_value("")
        }
    }
}

fn int_input(input: Option<&ArrayRef>) -> Result<&Int64Array, TaskError> {
    input.and_then(|a| a.as_primitive_opt::<Int64Type>()).ok_or_else(|| mismatch("integer input"))
}

fn float_input(input: Option<&ArrayRef>) -> Result<&Float64Array, TaskError> {
    input.and_then(|a| a.as_primitive_opt::<Float64Type>()).ok_or_else(|| mismatch("float input"))
}

fn str_input(input: Option<&ArrayRef>) -> Result<&StringArray, TaskError> {
    input.and_then(|a| a.as_string_opt::<i32>()).ok_or_else(|| mismatch("string input"))
}

/// Whether row `r` of `array` holds a value.
#[inline]
fn valid(nulls: Option<&arrow::buffer::NullBuffer>, r: usize) -> bool {
    nulls.is_none_or(|n| n.is_valid(r))
}

fn nulls_of(array: &dyn Array) -> Option<&arrow::buffer::NullBuffer> {
    array.nulls().filter(|n| n.null_count() > 0)
}

impl Acc {
    fn new(spec: &AggSpec, input: Option<FieldType>) -> Result<Acc, TaskError> {
        let max = spec.func == AggFunc::Max;
        Ok(match (spec.func, input) {
            (AggFunc::Count, _) => Acc::Count(Vec::new()),
            (AggFunc::Sum, Some(FieldType::Int)) => Acc::SumInt { sums: Vec::new(), seen: Vec::new() },
            (AggFunc::Sum, Some(FieldType::Float)) => Acc::SumFloat { sums: Vec::new(), seen: Vec::new() },
            (AggFunc::Min | AggFunc::Max, Some(FieldType::Int)) => {
                Acc::ExtremeInt { max, values: Vec::new(), seen: Vec::new() }
            }
            (AggFunc::Min | AggFunc::Max, Some(FieldType::Float)) => {
                Acc::ExtremeFloat { max, values: Vec::new(), seen: Vec::new() }
            }
            (AggFunc::Min | AggFunc::Max, Some(FieldType::String)) => {
                Acc::ExtremeStr { max, values: Vec::new(), seen: Vec::new() }
            }
            (AggFunc::Avg, Some(FieldType::Int)) => Acc::AvgInt { sums: Vec::new(), counts: Vec::new() },
            (AggFunc::Avg, Some(FieldType::Float)) => Acc::AvgFloat { sums: Vec::new(), counts: Vec::new() },
            (func, ty) => {
                let ty = ty.map_or_else(|| "no field".to_owned(), |t| format!("a {t} field"));
                return Err(TaskError::fatal(format!("aggregate '{}': cannot apply {func:?} to {ty}", spec.name)));
            }
        })
    }

    fn output_type(&self) -> FieldType {
        match self {
            Acc::Count(_) | Acc::SumInt { .. } | Acc::ExtremeInt { .. } => FieldType::Int,
            Acc::ExtremeStr { .. } => FieldType::String,
            _ => FieldType::Float,
        }
    }

    /// Grows to `len` slots; new slots have no values yet.
    fn grow(&mut self, len: usize) {
        match self {
            Acc::Count(counts) => counts.resize(len, 0),
            Acc::SumInt { sums, seen } => {
                sums.resize(len, 0);
                seen.resize(len, false);
            }
            Acc::SumFloat { sums, seen } => {
                sums.resize(len, 0.0);
                seen.resize(len, false);
            }
            Acc::ExtremeInt { values, seen, .. } => {
                values.resize(len, 0);
                seen.resize(len, false);
            }
            Acc::ExtremeFloat { values, seen, .. } => {
                values.resize(len, 0.0);
                seen.resize(len, false);
            }
            Acc::ExtremeStr { values, seen, .. } => {
                values.resize_with(len, String::new);
                seen.resize(len, false);
            }
            Acc::AvgInt { sums, counts } => {
                sums.resize(len, 0);
                counts.resize(len, 0);
            }
            Acc::AvgFloat { sums, counts } => {
                sums.resize(len, 0.0);
                counts.resize(len, 0);
            }
        }
    }

    fn clear(&mut self) {
        match self {
            Acc::Count(counts) => counts.clear(),
            Acc::SumInt { sums, seen } => {
                sums.clear();
                seen.clear();
            }
            Acc::SumFloat { sums, seen } => {
                sums.clear();
                seen.clear();
            }
            Acc::ExtremeInt { values, seen, .. } => {
                values.clear();
                seen.clear();
            }
            Acc::ExtremeFloat { values, seen, .. } => {
                values.clear();
                seen.clear();
            }
            Acc::ExtremeStr { values, seen, .. } => {
                values.clear();
                seen.clear();
            }
            Acc::AvgInt { sums, counts } => {
                sums.clear();
                counts.clear();
            }
            Acc::AvgFloat { sums, counts } => {
                sums.clear();
                counts.clear();
            }
        }
    }

    /// Adds row `rows[i]` of `input` to slot `slots[i]`, for every `i` in order; with `out`,
    /// appends the slot's value after each row.
    fn update(
        &mut self,
        def: &AggDef,
        rows: &[u32],
        slots: &[u32],
        input: Option<&ArrayRef>,
        out: Option<&mut OutColumn>,
    ) -> Result<(), TaskError> {
        let nullable = def.nullable;
        let pairs = rows.iter().zip(slots).map(|(&r, &s)| (r as usize, s as usize));
        match self {
            Acc::Count(counts) => {
                let mut out = out.map(OutColumn::ints).transpose()?;
                for &s in slots {
                    let c = &mut counts[s as usize];
                    *c += 1;
                    if let Some(b) = out.as_deref_mut() {
                        b.append_value(*c);
                    }
                }
            }
            Acc::SumInt { sums, seen } => {
                let (array, mut out) = (int_input(input)?, out.map(OutColumn::ints).transpose()?);
                let (values, nulls) = (array.values(), nulls_of(array));
                for (r, s) in pairs {
                    if valid(nulls, r) {
                        sums[s] = sums[s]
                            .checked_add(values[r])
                            .ok_or_else(|| TaskError::fatal(format!("integer overflow in aggregate '{}'", def.name)))?;
                        seen[s] = true;
                    }
                    if let Some(b) = out.as_deref_mut() {
                        if seen[s] {
                            b.append_value(sums[s])
                        } else {
                            b.append_empty(nullable)
                        }
                    }
                }
            }
            Acc::SumFloat { sums, seen } => {
                let (array, mut out) = (float_input(input)?, out.map(OutColumn::floats).transpose()?);
                let (values, nulls) = (array.values(), nulls_of(array));
                for (r, s) in pairs {
                    if valid(nulls, r) {
                        sums[s] += values[r];
                        seen[s] = true;
                    }
                    if let Some(b) = out.as_deref_mut() {
                        if seen[s] {
                            b.append_value(sums[s])
                        } else {
                            b.append_empty(nullable)
                        }
                    }
                }
            }
            Acc::ExtremeInt { max, values: acc, seen } => {
                let (array, mut out) = (int_input(input)?, out.map(OutColumn::ints).transpose()?);
                let (values, nulls, max) = (array.values(), nulls_of(array), *max);
                for (r, s) in pairs {
                    if valid(nulls, r) {
                        let v = values[r];
                        if !seen[s] {
                            acc[s] = v;
                            seen[s] = true;
                        } else if max {
                            acc[s] = acc[s].max(v);
                        } else {
                            acc[s] = acc[s].min(v);
                        }
                    }
                    if let Some(b) = out.as_deref_mut() {
                        if seen[s] {
                            b.append_value(acc[s])
                        } else {
                            b.append_empty(nullable)
                        }
                    }
                }
            }
            Acc::ExtremeFloat { max, values: acc, seen } => {
                let (array, mut out) = (float_input(input)?, out.map(OutColumn::floats).transpose()?);
                let (values, nulls, max) = (array.values(), nulls_of(array), *max);
                for (r, s) in pairs {
                    if valid(nulls, r) {
                        // f64::max/min skip NaN: the result is NaN only if every value was.
                        let v = values[r];
                        if !seen[s] {
                            acc[s] = v;
                            seen[s] = true;
                        } else if max {
                            acc[s] = acc[s].max(v);
                        } else {
                            acc[s] = acc[s].min(v);
                        }
                    }
                    if let Some(b) = out.as_deref_mut() {
                        if seen[s] {
                            b.append_value(acc[s])
                        } else {
                            b.append_empty(nullable)
                        }
                    }
                }
            }
            Acc::ExtremeStr { max, values: acc, seen } => {
                let (array, mut out) = (str_input(input)?, out.map(OutColumn::strings).transpose()?);
                let (nulls, max) = (nulls_of(array), *max);
                for (r, s) in pairs {
                    if valid(nulls, r) {
                        let v = array.value(r);
                        let current = &mut acc[s];
                        if !seen[s] || (max && v > current.as_str()) || (!max && v < current.as_str()) {
                            current.clear();
                            current.push_str(v);
                            seen[s] = true;
                        }
                    }
                    if let Some(b) = out.as_deref_mut() {
                        if seen[s] {
                            b.append_value(&acc[s])
                        } else {
                            b.append_empty(nullable)
                        }
                    }
                }
            }
            Acc::AvgInt { sums, counts } => {
                let (array, mut out) = (int_input(input)?, out.map(OutColumn::floats).transpose()?);
                let (values, nulls) = (array.values(), nulls_of(array));
                for (r, s) in pairs {
                    if valid(nulls, r) {
                        sums[s] += i128::from(values[r]);
                        counts[s] += 1;
                    }
                    if let Some(b) = out.as_deref_mut() {
                        if counts[s] > 0 {
                            b.append_value(sums[s] as f64 / counts[s] as f64)
                        } else {
                            b.append_empty(nullable)
                        }
                    }
                }
            }
            Acc::AvgFloat { sums, counts } => {
                let (array, mut out) = (float_input(input)?, out.map(OutColumn::floats).transpose()?);
                let (values, nulls) = (array.values(), nulls_of(array));
                for (r, s) in pairs {
                    if valid(nulls, r) {
                        sums[s] += values[r];
                        counts[s] += 1;
                    }
                    if let Some(b) = out.as_deref_mut() {
                        if counts[s] > 0 {
                            b.append_value(sums[s] / counts[s] as f64)
                        } else {
                            b.append_empty(nullable)
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The kind tag of this function in encoded slots (see [`Accumulators::write_slot`]).
    fn tag(&self) -> u8 {
        match self {
            Acc::Count(_) => 1,
            Acc::SumInt { .. } => 2,
            Acc::SumFloat { .. } => 3,
            Acc::ExtremeInt { max, .. } => 4 + u8::from(*max),
            Acc::ExtremeFloat { max, .. } => 6 + u8::from(*max),
            Acc::ExtremeStr { max, .. } => 8 + u8::from(*max),
            Acc::AvgInt { .. } => 10,
            Acc::AvgFloat { .. } => 11,
        }
    }

    /// Appends slot `s`'s state: the tag (with [`SEEN`] when a value is present), then
    /// the value's little-endian bytes (strings with a `u32` length prefix).
    fn write_slot(&self, s: usize, out: &mut Vec<u8>) {
        let tag = self.tag();
        let optional = |out: &mut Vec<u8>, seen: bool, bytes: [u8; 8]| {
            if seen {
                out.push(tag | SEEN);
                out.extend_from_slice(&bytes);
            } else {
                out.push(tag);
            }
        };
        match self {
            Acc::Count(counts) => {
                out.push(tag);
                out.extend_from_slice(&counts[s].to_le_bytes());
            }
            Acc::SumInt { sums: values, seen } | Acc::ExtremeInt { values, seen, .. } => {
                optional(out, seen[s], values[s].to_le_bytes())
            }
            Acc::SumFloat { sums: values, seen } | Acc::ExtremeFloat { values, seen, .. } => {
                optional(out, seen[s], values[s].to_bits().to_le_bytes())
            }
            Acc::ExtremeStr { values, seen, .. } => {
                if seen[s] {
                    out.push(tag | SEEN);
                    out.extend_from_slice(&(values[s].len() as u32).to_le_bytes());
                    out.extend_from_slice(values[s].as_bytes());
                } else {
                    out.push(tag);
                }
            }
            Acc::AvgInt { sums, counts } => {
                out.push(tag);
                out.extend_from_slice(&sums[s].to_le_bytes());
                out.extend_from_slice(&counts[s].to_le_bytes());
            }
            Acc::AvgFloat { sums, counts } => {
                out.push(tag);
                out.extend_from_slice(&sums[s].to_bits().to_le_bytes());
                out.extend_from_slice(&counts[s].to_le_bytes());
            }
        }
    }

    /// Sets slot `s` (which has no values yet) from what [`Acc::write_slot`] wrote.
    fn read_slot(&mut self, s: usize, r: &mut SlotReader<'_>) -> Result<(), TaskError> {
        let byte = r.u8()?;
        let (tag, seen_flag) = (byte & !SEEN, byte & SEEN != 0);
        if tag != self.tag() {
            return Err(corrupt_slot(format!("function tag {tag}, expected {}", self.tag())));
        }
        let always_present = matches!(self, Acc::Count(_) | Acc::AvgInt { .. } | Acc::AvgFloat { .. });
        if always_present && seen_flag {
            return Err(corrupt_slot(format!("unexpected flag on function tag {tag}")));
        }
        match self {
            Acc::Count(counts) => counts[s] = r.i64()?,
            Acc::SumInt { sums: values, seen } | Acc::ExtremeInt { values, seen, .. } => {
                if seen_flag {
                    values[s] = r.i64()?;
                    seen[s] = true;
                }
            }
            Acc::SumFloat { sums: values, seen } | Acc::ExtremeFloat { values, seen, .. } => {
                if seen_flag {
                    values[s] = f64::from_bits(r.i64()? as u64);
                    seen[s] = true;
                }
            }
            Acc::ExtremeStr { values, seen, .. } => {
                if seen_flag {
                    let len = r.u32()? as usize;
                    let bytes = r.take(len)?;
                    let value = std::str::from_utf8(bytes).map_err(|_| corrupt_slot("string is not UTF-8"))?;
                    values[s].clear();
                    values[s].push_str(value);
                    seen[s] = true;
                }
            }
            Acc::AvgInt { sums, counts } => {
                sums[s] = i128::from_le_bytes(r.take(16)?.try_into().expect("16 bytes"));
                counts[s] = r.i64()?;
            }
            Acc::AvgFloat { sums, counts } => {
                sums[s] = f64::from_bits(r.i64()? as u64);
                counts[s] = r.i64()?;
            }
        }
        Ok(())
    }

    /// Appends the value of every slot, in slot order.
    fn emit_all(&self, nullable: bool, out: &mut OutColumn) -> Result<(), TaskError> {
        fn extremes<T: Copy, B: AppendEmpty>(
            values: &[T],
            seen: &[bool],
            nullable: bool,
            b: &mut B,
            append: impl Fn(&mut B, T),
        ) {
            for (&v, &seen) in values.iter().zip(seen) {
                if seen {
                    append(b, v)
                } else {
                    b.append_empty(nullable)
                }
            }
        }
        match self {
            Acc::Count(counts) => out.ints()?.append_slice(counts),
            Acc::SumInt { sums, seen } | Acc::ExtremeInt { values: sums, seen, .. } => {
                extremes(sums, seen, nullable, out.ints()?, |b, v| b.append_value(v))
            }
            Acc::SumFloat { sums, seen } | Acc::ExtremeFloat { values: sums, seen, .. } => {
                extremes(sums, seen, nullable, out.floats()?, |b, v| b.append_value(v))
            }
            Acc::ExtremeStr { values, seen, .. } => {
                let b = out.strings()?;
                for (v, &seen) in values.iter().zip(seen) {
                    if seen {
                        b.append_value(v)
                    } else {
                        b.append_empty(nullable)
                    }
                }
            }
            Acc::AvgInt { sums, counts } => {
                let b = out.floats()?;
                for (&sum, &count) in sums.iter().zip(counts) {
                    if count > 0 {
                        b.append_value(sum as f64 / count as f64)
                    } else {
                        b.append_empty(nullable)
                    }
                }
            }
            Acc::AvgFloat { sums, counts } => {
                let b = out.floats()?;
                for (&sum, &count) in sums.iter().zip(counts) {
                    if count > 0 {
                        b.append_value(sum / count as f64)
                    } else {
                        b.append_empty(nullable)
                    }
                }
            }
        }
        Ok(())
    }
}

/// Set on the tag of an encoded optional value (`sum`, `min`, `max`) when it is present.
const SEEN: u8 = 0x80;

fn corrupt_slot(reason: impl std::fmt::Display) -> TaskError {
    TaskError::fatal(format!("corrupt or incompatible aggregate state: {reason}"))
}

/// Reads an encoded slot; running out of bytes is an error.
struct SlotReader<'a> {
    bytes: &'a [u8],
}

impl<'a> SlotReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TaskError> {
        if self.bytes.len() < n {
            return Err(corrupt_slot("truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, TaskError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, TaskError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn i64(&mut self) -> Result<i64, TaskError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

/// The state of a list of aggregate functions for slots `0, 1, ...`, one typed column per
/// function. Cloning an empty one is cheap (no allocation).
#[derive(Debug, Clone)]
pub(crate) struct Accumulators {
    defs: Arc<[AggDef]>,
    accs: Vec<Acc>,
}

impl Accumulators {
    /// Accumulators for `aggs` over records of schema `input`; `outputs` are the output
    /// fields of the aggregates, in order (their nullability is used).
    pub(crate) fn new(
        input: &Schema,
        aggs: &[AggSpec],
        outputs: &[flint_common::job::Field],
    ) -> Result<Self, TaskError> {
        if aggs.len() != outputs.len() {
            return Err(TaskError::fatal("the output schema does not match the aggregates"));
        }
        let mut defs = Vec::with_capacity(aggs.len());
        let mut accs = Vec::with_capacity(aggs.len());
        for (spec, field) in aggs.iter().zip(outputs) {
            let input = match &spec.field {
                None => None,
                Some(name) => Some(input.index_of(name).map(|i| (i, input.fields[i].ty)).ok_or_else(|| {
                    TaskError::fatal(format!("aggregate '{}': unknown input field '{name}'", spec.name))
                })?),
            };
            let acc = Acc::new(spec, input.map(|(_, ty)| ty))?;
            if field.name != spec.name || field.ty != acc.output_type() {
                return Err(TaskError::fatal(format!(
                    "aggregate '{}': output field '{}: {}' does not match",
                    spec.name, field.name, field.ty
                )));
            }
            defs.push(AggDef { name: spec.name.clone(), input, nullable: field.nullable });
            accs.push(acc);
        }
        Ok(Self { defs: defs.into(), accs })
    }

    /// Grows to `len` slots (never shrinks); new slots have no values yet.
    pub(crate) fn grow(&mut self, len: usize) {
        self.accs.iter_mut().for_each(|acc| acc.grow(len));
    }

    /// Removes every slot, keeping the allocated memory.
    pub(crate) fn clear(&mut self) {
        self.accs.iter_mut().for_each(Acc::clear);
    }

    /// The input column of each aggregate in `batch` (`None` for `count()`), as the type
    /// the accumulators read.
    pub(crate) fn inputs(&self, batch: &RecordBatch) -> Result<Vec<Option<ArrayRef>>, TaskError> {
        self.defs
            .iter()
            .map(|def| {
                def.input
                    .map(|(index, ty)| {
                        let column = batch.columns().get(index).ok_or_else(|| mismatch("input batch"))?;
                        as_type(column, &arrow_type(ty))
                    })
                    .transpose()
            })
            .collect()
    }

    /// Empty output columns for `capacity` values each.
    pub(crate) fn output_columns(&self, capacity: usize) -> Vec<OutColumn> {
        self.accs.iter().map(|acc| OutColumn::new(acc.output_type(), capacity)).collect()
    }

    /// Adds row `rows[i]` to slot `slots[i]` for every `i`, in order. With `outs` (from
    /// [`Accumulators::output_columns`]), appends each function's running value after
    /// every row.
    pub(crate) fn update(
        &mut self,
        rows: &[u32],
        slots: &[u32],
        inputs: &[Option<ArrayRef>],
        mut outs: Option<&mut [OutColumn]>,
    ) -> Result<(), TaskError> {
        debug_assert_eq!(rows.len(), slots.len());
        for (i, (acc, def)) in self.accs.iter_mut().zip(self.defs.iter()).enumerate() {
            let out = outs.as_deref_mut().map(|o| &mut o[i]);
            acc.update(def, rows, slots, inputs[i].as_ref(), out)?;
        }
        Ok(())
    }

    /// Appends the state of slot `slot` (every function in order; see the module comment).
    pub(crate) fn write_slot(&self, slot: usize, out: &mut Vec<u8>) {
        self.accs.iter().for_each(|acc| acc.write_slot(slot, out));
    }

    /// Sets slot `slot` (grown, without values yet) from `bytes`, as written by
    /// [`Accumulators::write_slot`] for the same functions; anything else is an error.
    pub(crate) fn read_slot(&mut self, slot: usize, bytes: &[u8]) -> Result<(), TaskError> {
        let mut r = SlotReader { bytes };
        for acc in &mut self.accs {
            acc.read_slot(slot, &mut r)?;
        }
        if r.bytes.is_empty() {
            Ok(())
        } else {
            Err(corrupt_slot(format!("{} trailing bytes", r.bytes.len())))
        }
    }

    /// Appends every slot's values (in slot order) to `outs`.
    pub(crate) fn emit_all(&self, outs: &mut [OutColumn]) -> Result<(), TaskError> {
        for ((acc, def), out) in self.accs.iter().zip(self.defs.iter()).zip(outs) {
            acc.emit_all(def.nullable, out)?;
        }
        Ok(())
    }
}

/// The output schema of a keyed operator, checked to start with the key fields as the
/// input has them.
pub(crate) fn keyed_output_schema(spec: &OperatorSpec, key: &[String]) -> Result<(Schema, Schema), TaskError> {
    let input = spec.input_schema.clone().ok_or_else(|| TaskError::fatal(format!("{}: no input schema", spec.id)))?;
    let output =
        spec.output_schema.clone().ok_or_else(|| TaskError::fatal(format!("{}: no output schema", spec.id)))?;
    for (i, name) in key.iter().enumerate() {
        let in_field = input.field(name);
        let out_field = output.fields.get(i);
        if in_field.is_none() || out_field.map(|f| (&f.name, f.ty)) != in_field.map(|f| (&f.name, f.ty)) {
            return Err(TaskError::fatal(format!("{}: key field '{name}' does not match the schemas", spec.id)));
        }
    }
    Ok((input, output))
}

/// A running aggregate per key: see the module comment.
pub struct AggregateOperator {
    schema: SchemaRef,
    encoder: KeyEncoder,
    /// The output types of the key columns.
    key_types: Vec<DataType>,
    keys: KeyMap,
    accs: Accumulators,
    /// Scratch: the slot of every row, and `0..n`.
    slots: Vec<u32>,
    rows: Vec<u32>,
}

impl AggregateOperator {
    pub fn new(spec: &OperatorSpec, _ctx: &OperatorContext) -> Result<Self, TaskError> {
        let OperatorKind::Aggregate { key, aggs } = &spec.kind else {
            return Err(TaskError::fatal(format!("{} is not an aggregate", spec.id)));
        };
        let (input, output) = keyed_output_schema(spec, key)?;
        if output.fields.len() != key.len() + aggs.len() {
            return Err(TaskError::fatal(format!("{}: the output schema does not match the aggregates", spec.id)));
        }
        let accs = Accumulators::new(&input, aggs, &output.fields[key.len()..])?;
        Ok(Self {
            schema: arrow_schema(&output),
            encoder: KeyEncoder::new(&input, key)?,
            key_types: output.fields[..key.len()].iter().map(|f| arrow_type(f.ty)).collect(),
            keys: KeyMap::new(),
            accs,
            slots: Vec::new(),
            rows: Vec::new(),
        })
    }

    /// Number of distinct keys seen.
    pub fn num_keys(&self) -> usize {
        self.keys.len()
    }

    /// The keyed state (for snapshots by key group).
    pub fn key_map(&self) -> &KeyMap {
        &self.keys
    }
}

impl Operator for AggregateOperator {
    fn process_batch(
        &mut self,
        _input: usize,
        _channel: usize,
        batch: RecordBatch,
        out: &mut dyn Collector,
    ) -> Result<(), TaskError> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let keys = self.encoder.encode(&batch)?;
        self.slots.clear();
        for row in 0..n {
            self.slots.push(self.keys.intern(keys.hash(row), keys.key(row)).0);
        }
        self.accs.grow(self.keys.len());
        if self.rows.len() < n {
            self.rows.extend(self.rows.len() as u32..n as u32);
        }
        let inputs = self.accs.inputs(&batch)?;
        let mut outs = self.accs.output_columns(n);
        self.accs.update(&self.rows[..n], &self.slots, &inputs, Some(&mut outs))?;
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for (&index, ty) in self.encoder.key_columns().iter().zip(&self.key_types) {
            columns.push(as_type(batch.column(index), ty)?);
        }
        columns.extend(outs.iter_mut().map(OutColumn::finish));
        out.collect(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// Every key's accumulators into keyed raw state [`AGGREGATE_STATE`] (see the module
    /// comment), under the key's key group.
    fn snapshot_state(&mut self, _checkpoint_id: u64, state: &mut StateStore) -> Result<(), TaskError> {
        let max_parallelism = state.keyed.max_parallelism();
        let raw = state.keyed.raw_state(AGGREGATE_STATE);
        let range = raw.range();
        // Key groups first, so every group's map is allocated once.
        let mut groups = Vec::with_capacity(self.keys.len());
        let mut sizes = vec![0usize; range.len()];
        for id in 0..self.keys.len() as u32 {
            let key_group = self.keys.key_group(id, max_parallelism);
            if !range.contains(key_group) {
                return Err(TaskError::fatal(format!(
                    "aggregate key in key group {key_group}, outside this subtask's key groups {}..={}",
                    range.start, range.end
                )));
            }
            sizes[(key_group - range.start) as usize] += 1;
            groups.push(key_group);
        }
        for ((_, map), size) in raw.groups_mut().zip(sizes) {
            map.reserve(size);
        }
        let mut value = Vec::new();
        for (id, key_group) in groups.into_iter().enumerate() {
            value.clear();
            self.accs.write_slot(id, &mut value);
            let map = raw.group_mut(key_group).expect("checked above");
            map.insert(self.keys.key(id as u32).to_vec(), value.as_slice().to_vec());
        }
        Ok(())
    }

    /// Rebuilds the keys and accumulators from whatever key groups `state` holds.
    fn restore_state(&mut self, state: &mut StateStore) -> Result<(), TaskError> {
        let max_parallelism = state.keyed.max_parallelism();
        let raw = state.keyed.raw_state(AGGREGATE_STATE);
        self.keys.clear();
        self.accs.clear();
        let mut values = Vec::with_capacity(raw.len());
        for (key_group, map) in raw.groups() {
            for (key, value) in map {
                let hash = hash_key(key);
                if key_group_for_hash(hash, max_parallelism) != key_group {
                    return Err(corrupt_slot(format!("a key stored in key group {key_group} belongs to another one")));
                }
                if !self.keys.intern(hash, key).1 {
                    return Err(corrupt_slot("a key is stored twice"));
                }
                values.push(value);
            }
        }
        self.accs.grow(self.keys.len());
        for (slot, value) in values.into_iter().enumerate() {
            self.accs.read_slot(slot, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use arrow::array::AsArray;
    use arrow::util::display::array_value_to_string;
    use flint_common::checkpoint_storage::{
        write_metadata_in, write_state_file_in, CheckpointMetadata, OperatorStateEntry,
    };
    use flint_common::ids::JobId;
    use flint_common::job::{load_job, Field};

    use super::*;
    use crate::runtime::keyed::HashPartitioner;
    use crate::runtime::partition::Partitioner;
    use crate::state::{decode_task_state, encode_task_state, restore_stores, OperatorStateSnapshot};

    /// Collects batches and watermarks.
    pub(crate) use crate::runtime::transforms::tests::VecCollector as Sink;

    /// Counts rows and drops batches.
    #[derive(Default)]
    pub(crate) struct Discard {
        pub rows: usize,
        pub sum_of_last_column: i64,
    }

    impl Collector for Discard {
        fn collect(&mut self, batch: RecordBatch) -> Result<(), TaskError> {
            self.rows += batch.num_rows();
            let last = batch.column(batch.num_columns() - 1).as_primitive::<Int64Type>();
            self.sum_of_last_column += last.values().iter().sum::<i64>();
            Ok(())
        }
        fn emit_watermark(&mut self, _: i64) -> Result<(), TaskError> {
            Ok(())
        }
    }

    pub(crate) fn context(channels: usize) -> OperatorContext {
        OperatorContext {
            job_name: "test".into(),
            operator_id: "op".into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            input_channels: vec![channels],
            wasm_limits: flint_wasm::Limits::default(),
        }
    }

    /// The spec of operator `id` in a job whose source is a `source.file` JSON reader of
    /// `fields`, followed by `op` (a JSON operator object without id and inputs).
    pub(crate) fn spec(fields: &str, op: &str) -> OperatorSpec {
        let job = format!(
            r#"{{"flint": 1, "name": "t", "operators": [
                {{"id": "src", "op": "source.file", "path": "/x", "format": "json", "schema": {fields}}},
                {{"id": "op", "inputs": ["src"], {op}}},
                {{"id": "out", "op": "sink.blackhole", "inputs": ["op"]}}]}}"#
        );
        let job = load_job(&job, 1).unwrap_or_else(|e| panic!("{e:?}"));
        job.operators.into_iter().find(|o| o.spec.id == "op").unwrap().spec
    }

    pub(crate) fn input_batch(spec: &OperatorSpec, columns: Vec<ArrayRef>) -> RecordBatch {
        RecordBatch::try_new(arrow_schema(spec.input_schema.as_ref().unwrap()), columns).unwrap()
    }

    fn strings(values: &[&str]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    fn ints(values: &[i64]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    fn floats(values: &[f64]) -> ArrayRef {
        Arc::new(Float64Array::from(values.to_vec()))
    }

    fn int_column(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
        batch.column_by_name(name).unwrap().as_primitive::<Int64Type>().iter().collect()
    }

    fn float_column(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
        batch.column_by_name(name).unwrap().as_primitive::<Float64Type>().iter().collect()
    }

    fn string_column(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        batch.column_by_name(name).unwrap().as_string::<i32>().iter().map(|s| s.map(str::to_owned)).collect()
    }

    #[test]
    fn running_values_within_and_across_batches() {
        let spec = spec(
            r#"{"k": "string", "i": "integer", "f": "float"}"#,
            r#""op": "aggregate", "key": ["k"], "aggs": {"c": "count()", "si": "sum(i)", "sf": "sum(f)",
                "lo": "min(i)", "hi": "max(f)", "first": "min(k)", "last": "max(k)", "ai": "avg(i)", "af": "avg(f)"}"#,
        );
        let mut op = AggregateOperator::new(&spec, &context(1)).unwrap();
        let mut sink = Sink::default();
        let batch = input_batch(
            &spec,
            vec![strings(&["a", "b", "a", "a"]), ints(&[5, 1, -2, 9]), floats(&[0.5, 2.0, 1.5, -1.0])],
        );
        op.process_batch(0, 0, batch, &mut sink).unwrap();
        let batch = input_batch(&spec, vec![strings(&["b", "a"]), ints(&[3, 4]), floats(&[4.0, 8.0])]);
        op.process_batch(0, 0, batch, &mut sink).unwrap();
        assert_eq!(sink.batches.len(), 2);
        let out = arrow::compute::concat_batches(&sink.batches[0].schema(), &sink.batches).unwrap();
        assert_eq!(out.schema(), arrow_schema(spec.output_schema.as_ref().unwrap()));
        assert_eq!(string_column(&out, "k").into_iter().flatten().collect::<Vec<_>>(), ["a", "b", "a", "a", "b", "a"]);
        let some = |v: &[i64]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        let somef = |v: &[f64]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        assert_eq!(int_column(&out, "c"), some(&[1, 1, 2, 3, 2, 4]));
        assert_eq!(int_column(&out, "si"), some(&[5, 1, 3, 12, 4, 16]));
        assert_eq!(float_column(&out, "sf"), somef(&[0.5, 2.0, 2.0, 1.0, 6.0, 9.0]));
        assert_eq!(int_column(&out, "lo"), some(&[5, 1, -2, -2, 1, -2]));
        assert_eq!(float_column(&out, "hi"), somef(&[0.5, 2.0, 1.5, 1.5, 4.0, 8.0]));
        assert_eq!(
            string_column(&out, "first").into_iter().flatten().collect::<Vec<_>>(),
            ["a", "b", "a", "a", "b", "a"]
        );
        assert_eq!(float_column(&out, "ai"), somef(&[5.0, 1.0, 1.5, 4.0, 2.0, 4.0]));
        assert_eq!(float_column(&out, "af"), somef(&[0.5, 2.0, 1.0, 1.0 / 3.0, 3.0, 9.0 / 4.0]));
        assert_eq!(op.num_keys(), 2);
    }

    #[test]
    fn string_extremes_and_nulls() {
        let spec = spec(
            r#"{"k": "integer", "s": "string", "i": "integer"}"#,
            r#""op": "aggregate", "key": "k", "aggs": {"lo": "min(s)", "hi": "max(s)", "n": "count()", "t": "sum(i)"}"#,
        );
        let mut op = AggregateOperator::new(&spec, &context(1)).unwrap();
        let mut sink = Sink::default();
        let batch = input_batch(
            &spec,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(1), None, Some(1), None])),
                Arc::new(StringArray::from(vec![None, Some("m"), Some("z"), Some("c"), Some("a")])),
                Arc::new(Int64Array::from(vec![None, Some(2), Some(3), None, Some(4)])),
            ],
        );
        op.process_batch(0, 0, batch, &mut sink).unwrap();
        let out = &sink.batches[0];
        // Null keys are one key; a key without values yet gets "" / 0 (non-nullable outputs).
        assert_eq!(int_column(out, "k"), vec![Some(1), Some(1), None, Some(1), None]);
        assert_eq!(string_column(out, "lo").into_iter().flatten().collect::<Vec<_>>(), ["", "m", "z", "c", "a"]);
        assert_eq!(string_column(out, "hi").into_iter().flatten().collect::<Vec<_>>(), ["", "m", "z", "m", "z"]);
        assert_eq!(int_column(out, "n"), vec![Some(1), Some(2), Some(1), Some(3), Some(2)]);
        assert_eq!(int_column(out, "t"), vec![Some(0), Some(2), Some(3), Some(2), Some(7)]);
    }

    #[test]
    fn multi_column_keys() {
        let spec = spec(
            r#"{"a": "string", "b": "integer", "v": "float"}"#,
            r#""op": "aggregate", "key": ["b", "a"], "aggs": {"n": "count()", "m": "max(v)"}"#,
        );
        let mut op = AggregateOperator::new(&spec, &context(1)).unwrap();
        let mut sink = Sink::default();
        let batch = input_batch(
            &spec,
            vec![strings(&["x", "x", "y", "x", "y"]), ints(&[1, 2, 1, 1, 1]), floats(&[1.0, 2.0, 3.0, 0.5, 9.0])],
        );
        op.process_batch(0, 0, batch, &mut sink).unwrap();
        let out = &sink.batches[0];
        assert_eq!(out.schema().field(0).name(), "b");
        assert_eq!(out.schema().field(1).name(), "a");
        assert_eq!(int_column(out, "n"), vec![Some(1), Some(1), Some(1), Some(2), Some(2)]);
        assert_eq!(float_column(out, "m"), vec![Some(1.0), Some(2.0), Some(3.0), Some(1.0), Some(9.0)]);
        assert_eq!(op.num_keys(), 3);
    }

    #[test]
    fn sum_overflow_fails_the_task() {
        let spec =
            spec(r#"{"k": "integer", "i": "integer"}"#, r#""op": "aggregate", "key": "k", "aggs": {"t": "sum(i)"}"#);
        let mut op = AggregateOperator::new(&spec, &context(1)).unwrap();
        let batch = input_batch(&spec, vec![ints(&[1, 1]), ints(&[i64::MAX, 1])]);
        let err = op.process_batch(0, 0, batch, &mut Sink::default()).unwrap_err();
        assert!(!err.retryable && err.message.contains("overflow"), "{err:?}");
    }

    #[test]
    fn nullable_outputs_get_nulls_until_a_value() {
        // The catalog makes aggregate outputs non-nullable; a nullable one gets nulls.
        let input = Schema::new(vec![Field::new("k", FieldType::Int), Field::nullable("v", FieldType::Int)]);
        let aggs = [AggSpec { name: "m".into(), func: AggFunc::Min, field: Some("v".into()), ty: FieldType::Int }];
        let mut accs = Accumulators::new(&input, &aggs, &[Field::nullable("m", FieldType::Int)]).unwrap();
        accs.grow(1);
        let values: ArrayRef = Arc::new(Int64Array::from(vec![None, Some(4), Some(6)]));
        let mut outs = accs.output_columns(3);
        accs.update(&[0, 1, 2], &[0, 0, 0], &[Some(values)], Some(&mut outs)).unwrap();
        let out = outs[0].finish();
        assert_eq!(out.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), vec![None, Some(4), Some(4)]);
        accs.grow(2);
        let mut outs = accs.output_columns(2);
        accs.emit_all(&mut outs).unwrap();
        assert_eq!(outs[0].finish().as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), vec![Some(4), None]);
        accs.clear();
        let mut outs = accs.output_columns(0);
        accs.emit_all(&mut outs).unwrap();
        assert_eq!(outs[0].finish().len(), 0);
    }

    pub(crate) const MAX_PARALLELISM: u32 = 128;

    /// A completed checkpoint directory, removed when dropped.
    pub(crate) struct CheckpointDir(PathBuf);

    impl CheckpointDir {
        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for CheckpointDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    /// Checkpoint 1 of operator "op" whose subtask `i` of `ops.len()` is `ops[i]`: each
    /// snapshots into a fresh store, which goes through the task state file format into a
    /// state file; `_metadata` lists them with their key group ranges.
    pub(crate) fn checkpoint<O: Operator>(ops: &mut [O]) -> CheckpointDir {
        let root = std::env::temp_dir().join(format!("flint-op-state-{}", uuid::Uuid::new_v4().simple()));
        let dir = CheckpointDir(root.join("chk-1"));
        std::fs::create_dir_all(dir.path()).unwrap();
        let parallelism = ops.len() as u32;
        let mut meta = CheckpointMetadata::new(JobId::generate(), 1, 0, false);
        for (subtask, op) in ops.iter_mut().enumerate() {
            let subtask = subtask as u32;
            let mut store = StateStore::new(subtask, parallelism, MAX_PARALLELISM);
            op.snapshot_state(1, &mut store).unwrap();
            let range = store.keyed.key_group_range();
            let (keyed, operator) = store.snapshot();
            let snapshot = OperatorStateSnapshot { operator_id: "op".into(), keyed, operator };
            let bytes = encode_task_state(std::slice::from_ref(&snapshot));
            assert_eq!(decode_task_state(&bytes).unwrap(), vec![snapshot]);
            let handle = write_state_file_in(dir.path(), &format!("op-{subtask}"), &bytes).unwrap();
            meta.operators.push(OperatorStateEntry {
                operator_id: "op".into(),
                subtask,
                parallelism,
                max_parallelism: MAX_PARALLELISM,
                handles: vec![handle],
                key_group_range: Some((range.start, range.end)),
            });
        }
        write_metadata_in(dir.path(), &meta).unwrap();
        dir
    }

    /// Restores `op` as subtask `subtask` of `parallelism` from `dir`.
    pub(crate) fn restore(dir: &CheckpointDir, op: &mut dyn Operator, subtask: u32, parallelism: u32) {
        let mut stores =
            restore_stores(dir.path(), &["op".to_string()], subtask, parallelism, MAX_PARALLELISM).unwrap();
        op.restore_state(&mut stores[0]).unwrap();
    }

    /// `batch` split as a hash edge on `key` to `parallelism` consumers splits it.
    pub(crate) fn route(
        spec: &OperatorSpec,
        key: &[&str],
        batch: &RecordBatch,
        parallelism: usize,
    ) -> Vec<(usize, RecordBatch)> {
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        let mut partitioner = HashPartitioner::new(spec.input_schema.as_ref().unwrap(), &key, MAX_PARALLELISM).unwrap();
        let mut parts = Vec::new();
        partitioner.partition(batch, parallelism, &mut parts).unwrap();
        parts
    }

    /// The output rows (every value as text, `|`-separated) grouped by the first column.
    pub(crate) fn rows_by_key(batches: &[RecordBatch], into: &mut BTreeMap<String, Vec<String>>) {
        for batch in batches {
            for row in 0..batch.num_rows() {
                let values: Vec<String> =
                    batch.columns().iter().map(|c| array_value_to_string(c, row).unwrap()).collect();
                into.entry(values[0].clone()).or_default().push(values.join("|"));
            }
        }
    }

    fn checkpoint_spec() -> OperatorSpec {
        spec(
            r#"{"k": "string", "i": "integer", "f": "float", "s": "string"}"#,
            r#""op": "aggregate", "key": "k", "aggs": {"c": "count()", "si": "sum(i)", "sf": "sum(f)",
                "lo": "min(i)", "hi": "max(i)", "flo": "min(f)", "fhi": "max(f)", "first": "min(s)",
                "last": "max(s)", "ai": "avg(i)", "af": "avg(f)"}"#,
        )
    }

    /// Rows `range` of a deterministic input with 41 keys (and a null key) and nulls in
    /// every value column, in batches of 17.
    fn checkpoint_input(spec: &OperatorSpec, range: std::ops::Range<i64>) -> Vec<RecordBatch> {
        let rows: Vec<i64> = range.collect();
        rows.chunks(17)
            .map(|chunk| {
                let k: StringArray = chunk.iter().map(|&n| (n % 53 != 0).then(|| format!("k{}", n * 7 % 41))).collect();
                let i: Int64Array = chunk.iter().map(|&n| (n % 5 != 0).then_some(n * 3 - 100)).collect();
                let f: Float64Array = chunk.iter().map(|&n| (n % 7 != 0).then_some(n as f64 * 0.25 - 3.0)).collect();
                let s: StringArray = chunk.iter().map(|&n| (n % 4 != 1).then(|| format!("s{}", n * 13 % 29))).collect();
                input_batch(spec, vec![Arc::new(k), Arc::new(i), Arc::new(f), Arc::new(s)])
            })
            .collect()
    }

    fn run(op: &mut AggregateOperator, batches: &[RecordBatch], sink: &mut Sink) {
        for batch in batches {
            op.process_batch(0, 0, batch.clone(), sink).unwrap();
        }
    }

    const ROWS: i64 = 1000;

    #[test]
    fn snapshot_and_restore_continue_the_running_values() {
        let spec = checkpoint_spec();
        let mut reference = Sink::default();
        run(
            &mut AggregateOperator::new(&spec, &context(1)).unwrap(),
            &checkpoint_input(&spec, 0..ROWS),
            &mut reference,
        );
        let expected = arrow::compute::concat_batches(&reference.batches[0].schema(), &reference.batches).unwrap();
        // Early (most keys have a value or two, many functions none yet), late, and nothing.
        for split in [0, 60, 517] {
            let mut sink = Sink::default();
            let mut before = AggregateOperator::new(&spec, &context(1)).unwrap();
            run(&mut before, &checkpoint_input(&spec, 0..split), &mut sink);
            let dir = checkpoint(std::slice::from_mut(&mut before));
            let mut after = AggregateOperator::new(&spec, &context(1)).unwrap();
            restore(&dir, &mut after, 0, 1);
            assert_eq!(after.num_keys(), before.num_keys());
            run(&mut after, &checkpoint_input(&spec, split..ROWS), &mut sink);
            let actual = arrow::compute::concat_batches(&expected.schema(), &sink.batches).unwrap();
            assert_eq!(actual, expected, "split at {split}");
        }
    }

    /// Two subtasks each see the keys routed to them; their checkpoint is restored at
    /// parallelism 1 and 4 and the rest routed accordingly: every key's output rows are
    /// those of one uninterrupted operator.
    #[test]
    fn restore_at_another_parallelism_continues_every_key() {
        let spec = checkpoint_spec();
        let split = 400;
        let mut expected = BTreeMap::new();
        let mut reference = Sink::default();
        run(
            &mut AggregateOperator::new(&spec, &context(1)).unwrap(),
            &checkpoint_input(&spec, 0..ROWS),
            &mut reference,
        );
        rows_by_key(&reference.batches, &mut expected);
        assert_eq!(expected.len(), 42);

        let mut before: Vec<_> = (0..2).map(|_| AggregateOperator::new(&spec, &context(1)).unwrap()).collect();
        let mut sinks = [Sink::default(), Sink::default()];
        for batch in checkpoint_input(&spec, 0..split) {
            for (subtask, part) in route(&spec, &["k"], &batch, 2) {
                before[subtask].process_batch(0, 0, part, &mut sinks[subtask]).unwrap();
            }
        }
        assert!(before.iter().all(|op| op.num_keys() > 0));
        let mut prefix = BTreeMap::new();
        sinks.iter().for_each(|sink| rows_by_key(&sink.batches, &mut prefix));
        let dir = checkpoint(&mut before);

        for parallelism in [1, 4] {
            let mut after: Vec<_> = (0..parallelism)
                .map(|subtask| {
                    let mut op = AggregateOperator::new(&spec, &context(1)).unwrap();
                    restore(&dir, &mut op, subtask as u32, parallelism as u32);
                    op
                })
                .collect();
            let restored: usize = after.iter().map(AggregateOperator::num_keys).sum();
            assert_eq!(restored, before.iter().map(AggregateOperator::num_keys).sum::<usize>());
            let mut sinks: Vec<_> = (0..parallelism).map(|_| Sink::default()).collect();
            for batch in checkpoint_input(&spec, split..ROWS) {
                for (subtask, part) in route(&spec, &["k"], &batch, parallelism) {
                    after[subtask].process_batch(0, 0, part, &mut sinks[subtask]).unwrap();
                }
            }
            let mut actual = prefix.clone();
            sinks.iter().for_each(|sink| rows_by_key(&sink.batches, &mut actual));
            assert_eq!(actual, expected, "restored at parallelism {parallelism}");
        }
    }

    #[test]
    fn restoring_state_of_other_aggregates_is_an_error() {
        let counts =
            spec(r#"{"k": "integer", "i": "integer"}"#, r#""op": "aggregate", "key": "k", "aggs": {"t": "count()"}"#);
        let sums =
            spec(r#"{"k": "integer", "i": "integer"}"#, r#""op": "aggregate", "key": "k", "aggs": {"t": "sum(i)"}"#);
        let mut op = AggregateOperator::new(&counts, &context(1)).unwrap();
        op.process_batch(0, 0, input_batch(&counts, vec![ints(&[1, 2]), ints(&[3, 4])]), &mut Sink::default()).unwrap();
        let mut store = StateStore::new(0, 1, MAX_PARALLELISM);
        op.snapshot_state(1, &mut store).unwrap();
        assert_eq!(store.keyed.raw_state(AGGREGATE_STATE).len(), 2);
        let mut other = AggregateOperator::new(&sums, &context(1)).unwrap();
        let err = other.restore_state(&mut store).unwrap_err();
        assert!(!err.retryable && err.message.contains("aggregate state"), "{err:?}");
        // Truncated and trailing bytes.
        for (key_group, map) in store.keyed.raw_state(AGGREGATE_STATE).groups_mut() {
            for value in map.values_mut() {
                value.push(key_group as u8);
            }
        }
        let err = AggregateOperator::new(&counts, &context(1)).unwrap().restore_state(&mut store).unwrap_err();
        assert!(err.message.contains("trailing"), "{err:?}");
    }

    #[test]
    #[ignore = "benchmark: run with --release --ignored --nocapture"]
    fn b2_snapshot_cost() {
        let spec = spec(
            r#"{"key": "string", "n": "integer"}"#,
            r#""op": "aggregate", "key": "key", "aggs": {"count": "count()"}"#,
        );
        let mut op = AggregateOperator::new(&spec, &context(1)).unwrap();
        let keys: StringArray = (0..100_000).map(|n| Some(format!("k{n}"))).collect();
        let batch = input_batch(&spec, vec![Arc::new(keys), Arc::new(Int64Array::from_iter_values(0..100_000))]);
        op.process_batch(0, 0, batch, &mut Discard::default()).unwrap();
        let t = Instant::now();
        let mut store = StateStore::new(0, 1, MAX_PARALLELISM);
        op.snapshot_state(1, &mut store).unwrap();
        let snapshot_time = t.elapsed();
        let t = Instant::now();
        let bytes = store.keyed.snapshot().encode();
        let encode_time = t.elapsed();
        let t = Instant::now();
        let mut restored = AggregateOperator::new(&spec, &context(1)).unwrap();
        restored.restore_state(&mut store).unwrap();
        println!(
            "b2 snapshot of 100k keys: operator {:.1} ms, backend encode {:.1} ms ({} bytes), restore {:.1} ms",
            snapshot_time.as_secs_f64() * 1e3,
            encode_time.as_secs_f64() * 1e3,
            bytes.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!(restored.num_keys(), 100_000);
    }

    #[test]
    #[ignore = "benchmark: run with --release --ignored --nocapture"]
    fn b2_keyed_count_throughput() {
        const N: i64 = 20_000_000;
        const BATCH: i64 = 8192;
        let spec = spec(
            r#"{"key": "string", "n": "integer"}"#,
            r#""op": "aggregate", "key": "key", "aggs": {"count": "count()"}"#,
        );
        let mut op = AggregateOperator::new(&spec, &context(1)).unwrap();
        let mut sink = Discard::default();
        let mut busy = std::time::Duration::ZERO;
        let mut key = String::new();
        for start in (0..N).step_by(BATCH as usize) {
            let end = (start + BATCH).min(N);
            let mut keys = StringBuilder::with_capacity((end - start) as usize, (end - start) as usize * 7);
            for n in start..end {
                use std::fmt::Write;
                key.clear();
                write!(key, "k{}", n % 100_000).unwrap();
                keys.append_value(&key);
            }
            let batch =
                input_batch(&spec, vec![Arc::new(keys.finish()), Arc::new(Int64Array::from_iter_values(start..end))]);
            let t = Instant::now();
            op.process_batch(0, 0, batch, &mut sink).unwrap();
            busy += t.elapsed();
        }
        assert_eq!(sink.rows, N as usize);
        assert_eq!(sink.sum_of_last_column, 2_010_000_000);
        println!(
            "b2 keyed count: {N} records in {:.3} s of operator time: {:.2} M records/s",
            busy.as_secs_f64(),
            N as f64 / busy.as_secs_f64() / 1e6
        );
    }
}
