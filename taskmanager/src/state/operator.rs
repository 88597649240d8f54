//! Non-keyed operator state (Flink's `OperatorStateBackend`): named lists of byte strings,
//! e.g. a source's split offsets or a sink's pending transactions.
//!
//! Each list is registered with a [`Redistribution`] that says how the lists of all old
//! subtasks are dealt out to the new subtasks on restore:
//!
//! - [`Redistribution::Split`]: the elements of every old subtask, in old-subtask order,
//!   are dealt round robin: element `j` of that sequence goes to new subtask `j % parallelism`.
//! - [`Redistribution::Union`]: every new subtask gets all elements.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Reader, StateError, Writer};

const SNAPSHOT_MAGIC: &[u8; 4] = b"FOS\0";
const SNAPSHOT_VERSION: u8 = 1;

/// How a list state's elements are redistributed on restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redistribution {
    Split,
    Union,
}

impl Redistribution {
    fn tag(self) -> u8 {
        match self {
            Redistribution::Split => 0,
            Redistribution::Union => 1,
        }
    }

    fn from_tag(tag: u8) -> Result<Self, StateError> {
        match tag {
            0 => Ok(Redistribution::Split),
            1 => Ok(Redistribution::Union),
            _ => Err(StateError::corrupt(format!("unknown redistribution mode {tag}"))),
        }
    }
}

/// One list state in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorListSnapshot {
    pub name: String,
    pub mode: Redistribution,
    pub elements: Vec<Vec<u8>>,
}

/// The operator state of one subtask at one checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperatorSnapshot {
    pub states: Vec<OperatorListSnapshot>,
}

impl OperatorSnapshot {
    /// The snapshot as bytes: magic, version, then per state its name, mode and elements.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::default();
        w.raw(SNAPSHOT_MAGIC);
        w.u8(SNAPSHOT_VERSION);
        w.len(self.states.len());
        for state in &self.states {
            w.bytes(state.name.as_bytes());
            w.u8(state.mode.tag());
            w.len(state.elements.len());
            for element in &state.elements {
                w.bytes(element);
            }
        }
        Bytes::from(w.buf)
    }

    /// Parses what [`OperatorSnapshot::encode`] wrote; anything else is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut r = Reader::new(bytes);
        r.magic(SNAPSHOT_MAGIC, SNAPSHOT_VERSION)?;
        let n = r.count(9)?;
        let mut states = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.string()?;
            let mode = Redistribution::from_tag(r.u8()?)?;
            let m = r.count(4)?;
            let mut elements = Vec::with_capacity(m);
            for _ in 0..m {
                elements.push(r.bytes()?.to_vec());
            }
            states.push(OperatorListSnapshot { name, mode, elements });
        }
        r.finish()?;
        Ok(Self { states })
    }
}

#[derive(Debug)]
struct ListEntry {
    mode: Redistribution,
    elements: Vec<Vec<u8>>,
}

/// The operator (non-keyed) state of one subtask.
#[derive(Debug, Default)]
pub struct OperatorStateBackend {
    states: BTreeMap<String, ListEntry>,
}

