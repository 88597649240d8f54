//! Validation: from a [`JobSpec`] to a [`ValidatedJob`], reporting every problem at once.
//!
//! The checks run in phases, each skipping what an earlier phase already found broken so
//! that one mistake is reported once, not again by everything downstream of it:
//!
//! 1. the top level: format version, name, parallelism, `pipeline.max-parallelism`;
//! 2. each operator on its own: id, type, parallelism, ship strategy, display name;
//! 3. the graph: number of inputs, unknown and duplicate inputs, sinks used as inputs,
//!    cycles (each named with the operators on it);
//! 4. in topological order, each operator's parameters against its input schemas (see
//!    [`super::catalog::check_operator`]), which yields its output schema;
//! 5. ship strategies of the input edges (keyed operators hash on their key; otherwise
//!    `forward` at equal and `rebalance` at different parallelism, unless `ship`
//!    overrides it).

use std::collections::{BTreeMap, BTreeSet};

use super::catalog::{
    check_operator, operator_type, operator_type_names, scalar_functions, Arity, OperatorKind, OperatorSpec, Role,
};
use super::plan::ShipStrategy;
use super::schema::Schema;
use super::spec::{JobSpec, Parsed, JOB_FORMAT_VERSION};
use super::{JobError, JobProblem};

/// The config key bounding every parallelism of a job.
pub const MAX_PARALLELISM_KEY: &str = "pipeline.max-parallelism";
/// `pipeline.max-parallelism` when the job does not set it.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;
/// The largest max parallelism Flink accepts (2^15).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 32_768;
/// Values of `ship`.
pub const SHIP_OVERRIDES: &[&str] = &["forward", "broadcast", "rebalance", "rescale"];

/// A job that passed validation: every operator typed, in topological order.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJob {
    pub name: String,
    pub config: BTreeMap<String, String>,
    /// The job-level parallelism (the file's, else the cluster default).
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// In topological order (ties in file order).
    pub operators: Vec<ValidatedOperator>,
}

/// One operator of a validated job with its input edges.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedOperator {
    pub spec: OperatorSpec,
    /// In the order of the file's `inputs`.
    pub inputs: Vec<OperatorInput>,
}

/// One input edge of an operator.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorInput {
    /// The id of the upstream operator.
    pub operator: String,
    pub ship: ShipStrategy,
}

/// Checks `spec`; `default_parallelism` (the cluster's `parallelism.default`) applies when
/// the job sets none. Returns every problem found.
pub fn validate(spec: &JobSpec, default_parallelism: u32) -> Result<ValidatedJob, JobError> {
    let parsed = Parsed { spec: spec.clone(), ..Parsed::default() };
    validate_parsed(&parsed, default_parallelism)
}

/// Validates what the reader produced, without repeating its problems.
pub(crate) fn validate_parsed(parsed: &Parsed, default_parallelism: u32) -> Result<ValidatedJob, JobError> {
    let mut v = Validation { parsed, problems: parsed.problems.clone() };
    let job = v.run(default_parallelism);
    match job {
        Some(job) if v.problems.is_empty() => Ok(job),
        _ => Err(JobError::from_ordered(v.problems)),
    }
}

struct Validation<'a> {
    parsed: &'a Parsed,
    problems: Vec<(usize, JobProblem)>,
}

