//! The `hashmap` keyed state backend: all keyed state of one subtask in memory.
//!
//! Layout: per registered state name a [`RawKeyedState`], which holds one
//! [`KeyGroupMap`] (`encoded key → encoded value`) per key group of the backend's
//! [`KeyGroupRange`]. The current key is set explicitly with
//! [`HashMapKeyedStateBackend::set_current_key`]; its key group comes from its hash
//! ([`key_group_for_hash`]) and must lie in the backend's range.
//!
//! Typed handles are small descriptors (a name and a type), obtained once from the backend
//! and then passed the backend on every call, so an operator can hold several handles and
//! still borrow the backend mutably:
//!
//! - [`ValueState<T>`]: one value per key.
//! - [`ListState<T>`]: a list per key, stored as the concatenated MessagePack encodings of
//!   its elements (so `add` appends without decoding the list).
//! - [`MapState<K, V>`]: a map per key. Each entry is its own map entry under the composite
//!   key `u32 LE len(key) | key | encoded user key`, so `get`/`put`/`remove` cost one lookup;
//!   `entries` and `clear` scan the current key group.
//! - [`ReducingState<T>`]: one value per key, folded with a reduce function on `add`.
//!
//! Snapshots ([`KeyedSnapshot`]) hold one blob per non-empty key group with every state's
//! entries of that group; [`HashMapKeyedStateBackend::restore`] keeps only the key groups in
//! its own range, so state written at one parallelism restores at any other.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode_value, encode_value, KeyGroupRange, Reader, StateError, Writer};
use crate::runtime::keyed::key_group_for_hash;

/// The state of one key group of one state: encoded key → encoded value.
pub type KeyGroupMap = HashMap<Vec<u8>, Vec<u8>>;

const SNAPSHOT_MAGIC: &[u8; 4] = b"FKS\0";
const SNAPSHOT_VERSION: u8 = 1;

/// What a state name was registered as; a name keeps its kind for the backend's lifetime.
/// [`StateKind::Raw`] (from [`HashMapKeyedStateBackend::raw_state`]) goes with any kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    Value,
    List,
    Map,
    Reducing,
    Raw,
}

impl StateKind {
    fn tag(self) -> u8 {
        match self {
            StateKind::Value => 0,
            StateKind::List => 1,
            StateKind::Map => 2,
            StateKind::Reducing => 3,
            StateKind::Raw => 4,
        }
    }

    fn from_tag(tag: u8) -> Result<Self, StateError> {
        Ok(match tag {
            0 => StateKind::Value,
            1 => StateKind::List,
            2 => StateKind::Map,
            3 => StateKind::Reducing,
            4 => StateKind::Raw,
            _ => return Err(StateError::corrupt(format!("unknown state kind {tag}"))),
        })
    }

    /// The kind of a name used both as `self` and `other`, if the two go together.
    fn merge(self, other: StateKind) -> Option<StateKind> {
        match (self, other) {
            (a, b) if a == b => Some(a),
            (StateKind::Raw, b) => Some(b),
            (a, StateKind::Raw) => Some(a),
            _ => None,
        }
    }
}

/// One state's maps, one per key group of the backend's range.
#[derive(Debug)]
pub struct RawKeyedState {
    range: KeyGroupRange,
    groups: Vec<KeyGroupMap>,
}

impl RawKeyedState {
    fn new(range: KeyGroupRange) -> Self {
        Self { range, groups: (0..range.len()).map(|_| KeyGroupMap::new()).collect() }
    }

    pub fn range(&self) -> KeyGroupRange {
        self.range
    }

    /// The map of `key_group`, `None` when it is outside the range.
    pub fn group(&self, key_group: u32) -> Option<&KeyGroupMap> {
        self.range.index_of(key_group).map(|i| &self.groups[i])
    }

    pub fn group_mut(&mut self, key_group: u32) -> Option<&mut KeyGroupMap> {
        self.range.index_of(key_group).map(|i| &mut self.groups[i])
    }

    /// Every key group with its map, in key group order.
    pub fn groups(&self) -> impl Iterator<Item = (u32, &KeyGroupMap)> + '_ {
        self.range.iter().zip(self.groups.iter())
    }

    pub fn groups_mut(&mut self) -> impl Iterator<Item = (u32, &mut KeyGroupMap)> + '_ {
        self.range.iter().zip(self.groups.iter_mut())
    }

    /// Entries over all key groups.
    pub fn len(&self) -> usize {
        self.groups.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(HashMap::is_empty)
    }

    fn clear(&mut self) {
        self.groups.iter_mut().for_each(HashMap::clear);
    }
}

