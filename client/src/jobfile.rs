//! Job files and job packages on the client side: reading them, filling a job file's
//! `${name}` parameters from the program arguments, merging `-D key=value` options into
//! the job's `config`, and validating them locally with the same code the cluster runs
//! (`flint_common::job`), so that an invalid job is reported before anything is sent.
//! A package (a zip, see `flint_common::job::package`) is sent whole, with its arguments
//! and options beside it, and the cluster fills and merges them as it does for `/jars`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use flint_common::ids::JobId;
use flint_common::job::package::{
    looks_like_zip, parse_program_args, read_package, substitute_parameters, JobPackage, PackageLimits,
};
use flint_common::job::spec::parse_doc;
use flint_common::job::{compile_job, load_job, DocValue, JobError, JobGraph};

/// A job file read from disk, with the `-D` options applied.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDocument {
    /// What to validate and submit: the file's text unchanged without `-D` options,
    /// else the merged document as JSON (key order preserved). For a package: its job
    /// file as it is.
    pub text: String,
    /// Whether `text` is JSON (else YAML).
    pub is_json: bool,
    /// Set when the file is a job package.
    pub package: Option<Packaged>,
}

/// A job package with what the cluster applies to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Packaged {
    /// The archive as read from disk, sent as it is.
    pub bytes: Vec<u8>,
    pub package: JobPackage,
    /// The program arguments (the job file's parameters).
    pub args: Vec<String>,
    pub params: BTreeMap<String, String>,
    /// The `-D` options.
    pub config: BTreeMap<String, String>,
}

impl JobDocument {
    /// Reads `path`: a job package (a zip) or a job file, whose `${name}` parameters are
    /// filled from `args` and to which `properties` are applied (see [`apply_properties`]).
    /// A document that cannot be parsed is kept as it is, for validation to report.
    pub fn read(path: &Path, properties: &[(String, String)], args: &[String]) -> Result<JobDocument> {
        let bytes = std::fs::read(path).with_context(|| format!("Could not read the job file {}", path.display()))?;
        let params = parse_program_args(args).map_err(anyhow::Error::new)?;
        if looks_like_zip(&bytes) {
            let package = read_package(std::io::Cursor::new(&bytes), PackageLimits::default())
                .with_context(|| format!("The job package {} is invalid", path.display()))?;
            let text = package.job_text.clone();
            let is_json = package.job_file.ends_with(".json");
            let config = properties.iter().cloned().collect();
            let packaged = Packaged { bytes, package, args: args.to_vec(), params, config };
            return Ok(JobDocument { text, is_json, package: Some(packaged) });
        }
        let Ok(text) = String::from_utf8(bytes) else {
            bail!("The job file {} is neither a job package (zip) nor UTF-8 text", path.display());
        };
        let text = substitute_parameters(&text, &params).map_err(anyhow::Error::new)?;
        Ok(JobDocument::from_text(text, properties))
    }

    pub fn from_text(text: String, properties: &[(String, String)]) -> JobDocument {
        let text = apply_properties(&text, properties).unwrap_or(text);
        let is_json = text.trim_start_matches('\u{feff}').trim_start().starts_with('{');
        JobDocument { text, is_json, package: None }
    }

    fn compile(&self, default_parallelism: u32) -> Result<JobGraph, JobError> {
        match &self.package {
            Some(p) => p.package.compile(&p.params, &p.config, default_parallelism),
            None => compile_job(&self.text, default_parallelism),
        }
    }

    /// The HTTP content type of [`JobDocument::text`].
    pub fn content_type(&self) -> &'static str {
        if self.is_json {
            "application/json"
        } else {
            "application/yaml"
        }
    }

    /// Validates the job as the cluster will, with `default_parallelism` for operators
    /// that set none.
    pub fn validate(&self, default_parallelism: u32) -> Result<(), JobError> {
        match &self.package {
            Some(_) => self.compile(default_parallelism).map(|_| ()),
            None => load_job(&self.text, default_parallelism).map(|_| ()),
        }
    }

    /// The plan in Flink's REST format (`GET /jobs/:id/plan` without the wrapper), with
    /// an all-zero job id.
    pub fn plan(&self, default_parallelism: u32) -> Result<serde_json::Value, JobError> {
        self.compile(default_parallelism).map(|graph| graph.plan_json(JobId::from_u128(0)))
    }
}

