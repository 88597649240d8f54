//! `flint`: the command-line client of a Flint cluster, modelled on Apache
//! Flink's `flink` CLI. It only talks to the JobManager's REST endpoint.
//!
//! ```text
//! flint [-m host:port] [--configDir DIR] <command>
//!
//!   info, cluster   summary of the cluster: task managers, slots, jobs
//!   list, run, cancel, savepoint, stop
//!                   not yet supported by this cluster version
//! ```
//!
//! The endpoint is `-m`/`--jobmanager` if given, else `rest.address` (or
//! `jobmanager.rpc.address`) and `rest.port` from the configuration found as
//! described in [`config`]. Errors are printed to stderr and exit with code 1.

mod config;
mod rest;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::config::{find_conf_dir, resolve_endpoint, Config, Environment};
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
    /// Show the cluster's task managers, task slots and jobs.
    #[command(visible_alias = "cluster")]
    Info,
    /// List jobs (not yet supported).
    List(Unsupported),
    /// Submit and run a job (not yet supported).
    Run(Unsupported),
    /// Cancel a job (not yet supported).
    Cancel(Unsupported),
    /// Trigger a savepoint of a job (not yet supported).
    Savepoint(Unsupported),
    /// Stop a job with a savepoint (not yet supported).
    Stop(Unsupported),
}

/// Accepts (and ignores) any arguments of a command that is not supported yet.
#[derive(Debug, Args)]
struct Unsupported {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

impl Command {
    /// The name of a command that is not supported yet.
    fn unsupported_name(&self) -> Option<&'static str> {
        match self {
            Command::Info => None,
            Command::List(_) => Some("list"),
            Command::Run(_) => Some("run"),
            Command::Cancel(_) => Some("cancel"),
            Command::Savepoint(_) => Some("savepoint"),
            Command::Stop(_) => Some("stop"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(name) = cli.command.unsupported_name() {
        eprintln!("flint {name}: not yet supported by this cluster version");
        return ExitCode::FAILURE;
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let client = connect(cli)?;
    match cli.command {
        Command::Info => info(&client),
        _ => unreachable!("unsupported commands are handled in main"),
    }
}

/// Builds the REST client for the endpoint chosen by the options and the
/// configuration.
fn connect(cli: &Cli) -> Result<RestClient> {
    let config = match find_conf_dir(cli.config_dir.as_deref(), &Environment::from_process())? {
        Some(dir) => Config::load_dir(&dir)?,
        None => Config::default(),
    };
    let endpoint = resolve_endpoint(cli.jobmanager.as_deref(), &config)?;
    Ok(RestClient::new(&endpoint.base_url()))
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

fn info(client: &RestClient) -> Result<()> {
    let overview: Overview = client.get_json("/overview")?;
    let taskmanagers: TaskManagers = client.get_json("/taskmanagers")?;
    print!("{}", render_info(client.base_url(), &overview, &taskmanagers.taskmanagers));
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

    #[test]
    fn global_options_anywhere() {
        let cli = Cli::try_parse_from(["flint", "-m", "jm:1", "info"]).unwrap();
        assert_eq!(cli.jobmanager.as_deref(), Some("jm:1"));
        let cli = Cli::try_parse_from(["flint", "cluster", "--jobmanager", "jm:2", "--configDir", "/c"]).unwrap();
        assert!(matches!(cli.command, Command::Info));
        assert_eq!(cli.jobmanager.as_deref(), Some("jm:2"));
        assert_eq!(cli.config_dir, Some(PathBuf::from("/c")));
    }

    #[test]
    fn unsupported_commands_accept_any_arguments() {
        for (args, name) in [
            (vec!["flint", "list", "-r"], "list"),
            (vec!["flint", "run", "-d", "job.jar", "--arg", "x"], "run"),
            (vec!["flint", "cancel", "abc"], "cancel"),
            (vec!["flint", "savepoint", "abc", "/tmp/sp"], "savepoint"),
            (vec!["flint", "stop", "--savepointPath", "/x", "abc"], "stop"),
        ] {
            let cli = Cli::try_parse_from(&args).unwrap();
            assert_eq!(cli.command.unsupported_name(), Some(name));
        }
        let cli = Cli::try_parse_from(["flint", "info"]).unwrap();
        assert_eq!(cli.command.unsupported_name(), None);
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
