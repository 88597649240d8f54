//! `flint`: the command-line client of a Flint cluster, modelled on Apache
//! Flink's `flink` CLI. It only talks to the JobManager's REST endpoint.
//!
//! ```text
//! flint [-m host:port] [--configDir DIR] <command>
//!
//!   run [-d] [-p N] [-D key=value]... [-i jobid] [-s savepointPath [-n]] <job-file>
//!                   validate a job file locally, submit it (resuming from a savepoint or
//!                   retained checkpoint with -s), wait for its result
//!   info <job-file> [-p N] [-D key=value]...
//!                   validate a job file locally and print its plan (no cluster)
//!   info, cluster   summary of the cluster: task managers, slots, jobs
//!   list [-r] [-s] [-a]
//!                   running and scheduled (or all) jobs
//!   cancel <jobid>  cancel a job
//!   savepoint [--timeout D] <jobid> [targetDirectory]
//!                   take a savepoint of a running job, wait for its path
//!   stop [-p [savepointPath]] [-d] [--timeout D] <jobid>
//!                   stop a job with a savepoint (-d: drain it first), wait for its path
//!   checkpoint [--full] [--timeout D] <jobid>
//!                   take a checkpoint of a running job now, wait for its id
//!   cert --out DIR [--host NAME]... [--name NAME] [--days N] [--password PW] [--force]
//!                   generate a CA and a certificate for a test cluster's TLS (no cluster)
//! ```
//!
//! `savepoint`, `stop` and `checkpoint` wait at most `--timeout` (default 10 min) for the
//! operation; it goes on in the cluster after that.
//!
//! The endpoint is `-m`/`--jobmanager` if given, else `rest.address` (or
//! `jobmanager.rpc.address`) and `rest.port` from the configuration found as
//! described in [`config`]. With `security.ssl.rest.enabled: true` in that configuration
//! the client talks HTTPS (see [`tls`]). Errors are printed to stderr and exit with code 1.

mod cert;
mod config;
mod jobfile;
mod jobs;
mod operations;
mod rest;
#[cfg(test)]
mod testserver;
mod tls;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::config::{find_conf_dir, resolve_endpoint, Config, Environment};
use crate::jobfile::{invalid_message, parse_property, JobDocument};
use crate::jobs::{parse_job_id, Io, ListSelection, RunRequest, POLL_INTERVAL};
use crate::operations::{Wait, DEFAULT_TIMEOUT};
use crate::rest::RestClient;

#[derive(Debug, Parser)]
#[command(name = "flint", version, about = "Command-line client of a Flint cluster", arg_required_else_help = true)]
struct Cli {
    /// Address of the JobManager's REST endpoint to connect to
    /// (default: rest.address and rest.port of the configuration).
    #[arg(short = 'm', long = "jobmanager", value_name = "host:port", global = true)]
    jobmanager: Option<String>,

    /// Configuration directory (default: $FLINT_CONF_DIR, $FLINK_CONF_DIR,
    /// $FLINT_HOME/conf, or the conf/ directory of this installation).
    #[arg(long = "configDir", value_name = "DIR", global = true)]
    config_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Without a job file: show the cluster's task managers, task slots and jobs.
    /// With one: validate it locally and print its plan as JSON (no cluster needed).
    Info(InfoArgs),
    /// Show the cluster's task managers, task slots and jobs.
    Cluster,
    /// List running and scheduled jobs (times are shown in UTC).
    List(ListArgs),
    /// Validate a job file (JSON or YAML) locally, submit it, and wait for it to finish
    /// (Ctrl-C stops the waiting; the job keeps running).
    Run(RunArgs),
    /// Cancel a running job.
    Cancel(CancelArgs),
    /// Take a savepoint of a running job and wait for its path.
    Savepoint(SavepointArgs),
    /// Stop a running job with a savepoint (it finishes) and wait for the savepoint's path.
    Stop(StopArgs),
    /// Take a checkpoint of a running job now and wait for its id.
    Checkpoint(CheckpointArgs),
    /// Generate a CA and a certificate for a test cluster's TLS, and print the
    /// configuration that uses them (no cluster needed).
    Cert(cert::CertArgs),
}

