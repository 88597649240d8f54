//! Remote channels: how actors in different processes talk.
//!
//! Every process runs one [`RpcService`]: one TCP listener, outbound connections that
//! are opened on first use and re-opened after they break, and a table of local
//! [`Endpoint`]s (one per actor reachable from outside, e.g. `resourcemanager`).
//!
//! - [`frame`]: the wire format (length-delimited frames, MessagePack header and body).
//! - [`framing`]: reading and writing length-delimited frames, bounded in memory and time.
//! - [`endpoint`]: what an endpoint is — a name, an optional fencing token, and one
//!   handler per message type, usually forwarding to an actix actor.
//! - [`service`]: the listener, connections, `ask`/`tell`, timeouts, local dispatch.
//!
//! Messages are plain serde types implementing [`RpcMessage`] (declared with
//! [`rpc_message!`]); callers use typed gateways (see `crate::messages`), never frames.

pub mod endpoint;
pub mod frame;
pub mod framing;
pub mod service;

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use endpoint::{Endpoint, FencingToken};
pub use frame::PROTOCOL_VERSION;
pub use service::{RpcService, RpcServiceConfig};

/// A message that can cross a process boundary.
pub trait RpcMessage: Serialize + DeserializeOwned + Send + 'static {
    /// The name carried in the frame header; unique per message type.
    const TYPE_NAME: &'static str;
    /// Whether a fenced endpoint checks the sender's fencing token for this message.
    const FENCED: bool;
    /// The reply of an `ask`.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

/// Declares RPC messages: implements [`RpcMessage`] and `actix::Message` for each.
///
/// ```ignore
/// rpc_message!(fenced RegisterTaskExecutor => RegistrationResponse);
/// rpc_message!(unfenced IdentifyLeader => LeaderInfo);
/// ```
#[macro_export]
macro_rules! rpc_message {
    (@impl $fenced:expr, $msg:ty => $resp:ty) => {
        impl $crate::rpc::RpcMessage for $msg {
            const TYPE_NAME: &'static str = stringify!($msg);
            const FENCED: bool = $fenced;
            type Response = $resp;
        }
        impl ::actix::Message for $msg {
            type Result = $resp;
        }
    };
    (fenced $msg:ty => $resp:ty) => { $crate::rpc_message!(@impl true, $msg => $resp); };
    (unfenced $msg:ty => $resp:ty) => { $crate::rpc_message!(@impl false, $msg => $resp); };
}

/// Why a remote call failed. Carried across the wire in `Error` frames.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum RpcError {
    #[error("ask '{type_name}' to {target} timed out after {timeout_ms} ms")]
    Timeout { target: String, type_name: String, timeout_ms: u64 },
    #[error("could not connect to {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("connection to {address} lost: {reason}")]
    ConnectionLost { address: String, reason: String },
    #[error("no endpoint '{endpoint}' at {address}")]
    UnknownEndpoint { address: String, endpoint: String },
    #[error("endpoint '{endpoint}' does not handle message type '{type_name}'")]
    UnknownMessage { endpoint: String, type_name: String },
    #[error("fencing token mismatch at '{endpoint}' for '{type_name}': expected {expected}, received {received}")]
    Fenced { endpoint: String, type_name: String, expected: String, received: String },
    #[error("could not decode {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("could not encode {what}: {reason}")]
    Encode { what: String, reason: String },
    #[error("message '{type_name}' of {size} bytes exceeds the maximum frame size of {max} bytes (pekko.framesize)")]
    FrameTooLarge { type_name: String, size: usize, max: usize },
    #[error("{0}")]
    VersionMismatch(String),
    #[error("endpoint '{endpoint}' is shut down")]
    EndpointGone { endpoint: String },
    #[error("the rpc service is shut down")]
    ServiceStopped,
}

impl RpcError {
    /// Whether trying the same call again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RpcError::Timeout { .. }
                | RpcError::Unreachable { .. }
                | RpcError::ConnectionLost { .. }
                | RpcError::UnknownEndpoint { .. }
                | RpcError::Fenced { .. }
                | RpcError::EndpointGone { .. }
        )
    }
}

/// `flint://host:port/<endpoint>`: where an endpoint lives.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RpcAddress {
    /// `host:port` of the process's listener.
    pub host_port: String,
    /// The endpoint name; may contain `/` (e.g. `jobmaster/<job-id>`).
    pub endpoint: String,
}

impl RpcAddress {
    pub fn new(host_port: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Self { host_port: host_port.into(), endpoint: endpoint.into() }
    }
}

impl fmt::Display for RpcAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flint://{}/{}", self.host_port, self.endpoint)
    }
}

impl fmt::Debug for RpcAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for RpcAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest =
            s.strip_prefix("flint://").ok_or_else(|| format!("rpc address '{s}' does not start with flint://"))?;
        let (host_port, endpoint) = rest.split_once('/').ok_or_else(|| format!("rpc address '{s}' has no endpoint"))?;
        let port_ok = host_port.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok || endpoint.is_empty() {
            return Err(format!("rpc address '{s}' is not of the form flint://host:port/endpoint"));
        }
        Ok(Self::new(host_port, endpoint))
    }
}

impl TryFrom<String> for RpcAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RpcAddress> for String {
    fn from(a: RpcAddress) -> String {
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print() {
        let a: RpcAddress = "flint://localhost:6123/jobmaster/abc".parse().unwrap();
        assert_eq!(a.host_port, "localhost:6123");
        assert_eq!(a.endpoint, "jobmaster/abc");
        assert_eq!(a.to_string(), "flint://localhost:6123/jobmaster/abc");
        for bad in ["localhost:6123/x", "flint://localhost/x", "flint://localhost:99999/x", "flint://h:1/"] {
            assert!(bad.parse::<RpcAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_survive_the_wire() {
        let e = RpcError::Fenced {
            endpoint: "rm".into(),
            type_name: "X".into(),
            expected: "a".into(),
            received: "b".into(),
        };
        let bytes = rmp_serde::to_vec_named(&e).unwrap();
        assert_eq!(rmp_serde::from_slice::<RpcError>(&bytes).unwrap(), e);
        assert!(e.is_retryable());
        assert!(!RpcError::Decode { what: "x".into(), reason: "y".into() }.is_retryable());
    }
}