#[derive(Debug)]
struct StateTable {
    kind: StateKind,
    maps: RawKeyedState,
}

#[derive(Debug, Default)]
struct CurrentKey {
    key: Vec<u8>,
    key_group: u32,
    index: usize,
}

/// The in-memory keyed state backend of one subtask (Flink's `HashMapStateBackend`).
#[derive(Debug)]
pub struct HashMapKeyedStateBackend {
    max_parallelism: u32,
    range: KeyGroupRange,
    states: BTreeMap<String, StateTable>,
    current: Option<CurrentKey>,
}

impl HashMapKeyedStateBackend {
    /// A backend owning key groups `range` of `max_parallelism`.
    pub fn new(max_parallelism: u32, range: KeyGroupRange) -> Self {
        assert!(max_parallelism > 0, "max parallelism must be positive");
        assert!(range.is_empty() || range.end < max_parallelism, "key group range beyond max parallelism");
        Self { max_parallelism, range, states: BTreeMap::new(), current: None }
    }

    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// Makes `key` (canonically encoded, with its 64-bit `hash`) the key that state handles
    /// read and write. A key whose key group is outside this backend's range is rejected.
    pub fn set_current_key(&mut self, key: &[u8], hash: u64) -> Result<(), StateError> {
        let key_group = key_group_for_hash(hash, self.max_parallelism);
        let Some(index) = self.range.index_of(key_group) else {
            return Err(StateError::KeyGroupOutOfRange { key_group, start: self.range.start, end: self.range.end });
        };
        let current = self.current.get_or_insert_with(CurrentKey::default);
        current.key.clear();
        current.key.extend_from_slice(key);
        current.key_group = key_group;
        current.index = index;
        Ok(())
    }

    pub fn current_key(&self) -> Option<&[u8]> {
        self.current.as_ref().map(|c| c.key.as_slice())
    }

    pub fn current_key_group(&self) -> Option<u32> {
        self.current.as_ref().map(|c| c.key_group)
    }

