//! The state of one task at one checkpoint, and how a restoring task gets its share back.
//!
//! A task writes **one state file** per checkpoint holding the snapshots of every operator
//! of its chain (keyed and operator state, each possibly empty). The JobMaster lists that
//! file in `_metadata` once per operator, with the subtask's key-group range for keyed
//! operators. A restoring subtask reads `_metadata`, and for each of its operators gathers
//! the entries of that operator id from every old subtask: keyed state is cut down to the
//! key groups it owns now, operator state is redistributed over the new parallelism. That
//! is what lets a job resume at another parallelism.
//!
//! File format: magic `FLTS`, version byte, operator count (u32), then per operator its id,
//! keyed snapshot and operator snapshot as length-prefixed (u32 big-endian) byte strings.

use std::collections::BTreeMap;
use std::path::Path;

use flint_common::checkpoint_storage::{read_metadata, read_state_file, StateHandle};

use super::{
    HashMapKeyedStateBackend, KeyGroupRange, KeyedSnapshot, OperatorSnapshot, OperatorStateBackend, StateError,
};

const MAGIC: &[u8; 4] = b"FLTS";
const VERSION: u8 = 1;

/// The state of one operator instance (one subtask of one operator): what it writes at a
/// checkpoint and gets back on restore.
#[derive(Debug)]
pub struct StateStore {
    /// Keyed state over this subtask's key groups.
    pub keyed: HashMapKeyedStateBackend,
    /// Non-keyed state (lists, redistributed on restore).
    pub operator: OperatorStateBackend,
    subtask: u32,
    parallelism: u32,
}

impl StateStore {
    /// An empty store for `subtask` of `parallelism` (key groups out of `max_parallelism`).
    pub fn new(subtask: u32, parallelism: u32, max_parallelism: u32) -> Self {
        let range = KeyGroupRange::for_subtask(subtask, max_parallelism, parallelism);
        Self {
            keyed: HashMapKeyedStateBackend::new(max_parallelism, range),
            operator: OperatorStateBackend::new(),
            subtask,
            parallelism,
        }
    }

    pub fn subtask(&self) -> u32 {
        self.subtask
    }

    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }

    /// Both snapshots, for the task's state file.
    pub fn snapshot(&self) -> (KeyedSnapshot, OperatorSnapshot) {
        (self.keyed.snapshot(), self.operator.snapshot())
    }
}

/// One operator's part of a task state file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorStateSnapshot {
    pub operator_id: String,
    pub keyed: KeyedSnapshot,
    pub operator: OperatorSnapshot,
}

impl OperatorStateSnapshot {
    /// Whether the operator has any state at all.
    pub fn is_empty(&self) -> bool {
        self.keyed.key_groups.is_empty() && self.operator.states.iter().all(|s| s.elements.is_empty())
    }
}