impl Validation<'_> {
    fn job_problem(&mut self, message: String) {
        self.problems.push((0, JobProblem::job(message)));
    }

    fn op_problem(&mut self, index: usize, message: String) {
        let id = &self.parsed.spec.operators[index].id;
        let problem = if id.is_empty() {
            JobProblem::job(format!("operator #{}: {message}", index + 1))
        } else {
            JobProblem::operator(id, message)
        };
        self.problems.push((index + 1, problem));
    }

    fn tainted(&self, field: &str) -> bool {
        self.parsed.tainted_fields.contains(field)
    }

    fn run(&mut self, default_parallelism: u32) -> Option<ValidatedJob> {
        let spec = &self.parsed.spec;
        let ops = &spec.operators;

        // 1. The top level.
        match spec.flint {
            None if !self.tainted("flint") => {
                self.job_problem(format!("missing 'flint': the job format version (must be {JOB_FORMAT_VERSION})"))
            }
            Some(v) if v != JOB_FORMAT_VERSION => self.job_problem(format!(
                "unsupported job format version {v} (this Flint reads 'flint': {JOB_FORMAT_VERSION})"
            )),
            _ => {}
        }
        if spec.name.as_deref().is_none_or(|n| n.trim().is_empty()) && !self.tainted("name") {
            self.job_problem("missing job 'name'".to_owned());
        }
        let max_parallelism = match spec.config.get(MAX_PARALLELISM_KEY) {
            None => DEFAULT_MAX_PARALLELISM,
            Some(text) => match text.trim().parse::<u32>() {
                Ok(m) if (1..=UPPER_BOUND_MAX_PARALLELISM).contains(&m) => m,
                _ => {
                    self.job_problem(format!(
                        "config '{MAX_PARALLELISM_KEY}' must be an integer between 1 and \
                         {UPPER_BOUND_MAX_PARALLELISM}, got '{text}'"
                    ));
                    DEFAULT_MAX_PARALLELISM
                }
            },
        };
        let job_parallelism = match spec.parallelism {
            Some(p) if p <= 0 => {
                self.job_problem(format!("job parallelism must be positive, got {p}"));
                1
            }
            Some(p) if p > i64::from(max_parallelism) => {
                self.job_problem(format!(
                    "job parallelism {p} exceeds the max parallelism {max_parallelism} ('{MAX_PARALLELISM_KEY}')"
                ));
                max_parallelism
            }
            Some(p) => p as u32,
            None if default_parallelism > max_parallelism => {
                self.job_problem(format!(
                    "the default parallelism {default_parallelism} exceeds the max parallelism {max_parallelism} \
                     ('{MAX_PARALLELISM_KEY}'); set the job's 'parallelism'"
                ));
                max_parallelism
            }
            None => default_parallelism.max(1),
        };
        if ops.is_empty() && !self.tainted("operators") {
            self.job_problem("the job has no operators".to_owned());
        }

        // 2. Each operator on its own.
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        let mut types = vec![None; ops.len()];
        for (i, op) in ops.iter().enumerate() {
            if !op.id.is_empty() {
                if let Some(&first) = index.get(op.id.as_str()) {
                    self.op_problem(i, format!("duplicate operator id (also used by operator #{})", first + 1));
                } else {
                    index.insert(&op.id, i);
                }
            }
            if self.parsed.tainted_operators.contains(&i) {
                continue;
            }
            if op.id.is_empty() {
                self.op_problem(i, "missing 'id'".to_owned());
            }
            if op.op.is_empty() {
                self.op_problem(i, format!("missing 'op' (known operator types: {})", operator_type_names()));
            } else {
                types[i] = operator_type(&op.op);
                if types[i].is_none() {
                    self.op_problem(i, format!("unknown operator type '{}' (known: {})", op.op, operator_type_names()));
                }
            }
            match op.parallelism {
                Some(p) if p <= 0 => self.op_problem(i, format!("parallelism must be positive, got {p}")),
                Some(p) if p > i64::from(max_parallelism) => self.op_problem(
                    i,
                    format!("parallelism {p} exceeds the max parallelism {max_parallelism} ('{MAX_PARALLELISM_KEY}')"),
                ),
                _ => {}
            }
            if let Some(ship) = &op.ship {
                if !SHIP_OVERRIDES.contains(&ship.as_str()) {
                    self.op_problem(
                        i,
                        format!("unknown ship strategy '{ship}' (known: {})", SHIP_OVERRIDES.join(", ")),
                    );
                }
            }
            if op.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                self.op_problem(i, "'name' must not be empty".to_owned());
            }
        }

        // 3. The graph.
        let mut upstream: Vec<Vec<usize>> = vec![Vec::new(); ops.len()];
        let mut inputs_ok = vec![true; ops.len()];
        for (i, op) in ops.iter().enumerate() {
            if self.parsed.tainted_operators.contains(&i) {
                inputs_ok[i] = false;
                continue;
            }
            if let Some(ty) = types[i] {
                let n = op.inputs.len();
                let wrong = match ty.inputs {
                    Arity::None if n > 0 => Some(format!("a source takes no inputs, got {n}")),
                    Arity::One if n == 0 => Some(format!("missing input: {} needs exactly 1 input", ty.name)),
                    Arity::One if n > 1 => {
                        Some(format!("{} takes exactly 1 input, got {n} (merge streams with a union)", ty.name))
                    }
                    Arity::TwoOrMore if n < 2 => Some(format!("union needs at least 2 inputs, got {n}")),
                    _ => None,
                };
                if let Some(message) = wrong {
                    self.op_problem(i, message);
                    inputs_ok[i] = false;
                }
                if op.ship.is_some() && ty.role == Role::Source {
                    self.op_problem(i, "'ship' applies to input edges, and a source has none".to_owned());
                } else if op.ship.is_some() && ty.keyed {
                    self.op_problem(
                        i,
                        format!("'ship' cannot be set on {}: it always hash-partitions its input on its key", ty.name),
                    );
                }
            }
            for (k, input) in op.inputs.iter().enumerate() {
                if op.inputs[..k].contains(input) {
                    self.op_problem(i, format!("input '{input}' is listed twice"));
                    inputs_ok[i] = false;
                    continue;
                }
                let Some(&j) = index.get(input.as_str()) else {
                    let known = ops.iter().map(|o| o.id.as_str()).filter(|id| !id.is_empty()).collect::<Vec<_>>();
                    self.op_problem(i, format!("unknown input '{input}' (operators: {})", known.join(", ")));
                    inputs_ok[i] = false;
                    continue;
                };
                if types[j].is_some_and(|t| t.role == Role::Sink) {
                    self.op_problem(i, format!("cannot read from sink '{input}': sinks have no output"));
                    inputs_ok[i] = false;
                }
                upstream[i].push(j);
            }
        }
        for cycle in find_cycles(&upstream) {
            let names: Vec<&str> = cycle.iter().chain(cycle.first()).map(|&i| ops[i].id.as_str()).collect();
            self.op_problem(cycle[0], format!("is part of a cycle: {}", names.join(" -> ")));
        }
        let order = topological_order(&upstream);

        // 4. WebAssembly scalar functions, then parameters and schemas, upstream first.
        let mut messages = Vec::new();
        let functions = scalar_functions(&spec.functions, &mut messages);
        for m in messages {
            self.job_problem(m);
        }
        let mut outputs: Vec<Option<Schema>> = vec![None; ops.len()];
        let mut kinds: Vec<Option<(OperatorKind, Option<Schema>)>> = vec![None; ops.len()];
        for &i in &order {
            let Some(ty) = types[i] else { continue };
            let owned: Option<Vec<(&str, Schema)>> = if inputs_ok[i] {
                upstream[i].iter().map(|&j| outputs[j].clone().map(|s| (ops[j].id.as_str(), s))).collect()
            } else {
                None
            };
            let inputs: Option<Vec<(&str, &Schema)>> =
                owned.as_ref().map(|o| o.iter().map(|(id, s)| (*id, s)).collect());
            let mut messages = Vec::new();
            let checked = check_operator(ty, &ops[i].params, inputs.as_deref(), &functions, &mut messages);
            for m in messages {
                self.op_problem(i, m);
            }
            if let Some((kind, output)) = checked {
                outputs[i] = output;
                let input_schema = owned.and_then(|o| o.into_iter().next().map(|(_, s)| s));
                kinds[i] = Some((kind, input_schema));
            }
        }

        // 5. Parallelism and ship strategies.
        let parallelism: Vec<u32> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| match (op.parallelism, types[i].map(|t| t.name)) {
                (Some(p), _) if p > 0 => u32::try_from(p).unwrap_or(u32::MAX),
                (_, Some("source.socket")) => 1,
                _ => job_parallelism,
            })
            .collect();
        let mut validated = Vec::new();
        for &i in &order {
            let Some((kind, input_schema)) = kinds[i].clone() else { continue };
            let op = &ops[i];
            if matches!(kind, OperatorKind::Socket { .. }) && parallelism[i] > 1 {
                self.op_problem(i, "source.socket is not parallel: its parallelism must be 1".to_owned());
            }
            if let OperatorKind::Fail { subtask, .. } = kind {
                if subtask >= parallelism[i] {
                    self.op_problem(
                        i,
                        format!(
                            "subtask {subtask} does not exist at parallelism {} (subtasks count from 0)",
                            parallelism[i]
                        ),
                    );
                }
            }
            let mut inputs = Vec::new();
            for &j in &upstream[i] {
                let ship = match (kind.key(), op.ship.as_deref()) {
                    (Some(key), _) => ShipStrategy::Hash { keys: key.to_vec() },
                    (None, Some("forward")) => {
                        if parallelism[i] != parallelism[j] {
                            self.op_problem(
                                i,
                                format!(
                                    "'ship: forward' needs equal parallelism, but '{}' has {} and '{}' has {}",
                                    ops[j].id, parallelism[j], op.id, parallelism[i]
                                ),
                            );
                        }
                        ShipStrategy::Forward
                    }
                    (None, Some("broadcast")) => ShipStrategy::Broadcast,
                    (None, Some("rebalance")) => ShipStrategy::Rebalance,
                    (None, Some("rescale")) => ShipStrategy::Rescale,
                    _ if parallelism[i] == parallelism[j] => ShipStrategy::Forward,
                    _ => ShipStrategy::Rebalance,
                };
                inputs.push(OperatorInput { operator: ops[j].id.clone(), ship });
            }
            let spec = OperatorSpec {
                id: op.id.clone(),
                name: op.name.clone().unwrap_or_else(|| op.id.clone()),
                parallelism: parallelism[i],
                output_schema: outputs[i].clone(),
                input_schema,
                kind,
            };
            validated.push(ValidatedOperator { spec, inputs });
        }
        Some(ValidatedJob {
            name: spec.name.clone().unwrap_or_default(),
            config: spec.config.clone(),
            parallelism: job_parallelism,
            max_parallelism,
            operators: validated,
        })
    }
}