    /// The registered state names, in order.
    pub fn state_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.states.keys().map(String::as_str)
    }

    pub fn value_state<T: Serialize + DeserializeOwned>(&mut self, name: &str) -> Result<ValueState<T>, StateError> {
        self.table_mut(name, StateKind::Value)?;
        Ok(ValueState { name: name.into(), _type: PhantomData })
    }

    pub fn list_state<T: Serialize + DeserializeOwned>(&mut self, name: &str) -> Result<ListState<T>, StateError> {
        self.table_mut(name, StateKind::List)?;
        Ok(ListState { name: name.into(), _type: PhantomData })
    }

    pub fn map_state<K, V>(&mut self, name: &str) -> Result<MapState<K, V>, StateError>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        self.table_mut(name, StateKind::Map)?;
        Ok(MapState { name: name.into(), _type: PhantomData })
    }

    pub fn reducing_state<T, F>(&mut self, name: &str, reduce: F) -> Result<ReducingState<T>, StateError>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        self.table_mut(name, StateKind::Reducing)?;
        Ok(ReducingState { name: name.into(), reduce: Arc::new(reduce) })
    }

    /// The per-key-group maps of state `name`, for operators that manage their own keys and
    /// encodings (registered as [`StateKind::Raw`] when new). Snapshotted like any state.
    pub fn raw_state(&mut self, name: &str) -> &mut RawKeyedState {
        let range = self.range;
        &mut self
            .states
            .entry(name.to_string())
            .or_insert_with(|| StateTable { kind: StateKind::Raw, maps: RawKeyedState::new(range) })
            .maps
    }

    /// The table of `name`, created as `kind` when missing, checked against `kind` otherwise.
    fn table_mut(&mut self, name: &str, kind: StateKind) -> Result<&mut StateTable, StateError> {
        let range = self.range;
        let table =
            self.states.entry(name.to_string()).or_insert_with(|| StateTable { kind, maps: RawKeyedState::new(range) });
        match table.kind.merge(kind) {
            Some(k) => {
                table.kind = k;
                Ok(table)
            }
            None => Err(StateError::KindMismatch { name: name.to_string(), registered: table.kind, requested: kind }),
        }
    }

    /// The current key and the map of its key group in state `name` (`None` when the state
    /// has never been written).
    fn current_group(&self, name: &str) -> Result<(&[u8], Option<&KeyGroupMap>), StateError> {
        let current = self.current.as_ref().ok_or(StateError::NoCurrentKey)?;
        let group = self.states.get(name).map(|t| &t.maps.groups[current.index]);
        Ok((&current.key, group))
    }

    fn current_group_mut(&mut self, name: &str, kind: StateKind) -> Result<(&[u8], &mut KeyGroupMap), StateError> {
        let index = self.current.as_ref().ok_or(StateError::NoCurrentKey)?.index;
        let range = self.range;
        let table =
            self.states.entry(name.to_string()).or_insert_with(|| StateTable { kind, maps: RawKeyedState::new(range) });
        if table.kind.merge(kind).is_none() {
            return Err(StateError::KindMismatch { name: name.to_string(), registered: table.kind, requested: kind });
        }
        let key = &self.current.as_ref().expect("checked above").key;
        Ok((key, &mut table.maps.groups[index]))
    }

    /// All state, cut per key group. Key groups without any entry are left out; entries are
    /// sorted, so equal state gives equal snapshots.
    pub fn snapshot(&self) -> KeyedSnapshot {
        let mut key_groups = Vec::new();
        for (index, key_group) in self.range.iter().enumerate() {
            let states: Vec<_> =
                self.states.iter().filter(|(_, t)| !t.maps.groups[index].is_empty()).collect::<Vec<_>>();
            if states.is_empty() {
                continue;
            }
            let mut w = Writer::default();
            w.len(states.len());
            for (name, table) in states {
                w.bytes(name.as_bytes());
                w.u8(table.kind.tag());
                let map = &table.maps.groups[index];
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable();
                w.len(entries.len());
                for (k, v) in entries {
                    w.bytes(k);
                    w.bytes(v);
                }
            }
            key_groups.push((key_group, w.buf));
        }
        KeyedSnapshot { max_parallelism: self.max_parallelism, key_groups }
    }

    /// Replaces all state with the key groups of `snapshots` that lie in this backend's range
    /// (the others belong to other subtasks). The snapshots must share this backend's max
    /// parallelism. Everything is decoded and checked before anything changes; the current
    /// key is unset.
    pub fn restore(&mut self, snapshots: &[KeyedSnapshot]) -> Result<(), StateError> {
        let mut kinds: BTreeMap<String, StateKind> = self.states.iter().map(|(n, t)| (n.clone(), t.kind)).collect();
        let mut groups = Vec::new();
        for snapshot in snapshots {
            if snapshot.max_parallelism != self.max_parallelism {
                return Err(StateError::MaxParallelismMismatch {
                    expected: self.max_parallelism,
                    found: snapshot.max_parallelism,
                });
            }
            for (key_group, blob) in &snapshot.key_groups {
                let Some(index) = self.range.index_of(*key_group) else { continue };
                let states = decode_key_group(blob)?;
                for (name, kind, _) in &states {
                    let registered = kinds.entry(name.clone()).or_insert(*kind);
                    *registered = registered.merge(*kind).ok_or_else(|| StateError::KindMismatch {
                        name: name.clone(),
                        registered: *registered,
                        requested: *kind,
                    })?;
                }
                groups.push((index, states));
            }
        }
        self.current = None;
        for table in self.states.values_mut() {
            table.maps.clear();
        }
        let range = self.range;
        for (name, kind) in kinds {
            let table = self.states.entry(name).or_insert_with(|| StateTable { kind, maps: RawKeyedState::new(range) });
            table.kind = kind;
        }
        for (index, states) in groups {
            for (name, _, entries) in states {
                let table = self.states.get_mut(&name).expect("created above");
                table.maps.groups[index].extend(entries);
            }
        }
        Ok(())
    }
}

type DecodedState = (String, StateKind, Vec<(Vec<u8>, Vec<u8>)>);

fn decode_key_group(blob: &[u8]) -> Result<Vec<DecodedState>, StateError> {
    let mut r = Reader::new(blob);
    let n = r.count(9)?;
    let mut states = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.string()?;
        let kind = StateKind::from_tag(r.u8()?)?;
        let m = r.count(8)?;
        let mut entries = Vec::with_capacity(m);
        for _ in 0..m {
            let k = r.bytes()?.to_vec();
            let v = r.bytes()?.to_vec();
            entries.push((k, v));
        }
        states.push((name, kind, entries));
    }
    r.finish()?;
    Ok(states)
}

