//! Remote channels over real TCP: asks, tells, fencing, timeouts, and peers that send
//! bytes they should not.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_common::ids::LeaderSessionId;
use flint_common::rpc::frame::{Frame, FrameHeader, FrameKind};
use flint_common::rpc::{Endpoint, FencingToken, RpcAddress, RpcError, RpcService, RpcServiceConfig};
use flint_common::rpc_message;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Echo {
    text: String,
}
rpc_message!(fenced Echo => String);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Count {}
rpc_message!(unfenced Count => ());

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Slow {
    millis: u64,
}
rpc_message!(unfenced Slow => u64);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Big {
    payload: Vec<u8>,
}
rpc_message!(unfenced Big => usize);

const ASK: Duration = Duration::from_secs(5);

fn service(max_frame: usize) -> RpcService {
    let mut config = RpcServiceConfig::loopback();
    config.max_frame_size = max_frame;
    RpcService::start(config).expect("rpc service starts")
}

/// A server with an `echo` endpoint (fenced by `token`) and a `counter` endpoint.
fn server(token: FencingToken, counter: Arc<AtomicUsize>) -> RpcService {
    let rpc = service(64 * 1024);
    rpc.register_endpoint(
        Endpoint::new("echo")
            .fenced(token)
            .on_fn(|m: Echo| async move { format!("echo: {}", m.text) })
            .on_fn(|m: Slow| async move {
                tokio::time::sleep(Duration::from_millis(m.millis)).await;
                m.millis
            })
            .on_fn(|m: Big| async move { m.payload.len() }),
    );
    rpc.register_endpoint(Endpoint::new("counter").on_fn(move |_: Count| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {}
    }));
    rpc
}

async fn wait_until(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

#[tokio::test]
async fn ask_and_tell_over_tcp_with_fencing() {
    let token = FencingToken::new();
    let session = LeaderSessionId::generate();
    token.set(Some(session));
    let counter = Arc::new(AtomicUsize::new(0));
    let server = server(token.clone(), counter.clone());
    let client = service(64 * 1024);
    let echo = server.address_of("echo");

    let reply = client.ask(&echo, Some(session), &Echo { text: "hi".into() }, ASK).await.unwrap();
    assert_eq!(reply, "echo: hi");

    // Wrong and missing tokens are rejected; unfenced messages pass without one.
    let err = client.ask(&echo, Some(LeaderSessionId::generate()), &Echo { text: "x".into() }, ASK).await.unwrap_err();
    assert!(matches!(err, RpcError::Fenced { .. }), "{err}");
    let err = client.ask(&echo, None, &Echo { text: "x".into() }, ASK).await.unwrap_err();
    assert!(matches!(err, RpcError::Fenced { .. }), "{err}");
    assert_eq!(client.ask(&echo, None, &Slow { millis: 1 }, ASK).await.unwrap(), 1);

    // A revoked leader rejects even its old token.
    token.set(None);
    let err = client.ask(&echo, Some(session), &Echo { text: "x".into() }, ASK).await.unwrap_err();
    assert!(matches!(err, RpcError::Fenced { .. }), "{err}");

    for _ in 0..10 {
        client.tell(&server.address_of("counter"), None, &Count {}).unwrap();
    }
    assert!(wait_until(ASK, || counter.load(Ordering::SeqCst) == 10).await);

    let err = client.ask(&server.address_of("nobody"), None, &Count {}, ASK).await.unwrap_err();
    assert!(matches!(err, RpcError::UnknownEndpoint { .. }), "{err}");
    let err = client.ask(&server.address_of("counter"), None, &Slow { millis: 1 }, ASK).await.unwrap_err();
    assert!(matches!(err, RpcError::UnknownMessage { .. }), "{err}");
    client.stop();
    server.stop();
}

#[tokio::test]
async fn local_calls_skip_the_socket_but_keep_semantics() {
    let token = FencingToken::new();
    let session = LeaderSessionId::generate();
    token.set(Some(session));
    let rpc = server(token, Arc::new(AtomicUsize::new(0)));
    let echo = rpc.address_of("echo");
    assert_eq!(rpc.ask(&echo, Some(session), &Echo { text: "local".into() }, ASK).await.unwrap(), "echo: local");
    let err = rpc.ask(&echo, None, &Echo { text: "x".into() }, ASK).await.unwrap_err();
    assert!(matches!(err, RpcError::Fenced { .. }));
    rpc.stop();
}

#[tokio::test]
async fn ask_times_out_and_a_late_reply_is_dropped() {
    let server = server(FencingToken::new(), Arc::new(AtomicUsize::new(0)));
    let client = service(64 * 1024);
    let echo = server.address_of("echo");
    let started = Instant::now();
    let err = client.ask(&echo, None, &Slow { millis: 500 }, Duration::from_millis(100)).await.unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "the ask must end at its timeout, not at the reply");
    // The late reply arrives on the same connection and must not disturb the next ask.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(client.ask(&echo, None, &Slow { millis: 7 }, ASK).await.unwrap(), 7);
    client.stop();
    server.stop();
}

