//! Length-delimited framing over a byte stream, bounded in memory and time: a 4-byte
//! big-endian length, then that many bytes (the layout of `tokio_util`'s
//! `LengthDelimitedCodec`, which the RPC service and the data plane used before).
//!
//! Unlike that codec, [`FrameReader`] never reserves what a peer *announces*: the buffer
//! grows with the bytes that actually arrive (at most doubling, at most [`READ_CHUNK`]
//! ahead), so a
//! connection that sends only a huge length prefix costs nothing. It also bounds time:
//! once the first byte of a frame arrived the whole frame must arrive within the frame
//! timeout (a one-byte-per-second sender is dropped), and a connection may be required to
//! deliver its first frame within a handshake timeout.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How far ahead of the bytes received the read buffer grows at most.
pub const READ_CHUNK: usize = 64 * 1024;

/// Why reading a frame failed. None of these is worth a retry on the same connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameReadError {
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("a frame did not arrive within {0} ms")]
    Timeout(u128),
    #[error("no frame within {0} ms of connecting")]
    Handshake(u128),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads length-delimited frames; cancel-safe (all state lives in the reader).
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_frame_size: usize,
    frame_timeout: Duration,
    /// Until when the first frame must be complete (`None`: no handshake deadline), and
    /// the timeout it came from.
    handshake_deadline: Option<Instant>,
    handshake_timeout: Duration,
    /// When the first byte of the frame being read arrived.
    frame_started: Option<Instant>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame_size: usize, frame_timeout: Duration) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            max_frame_size,
            frame_timeout,
            handshake_deadline: None,
            handshake_timeout: Duration::ZERO,
            frame_started: None,
        }
    }

    /// Requires the first whole frame within `timeout` of now.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_deadline = Some(Instant::now() + timeout);
        self.handshake_timeout = timeout;
        self
    }

    /// The next frame's payload; `Ok(None)` when the peer closed between frames.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, FrameReadError> {
        loop {
            if let Some(frame) = self.parse()? {
                self.frame_started = None;
                self.handshake_deadline = None;
                return Ok(Some(frame));
            }
            let deadline = match (self.frame_started, self.handshake_deadline) {
                (Some(started), Some(handshake)) => Some((started + self.frame_timeout).min(handshake)),
                (Some(started), None) => Some(started + self.frame_timeout),
                (None, handshake) => handshake,
            };
            let read = self.inner.read_buf(&mut self.buf);
            let n = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, read).await {
                    Ok(n) => n?,
                    Err(_) => {
                        return Err(match self.handshake_deadline {
                            Some(_) if self.frame_started.is_none_or(|s| s + self.frame_timeout > deadline) => {
                                FrameReadError::Handshake(self.handshake_timeout.as_millis())
                            }
                            _ => FrameReadError::Timeout(self.frame_timeout.as_millis()),
                        })
                    }
                },
                None => read.await?,
            };
            if n == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(FrameReadError::Truncated) };
            }
            if self.frame_started.is_none() {
                self.frame_started = Some(Instant::now());
            }
        }
    }

    /// A complete frame from the buffer, or `None` after making room for the next read.
    fn parse(&mut self) -> Result<Option<Bytes>, FrameReadError> {
        if self.buf.len() < 4 {
            self.buf.reserve(READ_CHUNK.min(4096));
            return Ok(None);
        }
        let size = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if size > self.max_frame_size {
            return Err(FrameReadError::TooLarge { size, max: self.max_frame_size });
        }
        if self.buf.len() < 4 + size {
            // Grow with what arrived (at most doubling, at most a chunk ahead): memory
            // follows the bytes received, not the length announced.
            let missing = 4 + size - self.buf.len();
            self.buf.reserve(missing.min(self.buf.len().max(4096)).min(READ_CHUNK));
            return Ok(None);
        }
        self.buf.advance(4);
        let frame = self.buf.split_to(size).freeze();
        if self.buf.is_empty() {
            // Give back what a large frame made the buffer grow to.
            self.buf = BytesMut::new();
        }
        Ok(Some(frame))
    }
}

