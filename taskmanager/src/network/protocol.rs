//! The data plane's wire format.
//!
//! On the socket every frame is length-delimited (a 4-byte big-endian length, then the
//! frame; `tokio_util`'s `LengthDelimitedCodec` reads them and enforces the maximum frame
//! size, and the payload may be empty):
//!
//! ```text
//! +----------------+-----------------+--------------------+-------------------------------+
//! | length: u32 BE | version: u16 BE | header_len: u32 BE | header (MessagePack) | payload |
//! +----------------+-----------------+--------------------+-------------------------------+
//!   (codec)          \______________________ `length` bytes ______________________________/
//! ```
//!
//! The version comes first so a peer speaking another version is recognised before
//! anything else is decoded; such a connection is closed. The header is a [`Header`]
//! encoded with `rmp_serde` as a map with field names (as the RPC layer does). The payload
//! is the buffer itself for `Buffer` frames and the encoded event for `Custom` events, and
//! must be empty for every other frame; it is not MessagePack-encoded, so receiving a
//! buffer slices it out of the read buffer without copying.
//!
//! A consumer names each request with a `receiver_id` of its own choosing, unique on its
//! connection; every later frame of that request carries it.
//!
//! | frame | direction | meaning |
//! | --- | --- | --- |
//! | `PartitionRequest { receiver_id, partition, subpartition, credit }` | client → server | start sending this subpartition; `credit` buffers may be sent at once |
//! | `AddCredit { receiver_id, credit }` | client → server | `credit` more buffers may be sent |
//! | `CancelRequest { receiver_id }` | client → server | stop; the subpartition's queue is dropped |
//! | `Buffer { receiver_id, sequence }` + payload | server → client | one buffer; uses one credit |
//! | `Event { receiver_id, sequence, event }` (+ payload for `custom`) | server → client | one event; uses no credit |
//! | `Error { receiver_id, kind, message }` | server → client | the request failed and is over |
//! | `PartitionNotFound { receiver_id }` | server → client | not registered (yet); the request is over, ask again later |
//!
//! Sequence numbers count the buffers and events of one request from 0; a gap is a
//! protocol error. A request ends with an `EndOfPartition` event, an `Error`, a
//! `PartitionNotFound`, or a `CancelRequest`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use super::{BufferOrEvent, Event, PartitionId};

/// The version of the data plane's frame format and message set.
pub const DATA_PROTOCOL_VERSION: u16 = 1;

/// Bytes before the header: version and header length.
const PREFIX_LEN: usize = 6;

/// Room kept in a frame for the prefix and header: a buffer (or custom event) may be at
/// most `max_frame_size - FRAME_OVERHEAD` bytes to be sent over TCP.
pub const FRAME_OVERHEAD: usize = 256;

/// The MessagePack header of a frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Header {
    PartitionRequest { receiver_id: u64, partition: PartitionId, subpartition: u32, credit: u32 },
    AddCredit { receiver_id: u64, credit: u32 },
    CancelRequest { receiver_id: u64 },
    Buffer { receiver_id: u64, sequence: u64 },
    Event { receiver_id: u64, sequence: u64, event: WireEvent },
    Error { receiver_id: u64, kind: ErrorKind, message: String },
    PartitionNotFound { receiver_id: u64 },
}

impl Header {
    /// The frame's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Header::PartitionRequest { .. } => "PartitionRequest",
            Header::AddCredit { .. } => "AddCredit",
            Header::CancelRequest { .. } => "CancelRequest",
            Header::Buffer { .. } => "Buffer",
            Header::Event { .. } => "Event",
            Header::Error { .. } => "Error",
            Header::PartitionNotFound { .. } => "PartitionNotFound",
        }
    }

    fn carries_payload(&self) -> bool {
        matches!(self, Header::Buffer { .. } | Header::Event { event: WireEvent::Custom, .. })
    }
}

/// An event's kind on the wire; a `Custom` event's bytes are the frame's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireEvent {
    EndOfPartition,
    Custom,
}

/// Why a request failed, so the consumer reports the right error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The producer called `fail`; the message is its cause.
    ProducerFailed,
    /// The partition was released while being read.
    Released,
    /// The request itself is wrong (no such subpartition, already read, buffer too large).
    Rejected,
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payload: Bytes,
}

/// Why a frame could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame of {len} bytes is shorter than its {PREFIX_LEN}-byte prefix")]
    Truncated { len: usize },
    #[error("peer speaks data protocol version {theirs}, this process speaks {ours}")]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("header length {header_len} exceeds the frame's {available} remaining bytes")]
    BadHeaderLength { header_len: usize, available: usize },
    #[error("undecodable frame header: {reason}")]
    BadHeader { reason: String },
    #[error("{frame} frame carries a {len}-byte payload, it must carry none")]
    UnexpectedPayload { frame: &'static str, len: usize },
}