#[tokio::test]
async fn ask_to_a_dead_address_fails_within_the_timeout() {
    let client = service(64 * 1024);
    // A port held by a socket that is bound but not listening: connections are refused,
    // and no other process can take the port meanwhile.
    let holder = tokio::net::TcpSocket::new_v4().unwrap();
    holder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = holder.local_addr().unwrap().port();
    let dead = RpcAddress::new(format!("127.0.0.1:{port}"), "echo");
    let started = Instant::now();
    let err = client.ask(&dead, None, &Slow { millis: 1 }, Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, RpcError::Unreachable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A peer that completes the TCP handshake (the kernel does that) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = RpcAddress::new(format!("127.0.0.1:{}", silent.local_addr().unwrap().port()), "echo");
    let started = Instant::now();
    let err = client.ask(&silent_addr, None, &Slow { millis: 1 }, Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(silent);
    client.stop();
}

#[tokio::test]
async fn a_restarted_peer_is_reached_again_and_waiting_asks_fail_fast() {
    let server = server(FencingToken::new(), Arc::new(AtomicUsize::new(0)));
    let port = server.port();
    let client = service(64 * 1024);
    let mut disconnects = client.disconnects();
    let echo = server.address_of("echo");
    assert_eq!(client.ask(&echo, None, &Slow { millis: 1 }, ASK).await.unwrap(), 1);

    let waiting = tokio::spawn(client.ask(&echo, None, &Slow { millis: 3_000 }, ASK));
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop();
    let started = Instant::now();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, RpcError::ConnectionLost { .. } | RpcError::ServiceStopped), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let peer = tokio::time::timeout(ASK, disconnects.recv()).await.unwrap().unwrap();
    assert_eq!(peer, echo.host_port);

    // A new server on the same port: the client reconnects on its own.
    let mut config = RpcServiceConfig::loopback();
    config.ports = vec![port];
    let restarted = RpcService::start(config).unwrap();
    restarted.register_endpoint(Endpoint::new("echo").on_fn(|m: Slow| async move { m.millis + 1 }));
    assert_eq!(client.ask(&echo, None, &Slow { millis: 1 }, ASK).await.unwrap(), 2);
    client.stop();
    restarted.stop();
}

#[tokio::test]
async fn oversized_messages_are_refused_before_sending() {
    let server = server(FencingToken::new(), Arc::new(AtomicUsize::new(0)));
    let client = service(1024);
    let echo = server.address_of("echo");
    let err = client.ask(&echo, None, &Big { payload: vec![7; 4096] }, ASK).await.unwrap_err();
    assert!(matches!(err, RpcError::FrameTooLarge { .. }), "{err}");
    assert_eq!(client.ask(&echo, None, &Big { payload: vec![7; 100] }, ASK).await.unwrap(), 100);
    client.stop();
    server.stop();
}

/// Writes raw bytes to the server and reports whether it closed the connection.
fn closed_after(port: u16, bytes: &[u8], half_close: bool) -> (bool, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (true, received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (true, received),
            Err(_) => return (false, received),
        }
    }
}

fn length_prefixed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_lose_their_connection_and_nobody_else_notices() {
    let server = server(FencingToken::new(), Arc::new(AtomicUsize::new(0)));
    let port = server.port();
    let client = service(64 * 1024);
    let echo = server.address_of("echo");
    // A healthy connection that must survive everything below.
    assert_eq!(client.ask(&echo, None, &Slow { millis: 1 }, ASK).await.unwrap(), 1);

    let garbage = length_prefixed(b"\x00\x01\x00\x00\x00\x04\xff\xff\xff\xff");
    let valid_header = FrameHeader {
        kind: FrameKind::Ask,
        correlation_id: 5,
        target: "echo".into(),
        fencing_token: None,
        type_name: "Slow".into(),
    };
    let mut other_version =
        Frame::new(valid_header, bytes::Bytes::from_static(b"\x81\xa6millis\x01")).encode().to_vec();
    other_version[1] = 9; // protocol version 9
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("garbage header", garbage, false),
        ("frame shorter than its prefix", length_prefixed(b"\x00\x01"), false),
        (
            "truncated frame",
            {
                let mut v = 100u32.to_be_bytes().to_vec();
                v.extend_from_slice(b"\x00\x01\x00");
                v
            },
            true,
        ),
        ("oversized frame", (10u32 * 1024 * 1024).to_be_bytes().to_vec(), false),
        ("other protocol version", length_prefixed(&other_version), false),
        ("random noise", (0..255u8).cycle().take(3000).collect(), false),
    ];
    for (name, bytes, half_close) in cases {
        let (closed, received) =
            tokio::task::spawn_blocking(move || closed_after(port, &bytes, half_close)).await.unwrap();
        assert!(closed, "{name}: connection should be closed");
        if name == "other protocol version" {
            // The peer is told why before the connection closes.
            let frame = Frame::decode(bytes::Bytes::copy_from_slice(&received[4..])).unwrap();
            assert_eq!(frame.header.kind, FrameKind::Error);
            let err: RpcError = rmp_serde::from_slice(&frame.body).unwrap();
            assert!(matches!(err, RpcError::VersionMismatch(ref m) if m.contains("version 9")), "{err}");
        }
        // The process and the healthy connection keep working.
        assert_eq!(client.ask(&echo, None, &Slow { millis: 2 }, ASK).await.unwrap(), 2, "{name}");
    }
    client.stop();
    server.stop();
}

