//! Jobs: the user-facing job document, its validation and the derived plan.
//!
//! A job file (JSON or YAML, format documented in `docs/jobs.md`) names a DAG of
//! operators from a built-in catalog. The path from text to plan, all without I/O:
//!
//! ```text
//! text --parse_job--> JobSpec --validate--> ValidatedJob --job_graph--> JobGraph
//!      (spec.rs)                (validate.rs)              (plan.rs)
//! ```
//!
//! - [`spec`]: the order-preserving document model and the top-level [`JobSpec`].
//! - [`schema`]: record schemas ([`Schema`], [`Field`], [`FieldType`]).
//! - [`expr`]: `map`/`filter` expressions, parsed by `evalexpr` and typed ([`CompiledExpr`]).
//! - [`catalog`]: the operator types, their parameters and output schemas.
//! - [`mod@validate`]: every check, collecting all problems into one [`JobError`].
//! - [`package`]: job packages (a zip with the job file and the artifacts it reads).
//! - [`plan`]: chaining into vertices, ship strategies, Flink's plan JSON ([`JobGraph`]).
//!
//! [`load_job`] does parse and validate in one go and reports the problems of both.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod catalog;
pub mod expr;
pub mod package;
pub mod plan;
pub mod schema;
pub mod spec;
pub mod validate;

#[cfg(test)]
mod tests;

pub use catalog::{OperatorKind, OperatorSpec};
pub use expr::{CompiledExpr, ScalarFunctions, WasmFunction};
pub use plan::{vertex_id_for, JobEdge, JobGraph, JobVertex, ShipStrategy};
pub use schema::{Field, FieldType, Schema};
pub use spec::{parse_job, DocValue, JobSpec, OperatorDecl};
pub use validate::{validate, OperatorInput, ValidatedJob, ValidatedOperator};

/// One thing wrong with a job file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProblem {
    /// The operator it concerns (`None` for the job as a whole, or an operator without id).
    pub operator: Option<String>,
    pub message: String,
}

impl JobProblem {
    /// A problem of the job as a whole.
    pub fn job(message: impl Into<String>) -> Self {
        Self { operator: None, message: message.into() }
    }

    /// A problem of operator `id`.
    pub fn operator(id: &str, message: impl Into<String>) -> Self {
        Self { operator: Some(id.to_owned()), message: message.into() }
    }
}

/// `operator 'words': unknown field 'lin' (input fields: line)`.
impl fmt::Display for JobProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.operator {
            Some(op) => write!(f, "operator '{op}': {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a job file was rejected: every problem found, job-level ones first, then by
/// operator in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub problems: Vec<JobProblem>,
}

impl JobError {
    pub fn single(message: impl Into<String>) -> Self {
        Self { problems: vec![JobProblem::job(message)] }
    }

    /// Sorts `(order, problem)` pairs stably by order.
    pub(crate) fn from_ordered(mut problems: Vec<(usize, JobProblem)>) -> Self {
        problems.sort_by_key(|(order, _)| *order);
        Self { problems: problems.into_iter().map(|(_, p)| p).collect() }
    }

    /// One line per problem, as displayed (for Flink's `{"errors": [...]}` responses).
    pub fn lines(&self) -> Vec<String> {
        self.problems.iter().map(JobProblem::to_string).collect()
    }
}

/// One problem per line.
impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for JobError {}

/// Parses and validates a job file, reporting the problems of both steps together
/// (a field of the wrong type is reported once, not again as missing).
pub fn load_job(text: &str, default_parallelism: u32) -> Result<ValidatedJob, JobError> {
    let parsed = spec::parse_document(text)?;
    validate::validate_parsed(&parsed, default_parallelism)
}

/// [`load_job`] with `config` entries added to (or replacing) the file's `config`.
pub fn load_job_with_config(
    text: &str,
    config: &std::collections::BTreeMap<String, String>,
    default_parallelism: u32,
) -> Result<ValidatedJob, JobError> {
    let mut parsed = spec::parse_document(text)?;
    parsed.spec.config.extend(config.iter().map(|(k, v)| (k.clone(), v.clone())));
    validate::validate_parsed(&parsed, default_parallelism)
}

/// [`load_job`], then the plan.
pub fn compile_job(text: &str, default_parallelism: u32) -> Result<JobGraph, JobError> {
    load_job(text, default_parallelism).map(|job| job.job_graph())
}