/// Options that shape a job: shared by `run` and `info`.
#[derive(Debug, Args)]
struct ProgramOptions {
    /// Default parallelism of the job's operators (those that set none), overriding
    /// the cluster's parallelism.default; the job file's own parallelism still wins.
    #[arg(short = 'p', long = "parallelism", value_name = "N", value_parser = clap::value_parser!(u32).range(1..),
          requires = "file")]
    parallelism: Option<u32>,

    /// Set a job configuration option: merged into the job file's top-level 'config'
    /// (repeatable; a later one wins).
    #[arg(short = 'D', value_name = "key=value", value_parser = parse_property, action = clap::ArgAction::Append,
          requires = "file")]
    properties: Vec<(String, String)>,
}

#[derive(Debug, Args)]
struct InfoArgs {
    /// A job file (JSON or YAML) or job package (zip) to validate and show the plan of.
    #[arg(value_name = "job-file")]
    file: Option<PathBuf>,

    /// Program arguments: the job file's `${name}` parameters as `--name value`.
    #[arg(value_name = "arguments", trailing_var_arg = true, allow_hyphen_values = true, requires = "file")]
    args: Vec<String>,

    #[command(flatten)]
    program: ProgramOptions,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Submit the job and return, without waiting for its result.
    #[arg(short = 'd', long = "detached")]
    detached: bool,

    /// The id to give the job (32 hexadecimal characters); default: a random one.
    #[arg(short = 'i', long = "jobid", value_name = "hex")]
    job_id: Option<String>,

    /// Start from this savepoint, or retained checkpoint (its directory, or a job's
    /// checkpoint directory for its newest complete checkpoint).
    #[arg(short = 's', long = "fromSavepoint", value_name = "savepointPath")]
    savepoint_path: Option<String>,

    /// Allow skipping savepoint state of operators the job no longer has.
    #[arg(short = 'n', long = "allowNonRestoredState", requires = "savepoint_path")]
    allow_non_restored_state: bool,

    #[command(flatten)]
    program: ProgramOptions,

    /// The job file (JSON or YAML; see docs/jobs.md) or job package (a zip with the job
    /// file and the artifacts it reads; see docs/packages.md).
    #[arg(value_name = "job-file")]
    file: PathBuf,

    /// Program arguments: the job file's `${name}` parameters as `--name value`.
    #[arg(value_name = "arguments", trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Show only running jobs (and restarting ones).
    #[arg(short = 'r', long = "running")]
    running: bool,
    /// Show only scheduled jobs.
    #[arg(short = 's', long = "scheduled")]
    scheduled: bool,
    /// Show all jobs, including finished, cancelled and failed ones.
    #[arg(short = 'a', long = "all")]
    all: bool,
}

#[derive(Debug, Args)]
struct CancelArgs {
    /// The id of the job to cancel (32 hexadecimal characters).
    #[arg(value_name = "jobid")]
    job_id: String,
}

/// How long `savepoint`, `stop` and `checkpoint` wait.
#[derive(Debug, Args)]
struct WaitOptions {
    /// How long to wait for the operation (e.g. 30 s; default 10 min); it goes on in the
    /// cluster after that.
    #[arg(long = "timeout", value_name = "duration", value_parser = parse_timeout)]
    timeout: Option<Duration>,
}

impl WaitOptions {
    fn wait(&self) -> Wait {
        Wait { poll: POLL_INTERVAL, timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT) }
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    flint_common::config::parse_duration(text.trim())
}

#[derive(Debug, Args)]
struct SavepointArgs {
    /// The id of the job (32 hexadecimal characters).
    #[arg(value_name = "jobid")]
    job_id: String,

    /// Where to write the savepoint (default: the cluster's state.savepoints.dir).
    #[arg(value_name = "targetDirectory")]
    target_directory: Option<String>,

    #[command(flatten)]
    wait: WaitOptions,
}