/// Numbered tells to an actor whose mailbox is full and whose handler is slow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Numbered {
    n: u64,
}
rpc_message!(unfenced Numbered => ());

struct Recorder {
    seen: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl actix::Actor for Recorder {
    type Context = actix::Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        // A tiny mailbox: it is full almost all the time during the burst.
        ctx.set_mailbox_capacity(1);
    }
}

impl actix::Handler<Numbered> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: Numbered, _: &mut Self::Context) {
        // Slow enough that the burst outruns it.
        std::thread::sleep(Duration::from_micros(200));
        self.seen.lock().unwrap().push(msg.n);
    }
}

#[test]
fn per_connection_order_holds_when_the_mailbox_is_full() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let actor_seen = seen.clone();
    let system = std::thread::spawn(move || {
        let system = actix::System::new();
        system.block_on(async move {
            let addr = actix::Actor::start(Recorder { seen: actor_seen });
            addr_tx.send((addr, actix::System::current())).unwrap();
        });
        system.run().unwrap();
    });
    let (addr, actix_system) = addr_rx.recv().unwrap();
    let server = service(64 * 1024);
    server.register_endpoint(Endpoint::new("recorder").on_actor::<Numbered, _>(addr));
    let client = service(64 * 1024);
    let target = server.address_of("recorder");
    // Below the outbound queue's bound, far above the mailbox's.
    const N: u64 = 1_000;
    for n in 0..N {
        client.tell(&target, None, &Numbered { n }).unwrap();
    }
    let until = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < N as usize && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = seen.lock().unwrap().clone();
    actix_system.stop();
    system.join().unwrap();
    assert_eq!(seen.len(), N as usize, "every tell arrived");
    let out_of_order = seen.windows(2).filter(|w| w[0] > w[1]).count();
    assert_eq!(out_of_order, 0, "tells overtook each other: {:?}", &seen[..20.min(seen.len())]);
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Fill {
    size: usize,
}
rpc_message!(unfenced Fill => Vec<u8>);

#[test]
fn a_peer_that_never_reads_its_replies_is_dropped_with_bounded_memory() {
    let mut config = RpcServiceConfig::loopback();
    config.connect_timeout = Duration::from_secs(1);
    let server = RpcService::start(config).unwrap();
    server.register_endpoint(Endpoint::new("fill").on_fn(|m: Fill| async move { vec![1u8; m.size] }));
    let mut stream = TcpStream::connect(server.host_port()).unwrap();
    stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let header = FrameHeader {
        kind: FrameKind::Ask,
        correlation_id: 1,
        target: "fill".into(),
        fencing_token: None,
        type_name: "Fill".into(),
    };
    // Small asks, 64 KiB replies: the socket fills up quickly in the reply direction.
    let body = rmp_serde::to_vec_named(&Fill { size: 64 * 1024 }).unwrap();
    let frame = Frame::new(header, bytes::Bytes::from(body)).encode();
    let mut wire = (frame.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(&frame);
    let before = flint_common::process::resident_memory_bytes();
    let started = Instant::now();
    let mut sent = 0usize;
    while started.elapsed() < Duration::from_secs(20) {
        match stream.write_all(&wire) {
            Ok(()) => sent += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    let after = flint_common::process::resident_memory_bytes();
    eprintln!(
        "sent {sent} asks without reading; dropped after {} ms; process RSS {} -> {} MiB",
        started.elapsed().as_millis(),
        before >> 20,
        after >> 20
    );
    assert!(after.saturating_sub(before) < 100 * 1024 * 1024, "memory grew from {before} to {after}");
    assert!(started.elapsed() < Duration::from_secs(20), "the server kept a peer that never reads");
}
