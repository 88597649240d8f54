//! `/jars`: job packages uploaded to the jobmanager, planned and run from there, as Flink's
//! jar handlers do it (`JarUploadHandler`, `JarListHandler`, `JarDeleteHandler`,
//! `JarPlanHandler`, `JarRunHandler`) and as the dashboard's Submit page calls them.
//!
//! - Uploads are job packages (`.zip`, or `.jar`: a jar is a zip) or job files (`.yaml`,
//!   `.yml`, `.json`), sent as multipart field `jarfile`. The body is streamed to a
//!   temporary file (bounded by `rest.server.max-content-length` and `rest.idleness-timeout`),
//!   read as a package (every bad package refused with 400, see
//!   [`flint_common::job::package`]) and only then given its id, `<uuid>_<name>`.
//! - They live in `web.upload.dir` when it is set (and are listed again after a restart),
//!   else in a fresh `flink-web-<uuid>/flink-web-upload` under `web.tmpdir`, removed at
//!   shutdown ([`JarStore::close`]).
//! - Plan and run take Flink's fields from the JSON body or, where absent, the query:
//!   `programArgsList` / `programArgs` (the job file's `${name}` parameters, as
//!   `--name value`), `parallelism`, `savepointPath`, `allowNonRestoredState`, `jobId`,
//!   `flinkConfiguration` (added to the job's `config`). `entryClass` names the job file
//!   and may be left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use flint_common::config::{options, Configuration};
use flint_common::ids::JobId;
use flint_common::job::package::{
    check_package, parse_program_args, read_job_file, read_package, split_program_args, JobPackage, PackageLimits,
};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::rest::{RequestLimits, Rest, RestError, RestState};
use crate::rest_jobs::{job_error, submit_graph};

/// The extensions an upload may have: packages, then job files.
const PACKAGE_EXTENSIONS: [&str; 2] = [".zip", ".jar"];
const JOB_FILE_EXTENSIONS: [&str; 3] = [".yaml", ".yml", ".json"];

/// Prefix of an upload still arriving (never listed).
const PARTIAL_PREFIX: &str = ".upload-";

/// The uploaded packages.
#[derive(Debug)]
pub struct JarStore {
    dir: PathBuf,
    /// The fresh directory to remove at shutdown (`None` when `web.upload.dir` named it).
    owned: Option<PathBuf>,
    /// `web.submit.enable`.
    pub enabled: bool,
    limits: PackageLimits,
}

fn bad_request(message: impl Into<String>) -> RestError {
    RestError::new(StatusCode::BAD_REQUEST, message)
}

fn internal(message: impl Into<String>) -> RestError {
    RestError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

impl JarStore {
    pub fn open(config: &Configuration) -> std::io::Result<Self> {
        let enabled = config.get(&options::WEB_SUBMIT_ENABLE).unwrap_or(true);
        let configured = config.get(&options::WEB_UPLOAD_DIR).ok().filter(|d| !d.trim().is_empty());
        let (dir, owned) = match configured {
            Some(dir) => (PathBuf::from(dir), None),
            None => {
                let tmp = config
                    .get(&options::WEB_TMP_DIR)
                    .ok()
                    .filter(|d| !d.trim().is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(std::env::temp_dir);
                let fresh = tmp.join(format!("flink-web-{}", uuid::Uuid::new_v4()));
                (fresh.join("flink-web-upload"), Some(fresh))
            }
        };
        if enabled {
            std::fs::create_dir_all(&dir)?;
        }
        Ok(Self { dir, owned, enabled, limits: PackageLimits::default() })
    }

    /// Removes the upload directory unless `web.upload.dir` named it.
    pub fn close(&self) {
        if let Some(dir) = &self.owned {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, "could not remove the upload directory");
                }
            }
        }
    }

    /// The file of upload `id` (400 as Flink when there is none).
    fn path_of(&self, id: &str) -> Result<PathBuf, RestError> {
        let plain = !id.is_empty() && !id.starts_with('.') && !id.contains(['/', '\\', '\0']);
        let path = self.dir.join(id);
        if !plain || !path.is_file() {
            return Err(bad_request(format!("Jar file {id} does not exist.")));
        }
        Ok(path)
    }

    /// Reads a package given as bytes (`POST /jobs` with a zip body), off the REST threads.
    pub async fn read_package_bytes(&self, bytes: web::Bytes) -> Result<JobPackage, RestError> {
        let limits = self.limits;
        tokio::task::spawn_blocking(move || read_package(std::io::Cursor::new(bytes), limits))
            .await
            .map_err(|e| internal(format!("reading the package failed: {e}")))?
            .map_err(|e| bad_request(e.to_string()))
    }

    /// Reads upload `id` whole, off the REST threads.
    async fn load(&self, id: &str) -> Result<JobPackage, RestError> {
        let path = self.path_of(id)?;
        let (limits, id) = (self.limits, id.to_string());
        tokio::task::spawn_blocking(move || load_file(&path, &id, limits, Read::Whole))
            .await
            .map_err(|e| internal(format!("reading the package failed: {e}")))?
    }
}

