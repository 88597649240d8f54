//! `flint-jobmanager [--configDir DIR] [-D key=value]...`: runs a JobManager in the
//! foreground until SIGTERM, SIGINT or `DELETE /cluster`.

use clap::Parser;
use flint_common::process::{init_logging, DaemonArgs};
use tokio_util::sync::CancellationToken;

/// The same allocator as the taskmanager's; its committed memory is the process metrics'
/// heap figure.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = DaemonArgs::parse();
    init_logging();
    let config = match args.load_configuration() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            eprintln!("flint-jobmanager: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = flint_jobmanager::run(config, CancellationToken::new()) {
        tracing::error!(error = %e, "job manager failed");
        eprintln!("flint-jobmanager: {e}");
        std::process::exit(1);
    }
}
