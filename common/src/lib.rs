//! The shared contract of all Flint processes.
//!
//! - [`ids`]: typed identifiers (32-char hex in JSON and on the wire).
//! - [`config`]: `conf/config.yaml` / legacy `flink-conf.yaml` loading and typed options.
//! - [`resources`]: resource profiles and slot reports.
//! - [`rpc`]: remote channels — framing, the per-process RPC service, typed asks and tells.
//! - [`messages`]: every message type that crosses a process boundary, with its gateway.
//! - [`ha`]: high availability: leader election and retrieval, job graph / completed checkpoint /
//!   job result stores, checkpoint id counters; standalone and ZooKeeper implementations.
//! - [`job`]: job files (JSON/YAML), their validation and the derived JobGraph plan.
//! - [`metrics`]: rates over windows and the `get`/`agg` answers of Flink's metric REST calls.
//! - [`process`]: what every daemon does alike: arguments, config, logging, signals.
//! - [`process_metrics`]: the process's memory, CPU and threads under Flint's and Flink's names.
//! - [`metric_reporter`]: Flink's Prometheus reporter: every process serves its metrics on `/metrics`.
//! - [`checkpoint_storage`]: checkpoint and savepoint directories on a filesystem path.
//! - [`io_paths`]: `flint.io.allowed-paths`, the local directories jobs may read and write.

pub mod blob;
pub mod checkpoint_storage;
pub mod config;
pub mod ha;
pub mod ids;
pub mod io_paths;
pub mod java_serialized_throwable;
pub mod job;
pub mod keygroups;
pub mod messages;
pub mod metric_reporter;
pub mod metrics;
pub mod process;
pub mod process_metrics;
pub mod resources;
pub mod rpc;
pub mod tls;
pub mod yaml;

/// Flint's version, reported as `flink-version` by the REST API.
pub const FLINT_VERSION: &str = env!("CARGO_PKG_VERSION");
