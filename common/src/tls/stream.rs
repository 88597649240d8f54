//! Connections that are TLS when the scope's TLS is on and plain TCP otherwise, for the
//! async transports (RPC, data plane) and the blocking one (BlobServer).
//!
//! A failed handshake is logged here with the peer's address: a process without the
//! cluster certificate, with a certificate of another CA, or speaking plain TCP to a TLS
//! port never gets a frame read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::warn;

use super::TlsContext;

pub type BoxedRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxedWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// The name sent as SNI; internal connections do not check host names, so an address that
/// is not a valid name (an IPv6 literal with a zone, say) falls back to a fixed one.
fn server_name(host: &str) -> ServerName<'static> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).unwrap_or_else(|_| ServerName::try_from("flint").expect("valid name"))
}

/// The host part of `host:port`.
pub fn host_of(host_port: &str) -> &str {
    match host_port.rsplit_once(':') {
        Some((host, _)) => host,
        None => host_port,
    }
}

fn split_plain(stream: TcpStream) -> (BoxedRead, BoxedWrite) {
    let (read, write) = stream.into_split();
    (Box::new(read), Box::new(write))
}

/// The server side of an accepted connection: a TLS handshake when `tls` is set (refusals
/// are logged with `what` and the peer), then read and write halves.
pub async fn accept(
    tls: Option<&TlsContext>,
    stream: TcpStream,
    peer: SocketAddr,
    what: &'static str,
) -> std::io::Result<(BoxedRead, BoxedWrite)> {
    let Some(tls) = tls else { return Ok(split_plain(stream)) };
    let handshake = tls.acceptor().accept(stream);
    let result = match tokio::time::timeout(tls.handshake_timeout(), handshake).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("TLS handshake did not finish within {} ms", tls.handshake_timeout().as_millis()),
        )),
    };
    match result {
        Ok(stream) => {
            let (read, write) = tokio::io::split(stream);
            Ok((Box::new(read), Box::new(write)))
        }
        Err(e) => {
            warn!(%peer, connection = what, error = %e, "refused a connection: TLS handshake failed");
            Err(e)
        }
    }
}

/// The client side of a connection to `host_port`: a TLS handshake when `tls` is set.
pub async fn connect(
    tls: Option<&TlsContext>,
    stream: TcpStream,
    host_port: &str,
) -> std::io::Result<(BoxedRead, BoxedWrite)> {
    let Some(tls) = tls else { return Ok(split_plain(stream)) };
    let handshake = tls.connector().connect(server_name(host_of(host_port)), stream);
    let stream = match tokio::time::timeout(tls.handshake_timeout(), handshake).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("TLS handshake did not finish within {} ms", tls.handshake_timeout().as_millis()),
            ))
        }
    };
    let (read, write) = tokio::io::split(stream);
    Ok((Box::new(read), Box::new(write)))
}

/// A blocking connection (the BlobServer's): plain TCP or TLS over it.
pub enum BlockingStream {
    Plain(StdTcpStream),
    Server(Box<rustls::StreamOwned<rustls::ServerConnection, StdTcpStream>>),
    Client(Box<rustls::StreamOwned<rustls::ClientConnection, StdTcpStream>>),
}

impl BlockingStream {
    /// The server side of an accepted connection; the handshake completes here (bounded by
    /// the socket's timeouts, which the caller sets first), and a refusal is logged.
    pub fn accept(tls: Option<&TlsContext>, mut stream: StdTcpStream, what: &'static str) -> std::io::Result<Self> {
        let Some(tls) = tls else { return Ok(BlockingStream::Plain(stream)) };
        let peer = stream.peer_addr().ok();
        let mut conn = rustls::ServerConnection::new(tls.server_config()).map_err(std::io::Error::other)?;
        if let Err(e) = handshake(&mut conn, &mut stream) {
            warn!(peer = ?peer, connection = what, error = %e, "refused a connection: TLS handshake failed");
            return Err(e);
        }
        Ok(BlockingStream::Server(Box::new(rustls::StreamOwned::new(conn, stream))))
    }

    /// The client side of a connection to `host`.
    pub fn connect(tls: Option<&TlsContext>, mut stream: StdTcpStream, host: &str) -> std::io::Result<Self> {
        let Some(tls) = tls else { return Ok(BlockingStream::Plain(stream)) };
        let mut conn =
            rustls::ClientConnection::new(tls.client_config(), server_name(host)).map_err(std::io::Error::other)?;
        handshake(&mut conn, &mut stream)?;
        Ok(BlockingStream::Client(Box::new(rustls::StreamOwned::new(conn, stream))))
    }

    pub fn tcp(&self) -> &StdTcpStream {
        match self {
            BlockingStream::Plain(s) => s,
            BlockingStream::Server(s) => &s.sock,
            BlockingStream::Client(s) => &s.sock,
        }
    }

    /// Ends the writing side: a TLS close_notify first, then the TCP half-close.
    pub fn shutdown_write(&mut self) -> std::io::Result<()> {
        match self {
            BlockingStream::Plain(_) => {}
            BlockingStream::Server(s) => {
                s.conn.send_close_notify();
                s.flush()?;
            }
            BlockingStream::Client(s) => {
                s.conn.send_close_notify();
                s.flush()?;
            }
        }
        self.tcp().shutdown(std::net::Shutdown::Write)
    }
}

fn handshake<C, D>(conn: &mut C, stream: &mut StdTcpStream) -> std::io::Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    D: rustls::SideData,
{
    while conn.is_handshaking() {
        conn.complete_io(stream)?;
    }
    // The last flight (a client's Finished) may still be queued.
    while conn.wants_write() {
        conn.write_tls(stream)?;
    }
    Ok(())
}

impl Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            BlockingStream::Plain(s) => s.read(buf),
            BlockingStream::Server(s) => s.read(buf),
            BlockingStream::Client(s) => s.read(buf),
        }
    }
}

impl Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            BlockingStream::Plain(s) => s.write(buf),
            BlockingStream::Server(s) => s.write(buf),
            BlockingStream::Client(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            BlockingStream::Plain(s) => s.flush(),
            BlockingStream::Server(s) => s.flush(),
            BlockingStream::Client(s) => s.flush(),
        }
    }
}
