//! The data plane end to end: result partitions, input gates, local channels and TCP
//! between two simulated taskmanagers (each a PartitionManager + DataServer + DataClient
//! in this process), on 127.0.0.1 with port 0. Every wait has a deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use flint_common::ids::{JobId, JobVertexId};
use flint_taskmanager::network::protocol::{Header, Message};
use flint_taskmanager::network::{
    BufferOrEvent, ChannelLocation, DataClient, DataServer, Event, GateConfig, InputChannelSpec, InputGate,
    NetworkError, PartitionId, PartitionManager, ResultPartition,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_FRAME: usize = 1024 * 1024;
const DEADLINE: Duration = Duration::from_secs(30);

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Runs `f` with the test deadline.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {DEADLINE:?}"),
    }
}

/// Polls `cond` until it holds, at most the deadline.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// One simulated taskmanager's network stack.
struct Tm {
    manager: PartitionManager,
    server: Option<DataServer>,
    client: DataClient,
    address: String,
}

impl Tm {
    fn start() -> Tm {
        init_logging();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let manager = PartitionManager::new();
        let server = DataServer::start(listener, manager.clone(), MAX_FRAME, Duration::from_secs(10), None).unwrap();
        let address = server.local_addr().to_string();
        let client = DataClient::start(MAX_FRAME, Duration::from_secs(5), None).unwrap();
        Tm { manager, server: Some(server), client, address }
    }

    fn partition(&self, id: PartitionId, subpartitions: usize, max_queued: usize) -> ResultPartition {
        let p = ResultPartition::new(id, subpartitions, max_queued);
        self.manager.register(&p).unwrap();
        p
    }

    /// Where a consumer on `consumer` finds a partition produced here.
    fn location_for(&self, consumer: &Tm) -> ChannelLocation {
        if std::ptr::eq(self, consumer) {
            ChannelLocation::Local
        } else {
            ChannelLocation::Remote { data_address: self.address.clone() }
        }
    }

    fn gate(&self, channels: Vec<(PartitionId, u32, ChannelLocation)>, config: GateConfig) -> InputGate {
        let specs = channels
            .into_iter()
            .map(|(partition, subpartition, location)| InputChannelSpec { partition, subpartition, location })
            .collect();
        InputGate::new(specs, &self.manager, &self.client, config)
    }

    /// Stops the data server off the async threads (stopping joins its thread).
    async fn kill_server(&mut self) {
        let server = self.server.take().unwrap();
        within("stopping a data server", tokio::task::spawn_blocking(move || drop(server))).await.unwrap();
    }
}

fn pid(job: JobId, producer: u32) -> PartitionId {
    PartitionId { job_id: job, result: JobVertexId::from_u128(42), edge: 0, producer_subtask: producer, attempt: 0 }
}

/// A numbered buffer: producer, subpartition, sequence, then filler up to 256 bytes.
fn payload(producer: u32, subpartition: u32, sequence: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(256);
    b.put_u32(producer);
    b.put_u32(subpartition);
    b.put_u32(sequence);
    b.put_bytes((sequence % 251) as u8, 244);
    b.freeze()
}

fn parse(b: &Bytes) -> (u32, u32, u32) {
    assert_eq!(b.len(), 256, "buffer arrived intact");
    let n = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    let (producer, subpartition, sequence) = (n(0), n(4), n(8));
    assert!(b[12..].iter().all(|&x| x == (sequence % 251) as u8), "buffer arrived intact");
    (producer, subpartition, sequence)
}

/// Emits `count` numbered buffers to every subpartition (interleaved), then finishes.
async fn produce(partition: ResultPartition, producer: u32, count: u32) {
    for sequence in 0..count {
        for sub in 0..partition.num_subpartitions() {
            partition.emit(sub, payload(producer, sub as u32, sequence)).await.unwrap();
        }
    }
    partition.finish().await.unwrap();
}

