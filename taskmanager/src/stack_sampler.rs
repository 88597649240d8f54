//! On-CPU stack samples of task threads, for Flink's vertex flame graphs.
//!
//! `pprof` (TiKV's profiler) samples every thread of the process that is on a CPU with
//! `SIGPROF` at the requested frequency for the requested time; the samples of the
//! requested task threads (told apart by their pthread ids, which `tm_metrics` records when
//! a task's thread starts) are kept, symbolized (function names, demangled), cut to the
//! innermost `max_depth` frames and returned outermost first with their counts. Only one
//! sampling runs at a time per process (the profiler is process-wide); a second request
//! meanwhile is refused as busy (retryable). Frames of the sampler itself (the signal
//! handler and its unwinder) are dropped. Output is bounded: at most [`MAX_STACKS`]
//! distinct stacks and [`MAX_FRAME_NAME`] bytes per frame name.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flint_common::messages::{ThreadSamples, ThreadSamplingError};

/// The most distinct stacks one answer carries (the most frequent are kept).
pub const MAX_STACKS: usize = 5_000;
/// Longer frame names are cut.
pub const MAX_FRAME_NAME: usize = 300;
/// The longest sampling period accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(30);

static SAMPLING: AtomicBool = AtomicBool::new(false);

/// Frames that belong to the sampler or the signal delivery, not to the task.
fn is_sampler_frame(name: &str) -> bool {
    name.starts_with("pprof::")
        || name.starts_with("backtrace::")
        || name.starts_with("<pprof::")
        || name.contains("perf_signal_handler")
        || name == "__restore_rt"
}

/// Samples the threads `threads` (pthread ids) for `duration` at `frequency_hz`. Blocks
/// the calling thread for `duration`: call it from a thread of its own.
pub fn sample(
    threads: &[u64],
    duration: Duration,
    frequency_hz: u32,
    max_depth: usize,
) -> Result<ThreadSamples, ThreadSamplingError> {
    if SAMPLING.swap(true, Ordering::AcqRel) {
        return Err(ThreadSamplingError::Busy);
    }
    let result = sample_exclusively(threads, duration.min(MAX_DURATION), frequency_hz.clamp(1, 1000), max_depth);
    SAMPLING.store(false, Ordering::Release);
    result
}

fn sample_exclusively(
    threads: &[u64],
    duration: Duration,
    frequency_hz: u32,
    max_depth: usize,
) -> Result<ThreadSamples, ThreadSamplingError> {
    let failed = |e: pprof::Error| ThreadSamplingError::SamplerFailed { reason: e.to_string() };
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(frequency_hz as i32)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| match e {
            pprof::Error::Running => ThreadSamplingError::Busy,
            e => failed(e),
        })?;
    std::thread::sleep(duration);
    let report = guard.report().build().map_err(failed)?;
    drop(guard);
    let mut stacks: std::collections::HashMap<Vec<String>, u64> = std::collections::HashMap::new();
    for (frames, count) in &report.data {
        if !threads.contains(&frames.thread_id) || *count <= 0 {
            continue;
        }
        // pprof lists the innermost frame first; inlined functions of one frame innermost
        // first too.
        let mut names: Vec<String> = frames
            .frames
            .iter()
            .flat_map(|symbols| symbols.iter().map(|s| s.name()))
            .filter(|name| !is_sampler_frame(name))
            .map(|mut name| {
                if name.len() > MAX_FRAME_NAME {
                    let mut cut = MAX_FRAME_NAME;
                    while !name.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    name.truncate(cut);
                }
                name
            })
            .collect();
        names.truncate(max_depth.max(1));
        names.reverse();
        *stacks.entry(names).or_default() += *count as u64;
    }
    let mut stacks: Vec<(Vec<String>, u64)> = stacks.into_iter().collect();
    stacks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    stacks.truncate(MAX_STACKS);
    Ok(ThreadSamples { stacks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn spin_in_a_named_function(until: std::time::Instant) -> u64 {
        let mut x = 1u64;
        while std::time::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        x
    }

    #[test]
    fn a_busy_thread_is_sampled_with_its_functions_and_an_idle_one_is_not() {
        let (tx, rx) = std::sync::mpsc::channel();
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        let busy = std::thread::spawn(move || {
            tx.send(nix::sys::pthread::pthread_self() as u64).unwrap();
            spin_in_a_named_function(until)
        });
        let (idle_tx, idle_rx) = std::sync::mpsc::channel();
        let idle = std::thread::spawn(move || {
            idle_tx.send(nix::sys::pthread::pthread_self() as u64).unwrap();
            std::thread::sleep(Duration::from_millis(1500));
        });
        let busy_id = rx.recv().unwrap();
        let idle_id = idle_rx.recv().unwrap();
        let samples = sample(&[busy_id], Duration::from_millis(800), 200, 64).unwrap();
        let idle_samples = sample(&[idle_id], Duration::from_millis(200), 200, 64).unwrap();
        busy.join().unwrap();
        idle.join().unwrap();
        let total: u64 = samples.stacks.iter().map(|(_, n)| n).sum();
        // 160 at full speed; fewer when the machine is loaded (only CPU time is sampled).
        assert!(total >= 3, "samples of a spinning thread, got {total}: {samples:?}");
        let named = samples
            .stacks
            .iter()
            .filter(|(stack, _)| stack.iter().any(|f| f.contains("spin_in_a_named_function")))
            .map(|(_, n)| n)
            .sum::<u64>();
        assert!(named * 2 >= total, "most samples are in the spinning function: {samples:?}");
        assert!(samples.stacks.iter().all(|(stack, _)| !stack.iter().any(|f| is_sampler_frame(f))));
        assert!(idle_samples.stacks.is_empty(), "a sleeping thread is not on a CPU: {idle_samples:?}");
        // One sampling at a time (in the same test: the flag is process-wide).
        SAMPLING.store(true, Ordering::Release);
        let busy = sample(&[], Duration::from_millis(1), 10, 8);
        SAMPLING.store(false, Ordering::Release);
        assert_eq!(busy, Err(ThreadSamplingError::Busy));
        assert!(ThreadSamplingError::Busy.is_retryable());
    }
}