impl OperatorStateBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// The list state `name`, registered with `mode` when new; a name keeps its mode.
    pub fn list_state(&mut self, name: &str, mode: Redistribution) -> Result<&mut Vec<Vec<u8>>, StateError> {
        let entry = self.states.entry(name.to_string()).or_insert_with(|| ListEntry { mode, elements: Vec::new() });
        if entry.mode != mode {
            return Err(StateError::ModeMismatch { name: name.to_string(), registered: entry.mode, requested: mode });
        }
        Ok(&mut entry.elements)
    }

    /// The elements of list state `name`, if registered.
    pub fn get(&self, name: &str) -> Option<&[Vec<u8>]> {
        self.states.get(name).map(|e| e.elements.as_slice())
    }

    pub fn state_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.states.keys().map(String::as_str)
    }

    pub fn snapshot(&self) -> OperatorSnapshot {
        OperatorSnapshot {
            states: self
                .states
                .iter()
                .map(|(name, e)| OperatorListSnapshot {
                    name: name.clone(),
                    mode: e.mode,
                    elements: e.elements.clone(),
                })
                .collect(),
        }
    }

    /// Replaces all state with this subtask's share of `snapshots` (one per old subtask, in
    /// subtask order) for a new parallelism of `parallelism`. Registered states missing from
    /// the snapshots end up empty. Nothing changes when a mode conflicts.
    pub fn restore(
        &mut self,
        subtask: u32,
        parallelism: u32,
        snapshots: &[OperatorSnapshot],
    ) -> Result<(), StateError> {
        assert!(subtask < parallelism, "subtask {subtask} of parallelism {parallelism}");
        let mut restored: BTreeMap<String, ListEntry> = BTreeMap::new();
        let mut split_positions: BTreeMap<&str, usize> = BTreeMap::new();
        for state in snapshots.iter().flat_map(|s| &s.states) {
            let registered = self.states.get(&state.name).map(|e| e.mode);
            let entry = restored
                .entry(state.name.clone())
                .or_insert_with(|| ListEntry { mode: registered.unwrap_or(state.mode), elements: Vec::new() });
            if entry.mode != state.mode {
                return Err(StateError::ModeMismatch {
                    name: state.name.clone(),
                    registered: entry.mode,
                    requested: state.mode,
                });
            }
            match state.mode {
                Redistribution::Union => entry.elements.extend(state.elements.iter().cloned()),
                Redistribution::Split => {
                    let position = split_positions.entry(&state.name).or_insert(0);
                    for element in &state.elements {
                        if *position % parallelism as usize == subtask as usize {
                            entry.elements.push(element.clone());
                        }
                        *position += 1;
                    }
                }
            }
        }
        for (name, entry) in &self.states {
            restored.entry(name.clone()).or_insert_with(|| ListEntry { mode: entry.mode, elements: Vec::new() });
        }
        self.states = restored;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` subtasks whose list `offsets` (split) holds `s*10 + i` for `i < per`, and whose
    /// list `config` (union) holds one element `s`.
    fn snapshots(n: u8, per: u8) -> Vec<OperatorSnapshot> {
        (0..n)
            .map(|s| {
                let mut b = OperatorStateBackend::new();
                b.list_state("offsets", Redistribution::Split).unwrap().extend((0..per).map(|i| vec![s * 10 + i]));
                b.list_state("config", Redistribution::Union).unwrap().push(vec![s]);
                // Through bytes, as a checkpoint would.
                OperatorSnapshot::decode(&b.snapshot().encode()).unwrap()
            })
            .collect()
    }

    fn restore_all(snaps: &[OperatorSnapshot], parallelism: u32) -> Vec<OperatorStateBackend> {
        (0..parallelism)
            .map(|s| {
                let mut b = OperatorStateBackend::new();
                b.restore(s, parallelism, snaps).unwrap();
                b
            })
            .collect()
    }

    fn check_redistribution(old: u8, new: u32, per: u8) {
        let snaps = snapshots(old, per);
        let all_offsets: Vec<Vec<u8>> = snaps.iter().flat_map(|s| s.states[1].elements.clone()).collect();
        assert_eq!(snaps[0].states[1].name, "offsets");
        let restored = restore_all(&snaps, new);
        let mut seen = Vec::new();
        for (s, b) in restored.iter().enumerate() {
            let offsets = b.get("offsets").unwrap();
            // Round robin: element j of the old sequence lands on subtask j % new.
            let expected: Vec<Vec<u8>> =
                all_offsets.iter().enumerate().filter(|(j, _)| j % new as usize == s).map(|(_, e)| e.clone()).collect();
            assert_eq!(offsets, expected.as_slice());
            seen.extend(offsets.iter().cloned());
            // Union: everyone sees every old subtask's element.
            let union: Vec<Vec<u8>> = (0..old).map(|o| vec![o]).collect();
            assert_eq!(b.get("config").unwrap(), union.as_slice());
        }
        seen.sort();
        let mut all = all_offsets;
        all.sort();
        assert_eq!(seen, all, "every split element restored exactly once");
    }

    #[test]
    fn split_and_union_from_three_to_two() {
        check_redistribution(3, 2, 3);
    }

    #[test]
    fn split_and_union_from_two_to_three() {
        check_redistribution(2, 3, 2);
    }

    #[test]
    fn restore_keeps_registered_states_and_checks_modes() {
        let snaps = snapshots(2, 1);
        let mut b = OperatorStateBackend::new();
        b.list_state("other", Redistribution::Split).unwrap().push(vec![9]);
        b.restore(0, 1, &snaps).unwrap();
        assert_eq!(b.get("other").unwrap().len(), 0);
        assert_eq!(b.get("offsets").unwrap().len(), 2);
        assert!(matches!(b.list_state("offsets", Redistribution::Union), Err(StateError::ModeMismatch { .. })));

        let mut conflicting = OperatorStateBackend::new();
        conflicting.list_state("offsets", Redistribution::Union).unwrap().push(vec![1]);
        let err = b.restore(0, 1, &[snaps[0].clone(), conflicting.snapshot()]).unwrap_err();
        assert!(matches!(err, StateError::ModeMismatch { .. }));
        assert_eq!(b.get("offsets").unwrap().len(), 2, "failed restore changes nothing");
    }

    #[test]
    fn decode_rejects_garbage() {
        let good = snapshots(1, 3)[0].encode();
        for bad in [&b""[..], b"garbage", &good[..good.len() - 1], b"FOS\0\x01\xff\xff\xff\xff"] {
            assert!(matches!(OperatorSnapshot::decode(bad), Err(StateError::Corrupt { .. })), "{bad:?}");
        }
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert!(OperatorSnapshot::decode(&trailing).is_err());
    }
}