/// How much of an uploaded package to read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Everything, artifacts in memory (plan and run).
    Whole,
    /// The job file (listings).
    JobFile,
    /// Every entry expanded and checked, nothing kept (accepting an upload).
    Check,
}

/// Reads an uploaded file as a package or, by its extension, as a job file.
fn load_file(path: &Path, id: &str, limits: PackageLimits, read: Read) -> Result<JobPackage, RestError> {
    let unreadable = |e: std::io::Error| internal(format!("Could not read {id}: {e}"));
    let lower = id.to_ascii_lowercase();
    if JOB_FILE_EXTENSIONS.iter().any(|ext| lower.ends_with(ext)) {
        let bytes = std::fs::read(path).map_err(unreadable)?;
        if bytes.len() as u64 > limits.max_job_file_bytes {
            return Err(bad_request(format!("The job file is larger than {} bytes.", limits.max_job_file_bytes)));
        }
        let text = String::from_utf8(bytes).map_err(|_| bad_request("The job file is not valid UTF-8."))?;
        let name = id.split_once('_').map_or(id, |(_, name)| name);
        return Ok(JobPackage::from_job_file(name, text));
    }
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let package = match read {
        Read::Whole => read_package(file, limits),
        Read::JobFile => read_job_file(file, limits),
        Read::Check => check_package(file, limits),
    };
    package.map_err(|e| bad_request(e.to_string()))
}

/// With `web.submit.enable: false` the jar handlers do not exist (404), as in Flink.
fn submit_enabled(state: &RestState) -> Result<(), RestError> {
    if state.jars.enabled {
        Ok(())
    } else {
        Err(RestError::new(StatusCode::NOT_FOUND, "Not found: web submission is disabled (web.submit.enable: false)."))
    }
}

/// `POST /jars/upload`: one file in multipart field `jarfile`.
pub async fn upload(
    state: web::Data<RestState>,
    limits: web::Data<RequestLimits>,
    mut form: actix_multipart::Multipart,
) -> Rest {
    submit_enabled(&state)?;
    let jars = state.jars.clone();
    let partial = jars.dir.join(format!("{PARTIAL_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let received = tokio::time::timeout(limits.body_timeout, receive(&mut form, &partial, limits.max_content_length))
        .await
        .unwrap_or_else(|_| {
            Err(RestError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "The upload did not arrive within {} ms (rest.idleness-timeout).",
                    limits.body_timeout.as_millis()
                ),
            ))
        });
    let name = match received {
        Ok(name) => name,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            // The rest of the body is not read: the connection ends with the answer.
            let mut response = actix_web::ResponseError::error_response(&e);
            crate::rest::close_after(&mut response);
            return Ok(response);
        }
    };
    let id = format!("{}_{name}", uuid::Uuid::new_v4());
    let (store, check_id, check_path) = (jars.clone(), id.clone(), partial.clone());
    let checked =
        tokio::task::spawn_blocking(move || load_file(&check_path, &check_id, store.limits, Read::Check).map(|_| ()))
            .await
            .map_err(|e| internal(format!("reading the package failed: {e}")))
            .and_then(|r| r);
    let stored = match checked {
        Ok(()) => tokio::fs::rename(&partial, jars.dir.join(&id))
            .await
            .map_err(|e| internal(format!("Could not store the upload: {e}"))),
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    tracing::info!(%id, "job package uploaded");
    Ok(HttpResponse::Ok().json(json!({ "filename": id, "status": "success" })))
}

