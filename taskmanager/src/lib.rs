//! The TaskManager process: one TaskExecutor with its slots.
//!
//! [`run`] starts, in order: the RPC service (on `taskmanager.bind-host` and a port from
//! `taskmanager.rpc.port`), the data port reservation (`taskmanager.data.port`, used by
//! the data plane later), and the TaskExecutor actor in its own actix system, which
//! registers at the ResourceManager at `jobmanager.rpc.address:jobmanager.rpc.port`.
//! It runs until the shutdown token is cancelled, then deregisters and stops.
//!
//! - [`task_executor`]: the TaskExecutor actor and its slot table.
//! - [`task`]: a running task (one subtask) on its own thread.
//! - [`task_metrics`]: what a task measures about itself (records, bytes, busy/idle/back-pressured time, watermarks) under Flink's metric names.
//! - [`runtime`]: the task runtime: operators over Arrow record batches.
//! - [`network`]: the data plane: result partitions, input gates, the data server and client.
//! - [`state`]: state backends: the in-memory keyed `hashmap` backend and operator state, with snapshots.

pub mod artifacts;
pub mod blob_cache;
pub mod network;
pub mod runtime;
pub mod stack_sampler;
pub mod state;
pub mod task;
pub mod task_executor;
pub mod task_metrics;
pub mod tm_metrics;

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use flint_common::config::{options, ConfigError, Configuration};
use flint_common::ha::{create_ha_services, RESOURCE_MANAGER, STANDALONE_LEADER_SESSION};
use flint_common::ids::{LeaderSessionId, ResourceId};
use flint_common::messages::{endpoints, HardwareDescription, TaskExecutorMemoryConfiguration};
use flint_common::process::{cpu_cores, machine_memory_bytes};
use flint_common::resources::ResourceProfile;
use flint_common::rpc::{RpcAddress, RpcService, RpcServiceConfig};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::task_executor::{TaskExecutor, TaskExecutorDescription};

