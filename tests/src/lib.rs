//! Test harness for integration tests that start real Flint processes.