/// Streams the form's one file to `partial`; returns its sanitized name.
async fn receive(form: &mut actix_multipart::Multipart, partial: &Path, max_bytes: usize) -> Result<String, RestError> {
    let broken = |e: actix_multipart::MultipartError| bad_request(format!("The upload could not be read: {e}"));
    let mut name: Option<String> = None;
    while let Some(mut field) = form.try_next().await.map_err(broken)? {
        let Some(file_name) = field.content_disposition().and_then(|d| d.get_filename()).map(str::to_owned) else {
            // A plain form field: read (bounded) and ignore, as Flink does.
            let mut seen = 0usize;
            while let Some(chunk) = field.try_next().await.map_err(broken)? {
                seen += chunk.len();
                if seen > 64 * 1024 {
                    return Err(bad_request("A form field of the upload is too large."));
                }
            }
            continue;
        };
        if name.is_some() {
            return Err(bad_request("Exactly 1 file must be sent, received more."));
        }
        let clean = sanitize(&file_name)?;
        let mut out =
            tokio::fs::File::create(partial).await.map_err(|e| internal(format!("Could not store the upload: {e}")))?;
        let mut written = 0usize;
        while let Some(chunk) = field.try_next().await.map_err(broken)? {
            written += chunk.len();
            if written > max_bytes {
                return Err(RestError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("Request entity too large: the body exceeds rest.server.max-content-length ({max_bytes} bytes)."),
                ));
            }
            out.write_all(&chunk).await.map_err(|e| internal(format!("Could not store the upload: {e}")))?;
        }
        out.flush().await.map_err(|e| internal(format!("Could not store the upload: {e}")))?;
        name = Some(clean);
    }
    name.ok_or_else(|| bad_request("Exactly 1 file must be sent, received 0."))
}

/// The file name an upload is stored under: its last path segment with only safe
/// characters, ending in a known extension.
fn sanitize(file_name: &str) -> Result<String, RestError> {
    let last = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    let clean: String =
        last.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    let lower = clean.to_ascii_lowercase();
    let known = PACKAGE_EXTENSIONS.iter().chain(JOB_FILE_EXTENSIONS.iter()).any(|ext| lower.ends_with(ext));
    if !known || clean.len() > 200 {
        return Err(bad_request(
            "Only job packages (.zip, .jar) and job files (.yaml, .yml, .json) are allowed, with names of at most 200 characters.",
        ));
    }
    Ok(clean.trim_start_matches('.').to_string())
}

/// `GET /jars`.
pub async fn list(state: web::Data<RestState>) -> Rest {
    submit_enabled(&state)?;
    let jars = state.jars.clone();
    let address = state.rest_url.clone();
    let files = tokio::task::spawn_blocking(move || list_blocking(&jars))
        .await
        .map_err(|e| internal(format!("listing the uploads failed: {e}")))??;
    Ok(HttpResponse::Ok().json(json!({ "address": address, "files": files })))
}

