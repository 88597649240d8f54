//! State backends: where operators keep their state between records, and how that state is
//! snapshotted into bytes for checkpoints and restored, possibly at another parallelism.
//!
//! - [`KeyGroupRange`]: the contiguous, inclusive range of key groups one subtask owns.
//! - [`keyed`]: the `hashmap` keyed state backend ([`HashMapKeyedStateBackend`]). State is
//!   held per registered state name and per key group, as `encoded key → encoded value`
//!   maps. Typed handles ([`ValueState`], [`ListState`], [`MapState`], [`ReducingState`])
//!   read and write the state of the backend's current key; [`HashMapKeyedStateBackend::raw_state`]
//!   gives operators that manage their own maps the per-key-group maps directly. Snapshots
//!   ([`KeyedSnapshot`]) are cut per key group, so a restore keeps exactly the key groups the
//!   restoring subtask owns: that is what makes rescaling work.
//! - [`operator`]: non-keyed operator state ([`OperatorStateBackend`]): named lists of
//!   byte strings, redistributed on restore by [`Redistribution::Split`] (round robin) or
//!   [`Redistribution::Union`] (everyone gets everything).
//!
//! - [`task_state`]: [`StateStore`] (what one operator instance snapshots into and restores
//!   from), the task state file (one per task and checkpoint) and [`restore_stores`], which
//!   gives a restoring subtask its share of a checkpoint.
//!
//! Values are (de)serialized with MessagePack ([`encode_value`], [`decode_value`]). Snapshot
//! bytes use a small length-prefixed binary format with a magic and version; decoding bytes
//! that are not such a snapshot is an error, never a panic.

pub mod keyed;
pub mod operator;
pub mod task_state;

use std::ops::RangeInclusive;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use keyed::{
    HashMapKeyedStateBackend, KeyGroupMap, KeyedSnapshot, ListState, MapState, RawKeyedState, ReducingState, StateKind,
    ValueState,
};
pub use operator::{OperatorListSnapshot, OperatorSnapshot, OperatorStateBackend, Redistribution};
pub use task_state::{decode_task_state, encode_task_state, restore_stores, OperatorStateSnapshot, StateStore};

use crate::runtime::keyed::key_group_range;

/// Errors of the state backends.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("key group {key_group} is outside this backend's key groups {start}..={end}")]
    KeyGroupOutOfRange { key_group: u32, start: u32, end: u32 },
    #[error("no current key is set")]
    NoCurrentKey,
    #[error("state '{name}' is registered as {registered:?}, not {requested:?}")]
    KindMismatch { name: String, registered: StateKind, requested: StateKind },
    #[error("operator state '{name}' is registered as {registered:?}, not {requested:?}")]
    ModeMismatch { name: String, registered: Redistribution, requested: Redistribution },
    #[error("snapshot has max parallelism {found}, this backend {expected}")]
    MaxParallelismMismatch { expected: u32, found: u32 },
    #[error("cannot serialize a value of state '{name}': {reason}")]
    Serialize { name: String, reason: String },
    #[error("cannot deserialize a value of state '{name}': {reason}")]
    Deserialize { name: String, reason: String },
    #[error("corrupt state snapshot: {reason}")]
    Corrupt { reason: String },
}

impl StateError {
    fn corrupt(reason: impl Into<String>) -> Self {
        StateError::Corrupt { reason: reason.into() }
    }
}

/// A contiguous, inclusive range of key groups; empty when `start > end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    pub start: u32,
    pub end: u32,
}

impl KeyGroupRange {
    pub const EMPTY: KeyGroupRange = KeyGroupRange { start: 1, end: 0 };

    pub fn new(start: u32, end: u32) -> Self {
        Self { start, end }
    }

    /// The key groups `subtask` of `parallelism` owns (see [`key_group_range`]).
    pub fn for_subtask(subtask: u32, max_parallelism: u32, parallelism: u32) -> Self {
        key_group_range(subtask, max_parallelism, parallelism).into()
    }

