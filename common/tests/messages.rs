//! Every message type survives a MessagePack round trip, and golden byte fixtures pin
//! the wire format of a few: an accidental change to a field name, type or order of an
//! enum fails here. To accept an intended change, run with `FLINT_UPDATE_FIXTURES=1`
//! and bump `PROTOCOL_VERSION` if old peers can no longer read the new bytes.

use std::fmt::Debug;
use std::path::PathBuf;

use flint_common::ids::{AllocationId, InstanceId, JobId, LeaderSessionId, ResourceId, SlotId};
use flint_common::messages::*;
use flint_common::resources::{ResourceProfile, SlotReport, SlotStatus};
use flint_common::rpc::frame::{Frame, FrameHeader, FrameKind};
use flint_common::rpc::{RpcAddress, RpcError, RpcMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let bytes = rmp_serde::to_vec_named(value).unwrap();
    let back: T = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(&back, value);
}

fn round_trip_message<M: RpcMessage + PartialEq + Debug>(msg: &M, reply: &M::Response)
where
    M::Response: PartialEq + Debug,
{
    round_trip(msg);
    round_trip(reply);
}

fn profile() -> ResourceProfile {
    ResourceProfile { cpu_cores: 1.0, task_heap_mb: 191, task_off_heap_mb: 0, managed_mb: 256, network_mb: 64 }
}

fn resource_id() -> ResourceId {
    ResourceId::new("localhost:42975-ca31d3")
}

fn slot_report() -> SlotReport {
    SlotReport {
        slots: vec![
            SlotStatus {
                slot_id: SlotId::new(resource_id(), 0),
                profile: profile(),
                allocation_id: None,
                job_id: None,
            },
            SlotStatus {
                slot_id: SlotId::new(resource_id(), 1),
                profile: profile(),
                allocation_id: Some(AllocationId::from_u128(0x11)),
                job_id: Some(JobId::from_u128(0x22)),
            },
        ],
    }
}

fn registration() -> RegisterTaskExecutor {
    RegisterTaskExecutor {
        protocol_version: 1,
        resource_id: resource_id(),
        address: "flint://localhost:42975/taskmanager".parse().unwrap(),
        data_port: 39511,
        hardware: HardwareDescription {
            cpu_cores: 2,
            physical_memory: 1 << 34,
            free_memory: 1 << 29,
            managed_memory: 1 << 27,
        },
        memory: TaskExecutorMemoryConfiguration { task_heap: 1 << 28, managed_memory: 1 << 27, ..Default::default() },
        total_resource: profile().times(2),
        default_slot_resource: profile(),
        slot_report: slot_report(),
    }
}

fn task_manager_info() -> TaskManagerInfo {
    TaskManagerInfo {
        resource_id: resource_id(),
        address: RpcAddress::new("localhost:42975", "taskmanager"),
        data_port: 39511,
        last_heartbeat_ms: 1_795_216_169_449,
        slots_number: 2,
        free_slots: 1,
        total_resource: profile().times(2),
        free_resource: profile(),
        hardware: HardwareDescription::default(),
        memory: TaskExecutorMemoryConfiguration::default(),
        allocated_slots: vec![AllocatedSlotInfo { job_id: JobId::from_u128(0x22), resource: profile() }],
        process_memory: 12 << 20,
        metrics: vec![("Status.JVM.Memory.Heap.Used".into(), 1024.0)],
    }
}

