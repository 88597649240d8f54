//! Endpoints: named targets inside a process, with one handler per message type.
//!
//! An endpoint is usually backed by an actix actor: [`Endpoint::on_actor`] decodes the
//! body, puts the message into the actor's mailbox at once (so messages from one
//! connection reach the actor in the order they were sent) and returns a future of the
//! encoded reply. A fenced endpoint checks the frame's fencing token against the
//! current leader session id before anything is decoded.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::frame::FrameHeader;
use super::{RpcError, RpcMessage};
use crate::ids::LeaderSessionId;

/// The future of an encoded reply.
pub type ReplyFuture = BoxFuture<'static, Result<Bytes, RpcError>>;

type HandlerFn = Arc<dyn Fn(Bytes) -> Result<ReplyFuture, RpcError> + Send + Sync>;

struct HandlerEntry {
    fenced: bool,
    handler: HandlerFn,
}

/// The current leader session id of a leader-elected endpoint; `None` while not leader.
/// Shared between the endpoint (which checks incoming frames) and the actor (which sets
/// it on grant and clears it on revoke).
#[derive(Clone, Default, Debug)]
pub struct FencingToken(Arc<RwLock<Option<LeaderSessionId>>>);

impl FencingToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, session: Option<LeaderSessionId>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = session;
    }

    pub fn get(&self) -> Option<LeaderSessionId> {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// A named target of remote messages.
pub struct Endpoint {
    name: String,
    fencing: Option<FencingToken>,
    handlers: HashMap<&'static str, HandlerEntry>,
}

pub(crate) fn encode_body<T: serde::Serialize>(what: &str, value: &T) -> Result<Bytes, RpcError> {
    rmp_serde::to_vec_named(value)
        .map(Bytes::from)
        .map_err(|e| RpcError::Encode { what: what.to_string(), reason: e.to_string() })
}

/// Decodes a MessagePack body (a peer's bytes: errors, never panics).
pub fn decode_body<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, RpcError> {
    rmp_serde::from_slice(body).map_err(|e| RpcError::Decode { what: what.to_string(), reason: e.to_string() })
}

impl Endpoint {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), fencing: None, handlers: HashMap::new() }
    }

    /// Makes this endpoint fenced: messages declared `fenced` must carry `token`'s
    /// current value.
    pub fn fenced(mut self, token: FencingToken) -> Self {
        self.fencing = Some(token);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Routes message type `M` to an actix actor.
    pub fn on_actor<M, A>(self, addr: Addr<A>) -> Self
    where
        M: RpcMessage + actix::Message<Result = <M as RpcMessage>::Response>,
        A: Actor + Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let endpoint = self.name.clone();
        self.on_handler::<M>(Arc::new(move |body: Bytes| {
            let msg: M = decode_body(M::TYPE_NAME, &body)?;
            // `send` on a fresh sender enqueues now, even when the mailbox is over its
            // capacity (a sender that found it full would hold the message back in its
            // future, and a later request could overtake it). Requests stay in arrival
            // order; the RPC service bounds how many each connection has in flight.
            let request = addr.clone().send(msg);
            let endpoint = endpoint.clone();
            Ok(async move {
                let response = request.await.map_err(|_| RpcError::EndpointGone { endpoint })?;
                encode_body(M::TYPE_NAME, &response)
            }
            .boxed())
        }))
    }

    /// Routes message type `M` to a function (for small endpoints and tests).
    pub fn on_fn<M, F, Fut>(self, f: F) -> Self
    where
        M: RpcMessage,
        F: Fn(M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = M::Response> + Send + 'static,
    {
        self.on_handler::<M>(Arc::new(move |body: Bytes| {
            let msg: M = decode_body(M::TYPE_NAME, &body)?;
            let fut = f(msg);
            Ok(async move { encode_body(M::TYPE_NAME, &fut.await) }.boxed())
        }))
    }

    fn on_handler<M: RpcMessage>(mut self, handler: HandlerFn) -> Self {
        self.handlers.insert(M::TYPE_NAME, HandlerEntry { fenced: M::FENCED, handler });
        self
    }

    /// Checks fencing, decodes and enqueues one message; the future yields the reply.
    pub(crate) fn dispatch(&self, header: &FrameHeader, body: Bytes) -> Result<ReplyFuture, RpcError> {
        let entry = self.handlers.get(header.type_name.as_str()).ok_or_else(|| RpcError::UnknownMessage {
            endpoint: self.name.clone(),
            type_name: header.type_name.clone(),
        })?;
        if entry.fenced {
            if let Some(token) = &self.fencing {
                let expected = token.get();
                if expected.is_none() || expected != header.fencing_token {
                    return Err(RpcError::Fenced {
                        endpoint: self.name.clone(),
                        type_name: header.type_name.clone(),
                        expected: expected.map_or_else(|| "no leader".to_string(), |s| s.to_string()),
                        received: header.fencing_token.map_or_else(|| "none".to_string(), |s| s.to_string()),
                    });
                }
            }
        }
        (entry.handler)(body)
    }
}
