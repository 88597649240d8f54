//! The asynchronous job operations: `savepoint`, `stop` (stop-with-savepoint) and
//! `checkpoint`, with Flink's CLI wording. Each triggers the operation over REST, then polls
//! its status by trigger id until it completes or the timeout passes (the operation itself
//! goes on in the cluster after a timeout).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use flint_common::config::format_duration;
use flint_common::ids::JobId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::jobs::Io;
use crate::rest::{RestClient, RestError};

/// How long a command waits for its operation by default (`--timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long and how often to ask for an operation's status.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    pub poll: Duration,
    pub timeout: Duration,
}

/// `POST` answer of every operation.
#[derive(Debug, Deserialize)]
struct TriggerResponse {
    #[serde(rename = "request-id")]
    request_id: String,
}

/// `GET .../:triggerid` answer.
#[derive(Debug, Deserialize)]
struct StatusAnswer {
    status: QueueStatus,
    #[serde(default)]
    operation: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct QueueStatus {
    id: String,
}

/// Triggers an operation with `POST trigger_path` and waits for its result at
/// `<status_prefix>/<trigger id>`: `Ok(operation)` when it completed, `Err(cause)` when the
/// cluster refused it, it failed or it did not complete in time. Errors of the REST exchange
/// itself (no cluster, garbled answers) are returned as the outer error.
fn trigger_and_wait(
    client: &RestClient,
    trigger_path: &str,
    body: &Value,
    status_prefix: &str,
    wait: Wait,
) -> Result<Result<Value, String>> {
    let deadline = Instant::now() + wait.timeout;
    let triggered: TriggerResponse = match client.post_json(trigger_path, "application/json", &body.to_string()) {
        Ok(answer) => answer,
        Err(RestError::Status { errors, status, .. }) if (400..500).contains(&status) && !errors.is_empty() => {
            return Ok(Err(errors.join("\n")));
        }
        Err(e) => return Err(e.into()),
    };
    let status_path = format!("{status_prefix}/{}", triggered.request_id);
    loop {
        let answer: StatusAnswer = client.get_json(&status_path)?;
        if answer.status.id == "COMPLETED" {
            let operation = answer
                .operation
                .ok_or_else(|| anyhow!("Unexpected answer to GET {status_path}: COMPLETED without an operation"))?;
            let failure = operation.get("failure-cause").or_else(|| operation.get("failureCause"));
            return Ok(match failure {
                Some(cause) => Err(cause_text(cause)),
                None => Ok(operation),
            });
        }
        if Instant::now() >= deadline {
            return Ok(Err(format!(
                "No result within {}; the operation may still complete (its status: GET {status_path}).",
                format_duration(wait.timeout)
            )));
        }
        std::thread::sleep(wait.poll);
    }
}

/// The text of a serialized throwable: its stack trace, else its class.
fn cause_text(cause: &Value) -> String {
    let text = |key: &str| cause.get(key).and_then(Value::as_str).map(str::trim_end).filter(|s| !s.is_empty());
    text("stack-trace").or_else(|| text("class")).unwrap_or("unknown cause").to_string()
}

/// A failed command: Flink's headline, then the cause.
fn failed(headline: String, cause: &str) -> anyhow::Error {
    anyhow!("{headline}\nCause: {cause}")
}

fn location(operation: &Value, status_prefix: &str) -> Result<String> {
    operation
        .get("location")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("Unexpected answer to GET {status_prefix}/...: no savepoint location in {operation}"))
}

