//! Fuzzing the data plane's frame decoder with random and mutated frames: every input
//! decodes or is refused with an error; none panics.

use bytes::Bytes;
use flint_common::ids::{JobId, JobVertexId};
use flint_taskmanager::network::protocol::{Header, Message, WireEvent};
use flint_taskmanager::network::PartitionId;
use proptest::prelude::*;

const CASES: u32 = 100_000;

fn valid_frames() -> Vec<Bytes> {
    let partition = PartitionId {
        job_id: JobId::generate(),
        result: JobVertexId::generate(),
        edge: 1,
        producer_subtask: 2,
        attempt: 0,
    };
    vec![
        Message::new(Header::PartitionRequest { receiver_id: 7, partition, subpartition: 3, credit: 2 }).encode(),
        Message::new(Header::AddCredit { receiver_id: 7, credit: 4 }).encode(),
        Message::with_payload(Header::Buffer { receiver_id: 7, sequence: 9 }, Bytes::from_static(&[1, 2, 3, 4]))
            .encode(),
        Message::with_payload(
            Header::Event { receiver_id: 7, sequence: 10, event: WireEvent::Custom },
            Bytes::from_static(b"event"),
        )
        .encode(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(Bytes::from(bytes));
    }

    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..4,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut bytes = valid_frames()[which].to_vec();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        let keep = 1 + cut % bytes.len();
        bytes.truncate(keep);
        let _ = Message::decode(Bytes::from(bytes));
    }
}

#[test]
fn valid_frames_round_trip() {
    for frame in valid_frames() {
        let message = Message::decode(frame.clone()).expect("a valid frame decodes");
        assert_eq!(message.encode(), frame);
    }
}
