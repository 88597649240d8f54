//! The ResourceManager: cluster membership and slots.
//!
//! - [`slot_manager`]: the SlotManager, a pure state machine (events in, actions out).
//! - [`resource_manager`]: the actor that owns a SlotManager, registers TaskExecutors,
//!   runs heartbeats and performs the SlotManager's actions; [`spawn`] starts it in its
//!   own actix system.

pub mod resource_manager;
pub mod slot_batches;
pub mod slot_manager;

pub use resource_manager::{spawn, ResourceManagerConfig, ResourceManagerHandle};
