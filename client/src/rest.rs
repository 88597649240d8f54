//! A small blocking client for the JobManager's REST API (JSON over HTTP, or HTTPS with
//! the TLS settings of [`crate::tls`]).

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use ureq::tls::TlsConfig;
use ureq::Agent;

/// Talks to one JobManager REST endpoint.
pub struct RestClient {
    agent: Agent,
    base_url: String,
}

/// Why a REST call failed.
#[derive(Debug)]
pub enum RestError {
    /// The cluster could not be reached at all.
    Connect { base_url: String, reason: String },
    /// The cluster answered with an error status.
    Status {
        base_url: String,
        method: &'static str,
        path: String,
        status: u16,
        /// The messages of a `{"errors": [...]}` body, else the raw body.
        errors: Vec<String>,
    },
    /// The answer could not be read or understood.
    Response { base_url: String, method: &'static str, path: String, reason: String },
}

impl fmt::Display for RestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestError::Connect { base_url, reason } => {
                write!(f, "Could not connect to the Flint cluster at {base_url}: {reason}")
            }
            RestError::Status { base_url, method, path, status, errors } => {
                write!(f, "The Flint cluster at {base_url} answered {method} {path} with HTTP {status}")?;
                if let Some(reason) = status_reason(*status) {
                    write!(f, " {reason}")?;
                }
                match errors.as_slice() {
                    [] => Ok(()),
                    [one] => write!(f, ": {one}"),
                    many => {
                        write!(f, ":")?;
                        for error in many {
                            write!(f, "\n  {error}")?;
                        }
                        Ok(())
                    }
                }
            }
            RestError::Response { base_url, method, path, reason } => {
                write!(f, "Unexpected answer from the Flint cluster at {base_url} to {method} {path}: {reason}")
            }
        }
    }
}

impl std::error::Error for RestError {}

impl RestClient {
    /// A client for the endpoint at `base_url` (e.g. `http://localhost:8081`).
    #[cfg(test)]
    pub fn new(base_url: &str) -> RestClient {
        Self::with_tls(base_url, None)
    }

