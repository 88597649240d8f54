//! The true figures of this process, under Flint's own metric names and under the names
//! Flink's JVM reports them with (Flink's dashboard and users' alerts read those).
//!
//! Flint has no JVM, no garbage collector and no class loader. The mapping (also in
//! `docs/architecture.md`):
//!
//! | Flint name | Flink name | what it is |
//! | --- | --- | --- |
//! | `Status.Process.Memory.Allocator` | `Status.JVM.Memory.Heap.Used` | memory the allocator (mimalloc) holds for the process's objects |
//! | `Status.Process.Memory.Resident` | `Status.JVM.Memory.Heap.Committed` | resident memory (`VmRSS`) |
//! | `Status.Process.Memory.Limit` | `Status.JVM.Memory.Heap.Max` | the cgroup memory limit, else the machine's memory |
//! | `Status.Process.Memory.Other` | `Status.JVM.Memory.NonHeap.Used` / `.Committed` | resident memory outside the allocator: code, thread stacks, mapped files |
//! | `Status.Process.CPU.Load` | `Status.JVM.CPU.Load` | CPU time used since the previous sample per wall time and core (0..1), as the JVM's process CPU load |
//! | `Status.Process.CPU.Time` | `Status.JVM.CPU.Time` | CPU time used in total, in nanoseconds |
//! | `Status.Process.Threads.Count` | `Status.JVM.Threads.Count` | the process's threads |
//!
//! `Status.JVM.Memory.NonHeap.Max` is -1 as on a JVM without a limit. Garbage collector,
//! class loader, direct and mapped buffer pool metrics are not reported: Flint has none.

use std::sync::Mutex;
use std::time::Instant;

use crate::process::{cpu_cores, machine_memory_bytes, resident_memory_bytes};

/// Memory the global allocator holds, in bytes; `None` where the process does not use
/// mimalloc (then only resident memory is known).
pub type AllocatorStats = fn() -> Option<u64>;

/// Memory mimalloc holds (its committed memory), for processes whose global allocator it
/// is; `None` when it has nothing committed (another allocator serves the process).
pub fn mimalloc_committed() -> Option<u64> {
    let (mut elapsed, mut user, mut system, mut rss, mut peak_rss) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut commit, mut peak_commit, mut faults) = (0usize, 0usize, 0usize);
    // SAFETY: mi_process_info only writes the eight counters behind the pointers, which
    // are valid, distinct locals.
    unsafe {
        libmimalloc_sys::mi_process_info(
            &mut elapsed,
            &mut user,
            &mut system,
            &mut rss,
            &mut peak_rss,
            &mut commit,
            &mut peak_commit,
            &mut faults,
        );
    }
    (commit > 0).then_some(commit as u64)
}

/// Samples the process figures; CPU load is measured between two samples.
pub struct ProcessMetrics {
    allocator: AllocatorStats,
    last_cpu: Mutex<Option<(Instant, f64)>>,
}

impl ProcessMetrics {
    pub fn new(allocator: AllocatorStats) -> Self {
        Self { allocator, last_cpu: Mutex::new(None) }
    }

    /// Every process metric with its current value, under both names.
    pub fn sample(&self) -> Vec<(&'static str, f64)> {
        let resident = resident_memory_bytes() as f64;
        let allocator = (self.allocator)().map_or(resident, |b| b as f64);
        let other = (resident - allocator).max(0.0);
        let limit = memory_limit_bytes() as f64;
        let cpu_seconds = cpu_time_seconds().unwrap_or(0.0);
        let load = self.cpu_load(Instant::now(), cpu_seconds);
        let threads = thread_count() as f64;
        vec![
            ("Status.Process.Memory.Allocator", allocator),
            ("Status.Process.Memory.Resident", resident),
            ("Status.Process.Memory.Limit", limit),
            ("Status.Process.Memory.Other", other),
            ("Status.Process.CPU.Load", load),
            ("Status.Process.CPU.Time", (cpu_seconds * 1e9).round()),
            ("Status.Process.Threads.Count", threads),
            ("Status.JVM.Memory.Heap.Used", allocator),
            ("Status.JVM.Memory.Heap.Committed", resident),
            ("Status.JVM.Memory.Heap.Max", limit),
            ("Status.JVM.Memory.NonHeap.Used", other),
            ("Status.JVM.Memory.NonHeap.Committed", other),
            ("Status.JVM.Memory.NonHeap.Max", -1.0),
            ("Status.JVM.CPU.Load", load),
            ("Status.JVM.CPU.Time", (cpu_seconds * 1e9).round()),
            ("Status.JVM.Threads.Count", threads),
        ]
    }

    /// CPU seconds used since the previous sample per wall second and core; 0 at the first.
    fn cpu_load(&self, now: Instant, cpu_seconds: f64) -> f64 {
        let mut last = self.last_cpu.lock().unwrap_or_else(|e| e.into_inner());
        let load = match *last {
            Some((then, used)) if now > then => {
                let wall = now.duration_since(then).as_secs_f64() * f64::from(cpu_cores().max(1));
                ((cpu_seconds - used) / wall).clamp(0.0, 1.0)
            }
            _ => 0.0,
        };
        *last = Some((now, cpu_seconds));
        load
    }
}

/// User plus system CPU time of this process in seconds (`/proc/self/stat`).
fn cpu_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces) start with the state (field 3);
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    Some((utime + stime) / 100.0)
}

/// The process's thread count (`Threads:` in `/proc/self/status`).
fn thread_count() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}

/// The cgroup (v2, then v1) memory limit when there is one, else the machine's memory.
pub fn memory_limit_bytes() -> u64 {
    let machine = machine_memory_bytes().0;
    ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|s| s.trim().parse::<u64>().ok())
        .find(|&limit| limit > 0 && limit < machine)
        .unwrap_or(machine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_the_processs_own_under_both_names() {
        let metrics = ProcessMetrics::new(|| Some(4096));
        let first: std::collections::HashMap<_, _> = metrics.sample().into_iter().collect();
        assert_eq!(first["Status.JVM.Memory.Heap.Used"], 4096.0);
        assert_eq!(first["Status.Process.Memory.Allocator"], 4096.0);
        assert!(first["Status.JVM.Memory.Heap.Committed"] > 1e6, "{first:?}");
        assert_eq!(first["Status.JVM.Memory.Heap.Committed"], first["Status.Process.Memory.Resident"]);
        assert!(first["Status.JVM.Memory.Heap.Max"] >= first["Status.JVM.Memory.Heap.Committed"]);
        assert!(first["Status.JVM.Threads.Count"] >= 1.0);
        assert_eq!(first["Status.JVM.CPU.Load"], 0.0, "no load before a second sample");
        // Burn CPU for a while: the next sample sees a load above zero.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 200 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let second: std::collections::HashMap<_, _> = metrics.sample().into_iter().collect();
        let load = second["Status.JVM.CPU.Load"];
        assert!(load > 0.0 && load <= 1.0, "{load}");
        assert!(second["Status.JVM.CPU.Time"] >= first["Status.JVM.CPU.Time"] + 1e8, "{second:?}");
    }

    #[test]
    fn without_allocator_figures_the_heap_is_the_resident_memory() {
        let metrics = ProcessMetrics::new(|| None);
        let m: std::collections::HashMap<_, _> = metrics.sample().into_iter().collect();
        assert_eq!(m["Status.JVM.Memory.Heap.Used"], m["Status.JVM.Memory.Heap.Committed"]);
        assert_eq!(m["Status.JVM.Memory.NonHeap.Used"], 0.0);
    }
}