/// Encodes a task's operator snapshots as one state file.
pub fn encode_task_state(operators: &[OperatorStateSnapshot]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(operators.len() as u32).to_be_bytes());
    for op in operators {
        for part in [op.operator_id.as_bytes(), &op.keyed.encode(), &op.operator.encode()] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// Parses a task state file; anything else is an error, never a panic.
pub fn decode_task_state(bytes: &[u8]) -> Result<Vec<OperatorStateSnapshot>, StateError> {
    let corrupt = |reason: &str| StateError::Corrupt { reason: format!("task state file: {reason}") };
    let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(|| corrupt("bad magic"))?;
    let (&version, mut rest) = rest.split_first().ok_or_else(|| corrupt("truncated"))?;
    if version != VERSION {
        return Err(corrupt(&format!("unsupported version {version}")));
    }
    let mut take = |n: usize| -> Result<&[u8], StateError> {
        if rest.len() < n {
            return Err(corrupt("truncated"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
    let mut operators = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut part = || -> Result<&[u8], StateError> {
            let len = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            take(len)
        };
        let id = std::str::from_utf8(part()?).map_err(|_| corrupt("operator id is not UTF-8"))?.to_string();
        let keyed = KeyedSnapshot::decode(part()?)?;
        let operator = OperatorSnapshot::decode(part()?)?;
        operators.push(OperatorStateSnapshot { operator_id: id, keyed, operator });
    }
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(operators)
}

/// The stores of `operator_ids` (one task's chain) for `subtask` of `parallelism`, restored
/// from the checkpoint or savepoint at `location`. Operators the checkpoint has nothing for
/// get empty stores.
pub fn restore_stores(
    location: &Path,
    operator_ids: &[String],
    subtask: u32,
    parallelism: u32,
    max_parallelism: u32,
) -> Result<Vec<StateStore>, String> {
    let metadata = read_metadata(location).map_err(|e| e.to_string())?;
    let mut files: BTreeMap<String, Vec<OperatorStateSnapshot>> = BTreeMap::new();
    let mut load = |handle: &StateHandle| -> Result<Vec<OperatorStateSnapshot>, String> {
        if let Some(found) = files.get(&handle.path) {
            return Ok(found.clone());
        }
        let bytes = read_state_file(location, handle).map_err(|e| e.to_string())?;
        let decoded = decode_task_state(&bytes).map_err(|e| format!("{}: {e}", handle.path))?;
        files.insert(handle.path.clone(), decoded.clone());
        Ok(decoded)
    };
    let mine = KeyGroupRange::for_subtask(subtask, max_parallelism, parallelism);
    let mut stores = Vec::with_capacity(operator_ids.len());
    for operator_id in operator_ids {
        let mut entries: Vec<_> = metadata.operators.iter().filter(|e| &e.operator_id == operator_id).collect();
        entries.sort_by_key(|e| e.subtask);
        let mut keyed = Vec::new();
        let mut operator = Vec::new();
        for entry in entries {
            if entry.max_parallelism != max_parallelism {
                return Err(format!(
                    "operator '{operator_id}' was checkpointed with max parallelism {}, the job now has {max_parallelism}",
                    entry.max_parallelism
                ));
            }
            let overlaps = entry
                .key_group_range
                .is_none_or(|(start, end)| !KeyGroupRange::new(start, end).intersect(&mine).is_empty());
            for handle in &entry.handles {
                let Some(snapshot) = load(handle)?.into_iter().find(|s| &s.operator_id == operator_id) else {
                    continue;
                };
                if overlaps {
                    keyed.push(snapshot.keyed);
                }
                operator.push(snapshot.operator);
            }
        }
        let mut store = StateStore::new(subtask, parallelism, max_parallelism);
        store.keyed.restore(&keyed).map_err(|e| format!("restoring keyed state of '{operator_id}': {e}"))?;
        store
            .operator
            .restore(subtask, parallelism, &operator)
            .map_err(|e| format!("restoring operator state of '{operator_id}': {e}"))?;
        stores.push(store);
    }
    Ok(stores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Redistribution;
    use flint_common::checkpoint_storage::{
        write_metadata_in, write_state_file_in, CheckpointMetadata, OperatorStateEntry,
    };
    use flint_common::ids::JobId;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("flint-task-state-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn task_state_round_trips_and_garbage_is_an_error() {
        let mut store = StateStore::new(0, 1, 128);
        store.operator.list_state("offsets", Redistribution::Split).unwrap().push(b"42".to_vec());
        let (keyed, operator) = store.snapshot();
        let ops = vec![OperatorStateSnapshot { operator_id: "src".into(), keyed, operator }];
        let bytes = encode_task_state(&ops);
        assert_eq!(decode_task_state(&bytes).unwrap(), ops);
        assert!(decode_task_state(b"nope").is_err());
        assert!(decode_task_state(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_task_state(&longer).is_err());
    }

    /// The worst a state file can hold: counts and lengths claiming gigabytes in a few bytes,
    /// and 20,000 random mutations of a real file. Every one is an error or a value, never a
    /// panic, and nothing is allocated from a claimed count.
    #[test]
    fn hostile_task_state_files_are_errors_in_bounded_time() {
        let mut store = StateStore::new(0, 1, 128);
        store.operator.list_state("offsets", Redistribution::Split).unwrap().push(b"42".to_vec());
        store.keyed.set_current_key(b"k", 7).unwrap();
        store.keyed.value_state::<u64>("count").unwrap().update(&mut store.keyed, &3).unwrap();
        let (keyed, operator) = store.snapshot();
        let good = encode_task_state(&[OperatorStateSnapshot { operator_id: "op".into(), keyed, operator }]);
        let header = [MAGIC.as_slice(), &[VERSION]].concat();
        let max = u32::MAX.to_be_bytes();
        let claims = [
            [header.as_slice(), &max].concat(),
            [header.as_slice(), &1u32.to_be_bytes(), &max].concat(),
            [header.as_slice(), &1u32.to_be_bytes(), &2u32.to_be_bytes(), b"op", &max, &[0; 16]].concat(),
        ];
        let started = std::time::Instant::now();
        for bad in &claims {
            assert!(matches!(decode_task_state(bad), Err(StateError::Corrupt { .. })), "{bad:?}");
        }
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases: 20_000,
            failure_persistence: None,
            ..Default::default()
        });
        let mutations = (proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), any::<usize>());
        runner
            .run(&mutations, |(flips, cut)| {
                let mut bytes = good.clone();
                for (at, value) in flips {
                    let i = at % bytes.len();
                    bytes[i] = value;
                }
                bytes.truncate(1 + cut % bytes.len());
                if let Ok(ops) = decode_task_state(&bytes) {
                    // Whatever decodes, restores or is refused without a panic.
                    for op in ops {
                        let mut store = StateStore::new(0, 1, 128);
                        let _ = store.keyed.restore(&[op.keyed]);
                        let _ = store.operator.restore(0, 1, &[op.operator]);
                    }
                }
                Ok(())
            })
            .unwrap();
        eprintln!("3 hostile claims + 20,000 mutated state files in {:?}", started.elapsed());
    }

    /// Four subtasks each count keys in keyed state and keep a list element; restored at
    /// parallelism 2, every key lands exactly once and every list element exactly once.
    #[test]
    fn restore_at_another_parallelism_redistributes_keyed_and_operator_state() {
        let dir = temp_dir("rescale").join("chk-1");
        std::fs::create_dir_all(&dir).unwrap();
        let mut meta = CheckpointMetadata::new(JobId::generate(), 1, 0, false);
        let keys: Vec<String> = (0..50).map(|i| format!("key-{i}")).collect();
        for subtask in 0..4u32 {
            let mut store = StateStore::new(subtask, 4, 128);
            let range = store.keyed.key_group_range();
            let counts = store.keyed.value_state::<u64>("count").unwrap();
            for key in &keys {
                let hash = crate::runtime::keyed::hash_key(key.as_bytes());
                let group = crate::runtime::keyed::key_group_for_hash(hash, 128);
                if range.contains(group) {
                    store.keyed.set_current_key(key.as_bytes(), hash).unwrap();
                    counts.update(&mut store.keyed, &(key.len() as u64)).unwrap();
                }
            }
            store.operator.list_state("split", Redistribution::Split).unwrap().push(vec![subtask as u8]);
            let (keyed, operator) = store.snapshot();
            let bytes = encode_task_state(&[OperatorStateSnapshot { operator_id: "agg".into(), keyed, operator }]);
            let handle = write_state_file_in(&dir, &format!("agg-{subtask}"), &bytes).unwrap();
            meta.operators.push(OperatorStateEntry {
                operator_id: "agg".into(),
                subtask,
                parallelism: 4,
                max_parallelism: 128,
                handles: vec![handle],
                key_group_range: Some((range.start, range.end)),
            });
        }
        write_metadata_in(&dir, &meta).unwrap();

        let mut seen_keys = 0;
        let mut elements = Vec::new();
        for subtask in 0..2 {
            let mut stores = restore_stores(&dir, &["agg".to_string(), "other".to_string()], subtask, 2, 128).unwrap();
            assert_eq!(stores.len(), 2);
            let store = &mut stores[0];
            seen_keys += store.keyed.raw_state("count").len();
            elements.extend(store.operator.get("split").unwrap_or_default().iter().cloned());
            assert!(stores[1].operator.get("split").is_none());
        }
        assert_eq!(seen_keys, keys.len());
        elements.sort();
        assert_eq!(elements, vec![vec![0], vec![1], vec![2], vec![3]]);

        let err = restore_stores(&dir, &["agg".to_string()], 0, 2, 256).unwrap_err();
        assert!(err.contains("max parallelism"), "{err}");
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}
