//! Keyed state and event-time timers of a `process.wasm` guest.
//!
//! The operator around the guest interns keys into dense ids (its key map decides key groups
//! and snapshots); this state is indexed by those ids. Each state the guest registers
//! (`flint.state(kind, name)`) is a table with one slot per key id: a value (bytes), a list
//! of byte strings, or a map of byte strings to byte strings (ordered by key, so iteration by
//! index is stable). Timers are `(timestamp, key id)` pairs in time order.
//!
//! For checkpoints, every table's slot of a key is encoded on its own ([`encode_list`],
//! [`encode_map`], [`encode_timers`]; values are their bytes) and the operator files it under
//! the key's key group; restoring decodes the same, refusing malformed bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A state's kind, as `flint.state`'s first argument gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateKind {
    Value = 0,
    List = 1,
    Map = 2,
}

impl StateKind {
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => StateKind::Value,
            1 => StateKind::List,
            2 => StateKind::Map,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            StateKind::Value => "value",
            StateKind::List => "list",
            StateKind::Map => "map",
        }
    }
}

/// The most states one guest may register.
pub const MAX_STATES: usize = 64;
/// The longest state name.
pub const MAX_STATE_NAME: usize = 128;

#[derive(Debug)]
enum Table {
    Value(Vec<Option<Vec<u8>>>),
    List(Vec<Vec<Vec<u8>>>),
    Map(Vec<BTreeMap<Vec<u8>, Vec<u8>>>),
}

impl Table {
    fn new(kind: StateKind) -> Self {
        match kind {
            StateKind::Value => Table::Value(Vec::new()),
            StateKind::List => Table::List(Vec::new()),
            StateKind::Map => Table::Map(Vec::new()),
        }
    }

    fn kind(&self) -> StateKind {
        match self {
            Table::Value(_) => StateKind::Value,
            Table::List(_) => StateKind::List,
            Table::Map(_) => StateKind::Map,
        }
    }
}

/// One registered state.
#[derive(Debug)]
struct State {
    name: String,
    table: Table,
}

/// Keyed state and timers of one guest instance.
#[derive(Debug, Default)]
pub struct KeyedState {
    states: Vec<State>,
    by_name: HashMap<String, usize>,
    /// The key the guest's state calls act on.
    current: Option<u32>,
    /// The key id of each key group of the batch being processed.
    group_keys: Vec<u32>,
    timers: BTreeSet<(i64, u32)>,
    watermark: i64,
}

impl KeyedState {
    pub fn new() -> Self {
        Self { watermark: i64::MIN, ..Default::default() }
    }

    /// The handle of state `name` of `kind`, registering it on first use.
    pub fn register(&mut self, kind: StateKind, name: &str) -> Result<u32, String> {
        if let Some(&handle) = self.by_name.get(name) {
            let registered = self.states[handle].table.kind();
            if registered != kind {
                return Err(format!("state '{name}' is a {} state, not a {} state", registered.name(), kind.name()));
            }
            return Ok(handle as u32);
        }
        if name.is_empty() || name.len() > MAX_STATE_NAME {
            return Err(format!("a state name has 1 to {MAX_STATE_NAME} bytes, got {}", name.len()));
        }
        if self.states.len() >= MAX_STATES {
            return Err(format!("at most {MAX_STATES} states per operator"));
        }
        self.states.push(State { name: name.to_string(), table: Table::new(kind) });
        self.by_name.insert(name.to_string(), self.states.len() - 1);
        Ok((self.states.len() - 1) as u32)
    }

    /// The key groups of the next call: group `g` is key id `keys[g]`.
    pub fn set_groups(&mut self, keys: &[u32]) {
        self.group_keys.clear();
        self.group_keys.extend_from_slice(keys);
        self.current = None;
    }

    /// Makes key group `group` of the current call the current key.
    pub fn select(&mut self, group: i32) -> Result<(), String> {
        let key = usize::try_from(group)
            .ok()
            .and_then(|g| self.group_keys.get(g))
            .copied()
            .ok_or_else(|| format!("flint.key({group}): the batch has {} key groups", self.group_keys.len()))?;
        self.current = Some(key);
        Ok(())
    }

    /// Selects a key id directly (restores, tests).
    pub fn select_key(&mut self, key: u32) {
        self.current = Some(key);
    }