fn list_blocking(jars: &JarStore) -> Result<Vec<Value>, RestError> {
    let entries = std::fs::read_dir(&jars.dir).map_err(|e| internal(format!("Could not list the uploads: {e}")))?;
    let mut files: Vec<(u64, Value)> = Vec::new();
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if id.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let uploaded = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        // A package that cannot be read any more is still listed (and can be deleted).
        let entry_points = match load_file(&entry.path(), &id, jars.limits, Read::JobFile) {
            Ok(package) => {
                let name = flint_common::job::spec::parse_doc(&package.job_text).ok().and_then(|doc| {
                    doc.as_map().and_then(|m| {
                        m.iter().find(|(k, _)| k == "name").and_then(|(_, v)| v.as_str().map(str::to_owned))
                    })
                });
                vec![json!({ "name": package.job_file, "description": name })]
            }
            Err(_) => Vec::new(),
        };
        let name = id.split_once('_').map_or(id.as_str(), |(_, name)| name).to_string();
        files.push((uploaded, json!({ "id": id, "name": name, "uploaded": uploaded, "entry": entry_points })));
    }
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(files.into_iter().map(|(_, f)| f).collect())
}

/// `DELETE /jars/:jarid`.
pub async fn delete(state: web::Data<RestState>, path: web::Path<String>) -> Rest {
    submit_enabled(&state)?;
    let file = state.jars.path_of(&path)?;
    match tokio::fs::remove_file(&file).await {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({}))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(bad_request(format!("Jar file {path} does not exist.")))
        }
        Err(e) => Err(internal(format!("Could not delete {path}: {e}"))),
    }
}

/// The JSON body of plan and run (Flink's `JarRunRequestBody`; every field optional).
/// (`entryClass` is accepted and ignored: a package has one job file.)
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JarRequestBody {
    parallelism: Option<i64>,
    program_args: Option<String>,
    program_args_list: Option<Vec<String>>,
    savepoint_path: Option<String>,
    allow_non_restored_state: Option<bool>,
    job_id: Option<String>,
    flink_configuration: Option<BTreeMap<String, Value>>,
    restore_mode: Option<String>,
}

/// What plan and run were asked, body first, then the query.
#[derive(Debug, PartialEq)]
struct JarRequest {
    params: BTreeMap<String, String>,
    parallelism: Option<u32>,
    savepoint_path: Option<String>,
    allow_non_restored_state: bool,
    job_id: Option<JobId>,
    config: BTreeMap<String, String>,
}

fn parse_request(body: &[u8], query: &[(String, String)]) -> Result<JarRequest, RestError> {
    let body: JarRequestBody = if body.iter().all(u8::is_ascii_whitespace) {
        JarRequestBody::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| bad_request(format!("Request did not match expected format JarRunRequestBody: {e}")))?
    };
    let q = |keys: &[&str]| query.iter().find(|(k, _)| keys.contains(&k.as_str())).map(|(_, v)| v.clone());
    let args: Vec<String> = if let Some(list) = body.program_args_list {
        list
    } else if let Some(text) = body.program_args {
        split_program_args(&text)
    } else {
        let listed: Vec<String> = query
            .iter()
            .filter(|(k, _)| k == "programArg")
            .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
            .collect();
        if listed.is_empty() {
            q(&["program-args", "programArgs"]).map(|t| split_program_args(&t)).unwrap_or_default()
        } else {
            listed
        }
    };
    let params = parse_program_args(&args).map_err(|e| bad_request(e.to_string()))?;
    let parallelism = match body.parallelism {
        Some(p) => Some(p),
        None => q(&["parallelism"])
            .map(|t| {
                t.trim().parse::<i64>().map_err(|_| bad_request(format!("The parallelism '{t}' is not a number.")))
            })
            .transpose()?,
    };
    let parallelism = match parallelism {
        None | Some(-1) => None,
        Some(p) if p >= 1 && p <= i64::from(u32::MAX) => Some(p as u32),
        Some(p) => return Err(bad_request(format!("The parallelism must be positive or -1 (the default), got {p}."))),
    };
    if let Some(mode) = body.restore_mode.or_else(|| q(&["restoreMode"])) {
        if !matches!(mode.as_str(), "NO_CLAIM" | "LEGACY") {
            return Err(bad_request(format!(
                "Restore mode {mode} is not supported: Flint restores as NO_CLAIM (it never deletes the savepoint it starts from)."
            )));
        }
    }
    let savepoint_path = body.savepoint_path.or_else(|| q(&["savepointPath"])).filter(|p| !p.trim().is_empty());
    let allow_non_restored_state = match body.allow_non_restored_state {
        Some(b) => b,
        None => q(&["allowNonRestoredState"]).is_some_and(|v| v.eq_ignore_ascii_case("true")),
    };
    let job_id = body
        .job_id
        .or_else(|| q(&["jobId"]))
        .filter(|s| !s.is_empty())
        .map(|raw| crate::rest::parse_job_id(&raw))
        .transpose()?;
    let config = body
        .flink_configuration
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect();
    Ok(JarRequest { params, parallelism, savepoint_path, allow_non_restored_state, job_id, config })
}

