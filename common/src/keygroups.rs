//! Key groups (Flink's `KeyGroupRangeAssignment`): keyed state and keyed records are split
//! into `max_parallelism` key groups; each subtask of a keyed operator owns one contiguous
//! range of them. The taskmanager routes records and cuts state by these ranges; the
//! jobmanager records each subtask's range in a checkpoint's `_metadata`.

use std::ops::RangeInclusive;

/// The subtask (of `parallelism`) that owns key group `key_group`.
#[inline]
pub fn subtask_for_key_group(key_group: u32, max_parallelism: u32, parallelism: u32) -> u32 {
    (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32
}

/// The key groups owned by `subtask` of `parallelism` (contiguous; empty, i.e. `start >
/// end`, only when `parallelism > max_parallelism`).
pub fn key_group_range(subtask: u32, max_parallelism: u32, parallelism: u32) -> RangeInclusive<u32> {
    let (s, m, p) = (u64::from(subtask), u64::from(max_parallelism), u64::from(parallelism));
    let start = (s * m).div_ceil(p);
    let end = ((s + 1) * m - 1) / p;
    start as u32..=end as u32
}