/// The keyed state of one subtask at one checkpoint: per non-empty key group, all states'
/// entries of that group, encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedSnapshot {
    pub max_parallelism: u32,
    pub key_groups: Vec<(u32, Vec<u8>)>,
}

impl KeyedSnapshot {
    /// The snapshot as bytes: magic, version, max parallelism, then `(key group, blob)` pairs.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::default();
        w.raw(SNAPSHOT_MAGIC);
        w.u8(SNAPSHOT_VERSION);
        w.u32(self.max_parallelism);
        w.len(self.key_groups.len());
        for (key_group, blob) in &self.key_groups {
            w.u32(*key_group);
            w.bytes(blob);
        }
        Bytes::from(w.buf)
    }

    /// Parses what [`KeyedSnapshot::encode`] wrote; anything else is an error. The key group
    /// blobs are checked when restored.
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut r = Reader::new(bytes);
        r.magic(SNAPSHOT_MAGIC, SNAPSHOT_VERSION)?;
        let max_parallelism = r.u32()?;
        if max_parallelism == 0 {
            return Err(StateError::corrupt("max parallelism 0"));
        }
        let n = r.count(8)?;
        let mut key_groups = Vec::with_capacity(n);
        for _ in 0..n {
            let key_group = r.u32()?;
            if key_group >= max_parallelism {
                return Err(StateError::corrupt(format!("key group {key_group} >= max parallelism {max_parallelism}")));
            }
            key_groups.push((key_group, r.bytes()?.to_vec()));
        }
        r.finish()?;
        Ok(Self { max_parallelism, key_groups })
    }
}