/// Writes one frame (length prefix and payload); the whole write must finish within
/// `timeout`, else the peer is not draining the connection and it is given up.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
    timeout: Duration,
) -> Result<(), FrameWriteError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameWriteError::TooLarge(payload.len()))?;
    let write = async {
        writer.write_all(&len.to_be_bytes()).await?;
        writer.write_all(payload).await?;
        // A TLS stream keeps what the socket did not take yet; plain TCP flushes nothing.
        writer.flush().await?;
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(FrameWriteError::NotDraining(timeout.as_millis())),
    }
}

/// Why writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameWriteError {
    #[error("the peer did not read for {0} ms")]
    NotDraining(u128),
    #[error("frame of {0} bytes is too large for a length prefix")]
    TooLarge(usize),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn frames_round_trip_in_pieces() {
        runtime().block_on(async {
            let (client, server) = tokio::io::duplex(7);
            let mut reader = FrameReader::new(server, 1024, Duration::from_secs(5));
            let writer = tokio::spawn(async move {
                let mut client = client;
                for payload in [&b"hello"[..], &b""[..], &[7u8; 300][..]] {
                    write_frame(&mut client, payload, Duration::from_secs(5)).await.unwrap();
                }
            });
            assert_eq!(reader.next_frame().await.unwrap().unwrap(), Bytes::from_static(b"hello"));
            assert_eq!(reader.next_frame().await.unwrap().unwrap(), Bytes::new());
            assert_eq!(reader.next_frame().await.unwrap().unwrap().len(), 300);
            writer.await.unwrap();
            assert!(reader.next_frame().await.unwrap().is_none());
        });
    }

    #[test]
    fn an_announced_length_is_not_allocated_up_front() {
        runtime().block_on(async {
            let (mut client, server) = tokio::io::duplex(64);
            let mut reader = FrameReader::new(server, 10 * 1024 * 1024, Duration::from_secs(5));
            client.write_all(&(10u32 * 1024 * 1024).to_be_bytes()).await.unwrap();
            client.write_all(b"abc").await.unwrap();
            let read = tokio::time::timeout(Duration::from_millis(200), reader.next_frame()).await;
            assert!(read.is_err(), "the frame is incomplete");
            assert!(reader.buf.capacity() <= 8192, "capacity {}", reader.buf.capacity());
        });
    }

    #[test]
    fn oversized_truncated_slow_and_silent_peers_are_errors() {
        runtime().block_on(async {
            let (mut client, server) = tokio::io::duplex(64);
            let mut reader = FrameReader::new(server, 100, Duration::from_secs(5));
            client.write_all(&101u32.to_be_bytes()).await.unwrap();
            assert!(matches!(reader.next_frame().await, Err(FrameReadError::TooLarge { size: 101, max: 100 })));

            let (mut client, server) = tokio::io::duplex(64);
            let mut reader = FrameReader::new(server, 100, Duration::from_secs(5));
            client.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
            drop(client);
            assert!(matches!(reader.next_frame().await, Err(FrameReadError::Truncated)));

            // A trickle of one byte every 50 ms: the frame timeout (500 ms) ends it.
            let (client, server) = tokio::io::duplex(64);
            let mut reader = FrameReader::new(server, 100, Duration::from_millis(500));
            let trickle = tokio::spawn(async move {
                let mut client = client;
                for b in [0u8, 0, 0, 50].into_iter().chain(std::iter::repeat_n(1u8, 50)) {
                    if client.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            assert!(matches!(reader.next_frame().await, Err(FrameReadError::Timeout(500))));
            drop(reader);
            trickle.await.unwrap();

            // Nothing at all: the handshake timeout ends it; idle after a frame is fine.
            let (_client, server) = tokio::io::duplex(64);
            let mut reader = FrameReader::new(server, 100, Duration::from_secs(5))
                .with_handshake_timeout(Duration::from_millis(300));
            assert!(matches!(reader.next_frame().await, Err(FrameReadError::Handshake(300))));
        });
    }

    #[test]
    fn a_writer_whose_peer_does_not_read_times_out() {
        runtime().block_on(async {
            let (mut client, _server) = tokio::io::duplex(16);
            let result = write_frame(&mut client, &[0u8; 1024], Duration::from_millis(200)).await;
            assert!(matches!(result, Err(FrameWriteError::NotDraining(200))), "{result:?}");
        });
    }
}
