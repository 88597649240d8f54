//! Typed identifiers.
//!
//! Every id that names a runtime object gets its own type, so a `JobId` can never be
//! passed where an `AllocationId` is expected. The 128-bit ids are generated from
//! random UUIDs and displayed (and serialized, in JSON and MessagePack alike) as
//! 32-char lowercase hex, as Flink's REST API shows them. `ResourceId` is a free
//! string (Flink's `host:port-abcdef` form), and `SlotId` is a resource id plus a
//! slot index.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Error for a string that is not a 32-char hex id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} '{value}': expected 32 hexadecimal characters")]
pub struct IdParseError {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! hex_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u128);

        impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                Self(uuid::Uuid::new_v4().as_u128())
            }

            pub const fn from_u128(value: u128) -> Self {
                Self(value)
            }

            pub const fn as_u128(&self) -> u128 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:032x})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(IdParseError { kind: stringify!($name), value: s.to_string() });
                }
                u128::from_str_radix(s, 16)
                    .map(Self)
                    .map_err(|_| IdParseError { kind: stringify!($name), value: s.to_string() })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// A submitted job.
    JobId
);
hex_id!(
    /// One registration of a TaskExecutor at one ResourceManager.
    InstanceId
);
hex_id!(
    /// One slot allocation requested by a JobMaster.
    AllocationId
);
hex_id!(
    /// One attempt of one subtask.
    ExecutionAttemptId
);
hex_id!(
    /// A vertex of a job graph.
    JobVertexId
);
hex_id!(
    /// A leader session (the fencing token of a leader-elected endpoint).
    LeaderSessionId
);
hex_id!(
    /// An asynchronous REST operation (savepoint, stop-with-savepoint, checkpoint).
    TriggerId
);

/// The id of a TaskExecutor (or any other cluster process), as in Flink a free string,
/// by default `host:port-<6 hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResourceId(String);

impl ResourceId {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// `host:port-<6 hex>`, the form Flink gives a TaskExecutor without a configured id.
    pub fn generate_for(host: &str, port: u16) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("{host}:{port}-{}", &suffix[..6]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({})", self.0)
    }
}

/// One slot of one TaskExecutor.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlotId {
    pub resource_id: ResourceId,
    pub index: u32,
}

impl SlotId {
    pub fn new(resource_id: ResourceId, index: u32) -> Self {
        Self { resource_id, index }
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.resource_id, self.index)
    }
}

impl fmt::Debug for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_display_as_32_lowercase_hex() {
        let id = JobId::from_u128(0xd32372ce5f35ca47aae45d20b7c5d776);
        assert_eq!(id.to_string(), "d32372ce5f35ca47aae45d20b7c5d776");
        assert_eq!("d32372ce5f35ca47aae45d20b7c5d776".parse::<JobId>().unwrap(), id);
        assert_eq!(JobId::from_u128(1).to_string(), "00000000000000000000000000000001");
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in ["", "notajobid", "0123456789abcdef0123456789abcdeX", "+123456789abcdef0123456789abcdef"] {
            let err = bad.parse::<JobId>().unwrap_err();
            assert_eq!(err.kind, "JobId");
        }
    }

    #[test]
    fn ids_round_trip_through_json_and_messagepack() {
        let id = AllocationId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<AllocationId>(&json).unwrap(), id);
        let mp = rmp_serde::to_vec_named(&id).unwrap();
        assert_eq!(rmp_serde::from_slice::<AllocationId>(&mp).unwrap(), id);
        let slot = SlotId::new(ResourceId::generate_for("localhost", 4000), 3);
        let mp = rmp_serde::to_vec_named(&slot).unwrap();
        assert_eq!(rmp_serde::from_slice::<SlotId>(&mp).unwrap(), slot);
    }

    #[test]
    fn generated_resource_id_has_flink_form() {
        let id = ResourceId::generate_for("localhost", 42975);
        let (prefix, suffix) = id.as_str().rsplit_once('-').unwrap();
        assert_eq!(prefix, "localhost:42975");
        assert_eq!(suffix.len(), 6);
        assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