async fn compile(
    state: &RestState,
    id: &str,
    body: &[u8],
    query: &[(String, String)],
) -> Result<(JarRequest, flint_common::job::JobGraph), RestError> {
    submit_enabled(state)?;
    let request = parse_request(body, query)?;
    let package = state.jars.load(id).await?;
    let graph = compile_package(state, package, &request)?;
    Ok((request, graph))
}

fn compile_package(
    state: &RestState,
    package: JobPackage,
    request: &JarRequest,
) -> Result<flint_common::job::JobGraph, RestError> {
    let parallelism = request.parallelism.unwrap_or(state.default_parallelism);
    package.into_graph(&request.params, &request.config, parallelism).map_err(job_error)
}

/// A multipart `POST /jobs`: part `request` (JSON, the fields of `/jars/:id/run`) and either
/// a job package in part `package`, or a job file in part `job` with its artifacts in parts
/// `artifact` (each named by its path in the package). The query's `jobId`, `parallelism`,
/// `savepointPath` and `allowNonRestoredState` apply where the request leaves them out.
/// Returns the job and how to start it.
pub(crate) async fn multipart_submission(
    state: &RestState,
    mut form: actix_multipart::Multipart,
    query: &[(String, String)],
) -> Result<Submission, RestError> {
    let broken = |e: actix_multipart::MultipartError| bad_request(format!("The submission could not be read: {e}"));
    let limits = state.jars.limits;
    let mut request: Vec<u8> = Vec::new();
    let mut package: Option<Vec<u8>> = None;
    let mut job: Option<(String, Vec<u8>)> = None;
    let mut artifacts: Vec<(String, Vec<u8>)> = Vec::new();
    // The body was read whole, within rest.server.max-content-length, before this runs.
    while let Some(mut field) = form.try_next().await.map_err(broken)? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.content_disposition().and_then(|d| d.get_filename()).map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = field.try_next().await.map_err(broken)? {
            bytes.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "request" => request = bytes,
            "package" => package = Some(bytes),
            "job" => job = Some((file_name.unwrap_or_else(|| "job.yaml".into()), bytes)),
            "artifact" => {
                let path = file_name
                    .ok_or_else(|| bad_request("An artifact part has no file name (its path in the package)."))?;
                artifacts.push((path, bytes));
            }
            other => {
                return Err(bad_request(format!("Unknown part '{other}': expected request, package, job or artifact.")))
            }
        }
    }
    let package = match (package, job) {
        (Some(zip), None) if artifacts.is_empty() => state.jars.read_package_bytes(zip.into()).await?,
        (None, Some((name, text))) => {
            let text = String::from_utf8(text).map_err(|_| bad_request("The job file is not valid UTF-8."))?;
            JobPackage::from_parts(&name, text, artifacts, limits).map_err(|e| bad_request(e.to_string()))?
        }
        _ => return Err(bad_request("Send either a part 'package' (a zip) or a part 'job' with 'artifact' parts.")),
    };
    let request = parse_request(&request, query)?;
    let graph = compile_package(state, package, &request)?;
    Ok(Submission {
        graph,
        job_id: request.job_id,
        savepoint_path: request.savepoint_path,
        allow_non_restored_state: request.allow_non_restored_state,
    })
}