/// Parses a `-D key=value` option.
pub fn parse_property(arg: &str) -> Result<(String, String), String> {
    let (key, value) = arg.split_once('=').ok_or_else(|| format!("expected key=value, got '{arg}'"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("the key is missing in '{arg}'"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Sets `properties` (in order; a later one wins) in the document's top-level `config`
/// object, creating it when absent, and returns the document as JSON, every other key
/// and its order unchanged. `None` when there is nothing to apply, or when the document
/// does not parse or its top level or `config` is not an object: it is then submitted
/// unchanged and validation reports why.
pub fn apply_properties(text: &str, properties: &[(String, String)]) -> Option<String> {
    if properties.is_empty() {
        return None;
    }
    let DocValue::Map(mut top) = parse_doc(text).ok()? else {
        return None;
    };
    let config = match top.iter().position(|(k, _)| k == "config") {
        Some(i) => &mut top[i].1,
        None => {
            top.push(("config".to_string(), DocValue::Null));
            &mut top.last_mut().expect("just pushed").1
        }
    };
    if *config == DocValue::Null {
        *config = DocValue::Map(Vec::new());
    }
    let DocValue::Map(entries) = config else {
        return None;
    };
    for (key, value) in properties {
        let value = DocValue::String(value.clone());
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key.clone(), value)),
        }
    }
    Some(DocValue::Map(top).to_string())
}

/// The message for a job file that failed local validation: a header, then every
/// problem on its own line.
pub fn invalid_message(path: &Path, error: &JobError) -> String {
    let mut out = format!("The job file {} is invalid:\n", path.display());
    for line in error.lines() {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const JSON_JOB: &str = r#"{ "flint": 1, "name": "j", "config": { "b": "1", "a": 2 },
      "operators": [
        { "id": "zeta", "op": "source.sequence", "to": 10 },
        { "id": "alpha", "op": "map", "inputs": ["zeta"], "fields": { "z": "n", "a": "n * 2" } },
        { "id": "out", "op": "sink.print", "inputs": ["alpha"] } ] }"#;

    const YAML_JOB: &str = "flint: 1\nname: j\noperators:\n  - { id: zeta, op: source.sequence, to: 10 }\n\
        \x20 - id: alpha\n    op: map\n    inputs: [zeta]\n    fields: { z: n, a: 'n * 2' }\n\
        \x20 - { id: out, op: sink.print, inputs: [alpha] }\n";

    #[test]
    fn parses_properties() {
        assert_eq!(parse_property("a.b=c=d"), Ok(("a.b".into(), "c=d".into())));
        assert_eq!(parse_property(" k =").unwrap(), ("k".into(), String::new()));
        assert!(parse_property("novalue").unwrap_err().contains("expected key=value"));
        assert!(parse_property("=v").unwrap_err().contains("key is missing"));
    }

    #[test]
    fn no_properties_keep_the_text() {
        let doc = JobDocument::from_text(YAML_JOB.to_string(), &[]);
        assert_eq!(doc.text, YAML_JOB);
        assert!(!doc.is_json);
        assert_eq!(doc.content_type(), "application/yaml");
        let doc = JobDocument::from_text(JSON_JOB.to_string(), &[]);
        assert_eq!(doc.text, JSON_JOB);
        assert_eq!(doc.content_type(), "application/json");
    }

    #[test]
    fn merges_into_existing_json_config_preserving_order() {
        let merged = apply_properties(JSON_JOB, &props(&[("a", "3"), ("c", "x"), ("a", "4")])).unwrap();
        assert_eq!(
            merged,
            r#"{"flint":1,"name":"j","config":{"b":"1","a":"4","c":"x"},"operators":[{"id":"zeta","op":"source.sequence","to":10},{"id":"alpha","op":"map","inputs":["zeta"],"fields":{"z":"n","a":"n * 2"}},{"id":"out","op":"sink.print","inputs":["alpha"]}]}"#
        );
    }

    #[test]
    fn merges_into_yaml_without_config() {
        let doc = JobDocument::from_text(YAML_JOB.to_string(), &props(&[("pipeline.max-parallelism", "64")]));
        assert!(doc.is_json);
        assert_eq!(
            doc.text,
            r#"{"flint":1,"name":"j","operators":[{"id":"zeta","op":"source.sequence","to":10},{"id":"alpha","op":"map","inputs":["zeta"],"fields":{"z":"n","a":"n * 2"}},{"id":"out","op":"sink.print","inputs":["alpha"]}],"config":{"pipeline.max-parallelism":"64"}}"#
        );
        // The merged document means the same as the file, plus the option.
        let job = load_job(&doc.text, 1).unwrap();
        let original = load_job(YAML_JOB, 1).unwrap();
        assert_eq!(job.job_graph().vertices.len(), original.job_graph().vertices.len());
        let graph = job.job_graph();
        assert_eq!(graph.config.get("pipeline.max-parallelism").map(String::as_str), Some("64"));
    }

    #[test]
    fn null_config_becomes_an_object() {
        let merged = apply_properties("flint: 1\nconfig:\nname: j\n", &props(&[("k", "v")])).unwrap();
        assert_eq!(merged, r#"{"flint":1,"config":{"k":"v"},"name":"j"}"#);
    }

    #[test]
    fn unmergeable_documents_are_left_for_validation() {
        for text in ["{ not json", "[1, 2]", "config: [a]\n"] {
            assert_eq!(apply_properties(text, &props(&[("k", "v")])), None, "{text}");
            let doc = JobDocument::from_text(text.to_string(), &props(&[("k", "v")]));
            assert_eq!(doc.text, text);
            assert!(doc.validate(1).is_err());
        }
    }

    #[test]
    fn properties_take_part_in_validation() {
        let doc = JobDocument::from_text(JSON_JOB.to_string(), &props(&[("pipeline.max-parallelism", "2")]));
        let err = doc.validate(4).unwrap_err();
        assert!(err.to_string().contains("pipeline.max-parallelism"), "{err}");
        assert!(JobDocument::from_text(JSON_JOB.to_string(), &[]).validate(4).is_ok());
    }

    #[test]
    fn plan_is_flinks_json() {
        let plan = JobDocument::from_text(YAML_JOB.to_string(), &[]).plan(3).unwrap();
        assert_eq!(plan["jid"], "00000000000000000000000000000000");
        assert_eq!(plan["name"], "j");
        let nodes = plan["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0]["parallelism"], 3);
    }

    #[test]
    fn invalid_message_lists_every_problem() {
        let err = load_job(r#"{"flint": 2, "operators": []}"#, 1).unwrap_err();
        let message = invalid_message(Path::new("job.json"), &err);
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines[0], "The job file job.json is invalid:");
        assert_eq!(lines.len(), 1 + err.problems.len());
        assert!(err.problems.len() >= 2, "{err}");
    }
}