impl Message {
    pub fn new(header: Header) -> Self {
        Self { header, payload: Bytes::new() }
    }

    pub fn with_payload(header: Header, payload: Bytes) -> Self {
        Self { header, payload }
    }

    /// The frame for one item of a request.
    pub fn data(receiver_id: u64, sequence: u64, item: BufferOrEvent) -> Self {
        match item {
            BufferOrEvent::Buffer(buffer) => Self::with_payload(Header::Buffer { receiver_id, sequence }, buffer),
            BufferOrEvent::Event(Event::EndOfPartition) => {
                Self::new(Header::Event { receiver_id, sequence, event: WireEvent::EndOfPartition })
            }
            BufferOrEvent::Event(Event::Custom(bytes)) => {
                Self::with_payload(Header::Event { receiver_id, sequence, event: WireEvent::Custom }, bytes)
            }
        }
    }

    /// The frame (without the length prefix the codec adds).
    pub fn encode(&self) -> Bytes {
        let mut dst = BytesMut::new();
        self.encode_into(&mut dst);
        dst.freeze()
    }

    /// Appends the frame (without length prefix) to `dst`; the header is written in place.
    fn encode_into(&self, dst: &mut BytesMut) {
        let start = dst.len();
        dst.put_u16(DATA_PROTOCOL_VERSION);
        dst.put_u32(0);
        let header_start = dst.len();
        let mut writer = dst.writer();
        rmp_serde::encode::write_named(&mut writer, &self.header).expect("a data frame header always serializes");
        let dst = writer.into_inner();
        let header_len = (dst.len() - header_start) as u32;
        dst[start + 2..start + PREFIX_LEN].copy_from_slice(&header_len.to_be_bytes());
        dst.extend_from_slice(&self.payload);
    }

    /// Decodes a frame. Never panics, whatever the bytes.
    pub fn decode(mut frame: Bytes) -> Result<Message, ProtocolError> {
        if frame.len() < PREFIX_LEN {
            return Err(ProtocolError::Truncated { len: frame.len() });
        }
        let version = frame.get_u16();
        if version != DATA_PROTOCOL_VERSION {
            return Err(ProtocolError::VersionMismatch { ours: DATA_PROTOCOL_VERSION, theirs: version });
        }
        let header_len = frame.get_u32() as usize;
        if header_len > frame.len() {
            return Err(ProtocolError::BadHeaderLength { header_len, available: frame.len() });
        }
        let header_bytes = frame.split_to(header_len);
        let header: Header =
            rmp_serde::from_slice(&header_bytes).map_err(|e| ProtocolError::BadHeader { reason: e.to_string() })?;
        if !header.carries_payload() && !frame.is_empty() {
            return Err(ProtocolError::UnexpectedPayload { frame: header.name(), len: frame.len() });
        }
        Ok(Message { header, payload: frame })
    }

    /// The item a `Buffer` or `Event` frame carries.
    pub fn into_item(self) -> Option<(u64, u64, BufferOrEvent)> {
        match self.header {
            Header::Buffer { receiver_id, sequence } => {
                Some((receiver_id, sequence, BufferOrEvent::Buffer(self.payload)))
            }
            Header::Event { receiver_id, sequence, event } => {
                let event = match event {
                    WireEvent::EndOfPartition => Event::EndOfPartition,
                    WireEvent::Custom => Event::Custom(self.payload),
                };
                Some((receiver_id, sequence, BufferOrEvent::Event(event)))
            }
            _ => None,
        }
    }
}

/// Frames on a socket: `LengthDelimitedCodec` for reading (it bounds the frame size), and
/// an encoder that writes length, prefix, header and payload straight into the write
/// buffer (one copy of the payload, none for the header).
pub(crate) struct DataCodec {
    frames: LengthDelimitedCodec,
    max_frame_size: usize,
}

impl DataCodec {
    pub(crate) fn new(max_frame_size: usize) -> Self {
        Self { frames: LengthDelimitedCodec::builder().max_frame_length(max_frame_size).new_codec(), max_frame_size }
    }
}

impl Decoder for DataCodec {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        self.frames.decode(src)
    }
}

impl Encoder<Message> for DataCodec {
    type Error = std::io::Error;