    fn current(&self) -> Result<usize, String> {
        self.current.map(|k| k as usize).ok_or_else(|| "no key is selected: call flint.key(group) first".to_string())
    }

    fn table(&mut self, handle: i32, kind: StateKind) -> Result<(&mut Table, usize), String> {
        let key = self.current()?;
        let state = usize::try_from(handle)
            .ok()
            .and_then(|h| self.states.get_mut(h))
            .ok_or_else(|| format!("{handle} is not a state handle"))?;
        if state.table.kind() != kind {
            return Err(format!(
                "state '{}' is a {} state, not a {} state",
                state.name,
                state.table.kind().name(),
                kind.name()
            ));
        }
        Ok((&mut state.table, key))
    }

    pub fn value(&mut self, handle: i32) -> Result<Option<&[u8]>, String> {
        let (table, key) = self.table(handle, StateKind::Value)?;
        let Table::Value(slots) = table else { unreachable!() };
        Ok(slots.get(key).and_then(|v| v.as_deref()))
    }

    pub fn set_value(&mut self, handle: i32, bytes: &[u8]) -> Result<(), String> {
        let (table, key) = self.table(handle, StateKind::Value)?;
        let Table::Value(slots) = table else { unreachable!() };
        if slots.len() <= key {
            slots.resize(key + 1, None);
        }
        match &mut slots[key] {
            Some(v) => {
                v.clear();
                v.extend_from_slice(bytes);
            }
            slot => *slot = Some(bytes.to_vec()),
        }
        Ok(())
    }

    /// Clears the current key's slot of any state.
    pub fn clear(&mut self, handle: i32) -> Result<(), String> {
        let key = self.current()?;
        let state = usize::try_from(handle)
            .ok()
            .and_then(|h| self.states.get_mut(h))
            .ok_or_else(|| format!("{handle} is not a state handle"))?;
        match &mut state.table {
            Table::Value(s) => {
                if let Some(v) = s.get_mut(key) {
                    *v = None;
                }
            }
            Table::List(s) => {
                if let Some(v) = s.get_mut(key) {
                    *v = Vec::new();
                }
            }
            Table::Map(s) => {
                if let Some(v) = s.get_mut(key) {
                    *v = BTreeMap::new();
                }
            }
        }
        Ok(())
    }

    fn list(&mut self, handle: i32) -> Result<&mut Vec<Vec<u8>>, String> {
        let (table, key) = self.table(handle, StateKind::List)?;
        let Table::List(slots) = table else { unreachable!() };
        if slots.len() <= key {
            slots.resize_with(key + 1, Vec::new);
        }
        Ok(&mut slots[key])
    }

    pub fn list_add(&mut self, handle: i32, bytes: &[u8]) -> Result<(), String> {
        self.list(handle)?.push(bytes.to_vec());
        Ok(())
    }

    pub fn list_len(&mut self, handle: i32) -> Result<usize, String> {
        Ok(self.list(handle)?.len())
    }

    pub fn list_get(&mut self, handle: i32, index: i32) -> Result<Option<&[u8]>, String> {
        let list = self.list(handle)?;
        Ok(usize::try_from(index).ok().and_then(|i| list.get(i)).map(Vec::as_slice))
    }

    fn map(&mut self, handle: i32) -> Result<&mut BTreeMap<Vec<u8>, Vec<u8>>, String> {
        let (table, key) = self.table(handle, StateKind::Map)?;
        let Table::Map(slots) = table else { unreachable!() };
        if slots.len() <= key {
            slots.resize_with(key + 1, BTreeMap::new);
        }
        Ok(&mut slots[key])
    }