#[test]
fn every_message_round_trips() {
    let session = LeaderSessionId::from_u128(0xfeed);
    round_trip_message(&IdentifyLeader {}, &LeaderInfo { leader_session_id: Some(session), protocol_version: 1 });
    round_trip_message(
        &registration(),
        &RegistrationResponse::Success { instance_id: InstanceId::from_u128(0x33), heartbeat_interval_ms: 10_000 },
    );
    round_trip(&RegistrationResponse::Rejected { reason: "protocol version 2 is not 1".into() });
    round_trip_message(&DisconnectTaskManager { resource_id: resource_id(), reason: "shutdown".into() }, &());
    round_trip_message(
        &HeartbeatFromResourceManager { resource_manager_session: session },
        &TaskExecutorHeartbeatPayload {
            resource_id: resource_id(),
            slot_report: slot_report(),
            process_memory: 7,
            metrics: vec![("Status.JVM.Threads.Count".into(), 9.0)],
        },
    );
    round_trip_message(
        &DisconnectResourceManager { resource_manager_session: Some(session), reason: "heartbeat timeout".into() },
        &(),
    );
    round_trip_message(
        &RequestResourceOverview {},
        &Ok(ResourceOverview { task_managers: 2, slots_total: 4, slots_free: 3 }),
    );
    round_trip_message(&RequestTaskManagerInfos {}, &Ok(vec![task_manager_info()]));
    round_trip_message(&RequestTaskManagerInfos {}, &Err(ResourceManagerError::NotLeader));
    round_trip_message(&RequestTaskManagerInfo { resource_id: resource_id() }, &Ok(task_manager_info()));
    round_trip(&Err::<TaskManagerInfo, _>(ResourceManagerError::UnknownTaskExecutor { resource_id: resource_id() }));
    round_trip_message(
        &ListJobs {},
        &vec![JobStatusEntry {
            job_id: JobId::from_u128(1),
            name: "job".into(),
            status: "RUNNING".into(),
            start_time_ms: 1,
            end_time_ms: -1,
            last_modification_ms: 2,
        }],
    );
    round_trip(&RpcError::Timeout { target: "flint://h:1/x".into(), type_name: "X".into(), timeout_ms: 10 });
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{name}.hex"))
}

fn check_golden(name: &str, bytes: &[u8]) {
    let path = fixture_path(name);
    let actual = hex::encode(bytes);
    if std::env::var_os("FLINT_UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, format!("{actual}\n")).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("missing fixture {} ({e}); actual bytes: {actual}", path.display()));
    assert_eq!(actual, expected.trim(), "wire format of {name} changed (see the module comment)");
}

/// A heartbeat answer of a taskmanager from before the metrics were added still reads
/// (without metrics): the field is additive, old and new peers understand each other.
#[test]
fn a_heartbeat_payload_without_metrics_still_reads() {
    let text = std::fs::read_to_string(fixture_path("heartbeat_payload_without_metrics")).unwrap();
    let payload: TaskExecutorHeartbeatPayload = rmp_serde::from_slice(&hex::decode(text.trim()).unwrap()).unwrap();
    assert_eq!(payload.process_memory, 7);
    assert!(payload.metrics.is_empty());
}

#[test]
fn golden_wire_bytes() {
    check_golden("register_task_executor", &rmp_serde::to_vec_named(&registration()).unwrap());
    check_golden(
        "heartbeat_payload",
        &rmp_serde::to_vec_named(&TaskExecutorHeartbeatPayload {
            resource_id: resource_id(),
            slot_report: slot_report(),
            process_memory: 7,
            metrics: vec![("Status.JVM.Threads.Count".into(), 9.0)],
        })
        .unwrap(),
    );
    check_golden(
        "registration_success",
        &rmp_serde::to_vec_named(&RegistrationResponse::Success {
            instance_id: InstanceId::from_u128(0x33),
            heartbeat_interval_ms: 10_000,
        })
        .unwrap(),
    );
    let frame = Frame::new(
        FrameHeader {
            kind: FrameKind::Ask,
            correlation_id: 42,
            target: "resourcemanager".into(),
            fencing_token: Some(LeaderSessionId::from_u128(0xfeed)),
            type_name: "IdentifyLeader".into(),
        },
        rmp_serde::to_vec_named(&IdentifyLeader {}).unwrap(),
    );
    check_golden("identify_leader_frame", &frame.encode());
}