#[derive(Debug, Args)]
struct StopArgs {
    /// Where to write the savepoint (default: the cluster's state.savepoints.dir). As with
    /// Flink, `-p <jobid>` without a directory is read as the job id.
    #[arg(short = 'p', long = "savepointPath", value_name = "savepointPath", num_args = 0..=1)]
    savepoint_path: Option<Option<String>>,

    /// Fire all pending event-time timers and windows (as at the end of the input) before
    /// taking the savepoint.
    #[arg(short = 'd', long = "drain")]
    drain: bool,

    /// The id of the job (32 hexadecimal characters).
    #[arg(value_name = "jobid")]
    job_id: Option<String>,

    #[command(flatten)]
    wait: WaitOptions,
}

impl StopArgs {
    /// The job id and the savepoint directory, read as Flink reads them.
    fn target(&self) -> Result<(String, Option<String>)> {
        match (&self.job_id, &self.savepoint_path) {
            (Some(job), dir) => Ok((job.clone(), dir.clone().flatten())),
            (None, Some(Some(job))) => Ok((job.clone(), None)),
            (None, _) => anyhow::bail!("Missing JobID. Specify a JobID to stop a job."),
        }
    }
}

#[derive(Debug, Args)]
struct CheckpointArgs {
    /// Take a full checkpoint (every Flint checkpoint is one).
    #[arg(long = "full")]
    full: bool,

    /// The id of the job (32 hexadecimal characters).
    #[arg(value_name = "jobid")]
    job_id: String,

    #[command(flatten)]
    wait: WaitOptions,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let result = execute(&cli, &mut Io { out: &mut out, err: &mut err });
    let _ = out.flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Set by Ctrl-C while `run` waits for its job.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes the first Ctrl-C stop the waiting (the job keeps running, as with Flink);
/// a second one kills the client as usual.
fn stop_waiting_on_ctrl_c() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action =
        SigAction::new(SigHandler::Handler(on_interrupt), SaFlags::SA_RESTART | SaFlags::SA_RESETHAND, SigSet::empty());
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    let _ = unsafe { sigaction(Signal::SIGINT, &action) };
}

/// Runs a command; the exit code, or an error to print (exit code 1).
fn execute(cli: &Cli, io: &mut Io<'_>) -> Result<u8> {
    match &cli.command {
        Command::Info(InfoArgs { file: None, .. }) | Command::Cluster => {
            let client = connect(cli, &load_config(cli)?)?;
            info(&client, io)?;
            Ok(0)
        }
        Command::Info(InfoArgs { file: Some(file), program, args }) => {
            let config = load_config(cli)?;
            let document = JobDocument::read(file, &program.properties, args)?;
            let parallelism = match program.parallelism {
                Some(p) => p,
                None => default_parallelism(&config)?,
            };
            match document.plan(parallelism) {
                Ok(plan) => {
                    writeln!(io.out, "{}", serde_json::to_string_pretty(&plan)?)?;
                    Ok(0)
                }
                Err(error) => {
                    write!(io.err, "{}", invalid_message(file, &error))?;
                    Ok(1)
                }
            }
        }
        Command::List(args) => {
            let client = connect(cli, &load_config(cli)?)?;
            jobs::list(&client, ListSelection::from_flags(args.running, args.scheduled, args.all), io)
        }
        Command::Run(args) => {
            let job_id = args.job_id.as_deref().map(parse_job_id).transpose()?;
            let config = load_config(cli)?;
            let client = connect(cli, &config)?;
            let local_parallelism = match args.program.parallelism {
                Some(p) => p,
                None => default_parallelism(&config)?,
            };
            let request = RunRequest {
                file: args.file.clone(),
                document: JobDocument::read(&args.file, &args.program.properties, &args.args)?,
                parallelism: args.program.parallelism,
                local_parallelism,
                job_id,
                detached: args.detached,
                savepoint_path: args.savepoint_path.clone(),
                allow_non_restored_state: args.allow_non_restored_state,
            };
            if !args.detached {
                stop_waiting_on_ctrl_c();
            }
            jobs::run(&client, &request, POLL_INTERVAL, &INTERRUPTED, io)
        }
        Command::Cancel(args) => {
            let job_id = parse_job_id(&args.job_id)?;
            let client = connect(cli, &load_config(cli)?)?;
            jobs::cancel(&client, job_id, io)
        }
        Command::Savepoint(args) => {
            let job_id = parse_job_id(&args.job_id)?;
            let client = connect(cli, &load_config(cli)?)?;
            operations::savepoint(&client, job_id, args.target_directory.as_deref(), args.wait.wait(), io)
        }
        Command::Stop(args) => {
            let (job, target_directory) = args.target()?;
            let job_id = parse_job_id(&job)?;
            let client = connect(cli, &load_config(cli)?)?;
            operations::stop(&client, job_id, target_directory.as_deref(), args.drain, args.wait.wait(), io)
        }
        Command::Checkpoint(args) => {
            let job_id = parse_job_id(&args.job_id)?;
            let client = connect(cli, &load_config(cli)?)?;
            operations::checkpoint(&client, job_id, args.full, args.wait.wait(), io)
        }
        Command::Cert(args) => cert::run(args, io),
    }
}