    /// A client for the endpoint at `base_url`; `https://` URLs (the endpoint's, or a
    /// leader's a standby names) use `tls`.
    pub fn with_tls(base_url: &str, tls: Option<TlsConfig>) -> RestClient {
        let mut config = Agent::config_builder()
            // Error statuses are answers too: their body carries the message.
            .http_status_as_error(false)
            // Like Flink's REST client, talk to the cluster directly.
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(60)))
            .user_agent(concat!("flint/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = tls {
            config = config.tls_config(tls);
        }
        RestClient { agent: config.build().into(), base_url: base_url.trim_end_matches('/').to_string() }
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET path` and decodes the JSON answer.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, RestError> {
        self.call("GET", path, |url| self.agent.get(url).header("Accept", "application/json").call())
    }

    /// `POST path` with `body` (of type `content_type`) and decodes the JSON answer.
    pub fn post_json<T: DeserializeOwned>(&self, path: &str, content_type: &str, body: &str) -> Result<T, RestError> {
        self.call("POST", path, |url| {
            self.agent.post(url).header("Accept", "application/json").content_type(content_type).send(body)
        })
    }

    /// `POST path` with a multipart form of `(name, file name, bytes)` parts and decodes the
    /// JSON answer.
    pub fn post_multipart<T: DeserializeOwned>(
        &self,
        path: &str,
        parts: &[(&str, &str, &[u8])],
    ) -> Result<T, RestError> {
        use ureq::unversioned::multipart::{Form, Part};
        self.call("POST", path, |url| {
            let form = parts
                .iter()
                .fold(Form::new(), |form, (name, file, bytes)| form.part(name, Part::bytes(bytes).file_name(file)));
            self.agent.post(url).header("Accept", "application/json").send(form)
        })
    }

    /// `PATCH path` without a body and decodes the JSON answer (an empty answer is `null`).
    pub fn patch_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, RestError> {
        self.call("PATCH", path, |url| self.agent.patch(url).header("Accept", "application/json").send_empty())
    }

    /// Sends a request; a standby jobmanager of a high-availability cluster answers 503
    /// naming the leader's REST endpoint, and the request is repeated there once.
    fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        send: impl Fn(String) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, RestError> {
        let first = decode(&self.base_url, method, path, send(format!("{}{path}", self.base_url)));
        if let Err(RestError::Status { status: 503, errors, .. }) = &first {
            if let Some(leader) = errors.iter().find_map(|e| leader_of(e)).filter(|l| *l != self.base_url) {
                return decode(&leader, method, path, send(format!("{leader}{path}")));
            }
        }
        first
    }
}

/// The leader's REST base URL in a standby jobmanager's 503 message.
fn leader_of(message: &str) -> Option<String> {
    let rest = message.split("The leading jobmanager's REST endpoint is ").nth(1)?;
    let url = rest.trim_end().trim_end_matches('.');
    (url.starts_with("http://") || url.starts_with("https://")).then(|| url.trim_end_matches('/').to_string())
}

fn decode<T: DeserializeOwned>(
    base_url: &str,
    method: &'static str,
    path: &str,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<T, RestError> {
    let response_error =
        |reason: String| RestError::Response { base_url: base_url.to_string(), method, path: path.to_string(), reason };
    let mut response = result
        .map_err(|e| RestError::Connect { base_url: base_url.to_string(), reason: connect_reason(base_url, &e) })?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(|e| response_error(e.to_string()))?;
    if !(200..300).contains(&status) {
        return Err(RestError::Status {
            base_url: base_url.to_string(),
            method,
            path: path.to_string(),
            status,
            errors: error_messages(&body),
        });
    }
    let body = if body.trim().is_empty() { "null" } else { body.as_str() };
    serde_json::from_str(body).map_err(|e| response_error(e.to_string()))
}

fn connect_reason(base_url: &str, error: &ureq::Error) -> String {
    let reason = match error {
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return e.to_string(),
        ureq::Error::Io(e) => e.to_string(),
        ureq::Error::HostNotFound => return "host not found".to_string(),
        ureq::Error::Timeout(t) => return format!("timed out ({t})"),
        other => other.to_string(),
    };
    // Whatever else went wrong may be TLS: say which settings decide it.
    let hint = if !base_url.starts_with("https://") {
        "if the cluster serves HTTPS, set security.ssl.rest.enabled: true and its CA \
         (security.ssl.rest.truststore or flint.ssl.rest.ca-certificates) in the client's configuration"
    } else if reason.contains("CertificateRequired")
        || reason.contains("alert: BadCertificate")
        || reason.contains("UnknownCA")
    {
        "the cluster asks for a client certificate of its CA (security.ssl.rest.authentication-enabled): set \
         security.ssl.rest.keystore, or flint.ssl.rest.certificate and flint.ssl.rest.private-key"
    } else if reason.contains("invalid peer certificate") {
        "the endpoint's certificate must be signed by a CA of security.ssl.rest.truststore or \
         flint.ssl.rest.ca-certificates and name the host connected to"
    } else {
        return reason;
    };
    format!("{reason} ({hint})")
}

/// Extracts the messages of a REST error body (`{"errors": ["..."]}`); any
/// other non-empty body is returned as one (shortened) message.
pub fn error_messages(body: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        errors: Vec<serde_json::Value>,
    }
    if let Ok(parsed) = serde_json::from_str::<ErrorBody>(body) {
        return parsed
            .errors
            .into_iter()
            .map(|e| match e {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect();
    }
    let body = body.trim();
    if body.is_empty() {
        return Vec::new();
    }
    const MAX: usize = 500;
    if body.chars().count() > MAX {
        let short: String = body.chars().take(MAX).collect();
        vec![format!("{short}...")]
    } else {
        vec![body.to_string()]
    }
}

fn status_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testserver::Server;
    use std::net::TcpListener;

    fn serve_once(status: &'static str, body: &str) -> Server {
        Server::start(vec![(status, body.to_string())])
    }

    #[test]
    fn get_json_decodes_success() {
        let server = serve_once("200 OK", r#"{"taskmanagers":3}"#);
        let value: serde_json::Value = RestClient::new(&server.url).get_json("/overview").unwrap();
        assert_eq!(value["taskmanagers"], 3);
        let request = &server.finish()[0];
        assert_eq!((request.method.as_str(), request.target.as_str()), ("GET", "/overview"));
    }

    #[test]
    fn get_json_reports_rest_errors() {
        let server = serve_once("404 Not Found", r#"{"errors":["Not found: /nope"]}"#);
        let url = server.url.clone();
        let err = RestClient::new(&url).get_json::<serde_json::Value>("/nope").unwrap_err();
        server.finish();
        assert_eq!(
            err.to_string(),
            format!("The Flint cluster at {url} answered GET /nope with HTTP 404 Not Found: Not found: /nope")
        );
    }

    #[test]
    fn get_json_reports_bad_json() {
        let server = serve_once("200 OK", "not json");
        let err = RestClient::new(&server.url).get_json::<serde_json::Value>("/overview").unwrap_err();
        server.finish();
        assert!(matches!(err, RestError::Response { .. }), "{err}");
    }

    #[test]
    fn post_and_patch_send_method_and_body() {
        let server = Server::start(vec![
            ("202 Accepted", r#"{"jobUrl":"/jobs/1"}"#.to_string()),
            ("202 Accepted", String::new()),
            ("409 Conflict", r#"{"errors":["already finished"]}"#.to_string()),
        ]);
        let client = RestClient::new(&server.url);
        let answer: serde_json::Value =
            client.post_json("/jobs?parallelism=2", "application/json", "{\"a\":1}").unwrap();
        assert_eq!(answer["jobUrl"], "/jobs/1");
        let answer: serde_json::Value = client.patch_json("/jobs/1?mode=cancel").unwrap();
        assert!(answer.is_null());
        let err = client.patch_json::<serde_json::Value>("/jobs/1?mode=cancel").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "The Flint cluster at {} answered PATCH /jobs/1?mode=cancel with HTTP 409 Conflict: already finished",
                server.url
            )
        );
        let requests = server.finish();
        assert_eq!((requests[0].method.as_str(), requests[0].target.as_str()), ("POST", "/jobs?parallelism=2"));
        assert_eq!(requests[0].body, "{\"a\":1}");
        assert!(requests[0].headers.to_ascii_lowercase().contains("content-type: application/json"));
        assert_eq!((requests[1].method.as_str(), requests[1].target.as_str()), ("PATCH", "/jobs/1?mode=cancel"));
        assert_eq!(requests[1].body, "");
    }

    #[test]
    fn unreachable_cluster() {
        // Bind and drop, so the port is (almost certainly) closed.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let err = RestClient::new(&url).get_json::<serde_json::Value>("/overview").unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with(&format!("Could not connect to the Flint cluster at {url}: ")), "{message}");
    }

    #[test]
    fn a_standby_names_the_leader() {
        let message = "This jobmanager is not the leader. The leading jobmanager's REST endpoint is http://h:8082.";
        assert_eq!(leader_of(message).as_deref(), Some("http://h:8082"));
        assert_eq!(leader_of("This jobmanager is not the leader, and no leader is known at the moment."), None);
    }

    #[test]
    fn error_message_extraction() {
        assert_eq!(error_messages(r#"{"errors":["a","b"]}"#), vec!["a", "b"]);
        assert_eq!(error_messages(r#"{"errors":[{"x":1}]}"#), vec![r#"{"x":1}"#]);
        assert_eq!(error_messages("  plain text "), vec!["plain text"]);
        assert!(error_messages("").is_empty());
        let long = "x".repeat(600);
        assert_eq!(error_messages(&long)[0].len(), 503);
    }

    #[test]
    fn multiple_errors_are_listed() {
        let err = RestError::Status {
            base_url: "http://h:1".into(),
            method: "GET",
            path: "/p".into(),
            status: 500,
            errors: vec!["first".into(), "second".into()],
        };
        assert_eq!(
            err.to_string(),
            "The Flint cluster at http://h:1 answered GET /p with HTTP 500 Internal Server Error:\n  first\n  second"
        );
    }
}