    pub fn map_put(&mut self, handle: i32, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.map(handle)?.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    pub fn map_get(&mut self, handle: i32, key: &[u8]) -> Result<Option<&[u8]>, String> {
        Ok(self.map(handle)?.get(key).map(Vec::as_slice))
    }

    pub fn map_remove(&mut self, handle: i32, key: &[u8]) -> Result<bool, String> {
        Ok(self.map(handle)?.remove(key).is_some())
    }

    pub fn map_len(&mut self, handle: i32) -> Result<usize, String> {
        Ok(self.map(handle)?.len())
    }

    pub fn map_key_at(&mut self, handle: i32, index: i32) -> Result<Option<&[u8]>, String> {
        let map = self.map(handle)?;
        Ok(usize::try_from(index).ok().and_then(|i| map.keys().nth(i)).map(Vec::as_slice))
    }

    /// Registers an event-time timer of the current key.
    pub fn register_timer(&mut self, timestamp: i64) -> Result<(), String> {
        let key = self.current()? as u32;
        self.timers.insert((timestamp, key));
        Ok(())
    }

    pub fn delete_timer(&mut self, timestamp: i64) -> Result<(), String> {
        let key = self.current()? as u32;
        self.timers.remove(&(timestamp, key));
        Ok(())
    }

    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    pub fn set_watermark(&mut self, watermark: i64) {
        self.watermark = self.watermark.max(watermark);
    }

    /// Removes and returns the timers due at `watermark` (timestamp ≤ it), in time order.
    pub fn take_due_timers(&mut self, watermark: i64, max: usize) -> Vec<(i64, u32)> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.timers.first() {
                Some(&(ts, key)) if ts <= watermark => {
                    self.timers.pop_first();
                    due.push((ts, key));
                }
                _ => break,
            }
        }
        due
    }

    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Every state slot of key `key` with content: `(kind, name, encoded bytes)`.
    pub fn snapshot_key(&self, key: u32, out: &mut Vec<(StateKind, String, Vec<u8>)>) {
        let k = key as usize;
        for state in &self.states {
            let bytes = match &state.table {
                Table::Value(s) => s.get(k).and_then(|v| v.clone()),
                Table::List(s) => s.get(k).filter(|l| !l.is_empty()).map(|l| encode_list(l)),
                Table::Map(s) => s.get(k).filter(|m| !m.is_empty()).map(encode_map),
            };
            if let Some(bytes) = bytes {
                out.push((state.table.kind(), state.name.clone(), bytes));
            }
        }
    }

    /// The timers of every key: key id → timestamps.
    pub fn timers_by_key(&self) -> BTreeMap<u32, Vec<i64>> {
        let mut out: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
        for &(ts, key) in &self.timers {
            out.entry(key).or_default().push(ts);
        }
        out
    }

    /// Puts back one slot of a snapshot.
    pub fn restore_slot(&mut self, kind: StateKind, name: &str, key: u32, bytes: &[u8]) -> Result<(), String> {
        let handle = self.register(kind, name)? as i32;
        self.select_key(key);
        match kind {
            StateKind::Value => self.set_value(handle, bytes),
            StateKind::List => {
                *self.list(handle)? = decode_list(bytes)?;
                Ok(())
            }
            StateKind::Map => {
                *self.map(handle)? = decode_map(bytes)?;
                Ok(())
            }
        }
    }

    pub fn restore_timers(&mut self, key: u32, bytes: &[u8]) -> Result<(), String> {
        for ts in decode_timers(bytes)? {
            self.timers.insert((ts, key));
        }
        Ok(())
    }

    /// Forgets every key (before a restore).
    pub fn clear_all(&mut self) {
        for state in &mut self.states {
            state.table = Table::new(state.table.kind());
        }
        self.timers.clear();
        self.current = None;
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A list slot: `u32 count`, then `u32 length, bytes` per element.
pub fn encode_list(list: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(list.len() as u32).to_le_bytes());
    for item in list {
        put_bytes(&mut out, item);
    }
    out
}

/// A map slot: `u32 count`, then `u32 length, key, u32 length, value` per entry.
pub fn encode_map(map: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        put_bytes(&mut out, k);
        put_bytes(&mut out, v);
    }
    out
}