/// Every elementary cycle found by a depth-first search, each once, starting at its
/// lowest index.
fn find_cycles(upstream: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    fn visit(i: usize, upstream: &[Vec<usize>], marks: &mut [Mark], stack: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        marks[i] = Mark::OnStack;
        stack.push(i);
        for &j in &upstream[i] {
            match marks[j] {
                Mark::New => visit(j, upstream, marks, stack, out),
                Mark::OnStack => {
                    let start = stack.iter().rposition(|&s| s == j).unwrap_or(0);
                    // The stack runs downstream -> upstream; reverse it to follow the data.
                    let mut cycle: Vec<usize> = stack[start..].iter().rev().copied().collect();
                    let lowest = cycle.iter().enumerate().min_by_key(|(_, &v)| v).map_or(0, |(k, _)| k);
                    cycle.rotate_left(lowest);
                    if !out.contains(&cycle) {
                        out.push(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[i] = Mark::Done;
    }
    let mut marks = vec![Mark::New; upstream.len()];
    let mut out = Vec::new();
    for i in 0..upstream.len() {
        if marks[i] == Mark::New {
            visit(i, upstream, &mut marks, &mut Vec::new(), &mut out);
        }
    }
    out
}

/// Kahn's algorithm, taking the lowest index among the ready operators; operators on or
/// downstream of a cycle are left out.
fn topological_order(upstream: &[Vec<usize>]) -> Vec<usize> {
    let mut missing: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut downstream = vec![Vec::new(); upstream.len()];
    for (i, ups) in upstream.iter().enumerate() {
        for &j in ups {
            downstream[j].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..upstream.len()).filter(|&i| missing[i] == 0).collect();
    let mut order = Vec::with_capacity(upstream.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &downstream[i] {
            missing[d] -= 1;
            if missing[d] == 0 {
                ready.insert(d);
            }
        }
    }
    order
}
