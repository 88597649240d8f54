//! The task runtime: operators over Arrow record batches.
//!
//! - [`operator`]: the contract every operator implements.
//! - [`partition`]: the non-keyed output partitioners (forward, rebalance, rescale, broadcast) and the
//!   [`partition::Partitioner`] trait the keyed hash partitioner implements too.
//! - [`schema`]: Flint schemas and types as Arrow schemas and types.
//! - [`expr`]: vectorized (batch-at-a-time) evaluation of `map`/`filter` expressions.
//! - [`sources`]: the sources (sequence, datagen, file, socket) emitting record batches.
//! - [`transforms`]: map, filter, flat_map.split, union/key_by pass-through, fail, and the
//!   operator chain (chained operators as plain calls).
//! - [`sinks`]: print, file and blackhole sinks.
//! - [`kafka_source`], [`kafka_sink`]: `source.kafka` and `sink.kafka` (Flink's Kafka connector).
//! - [`codec`]: record batches as self-contained network buffers (Arrow IPC messages).
//! - [`build`]: operator specifications to source and operator instances.
//! - [`keyed`]: key encoding and hashing, key groups, the hash partitioner, keyed state ([`keyed::KeyMap`]).
//! - [`aggregate`]: the `aggregate` operator (running aggregates per key) and the accumulators.
//! - [`wasm`]: `map.wasm`, `flat_map.wasm` and `process.wasm` (WebAssembly user code, per batch).
//! - [`window`]: the `window` operator (tumbling and sliding windows, processing or event time).

pub mod aggregate;
pub mod build;
pub mod codec;
pub mod expr;
pub mod kafka_sink;
pub mod kafka_source;
pub mod keyed;
pub mod operator;
pub mod partition;
pub mod schema;
pub mod sinks;
pub mod sources;
pub mod transforms;
pub mod wasm;
pub mod window;