/// The configuration chosen by the options and the environment.
fn load_config(cli: &Cli) -> Result<Config> {
    Ok(match find_conf_dir(cli.config_dir.as_deref(), &Environment::from_process())? {
        Some(dir) => Config::load_dir(&dir)?,
        None => Config::default(),
    })
}

/// Builds the REST client for the endpoint chosen by the options and the
/// configuration: HTTPS when `security.ssl.rest.enabled` is true.
fn connect(cli: &Cli, config: &Config) -> Result<RestClient> {
    let endpoint = resolve_endpoint(cli.jobmanager.as_deref(), config)?;
    let source = config.source_description();
    let tls = tls::from_config(config.entries(), &source)?;
    let https = match (endpoint.scheme, &tls) {
        (Some("https"), None) => anyhow::bail!(
            "The JobManager address names https, but security.ssl.rest.enabled is not true in {source}: set it \
             and the endpoint's CA (security.ssl.rest.truststore or flint.ssl.rest.ca-certificates)"
        ),
        (Some("http"), Some(_)) => anyhow::bail!(
            "The JobManager address names http, but security.ssl.rest.enabled is true in {source}: use https:// \
             or no scheme"
        ),
        (_, tls) => tls.is_some(),
    };
    Ok(RestClient::with_tls(&endpoint.base_url(https), tls))
}

/// The cluster's default parallelism (`parallelism.default`, 1 if unset), which
/// applies to jobs submitted without `-p`: local validation uses it too.
fn default_parallelism(config: &Config) -> Result<u32> {
    match config.get("parallelism.default") {
        None => Ok(1),
        Some(text) => text.trim().parse::<u32>().ok().filter(|p| *p > 0).with_context(|| {
            format!(
                "Invalid parallelism.default '{text}' in {}: expected a positive integer",
                config.source_description()
            )
        }),
    }
}

/// `GET /overview`.
#[derive(Debug, Default, Deserialize)]
struct Overview {
    #[serde(default)]
    taskmanagers: u64,
    #[serde(rename = "slots-total", default)]
    slots_total: u64,
    #[serde(rename = "slots-available", default)]
    slots_available: u64,
    #[serde(rename = "jobs-running", default)]
    jobs_running: u64,
    #[serde(rename = "jobs-finished", default)]
    jobs_finished: u64,
    #[serde(rename = "jobs-cancelled", default)]
    jobs_cancelled: u64,
    #[serde(rename = "jobs-failed", default)]
    jobs_failed: u64,
    #[serde(rename = "flink-version", default)]
    version: Option<String>,
    #[serde(rename = "flink-commit", default)]
    commit: Option<String>,
}

/// `GET /taskmanagers`.
#[derive(Debug, Default, Deserialize)]
struct TaskManagers {
    #[serde(default)]
    taskmanagers: Vec<TaskManager>,
}

#[derive(Debug, Default, Deserialize)]
struct TaskManager {
    id: String,
    #[serde(rename = "slotsNumber", default)]
    slots: u64,
    #[serde(rename = "freeSlots", default)]
    free_slots: u64,
}