    pub fn is_empty(&self) -> bool {
        self.start > self.end
    }

    pub fn len(&self) -> usize {
        if self.is_empty() {
            0
        } else {
            (self.end - self.start) as usize + 1
        }
    }

    pub fn contains(&self, key_group: u32) -> bool {
        self.start <= key_group && key_group <= self.end
    }

    pub fn iter(&self) -> RangeInclusive<u32> {
        self.start..=self.end
    }

    /// The key groups in both ranges ([`KeyGroupRange::EMPTY`] when none).
    pub fn intersect(&self, other: &KeyGroupRange) -> KeyGroupRange {
        let (start, end) = (self.start.max(other.start), self.end.min(other.end));
        if start > end {
            KeyGroupRange::EMPTY
        } else {
            KeyGroupRange { start, end }
        }
    }

    /// The position of `key_group` in this range, if it is inside.
    fn index_of(&self, key_group: u32) -> Option<usize> {
        self.contains(key_group).then(|| (key_group - self.start) as usize)
    }
}

impl From<RangeInclusive<u32>> for KeyGroupRange {
    fn from(r: RangeInclusive<u32>) -> Self {
        KeyGroupRange { start: *r.start(), end: *r.end() }
    }
}

/// A state value as MessagePack bytes.
pub fn encode_value<T: Serialize + ?Sized>(name: &str, value: &T) -> Result<Vec<u8>, StateError> {
    rmp_serde::to_vec(value).map_err(|e| StateError::Serialize { name: name.to_string(), reason: e.to_string() })
}

/// A state value from MessagePack bytes.
pub fn decode_value<T: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T, StateError> {
    rmp_serde::from_slice(bytes).map_err(|e| StateError::Deserialize { name: name.to_string(), reason: e.to_string() })
}

/// Writes the length-prefixed snapshot format (little-endian `u32` counts and lengths).
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("state entry larger than 4 GiB"));
    }

    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.buf.extend_from_slice(b);
    }

    fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
}

/// Reads what [`Writer`] wrote; running out of bytes is an error.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.buf.len() < n {
            return Err(StateError::corrupt(format!("truncated: {n} bytes wanted, {} left", self.buf.len())));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, StateError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count of items of at least `min_item_size` bytes each, checked against what is left,
    /// so a corrupt count cannot make the caller reserve absurd amounts of memory.
    fn count(&mut self, min_item_size: usize) -> Result<usize, StateError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_size) > self.buf.len() {
            return Err(StateError::corrupt(format!("count {n} exceeds the remaining {} bytes", self.buf.len())));
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], StateError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, StateError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| StateError::corrupt("state name is not UTF-8"))
    }

    fn magic(&mut self, magic: &[u8; 4], version: u8) -> Result<(), StateError> {
        if self.take(4)? != magic {
            return Err(StateError::corrupt("bad magic"));
        }
        let v = self.u8()?;
        if v != version {
            return Err(StateError::corrupt(format!("unsupported version {v}")));
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), StateError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(StateError::corrupt(format!("{} trailing bytes", self.buf.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_group_range_contains_iter_intersect() {
        let r = KeyGroupRange::new(4, 7);
        assert!(r.contains(4) && r.contains(7) && !r.contains(3) && !r.contains(8));
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![4, 5, 6, 7]);
        assert_eq!(r.len(), 4);
        assert_eq!(r.intersect(&KeyGroupRange::new(6, 10)), KeyGroupRange::new(6, 7));
        assert!(r.intersect(&KeyGroupRange::new(8, 10)).is_empty());
        assert_eq!(KeyGroupRange::EMPTY.len(), 0);
        assert_eq!(KeyGroupRange::EMPTY.iter().count(), 0);
        // The subtasks' ranges cover all key groups exactly once.
        let mut all = Vec::new();
        for s in 0..3 {
            all.extend(KeyGroupRange::for_subtask(s, 128, 3).iter());
        }
        assert_eq!(all, (0..128).collect::<Vec<_>>());
    }
}
