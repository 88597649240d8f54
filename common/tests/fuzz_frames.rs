//! Fuzzing the RPC decoders with random and mutated frames: every input decodes or is
//! refused with an error; none panics, and none allocates beyond what it carries.

use bytes::Bytes;
use flint_common::ids::{AllocationId, JobId, ResourceId, SlotId};
use flint_common::messages::{AllocateSlot, OfferSlots, RegisterTaskExecutor, SlotOffer, UpdateTaskExecutionState};
use flint_common::resources::ResourceProfile;
use flint_common::rpc::endpoint::decode_body;
use flint_common::rpc::frame::{Frame, FrameHeader, FrameKind};
use flint_common::rpc::framing::FrameReader;
use flint_common::rpc::RpcAddress;
use proptest::prelude::*;

const CASES: u32 = 100_000;

fn valid_frames() -> Vec<Bytes> {
    let header = |kind, type_name: &str| FrameHeader {
        kind,
        correlation_id: 42,
        target: "resourcemanager".into(),
        fencing_token: None,
        type_name: type_name.into(),
    };
    let offer = OfferSlots {
        resource_id: ResourceId::new("localhost:1-abcdef"),
        task_executor: RpcAddress::new("localhost:1", "taskmanager"),
        data_address: "localhost:2".into(),
        slots: vec![SlotOffer {
            allocation_id: AllocationId::generate(),
            slot_index: 3,
            profile: ResourceProfile::ANY,
        }],
    };
    let allocate = AllocateSlot {
        slot_id: SlotId::new(ResourceId::new("tm"), 1),
        job_id: JobId::generate(),
        allocation_id: AllocationId::generate(),
        profile: ResourceProfile::ANY,
        job_master: RpcAddress::new("localhost:1", "jobmaster/x"),
        resource_manager_session: flint_common::ids::LeaderSessionId::generate(),
    };
    vec![
        Frame::new(header(FrameKind::Ask, "OfferSlots"), Bytes::from(rmp_serde::to_vec_named(&offer).unwrap()))
            .encode(),
        Frame::new(header(FrameKind::Tell, "AllocateSlot"), Bytes::from(rmp_serde::to_vec_named(&allocate).unwrap()))
            .encode(),
        Frame::new(header(FrameKind::Reply, ""), Bytes::new()).encode(),
    ]
}

/// Decodes a frame and, if that works, its body as each message type a peer may send.
fn decode_everything(bytes: Bytes) {
    if let Ok(frame) = Frame::decode(bytes) {
        let _ = decode_body::<OfferSlots>("OfferSlots", &frame.body);
        let _ = decode_body::<AllocateSlot>("AllocateSlot", &frame.body);
        let _ = decode_body::<RegisterTaskExecutor>("RegisterTaskExecutor", &frame.body);
        let _ = decode_body::<UpdateTaskExecutionState>("UpdateTaskExecutionState", &frame.body);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(Bytes::from(bytes));
    }

    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..3,
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
        decode_everything(Bytes::from(bytes));
    }
}

#[test]
fn hostile_message_pack_lengths_allocate_nothing() {
    // A body announcing a 4-billion-entry array and a 4-GiB string, with nothing behind.
    for body in
        [vec![0xdd, 0xff, 0xff, 0xff, 0xff], vec![0xdb, 0xff, 0xff, 0xff, 0xff], vec![0xdf, 0xff, 0xff, 0xff, 0xff]]
    {
        let before = flint_common::process::resident_memory_bytes();
        assert!(decode_body::<OfferSlots>("OfferSlots", &body).is_err());
        assert!(decode_body::<Vec<u64>>("list", &body).is_err());
        let after = flint_common::process::resident_memory_bytes();
        assert!(after.saturating_sub(before) < 64 * 1024 * 1024, "{before} -> {after}");
    }
}

#[test]
fn the_frame_reader_survives_random_streams() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    runtime.block_on(async {
        for _ in 0..2_000 {
            let len = (next() % 600) as usize;
            let stream: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut reader = FrameReader::new(&stream[..], 256, std::time::Duration::from_secs(1));
            for _ in 0..64 {
                match reader.next_frame().await {
                    Ok(Some(frame)) => assert!(frame.len() <= 256),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    });
}