    fn encode(&mut self, message: Message, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        let start = dst.len();
        dst.reserve(4 + PREFIX_LEN + 64 + message.payload.len());
        dst.put_u32(0);
        message.encode_into(dst);
        let len = dst.len() - start - 4;
        if len > self.max_frame_size {
            dst.truncate(start);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} frame of {len} bytes exceeds the maximum frame size {}",
                    message.header.name(),
                    self.max_frame_size
                ),
            ));
        }
        dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use flint_common::ids::{JobId, JobVertexId};

    use super::*;

    fn partition() -> PartitionId {
        PartitionId {
            job_id: JobId::from_u128(7),
            result: JobVertexId::from_u128(9),
            edge: 1,
            producer_subtask: 2,
            attempt: 0,
        }
    }

    fn all_messages() -> Vec<Message> {
        vec![
            Message::new(Header::PartitionRequest {
                receiver_id: 1,
                partition: partition(),
                subpartition: 3,
                credit: 8,
            }),
            Message::new(Header::AddCredit { receiver_id: 1, credit: 2 }),
            Message::new(Header::CancelRequest { receiver_id: 1 }),
            Message::data(1, 0, BufferOrEvent::Buffer(Bytes::from_static(b"records"))),
            Message::data(1, 1, BufferOrEvent::Buffer(Bytes::new())),
            Message::data(1, 2, BufferOrEvent::Event(Event::Custom(Bytes::from_static(b"barrier")))),
            Message::data(1, 3, BufferOrEvent::Event(Event::EndOfPartition)),
            Message::new(Header::Error { receiver_id: 1, kind: ErrorKind::ProducerFailed, message: "boom".into() }),
            Message::new(Header::PartitionNotFound { receiver_id: 1 }),
        ]
    }

    #[test]
    fn frames_round_trip() {
        for message in all_messages() {
            assert_eq!(Message::decode(message.encode()).unwrap(), message);
        }
    }

    #[test]
    fn codec_round_trips_and_bounds_frames() {
        let mut codec = DataCodec::new(1024);
        let mut wire = BytesMut::new();
        for message in all_messages() {
            codec.encode(message, &mut wire).unwrap();
        }
        for message in all_messages() {
            let frame = codec.decode(&mut wire).unwrap().unwrap();
            assert_eq!(Message::decode(frame.freeze()).unwrap(), message);
        }
        assert!(wire.is_empty());
        let big = Message::data(1, 0, BufferOrEvent::Buffer(Bytes::from(vec![0u8; 2000])));
        assert!(codec.encode(big, &mut wire).is_err());
        assert!(wire.is_empty(), "a refused frame leaves nothing behind");
        wire.put_u32(5000);
        wire.put_slice(b"whatever");
        assert!(codec.decode(&mut wire).is_err(), "an oversized length is refused before reading it");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Message::decode(Bytes::from_static(b"\x00\x01\x00")), Err(ProtocolError::Truncated { len: 3 }));
        assert_eq!(
            Message::decode(Bytes::from_static(b"\x00\x02\x00\x00\x00\x00")),
            Err(ProtocolError::VersionMismatch { ours: 1, theirs: 2 })
        );
        let err = Message::decode(Bytes::from_static(b"\x00\x01\xff\xff\xff\xff")).unwrap_err();
        assert!(matches!(err, ProtocolError::BadHeaderLength { .. }));
        let err = Message::decode(Bytes::from_static(b"\x00\x01\x00\x00\x00\x02\xc1\xc1")).unwrap_err();
        assert!(matches!(err, ProtocolError::BadHeader { .. }));
        let mut frame = Message::new(Header::CancelRequest { receiver_id: 1 }).encode().to_vec();
        frame.extend_from_slice(b"extra");
        let err = Message::decode(Bytes::from(frame)).unwrap_err();
        assert_eq!(err, ProtocolError::UnexpectedPayload { frame: "CancelRequest", len: 5 });
        // Every prefix of every valid frame, and byte flips, decode to an error or a frame.
        for message in all_messages() {
            let bytes = message.encode();
            for end in 0..bytes.len() {
                let _ = Message::decode(bytes.slice(..end));
            }
            for i in 0..bytes.len() {
                let mut flipped = bytes.to_vec();
                flipped[i] ^= 0xff;
                let _ = Message::decode(Bytes::from(flipped));
            }
        }
    }

    /// Pins the wire format: an accidental change fails here.
    #[test]
    fn golden_frame_bytes() {
        let buffer = Message::data(5, 2, BufferOrEvent::Buffer(Bytes::from_static(b"abc")));
        let expected: &[u8] = b"\x00\x01\x00\x00\x00\x20\x81\xa6Buffer\x82\xabreceiver_id\x05\xa8sequence\x02abc";
        assert_eq!(buffer.encode().as_ref(), expected);
        let credit = Message::new(Header::AddCredit { receiver_id: 5, credit: 1 });
        let expected: &[u8] = b"\x00\x01\x00\x00\x00\x21\x81\xa9AddCredit\x82\xabreceiver_id\x05\xa6credit\x01";
        assert_eq!(credit.encode().as_ref(), expected);
    }
}