/// One value per key.
pub struct ValueState<T> {
    name: Arc<str>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ValueState<T> {
    fn clone(&self) -> Self {
        Self { name: Arc::clone(&self.name), _type: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> ValueState<T> {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn get(&self, backend: &HashMapKeyedStateBackend) -> Result<Option<T>, StateError> {
        let (key, group) = backend.current_group(&self.name)?;
        group.and_then(|g| g.get(key)).map(|v| decode_value(&self.name, v)).transpose()
    }

    pub fn update(&self, backend: &mut HashMapKeyedStateBackend, value: &T) -> Result<(), StateError> {
        let encoded = encode_value(&self.name, value)?;
        let (key, group) = backend.current_group_mut(&self.name, StateKind::Value)?;
        match group.get_mut(key) {
            Some(v) => *v = encoded,
            None => {
                group.insert(key.to_vec(), encoded);
            }
        }
        Ok(())
    }

    pub fn clear(&self, backend: &mut HashMapKeyedStateBackend) -> Result<(), StateError> {
        let (key, group) = backend.current_group_mut(&self.name, StateKind::Value)?;
        group.remove(key);
        Ok(())
    }
}

/// A list per key.
pub struct ListState<T> {
    name: Arc<str>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ListState<T> {
    fn clone(&self) -> Self {
        Self { name: Arc::clone(&self.name), _type: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> ListState<T> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends `value` to the current key's list.
    pub fn add(&self, backend: &mut HashMapKeyedStateBackend, value: &T) -> Result<(), StateError> {
        let encoded = encode_value(&self.name, value)?;
        let (key, group) = backend.current_group_mut(&self.name, StateKind::List)?;
        match group.get_mut(key) {
            Some(list) => list.extend_from_slice(&encoded),
            None => {
                group.insert(key.to_vec(), encoded);
            }
        }
        Ok(())
    }

    /// The current key's list (empty when it has none).
    pub fn get(&self, backend: &HashMapKeyedStateBackend) -> Result<Vec<T>, StateError> {
        let (key, group) = backend.current_group(&self.name)?;
        let Some(bytes) = group.and_then(|g| g.get(key)) else { return Ok(Vec::new()) };
        let mut cursor = Cursor::new(bytes.as_slice());
        let mut out = Vec::new();
        while (cursor.position() as usize) < bytes.len() {
            let value = rmp_serde::from_read(&mut cursor)
                .map_err(|e| StateError::Deserialize { name: self.name.to_string(), reason: e.to_string() })?;
            out.push(value);
        }
        Ok(out)
    }

    pub fn clear(&self, backend: &mut HashMapKeyedStateBackend) -> Result<(), StateError> {
        let (key, group) = backend.current_group_mut(&self.name, StateKind::List)?;
        group.remove(key);
        Ok(())
    }
}

/// A map per key.
pub struct MapState<K, V> {
    name: Arc<str>,
    _type: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for MapState<K, V> {
    fn clone(&self) -> Self {
        Self { name: Arc::clone(&self.name), _type: PhantomData }
    }
}

/// The prefix every entry of `key`'s map starts with.
fn map_prefix(key: &[u8]) -> Vec<u8> {
    let len = u32::try_from(key.len()).expect("key longer than 4 GiB");
    let mut prefix = Vec::with_capacity(4 + key.len() + 8);
    prefix.extend_from_slice(&len.to_le_bytes());
    prefix.extend_from_slice(key);
    prefix
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MapState<K, V> {
    pub fn name(&self) -> &str {
        &self.name
    }

    fn entry_key(&self, key: &[u8], user_key: &K) -> Result<Vec<u8>, StateError> {
        let mut composite = map_prefix(key);
        rmp_serde::encode::write(&mut composite, user_key)
            .map_err(|e| StateError::Serialize { name: self.name.to_string(), reason: e.to_string() })?;
        Ok(composite)
    }

    pub fn get(&self, backend: &HashMapKeyedStateBackend, user_key: &K) -> Result<Option<V>, StateError> {
        let (key, group) = backend.current_group(&self.name)?;
        let Some(group) = group else { return Ok(None) };
        let composite = self.entry_key(key, user_key)?;
        group.get(&composite).map(|v| decode_value(&self.name, v)).transpose()
    }

    pub fn contains(&self, backend: &HashMapKeyedStateBackend, user_key: &K) -> Result<bool, StateError> {
        let (key, group) = backend.current_group(&self.name)?;
        let Some(group) = group else { return Ok(false) };
        Ok(group.contains_key(&self.entry_key(key, user_key)?))
    }

    pub fn put(&self, backend: &mut HashMapKeyedStateBackend, user_key: &K, value: &V) -> Result<(), StateError> {
        let encoded = encode_value(&self.name, value)?;
        let (key, group) = backend.current_group_mut(&self.name, StateKind::Map)?;
        let composite = self.entry_key(key, user_key)?;
        group.insert(composite, encoded);
        Ok(())
    }

    /// Removes `user_key`, returning its value if it had one.
    pub fn remove(&self, backend: &mut HashMapKeyedStateBackend, user_key: &K) -> Result<Option<V>, StateError> {
        let (key, group) = backend.current_group_mut(&self.name, StateKind::Map)?;
        let composite = self.entry_key(key, user_key)?;
        group.remove(&composite).map(|v| decode_value(&self.name, &v)).transpose()
    }

    /// The current key's entries, in no particular order.
    pub fn entries(&self, backend: &HashMapKeyedStateBackend) -> Result<Vec<(K, V)>, StateError> {
        let (key, group) = backend.current_group(&self.name)?;
        let Some(group) = group else { return Ok(Vec::new()) };
        let prefix = map_prefix(key);
        group
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix.as_slice()).map(|user_key| (user_key, v)))
            .map(|(user_key, v)| Ok((decode_value(&self.name, user_key)?, decode_value(&self.name, v)?)))
            .collect()
    }

    pub fn is_empty(&self, backend: &HashMapKeyedStateBackend) -> Result<bool, StateError> {
        let (key, group) = backend.current_group(&self.name)?;
        let prefix = map_prefix(key);
        Ok(group.is_none_or(|g| !g.keys().any(|k| k.starts_with(&prefix))))
    }

    /// Removes all of the current key's entries.
    pub fn clear(&self, backend: &mut HashMapKeyedStateBackend) -> Result<(), StateError> {
        let (key, group) = backend.current_group_mut(&self.name, StateKind::Map)?;
        let prefix = map_prefix(key);
        group.retain(|k, _| !k.starts_with(&prefix));
        Ok(())
    }
}

/// One value per key, combined with a reduce function as values are added.
pub struct ReducingState<T> {
    name: Arc<str>,
    reduce: Arc<dyn Fn(T, T) -> T + Send + Sync>,
}

impl<T> Clone for ReducingState<T> {
    fn clone(&self) -> Self {
        Self { name: Arc::clone(&self.name), reduce: Arc::clone(&self.reduce) }
    }
}

impl<T: Serialize + DeserializeOwned> ReducingState<T> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Folds `value` into the current key's value (or makes it the value).
    pub fn add(&self, backend: &mut HashMapKeyedStateBackend, value: T) -> Result<(), StateError> {
        let (key, group) = backend.current_group_mut(&self.name, StateKind::Reducing)?;
        match group.get_mut(key) {
            Some(bytes) => {
                let acc: T = decode_value(&self.name, bytes)?;
                *bytes = encode_value(&self.name, &(self.reduce)(acc, value))?;
            }
            None => {
                let encoded = encode_value(&self.name, &value)?;
                group.insert(key.to_vec(), encoded);
            }
        }
        Ok(())
    }

    pub fn get(&self, backend: &HashMapKeyedStateBackend) -> Result<Option<T>, StateError> {
        let (key, group) = backend.current_group(&self.name)?;
        group.and_then(|g| g.get(key)).map(|v| decode_value(&self.name, v)).transpose()
    }

    pub fn clear(&self, backend: &mut HashMapKeyedStateBackend) -> Result<(), StateError> {
        let (key, group) = backend.current_group_mut(&self.name, StateKind::Reducing)?;
        group.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::keyed::{hash_key, key_group_range, subtask_for_key_group};

    const MAX_PARALLELISM: u32 = 128;

    fn key(i: u32) -> (Vec<u8>, u64) {
        let k = format!("key-{i}").into_bytes();
        let h = hash_key(&k);
        (k, h)
    }

    fn backend() -> HashMapKeyedStateBackend {
        HashMapKeyedStateBackend::new(MAX_PARALLELISM, KeyGroupRange::new(0, MAX_PARALLELISM - 1))
    }

    fn set(b: &mut HashMapKeyedStateBackend, i: u32) {
        let (k, h) = key(i);
        b.set_current_key(&k, h).unwrap();
    }

    #[test]
    fn value_state_is_scoped_per_key() {
        let mut b = backend();
        let v = b.value_state::<String>("v").unwrap();
        set(&mut b, 1);
        assert_eq!(v.get(&b).unwrap(), None);
        v.update(&mut b, &"one".to_string()).unwrap();
        set(&mut b, 2);
        assert_eq!(v.get(&b).unwrap(), None);
        v.update(&mut b, &"two".to_string()).unwrap();
        set(&mut b, 1);
        assert_eq!(v.get(&b).unwrap().as_deref(), Some("one"));
        v.clear(&mut b).unwrap();
        assert_eq!(v.get(&b).unwrap(), None);
        set(&mut b, 2);
        assert_eq!(v.get(&b).unwrap().as_deref(), Some("two"));
    }

    #[test]
    fn list_state_is_scoped_per_key() {
        let mut b = backend();
        let l = b.list_state::<(u32, String)>("l").unwrap();
        set(&mut b, 1);
        assert!(l.get(&b).unwrap().is_empty());
        l.add(&mut b, &(1, "a".into())).unwrap();
        l.add(&mut b, &(2, "b".into())).unwrap();
        set(&mut b, 2);
        l.add(&mut b, &(3, "c".into())).unwrap();
        assert_eq!(l.get(&b).unwrap(), vec![(3, "c".to_string())]);
        set(&mut b, 1);
        assert_eq!(l.get(&b).unwrap(), vec![(1, "a".to_string()), (2, "b".to_string())]);
        l.clear(&mut b).unwrap();
        assert!(l.get(&b).unwrap().is_empty());
        set(&mut b, 2);
        assert_eq!(l.get(&b).unwrap().len(), 1);
    }

    #[test]
    fn map_state_is_scoped_per_key() {
        let mut b = backend();
        let m = b.map_state::<String, i64>("m").unwrap();
        set(&mut b, 1);
        assert!(m.is_empty(&b).unwrap());
        m.put(&mut b, &"x".into(), &1).unwrap();
        m.put(&mut b, &"y".into(), &2).unwrap();
        m.put(&mut b, &"x".into(), &10).unwrap();
        set(&mut b, 2);
        assert_eq!(m.get(&b, &"x".into()).unwrap(), None);
        m.put(&mut b, &"x".into(), &-5).unwrap();
        set(&mut b, 1);
        assert_eq!(m.get(&b, &"x".into()).unwrap(), Some(10));
        assert!(m.contains(&b, &"y".into()).unwrap());
        let mut entries = m.entries(&b).unwrap();
        entries.sort();
        assert_eq!(entries, vec![("x".to_string(), 10), ("y".to_string(), 2)]);
        assert_eq!(m.remove(&mut b, &"y".into()).unwrap(), Some(2));
        assert_eq!(m.remove(&mut b, &"y".into()).unwrap(), None);
        m.clear(&mut b).unwrap();
        assert!(m.is_empty(&b).unwrap());
        set(&mut b, 2);
        assert_eq!(m.entries(&b).unwrap(), vec![("x".to_string(), -5)]);
    }

    #[test]
    fn reducing_state_is_scoped_per_key() {
        let mut b = backend();
        let r = b.reducing_state("sum", |a: u64, x: u64| a + x).unwrap();
        set(&mut b, 1);
        r.add(&mut b, 3).unwrap();
        r.add(&mut b, 4).unwrap();
        set(&mut b, 2);
        assert_eq!(r.get(&b).unwrap(), None);
        r.add(&mut b, 100).unwrap();
        set(&mut b, 1);
        assert_eq!(r.get(&b).unwrap(), Some(7));
        r.clear(&mut b).unwrap();
        assert_eq!(r.get(&b).unwrap(), None);
        set(&mut b, 2);
        assert_eq!(r.get(&b).unwrap(), Some(100));
    }

    #[test]
    fn no_current_key_and_kind_mismatch_are_errors() {
        let mut b = backend();
        let v = b.value_state::<u32>("v").unwrap();
        assert!(matches!(v.get(&b), Err(StateError::NoCurrentKey)));
        assert!(matches!(v.update(&mut b, &1), Err(StateError::NoCurrentKey)));
        assert!(matches!(b.list_state::<u32>("v"), Err(StateError::KindMismatch { .. })));
        // Raw access goes with any kind.
        assert!(b.raw_state("v").is_empty());
    }

    #[test]
    fn key_outside_range_is_rejected() {
        let range = KeyGroupRange::for_subtask(1, MAX_PARALLELISM, 4);
        let mut b = HashMapKeyedStateBackend::new(MAX_PARALLELISM, range);
        let mut rejected = 0;
        for i in 0..200 {
            let (k, h) = key(i);
            let kg = key_group_for_hash(h, MAX_PARALLELISM);
            match b.set_current_key(&k, h) {
                Ok(()) => assert!(range.contains(kg)),
                Err(StateError::KeyGroupOutOfRange { key_group, .. }) => {
                    assert_eq!(key_group, kg);
                    assert!(!range.contains(kg));
                    rejected += 1;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert!(rejected > 100, "most keys belong to the other three subtasks");
    }

    #[test]
    fn snapshot_restore_round_trip() {
        let mut b = backend();
        let v = b.value_state::<u32>("v").unwrap();
        let l = b.list_state::<String>("l").unwrap();
        let m = b.map_state::<u8, bool>("m").unwrap();
        for i in 0..50 {
            set(&mut b, i);
            v.update(&mut b, &(i * 2)).unwrap();
            l.add(&mut b, &format!("{i}")).unwrap();
            m.put(&mut b, &(i as u8), &(i % 2 == 0)).unwrap();
        }
        b.raw_state("raw").group_mut(5).unwrap().insert(b"k".to_vec(), b"v".to_vec());
        let snapshot = b.snapshot();
        assert_eq!(snapshot, b.snapshot(), "snapshots are deterministic");
        let decoded = KeyedSnapshot::decode(&snapshot.encode()).unwrap();
        assert_eq!(decoded, snapshot);

        let mut r = backend();
        let v2 = r.value_state::<u32>("v").unwrap();
        r.restore(&[decoded]).unwrap();
        let (l2, m2) = (r.list_state::<String>("l").unwrap(), r.map_state::<u8, bool>("m").unwrap());
        for i in 0..50 {
            set(&mut r, i);
            assert_eq!(v2.get(&r).unwrap(), Some(i * 2));
            assert_eq!(l2.get(&r).unwrap(), vec![format!("{i}")]);
            assert_eq!(m2.entries(&r).unwrap(), vec![(i as u8, i % 2 == 0)]);
        }
        assert_eq!(r.raw_state("raw").group(5).unwrap().get(&b"k"[..]), Some(&b"v".to_vec()));
        assert_eq!(r.snapshot(), snapshot);
    }

    /// Fills `old` backends (keys routed by key group), snapshots them through bytes and
    /// restores into `new` backends.
    fn rescale(old: u32, new: u32, keys: u32) {
        let mut olds: Vec<_> = (0..old)
            .map(|s| {
                HashMapKeyedStateBackend::new(MAX_PARALLELISM, KeyGroupRange::for_subtask(s, MAX_PARALLELISM, old))
            })
            .collect();
        for i in 0..keys {
            let (k, h) = key(i);
            let owner = subtask_for_key_group(key_group_for_hash(h, MAX_PARALLELISM), MAX_PARALLELISM, old);
            let b = &mut olds[owner as usize];
            let v = b.value_state::<u32>("v").unwrap();
            let l = b.list_state::<u32>("l").unwrap();
            b.set_current_key(&k, h).unwrap();
            v.update(b, &i).unwrap();
            l.add(b, &(i + 1)).unwrap();
        }
        let snapshots: Vec<KeyedSnapshot> =
            olds.iter().map(|b| KeyedSnapshot::decode(&b.snapshot().encode()).unwrap()).collect();

        let mut news: Vec<_> = (0..new)
            .map(|s| {
                let range: KeyGroupRange = key_group_range(s, MAX_PARALLELISM, new).into();
                let mut b = HashMapKeyedStateBackend::new(MAX_PARALLELISM, range);
                b.restore(&snapshots).unwrap();
                b
            })
            .collect();
        let total: usize = news.iter_mut().map(|b| b.raw_state("v").len()).sum();
        assert_eq!(total, keys as usize, "no key restored twice");
        for i in 0..keys {
            let (k, h) = key(i);
            let owner = subtask_for_key_group(key_group_for_hash(h, MAX_PARALLELISM), MAX_PARALLELISM, new);
            let mut found = 0;
            for (s, b) in news.iter_mut().enumerate() {
                let v = b.value_state::<u32>("v").unwrap();
                let l = b.list_state::<u32>("l").unwrap();
                if s as u32 == owner {
                    b.set_current_key(&k, h).unwrap();
                    assert_eq!(v.get(b).unwrap(), Some(i));
                    assert_eq!(l.get(b).unwrap(), vec![i + 1]);
                    found += 1;
                } else {
                    assert!(matches!(b.set_current_key(&k, h), Err(StateError::KeyGroupOutOfRange { .. })));
                    let raw = b.raw_state("v");
                    assert!(raw.groups().all(|(_, g)| !g.contains_key(&k)));
                }
            }
            assert_eq!(found, 1);
        }
    }

    #[test]
    fn rescale_from_four_to_two() {
        rescale(4, 2, 1000);
    }

    #[test]
    fn rescale_from_four_to_three() {
        rescale(4, 3, 1000);
    }

    #[test]
    fn rescale_from_two_to_four() {
        rescale(2, 4, 500);
    }

    #[test]
    fn restore_rejects_other_max_parallelism_and_corrupt_groups() {
        let mut b = backend();
        let v = b.value_state::<u32>("v").unwrap();
        set(&mut b, 7);
        v.update(&mut b, &7).unwrap();
        let good = b.snapshot();

        let other = HashMapKeyedStateBackend::new(64, KeyGroupRange::new(0, 63)).snapshot();
        assert!(matches!(b.restore(&[other]), Err(StateError::MaxParallelismMismatch { .. })));

        let kg = good.key_groups[0].0;
        let corrupt = KeyedSnapshot { max_parallelism: MAX_PARALLELISM, key_groups: vec![(kg, vec![1, 2, 3])] };
        assert!(matches!(b.restore(&[corrupt]), Err(StateError::Corrupt { .. })));
        set(&mut b, 7);
        assert_eq!(v.get(&b).unwrap(), Some(7), "a failed restore changes nothing");
    }

    #[test]
    fn decode_rejects_garbage() {
        let mut b = backend();
        b.raw_state("raw").group_mut(3).unwrap().insert(vec![1], vec![2]);
        let good = b.snapshot().encode();
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"not a snapshot at all".to_vec(),
            good[..good.len() - 1].to_vec(),
            [&good[..], &[0]].concat(),
            b"FKS\0\x01\x80\0\0\0\xff\xff\xff\xff".to_vec(),
            b"FKS\0\x01\0\0\0\0\0\0\0\0".to_vec(),
        ];
        // Key group beyond max parallelism.
        let mut beyond = good.to_vec();
        beyond[13..17].copy_from_slice(&MAX_PARALLELISM.to_le_bytes());
        cases.push(beyond);
        // Every truncation and a pseudo-random byte soup.
        cases.extend((0..good.len()).map(|n| good[..n].to_vec()));
        let mut x = 0x1234_5678_u32;
        cases.extend((0..200).map(|_| {
            (0..40)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect()
        }));
        for case in cases {
            assert!(KeyedSnapshot::decode(&case).is_err(), "{case:?}");
        }
    }
}