/// `flint savepoint <jobid> [targetDirectory]`.
pub fn savepoint(
    client: &RestClient,
    job_id: JobId,
    target_directory: Option<&str>,
    wait: Wait,
    io: &mut Io<'_>,
) -> Result<u8> {
    writeln!(io.out, "Triggering savepoint for job {job_id}.")?;
    writeln!(io.out, "Waiting for response...")?;
    io.out.flush()?;
    let mut body = json!({ "cancel-job": false });
    if let Some(dir) = target_directory {
        body["target-directory"] = json!(dir);
    }
    let status_prefix = format!("/jobs/{job_id}/savepoints");
    match trigger_and_wait(client, &status_prefix, &body, &status_prefix, wait)? {
        Ok(operation) => {
            writeln!(io.out, "Savepoint completed. Path: {}", location(&operation, &status_prefix)?)?;
            writeln!(io.out, "You can resume your program from this savepoint with the run command.")?;
            Ok(0)
        }
        Err(cause) => Err(failed(format!("Failed to trigger a savepoint for the job {job_id}."), &cause)),
    }
}

/// `flint stop [-p <dir>] [-d] <jobid>`.
pub fn stop(
    client: &RestClient,
    job_id: JobId,
    target_directory: Option<&str>,
    drain: bool,
    wait: Wait,
    io: &mut Io<'_>,
) -> Result<u8> {
    let verb = if drain { "Draining" } else { "Suspending" };
    writeln!(io.out, "{verb} job \"{job_id}\" with a CANONICAL savepoint.")?;
    io.out.flush()?;
    let mut body = json!({ "drain": drain });
    if let Some(dir) = target_directory {
        body["targetDirectory"] = json!(dir);
    }
    let status_prefix = format!("/jobs/{job_id}/savepoints");
    match trigger_and_wait(client, &format!("/jobs/{job_id}/stop"), &body, &status_prefix, wait)? {
        Ok(operation) => {
            writeln!(io.out, "Savepoint completed. Path: {}", location(&operation, &status_prefix)?)?;
            Ok(0)
        }
        Err(cause) => Err(failed(format!("Could not stop with a savepoint job \"{job_id}\"."), &cause)),
    }
}