/// Errors that stop the TaskManager from starting.
#[derive(Debug, thiserror::Error)]
pub enum TaskManagerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rpc(#[from] flint_common::rpc::service::RpcStartError),
    #[error("could not reserve a data port on {bind_host} from taskmanager.data.port '{ports}': {reason}")]
    DataPort { bind_host: String, ports: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("high availability: {0}")]
    Ha(String),
    #[error("TLS: {0}")]
    Tls(#[from] flint_common::tls::TlsError),
    /// The taskmanager gave up (e.g. it could not register within
    /// `taskmanager.registration.timeout`); restarting it may help once the cause is gone.
    #[error("{0}")]
    Fatal(String),
}

/// How a component stops the whole taskmanager with an error: the cause is kept and the
/// process shuts down, then exits non-zero.
#[derive(Clone, Default)]
pub struct FatalErrorHandler {
    pub shutdown: CancellationToken,
    cause: Arc<std::sync::Mutex<Option<String>>>,
}

impl FatalErrorHandler {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self { shutdown, cause: Default::default() }
    }

    pub fn fail(&self, cause: String) {
        self.cause.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(cause);
        self.shutdown.cancel();
    }

    pub fn cause(&self) -> Option<String> {
        self.cause.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The TaskManager's settings, read from the configuration.
#[derive(Clone, Debug)]
pub struct TaskManagerConfig {
    pub host: String,
    pub bind_host: String,
    pub rpc_ports: Vec<u16>,
    pub data_ports: Vec<u16>,
    pub num_slots: u32,
    pub resource_id: Option<String>,
    pub resource_manager_address: RpcAddress,
    pub heartbeat_timeout: Duration,
    pub ask_timeout: Duration,
    pub max_frame_size: usize,
    pub registration_initial_backoff: Duration,
    pub registration_max_backoff: Duration,
    /// `taskmanager.registration.timeout`: how long the taskmanager may stay unregistered.
    pub registration_timeout: Duration,
    pub cpu_cores: f64,
    pub task_heap: u64,
    pub managed_memory: u64,
    pub network_memory: u64,
    pub process_size: u64,
}

/// The local address that routes to `host`: what peers there see us as. No packet is
/// sent (connecting a UDP socket only picks a route).
fn local_address_towards(host: &str, port: u16) -> Option<String> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect((host, port)).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

impl TaskManagerConfig {
    pub fn from_configuration(config: &Configuration) -> Result<Self, ConfigError> {
        let jm_host = config.get(&options::JOB_MANAGER_RPC_ADDRESS)?;
        let jm_port = config.get(&options::JOB_MANAGER_RPC_PORT)?;
        let host = match config.get_optional(&options::TASK_MANAGER_HOST)? {
            Some(h) => h,
            None => local_address_towards(&jm_host, jm_port).unwrap_or_else(|| "localhost".into()),
        };
        let num_slots = config.get(&options::TASK_MANAGER_NUM_TASK_SLOTS)?;
        Ok(Self {
            bind_host: config.get_optional(&options::TASK_MANAGER_BIND_HOST)?.unwrap_or_else(|| "0.0.0.0".into()),
            host,
            rpc_ports: config.get(&options::TASK_MANAGER_RPC_PORT)?.ports(),
            data_ports: config.get(&options::TASK_MANAGER_DATA_PORT)?.ports(),
            num_slots,
            resource_id: config.get_optional(&options::TASK_MANAGER_RESOURCE_ID)?,
            resource_manager_address: RpcAddress::new(format!("{jm_host}:{jm_port}"), endpoints::RESOURCE_MANAGER),
            heartbeat_timeout: config.get(&options::HEARTBEAT_TIMEOUT)?,
            ask_timeout: config.get(&options::PEKKO_ASK_TIMEOUT)?,
            max_frame_size: config.get(&options::PEKKO_FRAMESIZE)?.bytes() as usize,
            registration_initial_backoff: config.get(&options::CLUSTER_REGISTRATION_INITIAL_TIMEOUT)?,
            registration_max_backoff: config.get(&options::CLUSTER_REGISTRATION_MAX_TIMEOUT)?,
            registration_timeout: config.get(&options::TASK_MANAGER_REGISTRATION_TIMEOUT)?,
            cpu_cores: config.get_optional(&options::TASK_MANAGER_CPU_CORES)?.unwrap_or(f64::from(num_slots)),
            task_heap: config.get_optional(&options::TASK_MANAGER_TASK_HEAP_SIZE)?.map_or(0, |m| m.bytes()),
            managed_memory: config.get(&options::TASK_MANAGER_MANAGED_MEMORY_SIZE)?.bytes(),
            network_memory: config.get(&options::TASK_MANAGER_NETWORK_MEMORY_MIN)?.bytes(),
            process_size: config.get_optional(&options::TASK_MANAGER_PROCESS_SIZE)?.map_or(0, |m| m.bytes()),
        })
    }

    /// Total resources, and those of one slot (an equal share).
    fn profiles(&self) -> (ResourceProfile, ResourceProfile) {
        let mib = 1024 * 1024;
        let total = ResourceProfile {
            cpu_cores: self.cpu_cores,
            task_heap_mb: self.task_heap / mib,
            task_off_heap_mb: 0,
            managed_mb: self.managed_memory / mib,
            network_mb: self.network_memory / mib,
        };
        let n = u64::from(self.num_slots.max(1));
        let slot = ResourceProfile {
            cpu_cores: total.cpu_cores / n as f64,
            task_heap_mb: total.task_heap_mb / n,
            task_off_heap_mb: 0,
            managed_mb: total.managed_mb / n,
            network_mb: total.network_mb / n,
        };
        (total, slot)
    }
}

fn reserve_data_port(config: &TaskManagerConfig) -> Result<TcpListener, TaskManagerError> {
    let mut last = String::from("no ports given");
    for port in &config.data_ports {
        match TcpListener::bind((config.bind_host.as_str(), *port)) {
            Ok(l) => return Ok(l),
            Err(e) => last = e.to_string(),
        }
    }
    Err(TaskManagerError::DataPort {
        bind_host: config.bind_host.clone(),
        ports: format!("{:?}", config.data_ports),
        reason: last,
    })
}

/// Runs a TaskManager until `shutdown` is cancelled.
pub fn run(config: Configuration, shutdown: CancellationToken) -> Result<(), TaskManagerError> {
    let open_files = flint_common::process::raise_open_files_limit();
    info!(open_files, "open-file limit");
    let tm = TaskManagerConfig::from_configuration(&config)?;
    // Where the ResourceManager is: fixed (`jobmanager.rpc.address:port`) without HA, else
    // whatever leader ZooKeeper names.
    let leaders = BTreeMap::from([(RESOURCE_MANAGER.to_string(), tm.resource_manager_address.to_string())]);
    let ha = create_ha_services(&config, leaders).map_err(|e| TaskManagerError::Ha(e.to_string()))?;
    // Mutual TLS of RPC, data plane and blob downloads (`security.ssl.internal.*`): key
    // material that cannot be used fails the start, naming the key.
    let tls = flint_common::tls::TlsContext::from_config(&config, flint_common::tls::Scope::Internal)?;
    let rpc = RpcService::start(RpcServiceConfig {
        bind_host: tm.bind_host.clone(),
        ports: tm.rpc_ports.clone(),
        advertised_host: tm.host.clone(),
        max_frame_size: tm.max_frame_size,
        connect_timeout: tm.ask_timeout,
        tls: tls.clone(),
    })?;
    let data_listener = reserve_data_port(&tm)?;
    let data_port = data_listener.local_addr()?.port();
    let resource_id = match &tm.resource_id {
        Some(id) => ResourceId::new(id.clone()),
        None => ResourceId::generate_for(&tm.host, rpc.port()),
    };
    let (physical, available) = machine_memory_bytes();
    let (total_resource, slot_resource) = tm.profiles();
    let description = TaskExecutorDescription {
        resource_id: resource_id.clone(),
        data_port,
        hardware: HardwareDescription {
            cpu_cores: cpu_cores(),
            physical_memory: physical,
            free_memory: available,
            managed_memory: tm.managed_memory,
        },
        memory: TaskExecutorMemoryConfiguration {
            task_heap: tm.task_heap,
            network_memory: tm.network_memory,
            managed_memory: tm.managed_memory,
            total_flink_memory: tm.task_heap + tm.network_memory + tm.managed_memory,
            total_process_memory: tm.process_size,
            ..Default::default()
        },
        total_resource,
        slot_resource,
    };
    info!(%resource_id, rpc = %rpc.host_port(), data_port, slots = tm.num_slots, "starting task manager");

    let partitions = network::PartitionManager::new();
    let data_server =
        network::DataServer::start(data_listener, partitions.clone(), tm.max_frame_size, tm.ask_timeout, tls.clone())?;
    let data_client = network::DataClient::start(tm.max_frame_size, tm.ask_timeout, tls.clone())?;
    let env = Arc::new(task::TaskEnvironment {
        resource_id: resource_id.clone(),
        partitions,
        data_client: data_client.clone(),
        gate_config: network::GateConfig::default(),
        max_queued_buffers: network::GateConfig::default().initial_credit as usize,
        metrics: Arc::new(tm_metrics::TaskManagerMetrics::new(
            tm.host.clone(),
            resource_id.to_string(),
            tm.managed_memory,
        )),
        artifacts: artifacts::ArtifactStore::open(&config, tls.clone())?,
        wasm_limits: flint_wasm::Limits {
            memory_max: config.get(&options::WASM_MEMORY_MAX)?.bytes(),
            call_timeout: config.get(&options::WASM_CALL_TIMEOUT)?,
        },
        allowed_paths: flint_common::io_paths::AllowedPaths::from_config(&config)?,
    });
    let tm_metrics = env.metrics.clone();
    let task_env = env.clone();

    let fatal = FatalErrorHandler::new(shutdown.clone());
    let system = actix::System::new();
    system.block_on(async {
        let te = actix::Actor::start(TaskExecutor::new(rpc.clone(), tm.clone(), description, env, fatal.clone()));
        task_executor::register_endpoint(&rpc, te.clone());
        flint_common::metric_reporter::start_prometheus_reporters(
            &config,
            &tm.bind_host,
            Arc::new(move || {
                let metrics = tm_metrics.clone();
                Box::pin(async move { metrics.points() })
            }),
        );
        let retrieval = match ha.leader_retrieval(RESOURCE_MANAGER) {
            Ok(retrieval) => {
                let addr = te.clone();
                retrieval.start(Arc::new(move |leader: Option<(LeaderSessionId, String)>| {
                    let Some((session, address)) = leader else { return };
                    // The standalone retrieval knows no session (nil id).
                    let session = (session != STANDALONE_LEADER_SESSION).then_some(session);
                    match address.parse::<RpcAddress>() {
                        Ok(address) => addr.do_send(task_executor::ResourceManagerLeader { address, session }),
                        Err(e) => warn!(error = %e, "the resource manager leader's address is unreadable"),
                    }
                }));
                Some(retrieval)
            }
            Err(e) => {
                warn!(error = %e, "no resource manager leader retrieval; using the configured address");
                None
            }
        };
        flint_common::process::shutdown_on_signals(shutdown.clone());
        shutdown.cancelled().await;
        info!("stopping task manager");
        if let Some(retrieval) = retrieval {
            retrieval.stop();
        }
        let _ = te.send(task_executor::Shutdown).await;
    });
    ha.close();
    rpc.stop();
    data_server.stop();
    data_client.stop();
    task_env.artifacts.close();
    if let Some(cause) = fatal.cause() {
        return Err(TaskManagerError::Fatal(cause));
    }
    info!("task manager stopped");
    Ok(())
}