/// A job to submit and how to start it.
pub(crate) struct Submission {
    pub graph: flint_common::job::JobGraph,
    pub job_id: Option<JobId>,
    pub savepoint_path: Option<String>,
    pub allow_non_restored_state: bool,
}

/// `GET|POST /jars/:jarid/plan`.
pub async fn plan(
    state: web::Data<RestState>,
    path: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
    body: web::Bytes,
) -> Rest {
    let (request, graph) = compile(&state, &path, &body, &query).await?;
    let job_id = request.job_id.unwrap_or_else(JobId::generate);
    Ok(HttpResponse::Ok().json(json!({ "plan": graph.plan_json(job_id) })))
}

/// `POST /jars/:jarid/run`.
pub async fn run(
    state: web::Data<RestState>,
    path: web::Path<String>,
    query: web::Query<Vec<(String, String)>>,
    body: web::Bytes,
) -> Rest {
    let (request, graph) = compile(&state, &path, &body, &query).await?;
    let job_id =
        submit_graph(&state, request.job_id, graph, request.savepoint_path, request.allow_non_restored_state).await?;
    tracing::info!(%job_id, jar = %path, "job run from an uploaded package");
    Ok(HttpResponse::Ok().json(json!({ "jobid": job_id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn run_requests_take_the_body_first_then_the_query() {
        let r = parse_request(
            br#"{"parallelism": 3, "programArgsList": ["--input", "data/a.txt"], "flinkConfiguration": {"a": "1", "b": 2}}"#,
            &q(&[("parallelism", "5"), ("programArg", "--input,x"), ("allowNonRestoredState", "true")]),
        )
        .unwrap();
        assert_eq!(r.parallelism, Some(3));
        assert_eq!(r.params["input"], "data/a.txt");
        assert!(r.allow_non_restored_state);
        assert_eq!(r.config["b"], "2");
        let r = parse_request(b"", &q(&[("parallelism", "5"), ("programArg", "--input,x"), ("programArg", "--n,2")]))
            .unwrap();
        assert_eq!((r.parallelism, r.params["input"].as_str(), r.params["n"].as_str()), (Some(5), "x", "2"));
        let r = parse_request(br#"{"programArgs": "--input 'a b'", "parallelism": -1}"#, &[]).unwrap();
        assert_eq!((r.parallelism, r.params["input"].as_str()), (None, "a b"));
        let r = parse_request(b"", &q(&[("program-args", "--x 1")])).unwrap();
        assert_eq!(r.params["x"], "1");
    }

    #[test]
    fn bad_run_requests_are_400s() {
        for (body, query) in [
            (&b"{"[..], q(&[])),
            (br#"{"parallelism": 0}"#, q(&[])),
            (b"", q(&[("parallelism", "x")])),
            (br#"{"programArgsList": ["input"]}"#, q(&[])),
            (br#"{"jobId": "nope"}"#, q(&[])),
            (br#"{"restoreMode": "CLAIM"}"#, q(&[])),
        ] {
            let err = parse_request(body, &query).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body:?} {query:?}");
        }
    }

    #[test]
    fn upload_names_are_plain_and_known() {
        assert_eq!(sanitize("C:\\x\\my job.zip").unwrap(), "my_job.zip");
        assert_eq!(sanitize("../../etc/job.yaml").unwrap(), "job.yaml");
        assert_eq!(sanitize(".hidden.json").unwrap(), "hidden.json");
        assert!(sanitize("payload.exe").is_err());
        assert!(sanitize(&format!("{}.zip", "a".repeat(300))).is_err());
    }
}
