//! The job commands: `run` (submit, optionally from a savepoint, then wait for the result),
//! `list` and `cancel`, with Flink's CLI wording. Output goes to the given writers so tests
//! can read it.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use flint_common::ids::JobId;
use serde::Deserialize;

use crate::jobfile::{invalid_message, JobDocument};
use crate::rest::{RestClient, RestError};

/// How often `run` asks for the result of the job it waits for.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The exit code after Ctrl-C stopped the waiting (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Standard output and standard error of a command.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

/// Parses a job id given on the command line.
pub fn parse_job_id(text: &str) -> Result<JobId> {
    text.trim().parse::<JobId>().map_err(|_| anyhow!("Invalid JobID '{text}': expected 32 hexadecimal characters"))
}

/// What `flint run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub file: PathBuf,
    pub document: JobDocument,
    /// `-p`: the default parallelism sent to the cluster.
    pub parallelism: Option<u32>,
    /// The default parallelism to validate with locally (`-p`, else the configuration's).
    pub local_parallelism: u32,
    pub job_id: Option<JobId>,
    pub detached: bool,
    /// `-s`: the savepoint (or retained checkpoint) to start from.
    pub savepoint_path: Option<String>,
    /// `-n`: accept savepoint state of operators the job no longer has.
    pub allow_non_restored_state: bool,
}

/// A query parameter value, percent-encoded (everything but RFC 3986's unreserved characters).
pub fn query_value(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// `POST /jobs` answer.
#[derive(Debug, Deserialize)]
struct Submitted {
    #[serde(rename = "jobUrl")]
    job_url: String,
}

/// `GET /jobs/:id/execution-result`.
#[derive(Debug, Deserialize)]
struct ExecutionResultAnswer {
    status: QueueStatus,
    #[serde(rename = "job-execution-result")]
    result: Option<ExecutionResult>,
}

#[derive(Debug, Deserialize)]
struct QueueStatus {
    id: String,
}

#[derive(Debug, Deserialize)]
struct ExecutionResult {
    #[serde(rename = "application-status")]
    application_status: String,
    #[serde(rename = "net-runtime", default)]
    net_runtime: i64,
    #[serde(rename = "failure-cause")]
    failure_cause: Option<FailureCause>,
}

#[derive(Debug, Deserialize)]
struct FailureCause {
    #[serde(rename = "stack-trace")]
    stack_trace: Option<String>,
}

/// `GET /jobs/:id/exceptions`.
#[derive(Debug, Deserialize)]
struct Exceptions {
    #[serde(rename = "root-exception")]
    root_exception: Option<String>,
}

/// `flint run`: validates locally, submits, and unless detached waits for the result
/// (until `interrupted` is set). Returns the exit code.
pub fn run(
    client: &RestClient,
    request: &RunRequest,
    poll: Duration,
    interrupted: &AtomicBool,
    io: &mut Io<'_>,
) -> Result<u8> {
    if let Err(error) = request.document.validate(request.local_parallelism) {
        write!(io.err, "{}", invalid_message(&request.file, &error))?;
        return Ok(1);
    }

    let mut query = Vec::new();
    if let Some(id) = request.job_id {
        query.push(format!("jobId={id}"));
    }
    if let Some(p) = request.parallelism {
        query.push(format!("parallelism={p}"));
    }
    if let Some(path) = &request.savepoint_path {
        query.push(format!("savepointPath={}", query_value(path)));
        if request.allow_non_restored_state {
            query.push("allowNonRestoredState=true".to_string());
        }
    }
    let path = if query.is_empty() { "/jobs".to_string() } else { format!("/jobs?{}", query.join("&")) };
    let sent = match &request.document.package {
        Some(p) => {
            let fields = serde_json::json!({ "programArgsList": p.args, "flinkConfiguration": p.config });
            let fields = serde_json::to_vec(&fields)?;
            client.post_multipart(&path, &[("package", "package.zip", &p.bytes), ("request", "request.json", &fields)])
        }
        None => client.post_json(&path, request.document.content_type(), &request.document.text),
    };
    let submitted: Submitted = match sent {
        Ok(answer) => answer,
        Err(RestError::Status { status: 400, errors, .. }) => {
            match &request.savepoint_path {
                None => writeln!(io.err, "The cluster rejected the job file {}:", request.file.display())?,
                Some(path) => writeln!(
                    io.err,
                    "The cluster rejected the job file {} with the savepoint {path}:",
                    request.file.display()
                )?,
            }
            for error in errors {
                writeln!(io.err, "{error}")?;
            }
            return Ok(1);
        }
        Err(RestError::Status { status: 409, errors, .. }) if !errors.is_empty() => bail!("{}", errors.join("\n")),
        Err(e) => return Err(e.into()),
    };
    let job_id = submitted
        .job_url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .and_then(|id| id.parse::<JobId>().ok())
        .ok_or_else(|| anyhow!("Unexpected answer to the submission: jobUrl '{}'", submitted.job_url))?;
    writeln!(io.out, "Job has been submitted with JobID {job_id}")?;
    io.out.flush()?;
    if request.detached {
        return Ok(0);
    }

    let result_path = format!("/jobs/{job_id}/execution-result");
    let result = loop {
        if interrupted.load(Ordering::SeqCst) {
            writeln!(
                io.err,
                "Stopped waiting for job {job_id}; it keeps running. Cancel it with: flint cancel {job_id}"
            )?;
            return Ok(EXIT_INTERRUPTED);
        }
        let answer: ExecutionResultAnswer = client.get_json(&result_path)?;
        if answer.status.id == "COMPLETED" {
            break answer.result.ok_or_else(|| {
                anyhow!("Unexpected answer to GET {result_path}: COMPLETED without a job-execution-result")
            })?;
        }
        std::thread::sleep(poll);
    };

    if result.application_status == "FINISHED" {
        writeln!(io.out, "Job with JobID {job_id} has finished.")?;
        writeln!(io.out, "Job Runtime: {} ms", result.net_runtime)?;
        return Ok(0);
    }
    writeln!(io.err, "Job with JobID {job_id} has terminated with status {}.", result.application_status)?;
    writeln!(io.err, "Job Runtime: {} ms", result.net_runtime)?;
    let mut cause = result.failure_cause.and_then(|c| c.stack_trace).filter(|s| !s.trim().is_empty());
    if cause.is_none() && result.application_status == "FAILED" {
        // Older answers may lack the cause; the exception history has it.
        cause = client
            .get_json::<Exceptions>(&format!("/jobs/{job_id}/exceptions"))
            .ok()
            .and_then(|e| e.root_exception)
            .filter(|s| !s.trim().is_empty());
    }
    if let Some(cause) = cause {
        writeln!(io.err, "Cause: {}", cause.trim_end())?;
    }
    Ok(1)
}

/// Which jobs `flint list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListSelection {
    pub running: bool,
    pub scheduled: bool,
    pub terminated: bool,
}

