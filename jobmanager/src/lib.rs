//! The JobManager process.
//!
//! [`run`] starts, in order: the RPC service (`jobmanager.bind-host`,
//! `jobmanager.rpc.port`), the ResourceManager in its own actix system and thread, then
//! in this thread's actix system the Dispatcher and the REST server with the dashboard.
//! It runs until the shutdown token is cancelled (SIGTERM/SIGINT, or `DELETE /cluster`)
//! and then stops in reverse: REST (finishing requests in flight), Dispatcher,
//! ResourceManager (leaving its election), RPC.
//!
//! - [`checkpoint_coordinator`]: a job's CheckpointCoordinator (pure state machine).
//! - [`dispatcher`]: the Dispatcher actor.
//! - [`rest`]: the monitoring REST API and dashboard ([`rest_jobs`]: job endpoints;
//!   [`rest_checkpoints`]: checkpoint statistics, savepoints, stop and manual checkpoints;
//!   [`rest_https`]: the HTTPS listener of `security.ssl.rest.enabled`, which logs refused
//!   handshakes).
//! - [`restart`]: restart strategies (fixed-delay, failure-rate, exponential-delay), pure logic.

pub mod checkpoint_coordinator;
pub mod cluster_metrics;
pub mod dispatcher;
pub mod execution_graph;
pub mod job_master;
pub mod rest;
pub mod rest_checkpoints;
pub mod rest_flamegraph;
pub mod rest_https;
pub mod rest_jars;
pub mod rest_jobs;
pub mod rest_metrics;
pub mod rest_misc;
pub mod restart;

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use flint_common::config::{options, ConfigError, Configuration};
use flint_common::ha::{
    create_ha_services, LeaderContender, LeaderElection, DISPATCHER, RESOURCE_MANAGER, REST_SERVER,
};
use flint_common::messages::{endpoints, DispatcherGateway, RemoteEndpoint, ResourceManagerGateway};
use flint_common::rpc::{RpcService, RpcServiceConfig};
use flint_common::tls::{Scope, TlsContext};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Errors that stop the JobManager.
#[derive(Debug, thiserror::Error)]
pub enum JobManagerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rpc(#[from] flint_common::rpc::service::RpcStartError),
    #[error("could not start the REST server on {address} (rest.port / rest.bind-port): {reason}")]
    Rest { address: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("high availability: {0}")]
    Ha(String),
    #[error("blob server: {0}")]
    Blob(String),
    #[error("TLS: {0}")]
    Tls(#[from] flint_common::tls::TlsError),
}

/// The REST endpoint as a leader contender (`rest_server`).
struct RestContender {
    leadership: Arc<rest::RestLeadership>,
    election: Weak<dyn LeaderElection>,
    url: String,
}

impl LeaderContender for RestContender {
    fn grant_leadership(&self, session: flint_common::ids::LeaderSessionId) {
        self.leadership.set_leader(Some(session));
        if let Some(election) = self.election.upgrade() {
            election.confirm_leadership(session, &self.url);
        }
    }

    fn revoke_leadership(&self) {
        self.leadership.set_leader(None);
    }
}

/// Concurrent REST connections the server keeps; more wait in the listen backlog.
const MAX_REST_CONNECTIONS: usize = 512;
/// How long a REST client may take to send a request's head.
const REST_CLIENT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Seconds a stopping REST server waits for requests in flight.
const REST_SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// The BlobServer on `blob.server.port` (the first free port of the range), storing under
/// a fresh `blobStore-<uuid>` in `blob.storage.directory`.
fn start_blob_server(
    config: &Configuration,
    bind_host: &str,
    ha_dir: Option<std::path::PathBuf>,
    tls: Option<TlsContext>,
) -> Result<flint_common::blob::BlobServer, JobManagerError> {
    use flint_common::blob::{BlobServer, BlobSettings, BlobStore};
    let settings = BlobSettings { tls, ..BlobSettings::from_config(config)? };
    let ports = config.get(&options::BLOB_SERVER_PORT)?;
    let mut last = String::from("no port to try");
    let listener = ports.iter().find_map(|port| match std::net::TcpListener::bind((bind_host, port)) {
        Ok(l) => Some(l),
        Err(e) => {
            last = e.to_string();
            None
        }
    });
    let Some(listener) = listener else {
        return Err(JobManagerError::Blob(format!("could not bind blob.server.port '{ports}' on {bind_host}: {last}")));
    };
    let dir = BlobSettings::storage_base(config).join(format!("blobStore-{}", uuid::Uuid::new_v4()));
    let store = std::sync::Arc::new(BlobStore::new(dir, ha_dir)?);
    Ok(BlobServer::start(listener, store, settings)?)
}

/// Runs a JobManager until `shutdown` is cancelled.
pub fn run(mut config: Configuration, shutdown: CancellationToken) -> Result<(), JobManagerError> {
    let open_files = flint_common::process::raise_open_files_limit();
    info!(open_files, "open-file limit");
    let rpc_address = config.get(&options::JOB_MANAGER_RPC_ADDRESS)?;
    let rpc_port = config.get(&options::JOB_MANAGER_RPC_PORT)?;
    let bind_host = config.get_optional(&options::JOB_MANAGER_BIND_HOST)?.unwrap_or_else(|| "0.0.0.0".into());
    let ask_timeout = config.get(&options::PEKKO_ASK_TIMEOUT)?;
    let rm_config = flint_resourcemanager::ResourceManagerConfig::from_configuration(&config)?;
    let rest_bind = config.get_optional(&options::REST_BIND_ADDRESS)?.unwrap_or_else(|| "0.0.0.0".into());
    let rest_ports = match config.get_optional(&options::REST_BIND_PORT)? {
        Some(range) => range.ports(),
        None => vec![config.get(&options::REST_PORT)?],
    };
    let refresh_interval_ms = config.get(&options::WEB_REFRESH_INTERVAL)?;
    let default_parallelism = config.get(&options::PARALLELISM_DEFAULT)?;
    // HTTPS of the REST endpoint (`security.ssl.rest.*`): loaded and checked before anything
    // starts, so a wrong password or an expired certificate fails the start naming the key.
    let rest_tls = TlsContext::from_config(&config, Scope::Rest)?;
    let rest_scheme = if rest_tls.is_some() { "https" } else { "http" };
    let limits = rest::RequestLimits {
        max_content_length: usize::try_from(config.get(&options::REST_SERVER_MAX_CONTENT_LENGTH)?)
            .unwrap_or(usize::MAX),
        body_timeout: config.get(&options::REST_IDLENESS_TIMEOUT)?,
    };

    // With ZooKeeper, several jobmanagers may share a host and are found through ZooKeeper:
    // as in Flink, the RPC port is `high-availability.jobmanager.port` (any free port by
    // default), not `jobmanager.rpc.port`.
    let zookeeper = flint_common::ha::HaConfig::from_configuration(&config)
        .map_err(|e| JobManagerError::Ha(e.to_string()))?
        != flint_common::ha::HaConfig::None;
    let rpc_ports =
        if zookeeper { config.get(&options::HIGH_AVAILABILITY_JOB_MANAGER_PORT)?.ports() } else { vec![rpc_port] };
    // Mutual TLS of RPC and the BlobServer (`security.ssl.internal.*`): key material that
    // cannot be used fails the start, naming the key.
    let internal_tls = TlsContext::from_config(&config, Scope::Internal)?;
    let rpc = RpcService::start(RpcServiceConfig {
        bind_host: bind_host.clone(),
        ports: rpc_ports,
        advertised_host: rpc_address.clone(),
        max_frame_size: config.get(&options::PEKKO_FRAMESIZE)?.bytes() as usize,
        connect_timeout: ask_timeout,
        tls: internal_tls.clone(),
    })?;
    config.set(options::JOB_MANAGER_RPC_PORT.key, rpc.port().to_string());

    // High availability (`high-availability.type`): standalone or ZooKeeper; one process-wide
    // leader latch for the ResourceManager, the Dispatcher and the JobMasters.
    let ha = create_ha_services(&config, BTreeMap::new()).map_err(|e| JobManagerError::Ha(e.to_string()))?;
    info!(mode = ha.mode(), "high availability services started");
    let resource_manager = flint_resourcemanager::spawn(rm_config, rpc.clone(), ha.leader_election(RESOURCE_MANAGER))?;
    let rm_gateway =
        ResourceManagerGateway(RemoteEndpoint::new(rpc.clone(), resource_manager.address.clone(), ask_timeout));
    let dispatcher_gateway =
        DispatcherGateway(RemoteEndpoint::new(rpc.clone(), rpc.address_of(endpoints::DISPATCHER), ask_timeout));
    let log_dir = flint_common::process::log_dir(&config);
    let mut blob_server = start_blob_server(&config, &bind_host, ha.blob_storage_dir(), internal_tls.clone())?;
    config.set(options::BLOB_SERVER_PORT.key, blob_server.port().to_string());
    let blobs = (blob_server.store().clone(), format!("{rpc_address}:{}", blob_server.port()));

    let system = actix::System::new();
    let result = system.block_on(async {
        flint_common::process::shutdown_on_signals(shutdown.clone());
        let dispatcher = dispatcher::start(
            &rpc,
            ha.leader_election(DISPATCHER),
            dispatcher::DispatcherConfig {
                resource_manager: RemoteEndpoint::new(rpc.clone(), resource_manager.address.clone(), ask_timeout),
                slot_request_timeout: config.get(&options::SLOT_REQUEST_TIMEOUT)?,
                ask_timeout,
                heartbeat: job_master::HeartbeatSettings {
                    interval: config.get(&options::HEARTBEAT_INTERVAL)?,
                    timeout: config.get(&options::HEARTBEAT_TIMEOUT)?,
                    rpc_failure_threshold: config.get(&options::HEARTBEAT_RPC_FAILURE_THRESHOLD)?,
                },
                cluster: config.clone(),
                ha: ha.clone(),
                blobs: Some(blobs.clone()),
            },
            dispatcher::JobStoreLimits::from_config(&config)?,
        );

        let flame_graph_settings = rest_flamegraph::FlameGraphSettings::from_config(&config)?;
        let mut listener = None;
        let mut last_error = String::new();
        for port in &rest_ports {
            match std::net::TcpListener::bind((rest_bind.as_str(), *port)) {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        let Some(listener) = listener else {
            return Err(JobManagerError::Rest { address: format!("{rest_bind}:{rest_ports:?}"), reason: last_error });
        };
        let rest_port = listener.local_addr()?.port();
        config.set(options::REST_PORT.key, rest_port.to_string());
        // The REST endpoint's own leadership: the leader publishes its URL; a standby names it.
        let leadership = Arc::new(rest::RestLeadership::default());
        let rest_url = format!(
            "{rest_scheme}://{}:{rest_port}",
            config.get(&options::REST_ADDRESS).unwrap_or(rpc_address.clone())
        );
        let rest_election = ha.leader_election(REST_SERVER);
        rest_election.start(Arc::new(RestContender {
            leadership: leadership.clone(),
            election: Arc::downgrade(&rest_election),
            url: rest_url.clone(),
        }));
        let rest_retrieval = ha.leader_retrieval(REST_SERVER).ok();
        if let Some(retrieval) = &rest_retrieval {
            let leadership = leadership.clone();
            retrieval.start(Arc::new(move |leader: Option<(flint_common::ids::LeaderSessionId, String)>| {
                leadership.set_leader_address(leader.map(|(_, url)| url));
            }));
        }
        let jars = Arc::new(rest_jars::JarStore::open(&config)?);
        let state = actix_web::web::Data::new(rest::RestState {
            rest_url,
            jars: jars.clone(),
            blobs: blobs.0.clone(),
            dispatcher_addr: dispatcher.clone(),
            default_parallelism,
            resource_manager: rm_gateway,
            dispatcher: dispatcher_gateway,
            config,
            log_dir,
            shutdown: shutdown.clone(),
            refresh_interval_ms,
            leadership,
            flame_graphs: Arc::new(rest_flamegraph::FlameGraphs::new(flame_graph_settings)),
            operations: Arc::default(),
            process_metrics: Arc::new(flint_common::process_metrics::ProcessMetrics::new(
                flint_common::process_metrics::mimalloc_committed,
            )),
        });
        let reporter_state = state.clone();
        let metrics_host = rpc_address.clone();
        flint_common::metric_reporter::start_prometheus_reporters(
            &state.config,
            &rest_bind,
            Arc::new(move || {
                Box::pin(cluster_metrics::prometheus_points(reporter_state.clone(), metrics_host.clone()))
            }),
        );
        let app = move || {
            actix_web::App::new()
                .app_data(state.clone())
                .app_data(actix_web::web::Data::new(limits))
                .app_data(actix_web::web::PayloadConfig::new(limits.max_content_length))
                .app_data(actix_web::web::QueryConfig::default().error_handler(rest::query_error))
                .app_data(actix_web::web::PathConfig::default().error_handler(rest::path_error))
                .wrap(actix_web::middleware::from_fn(rest::leader_only))
                .wrap(actix_web::middleware::from_fn(rest::guard_requests))
                .configure(rest::routes)
        };
        let rest_error = |e: std::io::Error| JobManagerError::Rest {
            address: format!("{rest_bind}:{rest_port}"),
            reason: e.to_string(),
        };
        let server = match &rest_tls {
            None => actix_web::HttpServer::new(app)
                .max_connections(MAX_REST_CONNECTIONS)
                .backlog(MAX_REST_CONNECTIONS as u32)
                .client_request_timeout(REST_CLIENT_REQUEST_TIMEOUT)
                .workers(1)
                .disable_signals()
                .shutdown_timeout(REST_SHUTDOWN_TIMEOUT_SECS)
                .listen(listener)
                .map_err(rest_error)?
                .run(),
            Some(tls) => rest_https::listen(
                app,
                listener,
                tls,
                rest_https::ListenSettings {
                    max_connections: MAX_REST_CONNECTIONS,
                    client_request_timeout: REST_CLIENT_REQUEST_TIMEOUT,
                    shutdown_timeout: REST_SHUTDOWN_TIMEOUT_SECS,
                },
            )
            .map_err(rest_error)?,
        };
        let server_handle = server.handle();
        let server_task = actix_rt::spawn(server);
        info!(
            rest = %format!("{rest_scheme}://{rest_bind}:{rest_port}"),
            rpc = %rpc.host_port(),
            "job manager started"
        );

        shutdown.cancelled().await;
        info!("stopping job manager");
        server_handle.stop(true).await;
        let _ = server_task.await;
        let _ = dispatcher.send(dispatcher::Stop).await;
        jars.close();
        Ok(())
    });
    resource_manager.stop();
    blob_server.stop();
    blob_server.store().close();
    ha.close();
    rpc.stop();
    info!("job manager stopped");
    result
}