/// `flint checkpoint [--full] <jobid>`.
pub fn checkpoint(client: &RestClient, job_id: JobId, full: bool, wait: Wait, io: &mut Io<'_>) -> Result<u8> {
    writeln!(io.out, "Triggering checkpoint for job {job_id}.")?;
    writeln!(io.out, "Waiting for response...")?;
    io.out.flush()?;
    let kind = if full { "FULL" } else { "CONFIGURED" };
    let status_prefix = format!("/jobs/{job_id}/checkpoints");
    match trigger_and_wait(client, &status_prefix, &json!({ "checkpointType": kind }), &status_prefix, wait)? {
        Ok(operation) => {
            let Some(id) = operation.get("checkpointId").and_then(Value::as_u64) else {
                bail!("Unexpected answer to GET {status_prefix}/...: no checkpoint id in {operation}");
            };
            let label = if full { "Checkpoint(FULL)" } else { "Checkpoint" };
            writeln!(io.out, "{label} {id} for job {job_id} completed.")?;
            writeln!(io.out, "You can resume your program from this checkpoint with the run command.")?;
            Ok(0)
        }
        Err(cause) => Err(failed(format!("Failed to trigger a checkpoint for the job {job_id}."), &cause)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testserver::Server;

    const ID: &str = "0123456789abcdef0123456789abcdef";
    const TRIGGER: &str = "d1fc13943913a47ebc231e7673aa75b6";

    struct Captured {
        code: Result<u8>,
        out: String,
    }

    fn capture(f: impl FnOnce(&mut Io<'_>) -> Result<u8>) -> Captured {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = f(&mut Io { out: &mut out, err: &mut err });
        assert!(err.is_empty(), "nothing goes to stderr: {}", String::from_utf8_lossy(&err));
        Captured { code, out: String::from_utf8(out).unwrap() }
    }

    fn job() -> JobId {
        ID.parse().unwrap()
    }

    fn wait() -> Wait {
        Wait { poll: Duration::from_millis(5), timeout: DEFAULT_TIMEOUT }
    }

    fn accepted() -> (&'static str, String) {
        ("202 Accepted", format!(r#"{{"request-id":"{TRIGGER}"}}"#))
    }

    fn ok(body: &str) -> (&'static str, String) {
        ("200 OK", body.to_string())
    }

    const IN_PROGRESS: &str = r#"{"status":{"id":"IN_PROGRESS"},"operation":null}"#;

    fn body(request: &crate::testserver::Request) -> Value {
        serde_json::from_str(&request.body).unwrap()
    }

    #[test]
    fn savepoint_polls_until_completed() {
        let server = Server::start(vec![
            accepted(),
            ok(IN_PROGRESS),
            ok(r#"{"status":{"id":"COMPLETED"},"operation":{"location":"file:/sp/savepoint-012345-abcdef"}}"#),
        ]);
        let client = RestClient::new(&server.url);
        let c = capture(|io| savepoint(&client, job(), Some("file:///sp"), wait(), io));
        assert_eq!(c.code.unwrap(), 0);
        assert_eq!(
            c.out,
            format!(
                "Triggering savepoint for job {ID}.\nWaiting for response...\n\
                 Savepoint completed. Path: file:/sp/savepoint-012345-abcdef\n\
                 You can resume your program from this savepoint with the run command.\n"
            )
        );
        let requests = server.finish();
        assert_eq!(
            (requests[0].method.as_str(), requests[0].target.as_str()),
            ("POST", &*format!("/jobs/{ID}/savepoints"))
        );
        assert_eq!(body(&requests[0]), json!({ "target-directory": "file:///sp", "cancel-job": false }));
        for r in &requests[1..] {
            assert_eq!((r.method.as_str(), r.target.as_str()), ("GET", &*format!("/jobs/{ID}/savepoints/{TRIGGER}")));
        }
    }

    #[test]
    fn savepoint_failure_is_an_error_with_the_cause() {
        let server = Server::start(vec![
            accepted(),
            ok(
                r#"{"status":{"id":"COMPLETED"},"operation":{"failure-cause":{"class":"org.apache.flink.runtime.checkpoint.CheckpointException",
                "stack-trace":"org.apache.flink.runtime.checkpoint.CheckpointException: No savepoint directory configured.\n",
                "serialized-throwable":""}}}"#,
            ),
        ]);
        let client = RestClient::new(&server.url);
        let c = capture(|io| savepoint(&client, job(), None, wait(), io));
        assert_eq!(
            format!("{:#}", c.code.unwrap_err()),
            format!(
                "Failed to trigger a savepoint for the job {ID}.\n\
                 Cause: org.apache.flink.runtime.checkpoint.CheckpointException: No savepoint directory configured."
            )
        );
        assert_eq!(body(&server.finish()[0]), json!({ "cancel-job": false }), "no directory: the cluster's default");
    }

    #[test]
    fn savepoint_of_an_unknown_job() {
        let server = Server::start(vec![("404 Not Found", format!(r#"{{"errors":["Job {ID} not found"]}}"#))]);
        let client = RestClient::new(&server.url);
        let c = capture(|io| savepoint(&client, job(), None, wait(), io));
        assert_eq!(
            c.code.unwrap_err().to_string(),
            format!("Failed to trigger a savepoint for the job {ID}.\nCause: Job {ID} not found")
        );
        assert_eq!(server.finish().len(), 1);
    }

    #[test]
    fn waiting_is_bounded() {
        let server = Server::start(vec![accepted(), ok(IN_PROGRESS)]);
        let client = RestClient::new(&server.url);
        let c =
            capture(|io| savepoint(&client, job(), None, Wait { poll: Duration::ZERO, timeout: Duration::ZERO }, io));
        assert_eq!(
            c.code.unwrap_err().to_string(),
            format!(
                "Failed to trigger a savepoint for the job {ID}.\nCause: No result within 0 ms; the operation may \
                 still complete (its status: GET /jobs/{ID}/savepoints/{TRIGGER})."
            )
        );
        assert_eq!(server.finish().len(), 2);
    }

    #[test]
    fn stop_with_savepoint() {
        let server = Server::start(vec![
            accepted(),
            ok(IN_PROGRESS),
            ok(r#"{"status":{"id":"COMPLETED"},"operation":{"location":"file:/sp/savepoint-4a1090-77aab206b575"}}"#),
        ]);
        let client = RestClient::new(&server.url);
        let c = capture(|io| stop(&client, job(), Some("file:///sp"), false, wait(), io));
        assert_eq!(c.code.unwrap(), 0);
        assert_eq!(
            c.out,
            format!(
                "Suspending job \"{ID}\" with a CANONICAL savepoint.\n\
                 Savepoint completed. Path: file:/sp/savepoint-4a1090-77aab206b575\n"
            )
        );
        let requests = server.finish();
        assert_eq!((requests[0].method.as_str(), requests[0].target.as_str()), ("POST", &*format!("/jobs/{ID}/stop")));
        assert_eq!(body(&requests[0]), json!({ "targetDirectory": "file:///sp", "drain": false }));
        assert_eq!(requests[2].target, format!("/jobs/{ID}/savepoints/{TRIGGER}"));

        let server = Server::start(vec![
            accepted(),
            ok(r#"{"status":{"id":"COMPLETED"},"operation":{"failure-cause":{"class":"x","stack-trace":"boom"}}}"#),
        ]);
        let client = RestClient::new(&server.url);
        let c = capture(|io| stop(&client, job(), None, true, wait(), io));
        assert_eq!(c.out, format!("Draining job \"{ID}\" with a CANONICAL savepoint.\n"));
        assert_eq!(
            c.code.unwrap_err().to_string(),
            format!("Could not stop with a savepoint job \"{ID}\".\nCause: boom")
        );
        assert_eq!(body(&server.finish()[0]), json!({ "drain": true }));
    }

    #[test]
    fn manual_checkpoint() {
        let server = Server::start(vec![
            accepted(),
            ok(IN_PROGRESS),
            ok(r#"{"status":{"id":"COMPLETED"},"operation":{"checkpointId":71}}"#),
            accepted(),
            ok(r#"{"status":{"id":"COMPLETED"},"operation":{"failureCause":{"class":"c","stack-trace":"declined"}}}"#),
        ]);
        let client = RestClient::new(&server.url);
        let c = capture(|io| checkpoint(&client, job(), false, wait(), io));
        assert_eq!(c.code.unwrap(), 0);
        assert_eq!(
            c.out,
            format!(
                "Triggering checkpoint for job {ID}.\nWaiting for response...\nCheckpoint 71 for job {ID} completed.\n\
                 You can resume your program from this checkpoint with the run command.\n"
            )
        );
        let c = capture(|io| checkpoint(&client, job(), true, wait(), io));
        assert_eq!(
            c.code.unwrap_err().to_string(),
            format!("Failed to trigger a checkpoint for the job {ID}.\nCause: declined")
        );
        let requests = server.finish();
        assert_eq!(body(&requests[0]), json!({ "checkpointType": "CONFIGURED" }));
        assert_eq!(requests[2].target, format!("/jobs/{ID}/checkpoints/{TRIGGER}"));
        assert_eq!(body(&requests[3]), json!({ "checkpointType": "FULL" }));
    }

    #[test]
    fn full_checkpoint_label() {
        let server =
            Server::start(vec![accepted(), ok(r#"{"status":{"id":"COMPLETED"},"operation":{"checkpointId":3}}"#)]);
        let client = RestClient::new(&server.url);
        let c = capture(|io| checkpoint(&client, job(), true, wait(), io));
        assert_eq!(c.code.unwrap(), 0);
        assert!(c.out.contains(&format!("Checkpoint(FULL) 3 for job {ID} completed.\n")), "{}", c.out);
        server.finish();
    }
}