impl ListSelection {
    /// From `-r`, `-s`, `-a`, as Flink: none of them shows running and scheduled jobs;
    /// `-a` shows everything.
    pub fn from_flags(running: bool, scheduled: bool, all: bool) -> ListSelection {
        if all {
            ListSelection { running: true, scheduled: true, terminated: true }
        } else if !running && !scheduled {
            ListSelection { running: true, scheduled: true, terminated: false }
        } else {
            ListSelection { running, scheduled, terminated: false }
        }
    }
}

/// `GET /jobs/overview`.
#[derive(Debug, Default, Deserialize)]
pub struct JobsOverview {
    #[serde(default)]
    pub jobs: Vec<JobOverview>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobOverview {
    pub jid: String,
    #[serde(default)]
    pub name: String,
    pub state: String,
    #[serde(rename = "start-time", default)]
    pub start_time: i64,
}

/// `flint list`.
pub fn list(client: &RestClient, selection: ListSelection, io: &mut Io<'_>) -> Result<u8> {
    let overview: JobsOverview = client.get_json("/jobs/overview")?;
    write!(io.out, "{}", render_list(&overview.jobs, selection))?;
    Ok(0)
}

const RULE: &str = "--------------------------------------------------------------";

/// The output of `flint list`, as Flink prints it (times in UTC).
pub fn render_list(jobs: &[JobOverview], selection: ListSelection) -> String {
    let mut running = Vec::new();
    let mut scheduled = Vec::new();
    let mut terminated = Vec::new();
    for job in jobs {
        match job.state.as_str() {
            "CREATED" | "INITIALIZING" => scheduled.push(job),
            "FINISHED" | "CANCELED" | "FAILED" => terminated.push(job),
            _ => running.push(job),
        }
    }
    let mut out = String::new();
    if selection.running {
        if running.is_empty() {
            out.push_str("No running jobs.\n");
        } else {
            section(&mut out, "------------------ Running/Restarting Jobs -------------------", running);
        }
    }
    if selection.scheduled {
        if scheduled.is_empty() {
            out.push_str("No scheduled jobs.\n");
        } else {
            section(&mut out, "----------------------- Scheduled Jobs -----------------------", scheduled);
        }
    }
    if selection.terminated && !terminated.is_empty() {
        section(&mut out, "---------------------- Terminated Jobs -----------------------", terminated);
    }
    out
}

/// A titled block of jobs, sorted by start time (then state), as Flink sorts them.
fn section(out: &mut String, title: &str, mut jobs: Vec<&JobOverview>) {
    jobs.sort_by(|a, b| {
        a.start_time.cmp(&b.start_time).then_with(|| a.state.to_lowercase().cmp(&b.state.to_lowercase()))
    });
    out.push_str(title);
    out.push('\n');
    for job in jobs {
        let _ = writeln!(out, "{} : {} : {} ({})", format_time(job.start_time), job.jid, job.name, job.state);
    }
    out.push_str(RULE);
    out.push('\n');
}

/// Epoch milliseconds as `dd.MM.yyyy HH:mm:ss` in UTC.
pub fn format_time(epoch_ms: i64) -> String {
    if epoch_ms < 0 {
        return "--.--.---- --:--:--".to_string();
    }
    let secs = epoch_ms / 1000;
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{day:02}.{month:02}.{year:04} {:02}:{:02}:{:02}", day_secs / 3600, day_secs % 3600 / 60, day_secs % 60)
}

/// `flint cancel`.
pub fn cancel(client: &RestClient, job_id: JobId, io: &mut Io<'_>) -> Result<u8> {
    writeln!(io.out, "Cancelling job {job_id}.")?;
    io.out.flush()?;
    match client.patch_json::<serde_json::Value>(&format!("/jobs/{job_id}?mode=cancel")) {
        Ok(_) => {
            writeln!(io.out, "Cancelled job {job_id}.")?;
            Ok(0)
        }
        Err(RestError::Status { status: 404, .. }) => bail!("Job {job_id} not found"),
        Err(RestError::Status { status: 409, errors, .. }) if !errors.is_empty() => bail!("{}", errors.join("\n")),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testserver::{Idle, Server};

    const ID: &str = "0123456789abcdef0123456789abcdef";

    const JOB: &str = "flint: 1\nname: squares\noperators:\n  - { id: numbers, op: source.sequence, to: 10 }\n\
        \x20 - { id: out, op: sink.print, inputs: [numbers] }\n";

    struct Captured {
        code: Result<u8>,
        out: String,
        err: String,
    }

    fn capture(f: impl FnOnce(&mut Io<'_>) -> Result<u8>) -> Captured {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = f(&mut Io { out: &mut out, err: &mut err });
        Captured { code, out: String::from_utf8(out).unwrap(), err: String::from_utf8(err).unwrap() }
    }

    fn request(text: &str, properties: &[(String, String)]) -> RunRequest {
        RunRequest {
            file: PathBuf::from("job.yaml"),
            document: JobDocument::from_text(text.to_string(), properties),
            parallelism: None,
            local_parallelism: 1,
            job_id: None,
            detached: false,
            savepoint_path: None,
            allow_non_restored_state: false,
        }
    }

    fn ok(body: &str) -> (&'static str, String) {
        ("200 OK", body.to_string())
    }

    fn accepted() -> (&'static str, String) {
        ("202 Accepted", format!(r#"{{"jobUrl":"/jobs/{ID}"}}"#))
    }

    const IN_PROGRESS: &str = r#"{"status":{"id":"IN_PROGRESS"}}"#;

    fn run_against(server: &Server, request: &RunRequest) -> Captured {
        let client = RestClient::new(&server.url);
        capture(|io| run(&client, request, Duration::from_millis(5), &AtomicBool::new(false), io))
    }

    #[test]
    fn job_ids() {
        assert_eq!(parse_job_id(ID).unwrap().to_string(), ID);
        assert_eq!(parse_job_id(&ID.to_uppercase()).unwrap().to_string(), ID);
        for bad in ["", "abc", "0123456789abcdef0123456789abcdeg", "0123456789abcdef0123456789abcdef0"] {
            let err = parse_job_id(bad).unwrap_err().to_string();
            assert_eq!(err, format!("Invalid JobID '{bad}': expected 32 hexadecimal characters"));
        }
    }

    #[test]
    fn run_submits_and_waits_until_finished() {
        let server = Server::start(vec![
            accepted(),
            ok(IN_PROGRESS),
            ok(IN_PROGRESS),
            ok(&format!(
                r#"{{"status":{{"id":"COMPLETED"}},"job-execution-result":{{"id":"{ID}",
                    "application-status":"FINISHED","accumulator-results":{{}},"net-runtime":1234}}}}"#
            )),
        ]);
        let mut req = request(JOB, &[]);
        req.parallelism = Some(3);
        req.job_id = Some(parse_job_id(ID).unwrap());
        let c = run_against(&server, &req);
        assert_eq!(c.code.unwrap(), 0, "{}", c.err);
        assert_eq!(
            c.out,
            format!(
                "Job has been submitted with JobID {ID}\nJob with JobID {ID} has finished.\nJob Runtime: 1234 ms\n"
            )
        );
        assert_eq!(c.err, "");
        let requests = server.finish();
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].target, format!("/jobs?jobId={ID}&parallelism=3"));
        assert_eq!(requests[0].body, JOB, "the file is sent as written");
        assert!(requests[0].headers.to_ascii_lowercase().contains("content-type: application/yaml"));
        for r in &requests[1..] {
            assert_eq!((r.method.as_str(), r.target.as_str()), ("GET", &*format!("/jobs/{ID}/execution-result")));
        }
    }

    #[test]
    fn run_from_a_savepoint_passes_the_path() {
        let server = Server::start(vec![accepted(), accepted()]);
        let mut req = request(JOB, &[]);
        req.detached = true;
        req.savepoint_path = Some("file:///data/save points/savepoint-01&x".into());
        req.allow_non_restored_state = true;
        assert_eq!(run_against(&server, &req).code.unwrap(), 0);
        req.allow_non_restored_state = false;
        req.parallelism = Some(2);
        assert_eq!(run_against(&server, &req).code.unwrap(), 0);
        let requests = server.finish();
        assert_eq!(
            requests[0].target,
            "/jobs?savepointPath=file%3A%2F%2F%2Fdata%2Fsave%20points%2Fsavepoint-01%26x&allowNonRestoredState=true"
        );
        assert_eq!(
            requests[1].target,
            "/jobs?parallelism=2&savepointPath=file%3A%2F%2F%2Fdata%2Fsave%20points%2Fsavepoint-01%26x"
        );
    }

    #[test]
    fn run_reports_an_invalid_savepoint() {
        let server = Server::start(vec![(
            "400 Bad Request",
            r#"{"errors":["Cannot restore from savepoint '/nope': no such file"]}"#.into(),
        )]);
        let mut req = request(JOB, &[]);
        req.savepoint_path = Some("/nope".into());
        let c = run_against(&server, &req);
        assert_eq!(c.code.unwrap(), 1);
        assert_eq!(
            c.err,
            "The cluster rejected the job file job.yaml with the savepoint /nope:\n\
             Cannot restore from savepoint '/nope': no such file\n"
        );
        server.finish();
    }

    #[test]
    fn run_detached_does_not_wait_and_sends_merged_config() {
        let server = Server::start(vec![accepted()]);
        let props = vec![("pipeline.max-parallelism".to_string(), "64".to_string())];
        let mut req = request(JOB, &props);
        req.detached = true;
        let c = run_against(&server, &req);
        assert_eq!(c.code.unwrap(), 0);
        assert_eq!(c.out, format!("Job has been submitted with JobID {ID}\n"));
        let requests = server.finish();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].target, "/jobs");
        assert_eq!(
            requests[0].body,
            r#"{"flint":1,"name":"squares","operators":[{"id":"numbers","op":"source.sequence","to":10},{"id":"out","op":"sink.print","inputs":["numbers"]}],"config":{"pipeline.max-parallelism":"64"}}"#
        );
        assert!(requests[0].headers.to_ascii_lowercase().contains("content-type: application/json"));
    }

    #[test]
    fn invalid_job_is_never_submitted() {
        let idle = Idle::start();
        let text = r#"{ "flint": 1, "name": "bad", "operators": [
            { "id": "lines", "op": "source.file", "path": "/x", "fromat": "text" },
            { "id": "out", "op": "sink.print", "inputs": ["lnes"], "parallelism": 0 } ] }"#;
        let client = RestClient::new(&idle.url);
        let c = capture(|io| run(&client, &request(text, &[]), POLL_INTERVAL, &AtomicBool::new(false), io));
        assert_eq!(c.code.unwrap(), 1);
        assert_eq!(c.out, "");
        let lines: Vec<&str> = c.err.lines().collect();
        assert_eq!(lines[0], "The job file job.yaml is invalid:");
        assert!(lines[1].starts_with("operator 'lines': unknown parameter 'fromat'"), "{}", c.err);
        assert!(c.err.contains("operator 'out': "), "{}", c.err);
        assert!(lines.len() >= 3, "{}", c.err);
        idle.assert_untouched();
    }

    #[test]
    fn run_reports_failure_with_cause() {
        let server = Server::start(vec![
            accepted(),
            ok(&format!(
                r#"{{"status":{{"id":"COMPLETED"}},"job-execution-result":{{"id":"{ID}",
                    "application-status":"FAILED","net-runtime":17,
                    "failure-cause":{{"class":"x","stack-trace":"java.lang.Exception: boom\n\tat here\n"}}}}}}"#
            )),
        ]);
        let c = run_against(&server, &request(JOB, &[]));
        assert_eq!(c.code.unwrap(), 1);
        assert_eq!(c.out, format!("Job has been submitted with JobID {ID}\n"));
        assert_eq!(
            c.err,
            format!(
                "Job with JobID {ID} has terminated with status FAILED.\nJob Runtime: 17 ms\n\
                 Cause: java.lang.Exception: boom\n\tat here\n"
            )
        );
        server.finish();
    }

    #[test]
    fn run_failure_without_cause_reads_the_exceptions() {
        let server = Server::start(vec![
            accepted(),
            ok(
                r#"{"status":{"id":"COMPLETED"},"job-execution-result":{"application-status":"FAILED","net-runtime":5}}"#,
            ),
            ok(r#"{"root-exception":"task failed","timestamp":1,"all-exceptions":[]}"#),
        ]);
        let c = run_against(&server, &request(JOB, &[]));
        assert_eq!(c.code.unwrap(), 1);
        assert!(c.err.ends_with("Cause: task failed\n"), "{}", c.err);
        assert_eq!(server.finish()[2].target, format!("/jobs/{ID}/exceptions"));
    }

    #[test]
    fn run_reports_cancellation() {
        let server = Server::start(vec![
            accepted(),
            ok(
                r#"{"status":{"id":"COMPLETED"},"job-execution-result":{"application-status":"CANCELED","net-runtime":9}}"#,
            ),
        ]);
        let c = run_against(&server, &request(JOB, &[]));
        assert_eq!(c.code.unwrap(), 1);
        assert_eq!(c.err, format!("Job with JobID {ID} has terminated with status CANCELED.\nJob Runtime: 9 ms\n"));
        server.finish();
    }

    #[test]
    fn run_reports_the_clusters_rejection() {
        let server =
            Server::start(vec![("400 Bad Request", r#"{"errors":["operator 'a': x","operator 'b': y"]}"#.into())]);
        let c = run_against(&server, &request(JOB, &[]));
        assert_eq!(c.code.unwrap(), 1);
        assert_eq!(c.err, "The cluster rejected the job file job.yaml:\noperator 'a': x\noperator 'b': y\n");
        server.finish();
    }

    #[test]
    fn interrupted_wait_leaves_the_job_running() {
        let server = Server::start(vec![accepted()]);
        let client = RestClient::new(&server.url);
        let c = capture(|io| run(&client, &request(JOB, &[]), POLL_INTERVAL, &AtomicBool::new(true), io));
        assert_eq!(c.code.unwrap(), EXIT_INTERRUPTED);
        assert!(c.err.starts_with(&format!("Stopped waiting for job {ID}; it keeps running.")), "{}", c.err);
        assert_eq!(server.finish().len(), 1);
    }

    #[test]
    fn unreachable_cluster_is_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = RestClient::new(&format!("http://127.0.0.1:{port}"));
        let c = capture(|io| run(&client, &request(JOB, &[]), POLL_INTERVAL, &AtomicBool::new(false), io));
        let err = c.code.unwrap_err().to_string();
        assert!(err.starts_with("Could not connect to the Flint cluster at"), "{err}");
    }

    fn job(jid: &str, name: &str, state: &str, start: i64) -> JobOverview {
        JobOverview { jid: jid.into(), name: name.into(), state: state.into(), start_time: start }
    }

    #[test]
    fn formats_times_in_utc() {
        assert_eq!(format_time(0), "01.01.1970 00:00:00");
        assert_eq!(format_time(1_700_000_000_123), "14.11.2023 22:13:20");
        assert_eq!(format_time(951_782_400_000), "29.02.2000 00:00:00");
        assert_eq!(format_time(-1), "--.--.---- --:--:--");
    }

    #[test]
    fn list_selection_flags() {
        let sel = ListSelection::from_flags;
        assert_eq!(sel(false, false, false), ListSelection { running: true, scheduled: true, terminated: false });
        assert_eq!(sel(true, false, false), ListSelection { running: true, scheduled: false, terminated: false });
        assert_eq!(sel(false, true, false), ListSelection { running: false, scheduled: true, terminated: false });
        assert_eq!(sel(true, false, true), ListSelection { running: true, scheduled: true, terminated: true });
    }

    #[test]
    fn renders_lists_like_flink() {
        let jobs = vec![
            job("b", "second", "RUNNING", 1_700_000_060_000),
            job("f", "done", "FINISHED", 1_600_000_000_000),
            job("a", "first", "RESTARTING", 1_700_000_000_000),
            job("s", "new", "INITIALIZING", 1_700_000_100_000),
            job("c", "gone", "CANCELED", 1_650_000_000_000),
        ];
        let all = render_list(&jobs, ListSelection::from_flags(false, false, true));
        assert_eq!(
            all,
            "\
------------------ Running/Restarting Jobs -------------------
14.11.2023 22:13:20 : a : first (RESTARTING)
14.11.2023 22:14:20 : b : second (RUNNING)
--------------------------------------------------------------
----------------------- Scheduled Jobs -----------------------
14.11.2023 22:15:00 : s : new (INITIALIZING)
--------------------------------------------------------------
---------------------- Terminated Jobs -----------------------
13.09.2020 12:26:40 : f : done (FINISHED)
15.04.2022 05:20:00 : c : gone (CANCELED)
--------------------------------------------------------------
"
        );
        let terminated_only = [jobs[1].clone()];
        assert_eq!(
            render_list(&terminated_only, ListSelection::from_flags(false, false, false)),
            "No running jobs.\nNo scheduled jobs.\n"
        );
        assert_eq!(render_list(&[], ListSelection::from_flags(true, false, false)), "No running jobs.\n");
        assert_eq!(
            render_list(&[], ListSelection::from_flags(false, false, true)),
            "No running jobs.\nNo scheduled jobs.\n"
        );
    }

    #[test]
    fn list_reads_the_overview_without_tasks() {
        let server = Server::start(vec![ok(
            r#"{"jobs":[{"jid":"0123","name":"n","state":"RUNNING","start-time":0,"end-time":-1,
                "duration":5,"last-modification":0}]}"#,
        )]);
        let client = RestClient::new(&server.url);
        let c = capture(|io| list(&client, ListSelection::from_flags(true, false, false), io));
        assert_eq!(c.code.unwrap(), 0);
        assert_eq!(
            c.out,
            format!("------------------ Running/Restarting Jobs -------------------\n01.01.1970 00:00:00 : 0123 : n (RUNNING)\n{RULE}\n")
        );
        assert_eq!(server.finish()[0].target, "/jobs/overview");
    }

    #[test]
    fn cancel_answers() {
        let id = parse_job_id(ID).unwrap();
        let server = Server::start(vec![
            ("202 Accepted", "{}".into()),
            ("404 Not Found", r#"{"errors":["Job could not be found."]}"#.into()),
            (
                "409 Conflict",
                r#"{"errors":["Job cancellation failed because the job has already reached another terminal state (FINISHED)."]}"#
                    .into(),
            ),
        ]);
        let client = RestClient::new(&server.url);
        let c = capture(|io| cancel(&client, id, io));
        assert_eq!(c.code.unwrap(), 0);
        assert_eq!(c.out, format!("Cancelling job {ID}.\nCancelled job {ID}.\n"));
        let c = capture(|io| cancel(&client, id, io));
        assert_eq!(c.code.unwrap_err().to_string(), format!("Job {ID} not found"));
        assert_eq!(c.out, format!("Cancelling job {ID}.\n"));
        let c = capture(|io| cancel(&client, id, io));
        assert_eq!(
            c.code.unwrap_err().to_string(),
            "Job cancellation failed because the job has already reached another terminal state (FINISHED)."
        );
        let requests = server.finish();
        for r in requests {
            assert_eq!((r.method.as_str(), r.target.as_str()), ("PATCH", &*format!("/jobs/{ID}?mode=cancel")));
        }
    }
}