/// Reads a gate to its end, checking that channel `i` delivers exactly `expected[i] =
/// (producer, count)` buffers for `subpartition`, in order, then its end of partition.
async fn consume(mut gate: InputGate, subpartition: u32, expected: Vec<(u32, u32)>) -> InputGate {
    let mut next = vec![0u32; expected.len()];
    let mut ended = vec![false; expected.len()];
    while let Some((channel, item)) = within("reading the gate", gate.next()).await.unwrap() {
        assert!(!ended[channel], "channel {channel} delivered after its end");
        match item {
            BufferOrEvent::Buffer(b) => {
                let (producer, sub, sequence) = parse(&b);
                assert_eq!((producer, sub, sequence), (expected[channel].0, subpartition, next[channel]));
                next[channel] += 1;
            }
            BufferOrEvent::Event(Event::EndOfPartition) => {
                assert_eq!(next[channel], expected[channel].1, "channel {channel} ended early");
                ended[channel] = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(ended.iter().all(|e| *e));
    assert!(gate.is_finished());
    assert_eq!(gate.next().await.unwrap(), None, "a finished gate stays finished");
    let total: u64 = expected.iter().map(|(_, c)| u64::from(*c)).sum();
    assert_eq!(gate.stats().buffers_read, total);
    assert_eq!(gate.stats().bytes_read, total * 256);
    gate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_all_to_all_exchange() {
    let tm = Tm::start();
    let job = JobId::generate();
    let producers: Vec<ResultPartition> = (0..2).map(|p| tm.partition(pid(job, p), 3, 8)).collect();
    let consumers: Vec<_> = (0..3u32)
        .map(|c| {
            let gate =
                tm.gate((0..2).map(|p| (pid(job, p), c, ChannelLocation::Local)).collect(), GateConfig::default());
            tokio::spawn(consume(gate, c, vec![(0, 1000), (1, 1000)]))
        })
        .collect();
    let producing: Vec<_> =
        producers.iter().enumerate().map(|(i, p)| tokio::spawn(produce(p.clone(), i as u32, 1000))).collect();
    for p in producing {
        within("producing", p).await.unwrap();
    }
    for c in consumers {
        within("consuming", c).await.unwrap();
    }
    for p in &producers {
        assert_eq!(p.stats().buffers_written, 3000);
    }
    assert!(tm.manager.partition_ids().is_empty(), "consumed partitions release themselves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_exchange_mixing_local_and_remote_channels() {
    let tms = [Tm::start(), Tm::start()];
    let job = JobId::generate();
    // Producer p runs on tms[p]; consumer c on tms[c % 2]: every consumer has one local
    // and one remote channel.
    let producers: Vec<ResultPartition> = (0..2).map(|p| tms[p].partition(pid(job, p as u32), 3, 8)).collect();
    let consumers: Vec<_> = (0..3u32)
        .map(|c| {
            let here = &tms[c as usize % 2];
            let channels = (0..2).map(|p| (pid(job, p as u32), c, tms[p].location_for(here))).collect();
            tokio::spawn(consume(here.gate(channels, GateConfig::default()), c, vec![(0, 1000), (1, 1000)]))
        })
        .collect();
    let producing: Vec<_> =
        producers.iter().enumerate().map(|(i, p)| tokio::spawn(produce(p.clone(), i as u32, 1000))).collect();
    for p in producing {
        within("producing", p).await.unwrap();
    }
    for c in consumers {
        within("consuming", c).await.unwrap();
    }
    for tm in &tms {
        assert!(tm.manager.partition_ids().is_empty());
        assert_eq!(tm.client.connected_peers().len(), 1, "one connection to the other taskmanager");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_of_partition_with_staggered_finishes_and_an_empty_producer() {
    let tms = [Tm::start(), Tm::start()];
    let job = JobId::generate();
    // p0 on tm0 finishes at once, p1 on tm1 emits nothing and finishes later, p2 on tm0
    // pauses midway.
    let p0 = tms[0].partition(pid(job, 0), 2, 4);
    let p1 = tms[1].partition(pid(job, 1), 2, 4);
    let p2 = tms[0].partition(pid(job, 2), 2, 4);
    let owner = [0usize, 1, 0];
    let consumers: Vec<_> = (0..2u32)
        .map(|c| {
            let here = &tms[c as usize];
            let channels = (0..3).map(|p| (pid(job, p as u32), c, tms[owner[p]].location_for(here))).collect();
            tokio::spawn(consume(here.gate(channels, GateConfig::default()), c, vec![(0, 100), (1, 0), (2, 100)]))
        })
        .collect();
    let a = tokio::spawn(produce(p0, 0, 100));
    let b = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        p1.finish().await.unwrap();
    });
    let c = tokio::spawn(async move {
        for sequence in 0..100 {
            if sequence == 50 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            for sub in 0..2 {
                p2.emit(sub, payload(2, sub as u32, sequence)).await.unwrap();
            }
        }
        p2.finish().await.unwrap();
    });
    for t in [a, b, c] {
        within("producing", t).await.unwrap();
    }
    for c in consumers {
        within("consuming", c).await.unwrap();
    }
    for tm in &tms {
        assert!(tm.manager.partition_ids().is_empty());
    }
}

/// A fast producer against a slow consumer: the producer blocks, and the buffers between
/// them never exceed `max_queued` (+ `credit` over TCP).
async fn backpressure(remote: bool) {
    let tms = [Tm::start(), Tm::start()];
    let (producer_tm, consumer_tm) = (&tms[0], if remote { &tms[1] } else { &tms[0] });
    let job = JobId::generate();
    let max_queued = 4;
    let credit: u32 = if remote { 3 } else { 0 };
    let bound = (max_queued + credit as usize) as u64;
    let count = 200u32;
    let partition = producer_tm.partition(pid(job, 0), 1, max_queued);
    let config = GateConfig { initial_credit: credit.max(1), ..GateConfig::default() };
    let mut gate = consumer_tm.gate(vec![(pid(job, 0), 0, producer_tm.location_for(consumer_tm))], config);
    let emitted = Arc::new(AtomicU64::new(0));
    let producer = {
        let (partition, emitted) = (partition.clone(), emitted.clone());
        tokio::spawn(async move {
            for sequence in 0..count {
                partition.emit(0, payload(0, 0, sequence)).await.unwrap();
                emitted.fetch_add(1, Ordering::SeqCst);
            }
            partition.finish().await.unwrap();
        })
    };
    // Nothing read yet: the producer fills the queue (and the credit) and then waits.
    eventually("the producer filling the pipeline", || emitted.load(Ordering::SeqCst) == bound).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(emitted.load(Ordering::SeqCst), bound, "the producer is blocked");
    assert_eq!(partition.queued_buffers(0), max_queued);
    assert!(!producer.is_finished());
    let blocked_before = partition.backpressured_time();

    let mut consumed = 0u64;
    loop {
        let Some((_, item)) = within("reading", gate.next()).await.unwrap() else { break };
        match item {
            BufferOrEvent::Buffer(b) => {
                assert_eq!(parse(&b), (0, 0, consumed as u32));
                consumed += 1;
                let in_between = emitted.load(Ordering::SeqCst) - consumed;
                assert!(in_between <= bound, "{in_between} buffers between producer and consumer, bound {bound}");
                assert!(partition.queued_buffers(0) <= max_queued);
                assert!(gate.queued_buffers(0) <= credit as usize);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            BufferOrEvent::Event(Event::EndOfPartition) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(consumed, u64::from(count));
    within("the producer", producer).await.unwrap();
    assert!(partition.backpressured_time() > blocked_before, "back-pressure time keeps growing while blocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_backpressure_bounds_the_queue() {
    backpressure(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_backpressure_bounds_queue_and_credit() {
    backpressure(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_registered_late_is_still_read() {
    let tms = [Tm::start(), Tm::start()];
    let job = JobId::generate();
    let id = pid(job, 0);
    // Consumers first: subpartition 0 locally on tm0, subpartition 1 remotely from tm1.
    let local = tokio::spawn(consume(
        tms[0].gate(vec![(id, 0, ChannelLocation::Local)], GateConfig::default()),
        0,
        vec![(0, 100)],
    ));
    let remote = tokio::spawn(consume(
        tms[1].gate(vec![(id, 1, tms[0].location_for(&tms[1]))], GateConfig::default()),
        1,
        vec![(0, 100)],
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let partition = tms[0].partition(id, 2, 8);
    within("producing", produce(partition, 0, 100)).await;
    for consumer in [local, remote] {
        let gate = within("a consumer", consumer).await.unwrap();
        assert!(gate.stats().idle_time > Duration::ZERO, "the gate waited for its producer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_never_registered_is_not_found_after_the_deadline() {
    let tms = [Tm::start(), Tm::start()];
    let job = JobId::generate();
    let config = GateConfig { request_timeout: Duration::from_millis(500), ..GateConfig::default() };
    let mut local = tms[0].gate(vec![(pid(job, 0), 0, ChannelLocation::Local)], config.clone());
    let mut remote = tms[1].gate(vec![(pid(job, 0), 0, tms[0].location_for(&tms[1]))], config);
    for gate in [&mut local, &mut remote] {
        match within("the request deadline", gate.next()).await {
            Err(NetworkError::PartitionNotFound { partition, subpartition: 0, waited_ms }) => {
                assert_eq!(partition, pid(job, 0));
                assert!(waited_ms >= 500, "gave up after {waited_ms} ms");
            }
            other => panic!("expected PartitionNotFound, got {other:?}"),
        }
        assert!(matches!(gate.next().await, Err(NetworkError::PartitionNotFound { .. })), "a failed gate stays failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_failure_reaches_its_consumers() {
    let tms = [Tm::start(), Tm::start()];
    let job = JobId::generate();
    let partition = tms[0].partition(pid(job, 0), 2, 8);
    let mut local = tms[0].gate(vec![(pid(job, 0), 0, ChannelLocation::Local)], GateConfig::default());
    let mut remote = tms[1].gate(vec![(pid(job, 0), 1, tms[0].location_for(&tms[1]))], GateConfig::default());
    within("emitting", async {
        for sequence in 0..5 {
            for sub in 0..2 {
                partition.emit(sub, payload(0, sub as u32, sequence)).await.unwrap();
            }
        }
    })
    .await;
    for gate in [&mut local, &mut remote] {
        for _ in 0..5 {
            assert!(matches!(within("reading", gate.next()).await, Ok(Some((0, BufferOrEvent::Buffer(_))))));
        }
    }
    partition.fail("operator panicked");
    for gate in [&mut local, &mut remote] {
        match within("the failure", gate.next()).await {
            Err(NetworkError::ProducerFailed { partition, cause }) => {
                assert_eq!(partition, pid(job, 0));
                assert_eq!(cause, "operator panicked");
            }
            other => panic!("expected ProducerFailed, got {other:?}"),
        }
    }
    assert!(matches!(partition.emit(0, payload(0, 0, 5)).await, Err(NetworkError::ProducerFailed { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_producer_taskmanager_fails_remote_channels() {
    let mut tms = [Tm::start(), Tm::start()];
    let job = JobId::generate();
    let partition = tms[0].partition(pid(job, 0), 1, 8);
    let mut gate = tms[1].gate(vec![(pid(job, 0), 0, tms[0].location_for(&tms[1]))], GateConfig::default());
    // 16 fit: 8 against the consumer's credit, 8 in the producer's queue.
    within("emitting", async {
        for sequence in 0..16 {
            partition.emit(0, payload(0, 0, sequence)).await.unwrap();
        }
    })
    .await;
    for _ in 0..10 {
        assert!(matches!(within("reading", gate.next()).await, Ok(Some((0, BufferOrEvent::Buffer(_))))));
    }
    tms[0].kill_server().await;
    let error = within("the connection loss", async {
        loop {
            match gate.next().await {
                Ok(Some((_, BufferOrEvent::Buffer(_)))) => continue,
                other => break other,
            }
        }
    })
    .await;
    match error {
        Err(NetworkError::ConnectionLost { address, .. }) => assert_eq!(address, tms[0].address),
        other => panic!("expected ConnectionLost, got {other:?}"),
    }
    // The producer side saw its reader go: emits fail (nothing is dropped silently, the
    // producing task fails over) instead of blocking.
    let emitted = within("emitting to a lost consumer", async {
        for sequence in 16..1000 {
            partition.emit(0, payload(0, 0, sequence)).await?;
        }
        Ok::<(), NetworkError>(())
    })
    .await;
    assert!(matches!(emitted, Err(NetworkError::ConsumerGone { .. })), "{emitted:?}");
    assert_eq!(partition.queued_buffers(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_consumer_releases_the_producer() {
    let tms = [Tm::start(), Tm::start()];
    let job = JobId::generate();
    let partition = tms[0].partition(pid(job, 0), 2, 4);
    let mut local = tms[0].gate(vec![(pid(job, 0), 0, ChannelLocation::Local)], GateConfig::default());
    let mut remote = tms[1].gate(vec![(pid(job, 0), 1, tms[0].location_for(&tms[1]))], GateConfig::default());
    let producing = partition.clone();
    let producer = tokio::spawn(async move {
        for sequence in 0..1000 {
            for sub in 0..producing.num_subpartitions() {
                producing.emit(sub, payload(0, sub as u32, sequence)).await?;
            }
        }
        producing.finish().await
    });
    for gate in [&mut local, &mut remote] {
        for _ in 0..5 {
            assert!(matches!(within("reading", gate.next()).await, Ok(Some((0, BufferOrEvent::Buffer(_))))));
        }
    }
    drop(local);
    drop(remote);
    // The producer is not left blocked: it fails, since what it writes can reach no one.
    let produced = within("the producer, once its consumers are gone", producer).await.unwrap();
    assert!(matches!(produced, Err(NetworkError::ConsumerGone { .. })), "{produced:?}");
    assert_eq!(partition.queued_buffers(0), 0);
    // The remote consumer's cancel travels over TCP: its subpartition is emptied once it arrives.
    eventually("the remote subpartition to be emptied", || partition.queued_buffers(1) == 0).await;
    // As a failed task's partitions are, it is released.
    partition.release();
    eventually("the abandoned partition to leave the manager", || tms[0].manager.partition_ids().is_empty()).await;
}

/// Opens a raw connection to `address`, writes `bytes`, and waits for the server to close.
async fn misbehave(address: &str, bytes: Vec<u8>, shutdown_write: bool) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    if shutdown_write {
        stream.shutdown().await.unwrap();
    }
    let mut sink = Vec::new();
    match within("the server closing a bad connection", stream.read_to_end(&mut sink)).await {
        Ok(_) => {}
        Err(e) => {
            assert!(matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe), "{e}")
        }
    }
    assert!(sink.is_empty(), "nothing is answered to a bad frame");
}

fn framed(frame: &[u8]) -> Vec<u8> {
    let mut bytes = (frame.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(frame);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_peers_are_disconnected_while_a_healthy_exchange_goes_on() {
    let tms = [Tm::start(), Tm::start()];
    let job = JobId::generate();
    let partition = tms[0].partition(pid(job, 0), 1, 4);
    let gate = tms[1].gate(vec![(pid(job, 0), 0, tms[0].location_for(&tms[1]))], GateConfig::default());
    let consumer = tokio::spawn(consume(gate, 0, vec![(0, 2000)]));
    // The producer stops halfway until the bad peers are done, so the healthy connection
    // is mid-stream throughout.
    let (resume, resumed) = tokio::sync::oneshot::channel::<()>();
    let producer = tokio::spawn(async move {
        for sequence in 0..1000 {
            partition.emit(0, payload(0, 0, sequence)).await.unwrap();
        }
        resumed.await.unwrap();
        for sequence in 1000..2000 {
            partition.emit(0, payload(0, 0, sequence)).await.unwrap();
        }
        partition.finish().await.unwrap();
    });
    let server = tms[0].address.clone();
    let bad_frames: Vec<(&str, Vec<u8>, bool)> = vec![
        ("garbage", framed(b"\x00\x01\x00\x00\x00\x04\xc1\xc1\xc1\xc1"), false),
        ("random bytes", framed(b"GET / HTTP/1.1\r\n\r\n"), false),
        ("wrong version", framed(b"\x00\x09\x00\x00\x00\x00"), false),
        ("oversized", vec![0xff, 0xff, 0xff, 0xff, 0, 1], false),
        ("shorter than its prefix", framed(b"\x00\x01\x00"), false),
        ("truncated at end of stream", vec![0, 0, 0, 100, 0, 1, 0, 0], true),
        ("a server frame", framed(&Message::new(Header::PartitionNotFound { receiver_id: 1 }).encode()), false),
        (
            "payload on a control frame",
            framed(
                &Message::with_payload(Header::AddCredit { receiver_id: 1, credit: 1 }, Bytes::from_static(b"x"))
                    .encode(),
            ),
            false,
        ),
    ];
    for (what, bytes, shutdown_write) in bad_frames {
        eprintln!("sending {what}");
        within(what, misbehave(&server, bytes, shutdown_write)).await;
    }
    assert!(!consumer.is_finished());
    resume.send(()).unwrap();
    within("producing", producer).await.unwrap();
    within("consuming", consumer).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_misbehaving_server_fails_the_channel_not_the_process() {
    init_logging();
    /// What the fake server answers a request with, given its receiver id.
    type Answer = fn(u64) -> Vec<u8>;
    let cases: Vec<(&str, Answer)> = vec![
        ("garbage", |_| framed(b"\x00\x01\x00\x00\x00\x04\xc1\xc1\xc1\xc1")),
        ("sequence gap", |rid| {
            framed(&Message::data(rid, 1, BufferOrEvent::Buffer(Bytes::from_static(b"x"))).encode())
        }),
        ("buffer without credit", |rid| {
            let mut bytes = Vec::new();
            for sequence in 0..2 {
                let m = Message::data(rid, sequence, BufferOrEvent::Buffer(Bytes::from_static(b"x")));
                bytes.extend(framed(&m.encode()));
            }
            bytes
        }),
    ];
    let manager = PartitionManager::new();
    let client = DataClient::start(MAX_FRAME, Duration::from_secs(5), None).unwrap();
    for (what, answer) in cases {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let fake = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let len = stream.read_u32().await.unwrap() as usize;
            let mut frame = vec![0; len];
            stream.read_exact(&mut frame).await.unwrap();
            let Header::PartitionRequest { receiver_id, .. } = Message::decode(Bytes::from(frame)).unwrap().header
            else {
                panic!("expected a partition request")
            };
            stream.write_all(&answer(receiver_id)).await.unwrap();
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
        });
        let specs = vec![InputChannelSpec {
            partition: pid(JobId::generate(), 0),
            subpartition: 0,
            location: ChannelLocation::Remote { data_address: address.clone() },
        }];
        let config = GateConfig { initial_credit: 1, ..GateConfig::default() };
        let mut gate = InputGate::new(specs, &manager, &client, config);
        // The client closes the connection on its own once it sees the violation (before
        // the gate reads anything, so no credit comes back in between).
        within("the client closing the connection", fake).await.unwrap();
        let result = within(what, async {
            loop {
                match gate.next().await {
                    Ok(Some(_)) => continue,
                    other => break other,
                }
            }
        })
        .await;
        match result {
            Err(NetworkError::ConnectionLost { address: a, reason }) => {
                assert_eq!(a, address);
                eprintln!("{what}: {reason}");
            }
            other => panic!("{what}: expected ConnectionLost, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broadcast_reaches_every_subpartition_in_order_with_events() {
    let tms = [Tm::start(), Tm::start()];
    let job = JobId::generate();
    let partition = tms[0].partition(pid(job, 0), 3, 4);
    let gates: Vec<InputGate> = (0..3u32)
        .map(|c| {
            let here = &tms[(c as usize).min(1)];
            here.gate(vec![(pid(job, 0), c, tms[0].location_for(here))], GateConfig::default())
        })
        .collect();
    let readers: Vec<_> = gates
        .into_iter()
        .map(|mut gate| {
            tokio::spawn(async move {
                let mut items = Vec::new();
                while let Some((channel, item)) = within("reading", gate.next()).await.unwrap() {
                    assert_eq!(channel, 0);
                    items.push(item);
                }
                items
            })
        })
        .collect();
    within("broadcasting", async {
        for i in 0..10u8 {
            partition.broadcast(Bytes::from(vec![i; 100])).await.unwrap();
            if i == 4 {
                partition.broadcast_event(Event::Custom(Bytes::from_static(b"barrier-1"))).await.unwrap();
            }
        }
        partition.finish().await.unwrap();
    })
    .await;
    let mut expected: Vec<BufferOrEvent> =
        (0..10u8).map(|i| BufferOrEvent::Buffer(Bytes::from(vec![i; 100]))).collect();
    expected.insert(5, BufferOrEvent::Event(Event::Custom(Bytes::from_static(b"barrier-1"))));
    expected.push(BufferOrEvent::Event(Event::EndOfPartition));
    for reader in readers {
        assert_eq!(within("a consumer", reader).await.unwrap(), expected);
    }
    assert_eq!(partition.stats().buffers_written, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_client_fails_channels_instead_of_hanging() {
    init_logging();
    let manager = PartitionManager::new();
    let client = DataClient::start(MAX_FRAME, Duration::from_secs(5), None).unwrap();
    let stopping = client.clone();
    within("stopping the client", tokio::task::spawn_blocking(move || stopping.stop())).await.unwrap();
    let channels = vec![
        (ChannelLocation::Local, "a local channel waiting for its partition"),
        (ChannelLocation::Remote { data_address: "127.0.0.1:9".into() }, "a remote channel"),
    ];
    for (location, what) in channels {
        let spec = InputChannelSpec { partition: pid(JobId::generate(), 0), subpartition: 0, location };
        let mut gate = InputGate::new(vec![spec], &manager, &client, GateConfig::default());
        assert_eq!(within(what, gate.next()).await, Err(NetworkError::Stopped), "{what}");
    }
}