/// A key's timers: `i64` timestamps.
pub fn encode_timers(timestamps: &[i64]) -> Vec<u8> {
    timestamps.iter().flat_map(|t| t.to_le_bytes()).collect()
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, String> {
        let (head, rest) = self.0.split_at_checked(4).ok_or("truncated state bytes")?;
        self.0 = rest;
        Ok(u32::from_le_bytes(head.try_into().expect("4 bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        let (head, rest) = self.0.split_at_checked(len).ok_or("truncated state bytes")?;
        self.0 = rest;
        Ok(head)
    }
}

pub fn decode_list(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut r = Reader(bytes);
    let count = r.u32()? as usize;
    // Each element takes at least 4 bytes: a count beyond that is corrupt, not a reason to allocate.
    if count > bytes.len() / 4 {
        return Err("corrupt list state".into());
    }
    let list = (0..count).map(|_| r.bytes().map(<[u8]>::to_vec)).collect::<Result<Vec<_>, _>>()?;
    if !r.0.is_empty() {
        return Err("trailing bytes after a list state".into());
    }
    Ok(list)
}

pub fn decode_map(bytes: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let mut r = Reader(bytes);
    let count = r.u32()? as usize;
    let mut map = BTreeMap::new();
    for _ in 0..count {
        let k = r.bytes()?.to_vec();
        let v = r.bytes()?.to_vec();
        if map.insert(k, v).is_some() {
            return Err("a map state has a key twice".into());
        }
    }
    if !r.0.is_empty() {
        return Err("trailing bytes after a map state".into());
    }
    Ok(map)
}

pub fn decode_timers(bytes: &[u8]) -> Result<Vec<i64>, String> {
    if !bytes.len().is_multiple_of(8) {
        return Err("timer state is not a sequence of i64".into());
    }
    Ok(bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_per_key_and_kind_checked() {
        let mut s = KeyedState::new();
        let count = s.register(StateKind::Value, "count").unwrap() as i32;
        let seen = s.register(StateKind::List, "seen").unwrap() as i32;
        let index = s.register(StateKind::Map, "index").unwrap() as i32;
        assert_eq!(s.register(StateKind::Value, "count").unwrap() as i32, count);
        assert!(s.register(StateKind::Map, "count").unwrap_err().contains("is a value state"));
        assert!(s.value(count).unwrap_err().contains("no key is selected"));
        s.set_groups(&[7, 2]);
        s.select(0).unwrap();
        s.set_value(count, b"abc").unwrap();
        s.list_add(seen, b"x").unwrap();
        s.map_put(index, b"b", b"2").unwrap();
        s.map_put(index, b"a", b"1").unwrap();
        s.select(1).unwrap();
        assert_eq!(s.value(count).unwrap(), None);
        assert!(s.select(2).unwrap_err().contains("2 key groups"));
        s.select(0).unwrap();
        assert_eq!(s.value(count).unwrap(), Some(&b"abc"[..]));
        assert_eq!(s.map_key_at(index, 0).unwrap(), Some(&b"a"[..]));
        assert!(s.list_len(count).unwrap_err().contains("not a list"));
        s.register_timer(100).unwrap();
        s.select(1).unwrap();
        s.register_timer(50).unwrap();
        s.register_timer(60).unwrap();
        s.delete_timer(60).unwrap();

        // Snapshot key 7, restore it elsewhere.
        let mut slots = Vec::new();
        s.snapshot_key(7, &mut slots);
        assert_eq!(slots.len(), 3);
        let timers = s.timers_by_key();
        let mut r = KeyedState::new();
        for (kind, name, bytes) in &slots {
            r.restore_slot(*kind, name, 0, bytes).unwrap();
        }
        r.restore_timers(0, &encode_timers(&timers[&7])).unwrap();
        r.set_groups(&[0]);
        r.select(0).unwrap();
        let index = r.register(StateKind::Map, "index").unwrap() as i32;
        assert_eq!(r.map_len(index).unwrap(), 2);
        assert_eq!(r.take_due_timers(1000, 10), vec![(100, 0)]);
        assert_eq!(s.take_due_timers(99, 10), vec![(50, 2)]);
        assert_eq!(s.pending_timers(), 1);
    }

    #[test]
    fn malformed_snapshot_bytes_are_refused() {
        assert!(decode_list(&[5, 0, 0, 0]).is_err());
        assert!(decode_list(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_map(&[1, 0, 0, 0, 1, 0, 0, 0]).is_err());
        assert!(decode_timers(&[1, 2, 3]).is_err());
        let list = vec![b"a".to_vec(), Vec::new()];
        assert_eq!(decode_list(&encode_list(&list)).unwrap(), list);
        let mut extra = encode_list(&list);
        extra.push(0);
        assert!(decode_list(&extra).is_err());
    }

    proptest::proptest! {
        /// Snapshot bytes from anywhere decode to a state or a reason, never a panic.
        #[test]
        fn arbitrary_snapshot_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = decode_list(&bytes);
            let _ = decode_map(&bytes);
            let _ = decode_timers(&bytes);
        }
    }
}