fn info(client: &RestClient, io: &mut Io<'_>) -> Result<()> {
    let overview: Overview = client.get_json("/overview")?;
    let taskmanagers: TaskManagers = client.get_json("/taskmanagers")?;
    write!(io.out, "{}", render_info(client.base_url(), &overview, &taskmanagers.taskmanagers))?;
    Ok(())
}

/// The human-readable cluster summary printed by `flint info`.
fn render_info(base_url: &str, overview: &Overview, taskmanagers: &[TaskManager]) -> String {
    let mut out = String::new();
    let version = overview.version.as_deref().unwrap_or("unknown");
    let _ = write!(out, "Flint cluster at {base_url}\n\n");
    let _ = match overview.commit.as_deref().filter(|c| !c.is_empty()) {
        Some(commit) => writeln!(out, "  Version:        {version} (commit {commit})"),
        None => writeln!(out, "  Version:        {version}"),
    };
    let _ = writeln!(out, "  Task managers:  {}", overview.taskmanagers);
    let _ = writeln!(out, "  Task slots:     {} total, {} available", overview.slots_total, overview.slots_available);
    let _ = writeln!(
        out,
        "  Jobs:           {} running, {} finished, {} cancelled, {} failed",
        overview.jobs_running, overview.jobs_finished, overview.jobs_cancelled, overview.jobs_failed
    );
    out.push('\n');
    if taskmanagers.is_empty() {
        out.push_str("No task managers are registered.\n");
        return out;
    }

    let headers = ["TASK MANAGER ID", "SLOTS", "FREE SLOTS"];
    let rows: Vec<[String; 3]> =
        taskmanagers.iter().map(|tm| [tm.id.clone(), tm.slots.to_string(), tm.free_slots.to_string()]).collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let _ = writeln!(
        out,
        "{:<w0$}  {:>w1$}  {:>w2$}",
        headers[0],
        headers[1],
        headers[2],
        w0 = widths[0],
        w1 = widths[1],
        w2 = widths[2]
    );
    for row in &rows {
        let _ = writeln!(
            out,
            "{:<w0$}  {:>w1$}  {:>w2$}",
            row[0],
            row[1],
            row[2],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn global_options_anywhere() {
        let cli = parse(&["flint", "-m", "jm:1", "info"]);
        assert_eq!(cli.jobmanager.as_deref(), Some("jm:1"));
        assert!(matches!(cli.command, Command::Info(InfoArgs { file: None, .. })));
        let cli = parse(&["flint", "cluster", "--jobmanager", "jm:2", "--configDir", "/c"]);
        assert!(matches!(cli.command, Command::Cluster));
        assert_eq!(cli.jobmanager.as_deref(), Some("jm:2"));
        assert_eq!(cli.config_dir, Some(PathBuf::from("/c")));
        let cli = parse(&["flint", "list", "-a", "-m", "jm:3"]);
        assert_eq!(cli.jobmanager.as_deref(), Some("jm:3"));
    }

    #[test]
    fn run_arguments() {
        let cli = parse(&[
            "flint",
            "run",
            "-d",
            "-p",
            "4",
            "-D",
            "a=1",
            "-Db.c=x=y",
            "--jobid",
            "ab",
            "-m",
            "h:1",
            "job.yaml",
        ]);
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert!(args.detached);
        assert_eq!(args.program.parallelism, Some(4));
        assert_eq!(
            args.program.properties,
            vec![("a".to_string(), "1".to_string()), ("b.c".to_string(), "x=y".to_string())]
        );
        assert_eq!(args.job_id.as_deref(), Some("ab"));
        assert_eq!(args.file, PathBuf::from("job.yaml"));

        let Command::Run(args) = parse(&["flint", "run", "job.json"]).command else { panic!("not run") };
        assert!(!args.detached);
        assert_eq!(args.program.parallelism, None);
        assert!(args.program.properties.is_empty());
        assert_eq!(args.job_id, None);

        for bad in [
            &["flint", "run"][..],
            &["flint", "run", "-p", "0", "j"],
            &["flint", "run", "-p", "x", "j"],
            &["flint", "run", "-D", "novalue", "j"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} should be rejected");
        }
        // As with Flink's CLI: options before the job, program arguments after it.
        let Command::Run(args) = parse(&["flint", "run", "-p", "2", "job.zip", "--input", "x", "-p", "3"]).command
        else {
            panic!("not run")
        };
        assert_eq!(args.program.parallelism, Some(2));
        assert_eq!(args.args, ["--input", "x", "-p", "3"]);
    }

    #[test]
    fn info_list_cancel_arguments() {
        let Command::Info(args) = parse(&["flint", "info", "job.yaml", "-p", "2", "-D", "k=v"]).command else {
            panic!("not info")
        };
        assert_eq!(args.file, Some(PathBuf::from("job.yaml")));
        assert_eq!(args.program.parallelism, Some(2));
        assert!(Cli::try_parse_from(["flint", "info", "-p", "2"]).is_err(), "-p needs a job file");

        let Command::List(args) = parse(&["flint", "list", "-r", "--scheduled"]).command else { panic!("not list") };
        assert!(args.running && args.scheduled && !args.all);
        let Command::List(args) = parse(&["flint", "list", "--all"]).command else { panic!("not list") };
        assert!(args.all);

        let Command::Cancel(args) = parse(&["flint", "cancel", "xyz"]).command else { panic!("not cancel") };
        assert_eq!(args.job_id, "xyz");
        assert!(Cli::try_parse_from(["flint", "cancel"]).is_err());
    }

    #[test]
    fn run_from_savepoint_arguments() {
        let Command::Run(args) = parse(&["flint", "run", "-s", "/sp/savepoint-1", "-n", "job.yaml"]).command else {
            panic!("not run")
        };
        assert_eq!(args.savepoint_path.as_deref(), Some("/sp/savepoint-1"));
        assert!(args.allow_non_restored_state);
        let Command::Run(args) =
            parse(&["flint", "run", "--fromSavepoint", "/sp", "--allowNonRestoredState", "j"]).command
        else {
            panic!("not run")
        };
        assert_eq!(args.savepoint_path.as_deref(), Some("/sp"));
        assert!(args.allow_non_restored_state);
        let Command::Run(args) = parse(&["flint", "run", "j"]).command else { panic!("not run") };
        assert_eq!((args.savepoint_path, args.allow_non_restored_state), (None, false));
        assert!(Cli::try_parse_from(["flint", "run", "-n", "j"]).is_err(), "-n needs -s");
    }

    #[test]
    fn savepoint_stop_checkpoint_arguments() {
        let Command::Savepoint(args) = parse(&["flint", "savepoint", "abc", "/tmp/sp"]).command else {
            panic!("not savepoint")
        };
        assert_eq!((args.job_id.as_str(), args.target_directory.as_deref()), ("abc", Some("/tmp/sp")));
        assert_eq!(args.wait.wait().timeout, DEFAULT_TIMEOUT);
        let Command::Savepoint(args) = parse(&["flint", "savepoint", "--timeout", "30 s", "abc"]).command else {
            panic!("not savepoint")
        };
        assert_eq!((args.target_directory, args.wait.wait().timeout), (None, Duration::from_secs(30)));
        assert!(Cli::try_parse_from(["flint", "savepoint"]).is_err());
        assert!(Cli::try_parse_from(["flint", "savepoint", "--timeout", "soon", "abc"]).is_err());

        let stop = |args: &[&str]| match parse(args).command {
            Command::Stop(stop) => (stop.target().unwrap(), stop.drain),
            other => panic!("not stop: {other:?}"),
        };
        assert_eq!(
            stop(&["flint", "stop", "--savepointPath", "/x", "abc"]),
            (("abc".into(), Some("/x".into())), false)
        );
        assert_eq!(stop(&["flint", "stop", "-p", "/x", "-d", "abc"]), (("abc".into(), Some("/x".into())), true));
        assert_eq!(stop(&["flint", "stop", "--drain", "abc"]), (("abc".into(), None), true));
        assert_eq!(stop(&["flint", "stop", "abc", "-p"]), (("abc".into(), None), false));
        // As Flink: `-p <jobid>` names the job, the directory is the default.
        assert_eq!(stop(&["flint", "stop", "-p", "abc"]), (("abc".into(), None), false));
        let Command::Stop(args) = parse(&["flint", "stop", "-d"]).command else { panic!("not stop") };
        assert_eq!(args.target().unwrap_err().to_string(), "Missing JobID. Specify a JobID to stop a job.");

        let Command::Checkpoint(args) = parse(&["flint", "checkpoint", "--full", "abc"]).command else {
            panic!("not checkpoint")
        };
        assert!(args.full);
        assert_eq!(args.job_id, "abc");
        assert!(Cli::try_parse_from(["flint", "checkpoint"]).is_err());
    }

    #[test]
    fn savepoint_against_a_cluster() {
        let server = crate::testserver::Server::start(vec![
            ("202 Accepted", r#"{"request-id":"d1fc13943913a47ebc231e7673aa75b6"}"#.to_string()),
            ("200 OK", r#"{"status":{"id":"COMPLETED"},"operation":{"location":"file:/sp/savepoint-1"}}"#.to_string()),
        ]);
        let conf = std::env::temp_dir();
        let id = "0123456789abcdef0123456789abcdef";
        let address = server.url.trim_start_matches("http://").to_string();
        let (code, out, err) =
            execute_args(&["flint", "--configDir", conf.to_str().unwrap(), "-m", &address, "savepoint", id, "/sp"]);
        assert_eq!(code.unwrap(), 0, "{err}");
        assert!(out.contains("Savepoint completed. Path: file:/sp/savepoint-1\n"), "{out}");
        assert_eq!(server.finish()[0].target, format!("/jobs/{id}/savepoints"));
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("flint-client-main-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn execute_args(args: &[&str]) -> (Result<u8>, String, String) {
        let cli = parse(args);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = execute(&cli, &mut Io { out: &mut out, err: &mut err });
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn info_prints_the_plan_of_a_job_file() {
        let conf = std::env::temp_dir().join(format!("flint-client-main-{}-conf", std::process::id()));
        std::fs::create_dir_all(&conf).unwrap();
        let conf = conf.to_str().unwrap().to_string();
        let job = temp_file(
            "plan.yaml",
            "flint: 1\nname: squares\noperators:\n  - { id: numbers, op: source.sequence, to: 10 }\n  \
             - { id: out, op: sink.print, inputs: [numbers], ship: rebalance }\n",
        );
        let path = job.to_str().unwrap();
        // No cluster at this address: none is needed.
        let (code, out, err) =
            execute_args(&["flint", "--configDir", &conf, "-m", "127.0.0.1:9", "info", path, "-p", "3"]);
        assert_eq!(code.unwrap(), 0, "{err}");
        let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(plan["name"], "squares");
        assert_eq!(plan["nodes"].as_array().unwrap().len(), 2);
        assert_eq!(plan["nodes"][0]["parallelism"], 3);
        assert_eq!(plan["nodes"][0]["inputs"][0]["ship_strategy"], "REBALANCE");
        assert!(out.contains("\n  \"jid\""), "pretty-printed: {out}");

        let bad =
            temp_file("bad.json", r#"{"flint": 1, "name": "x", "operators": [{"id": "a", "op": "nope"}], "extra": 1}"#);
        let (code, out, err) = execute_args(&["flint", "--configDir", &conf, "info", bad.to_str().unwrap()]);
        assert_eq!(code.unwrap(), 1);
        assert_eq!(out, "");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines[0], format!("The job file {} is invalid:", bad.display()));
        assert!(lines[1].starts_with("unknown top-level field 'extra'"), "{err}");
        assert!(lines[2].starts_with("operator 'a': "), "{err}");

        let missing = execute_args(&["flint", "--configDir", &conf, "info", "/nonexistent/job.yaml"]).0.unwrap_err();
        assert!(format!("{missing:#}").starts_with("Could not read the job file /nonexistent/job.yaml"), "{missing:#}");
        for f in [job, bad] {
            std::fs::remove_file(f).unwrap();
        }
        std::fs::remove_dir_all(conf).unwrap();
    }

    #[test]
    fn invalid_job_ids_are_rejected_before_connecting() {
        let conf = std::env::temp_dir();
        let conf = conf.to_str().unwrap();
        let err = execute_args(&["flint", "--configDir", conf, "-m", "127.0.0.1:9", "cancel", "1234"]).0.unwrap_err();
        assert_eq!(err.to_string(), "Invalid JobID '1234': expected 32 hexadecimal characters");
        let err = execute_args(&["flint", "--configDir", conf, "run", "-i", "zz", "job.yaml"]).0.unwrap_err();
        assert_eq!(err.to_string(), "Invalid JobID 'zz': expected 32 hexadecimal characters");
        for command in [&["savepoint", "12"][..], &["stop", "12"], &["checkpoint", "12"]] {
            let mut args = vec!["flint", "--configDir", conf, "-m", "127.0.0.1:9"];
            args.extend_from_slice(command);
            let err = execute_args(&args).0.unwrap_err();
            assert_eq!(err.to_string(), "Invalid JobID '12': expected 32 hexadecimal characters", "{command:?}");
        }
    }

    #[test]
    fn default_parallelism_from_config() {
        assert_eq!(default_parallelism(&Config::default()).unwrap(), 1);
        assert_eq!(default_parallelism(&Config::parse_yaml("parallelism.default: 4\n").unwrap()).unwrap(), 4);
        for bad in ["parallelism.default: 0\n", "parallelism:\n  default: x\n"] {
            let err = default_parallelism(&Config::parse_yaml(bad).unwrap()).unwrap_err();
            assert!(err.to_string().starts_with("Invalid parallelism.default"), "{err}");
        }
    }

    #[test]
    fn decodes_rest_answers() {
        let overview: Overview = serde_json::from_str(
            r#"{"taskmanagers":1,"slots-total":2,"slots-available":1,"jobs-running":1,
                "jobs-finished":2,"jobs-cancelled":3,"jobs-failed":4,
                "flink-version":"0.1.0","flink-commit":"abc"}"#,
        )
        .unwrap();
        assert_eq!(overview.slots_available, 1);
        assert_eq!(overview.jobs_failed, 4);
        assert_eq!(overview.commit.as_deref(), Some("abc"));
        let tms: TaskManagers = serde_json::from_str(
            r#"{"taskmanagers":[{"id":"localhost:41234-ab12cd","path":"flint://x",
                "dataPort":0,"slotsNumber":2,"freeSlots":1,"hardware":{}}]}"#,
        )
        .unwrap();
        assert_eq!(tms.taskmanagers.len(), 1);
        assert_eq!(tms.taskmanagers[0].slots, 2);
        assert_eq!(tms.taskmanagers[0].free_slots, 1);
    }

    #[test]
    fn renders_summary() {
        let overview = Overview {
            taskmanagers: 2,
            slots_total: 4,
            slots_available: 3,
            jobs_running: 1,
            version: Some("0.1.0".into()),
            commit: Some("abc123".into()),
            ..Overview::default()
        };
        let tms = [
            TaskManager { id: "localhost:41234-ab12cd".into(), slots: 2, free_slots: 1 },
            TaskManager { id: "tm2".into(), slots: 2, free_slots: 2 },
        ];
        let text = render_info("http://localhost:8081", &overview, &tms);
        let expected = "\
Flint cluster at http://localhost:8081

  Version:        0.1.0 (commit abc123)
  Task managers:  2
  Task slots:     4 total, 3 available
  Jobs:           1 running, 0 finished, 0 cancelled, 0 failed

TASK MANAGER ID         SLOTS  FREE SLOTS
localhost:41234-ab12cd      2           1
tm2                         2           2
";
        assert_eq!(text, expected);
    }

    #[test]
    fn renders_empty_cluster() {
        let text = render_info("http://h:1", &Overview::default(), &[]);
        assert!(text.contains("Version:        unknown\n"), "{text}");
        assert!(text.ends_with("No task managers are registered.\n"), "{text}");
    }
}
