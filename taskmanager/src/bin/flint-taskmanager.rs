//! `flint-taskmanager [--configDir DIR] [-D key=value]...`: runs a TaskManager in the
//! foreground until SIGTERM or SIGINT.

use clap::Parser;
use flint_common::process::{init_logging, DaemonArgs};
use tokio_util::sync::CancellationToken;

/// mimalloc keeps freed batch memory for reuse instead of returning it to the kernel
/// after every batch, as glibc's malloc does (about a third of B1's time went there).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = DaemonArgs::parse();
    init_logging();
    let config = match args.load_configuration() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            eprintln!("flint-taskmanager: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = flint_taskmanager::run(config, CancellationToken::new()) {
        tracing::error!(error = %e, "task manager failed");
        eprintln!("flint-taskmanager: {e}");
        std::process::exit(1);
    }
}
