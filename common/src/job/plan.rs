//! The derived plan: a [`JobGraph`] of vertices (chains of operators) and edges.
//!
//! Derivation from a [`ValidatedJob`], whose operators are in topological order and whose
//! input edges already carry their [`ShipStrategy`]:
//!
//! - An operator joins its upstream's vertex (is *chained*) when the edge is `Forward`,
//!   both have the same parallelism, it has exactly one input and the upstream has
//!   exactly one consumer. Otherwise it heads a new vertex. Chains are therefore linear.
//! - A vertex is named after its operators joined with `" -> "` (`Source: lines -> words`)
//!   and its id is an FNV-1a hash of its head operator's id, so the same job file always
//!   yields the same vertex ids.
//! - Vertices are in topological order; an edge runs from the tail of one vertex to the
//!   head of another, `target_input` being the position among the head's inputs.
//!
//! The graph serializes with serde (JSON or MessagePack `to_vec_named`) to travel in RPC
//! messages, and renders Flink's `/jobs/:jobid/plan` JSON with [`JobGraph::plan_json`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::catalog::{OperatorSpec, Role};
use super::package::Artifact;
use super::schema::Schema;
use super::validate::ValidatedJob;
use crate::ids::{JobId, JobVertexId};

/// How records travel along an edge from the producing to the consuming subtasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShipStrategy {
    /// Subtask i to subtask i (equal parallelism).
    Forward,
    /// By the hash of the key fields (keyed operators).
    Hash { keys: Vec<String> },
    /// Round robin over all consumers.
    Rebalance,
    /// Every record to every consumer.
    Broadcast,
    /// Round robin over a local subset of consumers.
    Rescale,
}

impl ShipStrategy {
    /// The name Flink's REST API shows (`ship_strategy`).
    pub fn flink_name(&self) -> &'static str {
        match self {
            ShipStrategy::Forward => "FORWARD",
            ShipStrategy::Hash { .. } => "HASH",
            ShipStrategy::Rebalance => "REBALANCE",
            ShipStrategy::Broadcast => "BROADCAST",
            ShipStrategy::Rescale => "RESCALE",
        }
    }
}

/// A job's plan: what the JobMaster schedules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobGraph {
    pub name: String,
    /// In topological order.
    pub vertices: Vec<JobVertex>,
    pub edges: Vec<JobEdge>,
    pub config: BTreeMap<String, String>,
    pub max_parallelism: u32,
    /// The files of the job's package that its `source.file` operators read, by their
    /// path in the package (see [`super::package`]); shipped inline with the tasks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, Artifact>,
    /// Vertices whose operator chains were stored in the BlobServer (serialized over
    /// `blob.offload.minsize`): the sha256 of the MessagePack bytes, a permanent blob of the
    /// job. Their deployment descriptors carry this key instead of the operators.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub offloaded_operators: BTreeMap<JobVertexId, String>,
}

/// A chain of operators run in one task per subtask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobVertex {
    pub id: JobVertexId,
    /// Operator display names joined with " -> ".
    pub name: String,
    pub parallelism: u32,
    /// The chain, head first.
    pub operators: Vec<OperatorSpec>,
    /// The records the head reads (`None` for a source vertex).
    pub input_schema: Option<Schema>,
    /// The records the tail emits (`None` when the tail is a sink).
    pub output_schema: Option<Schema>,
}

impl JobVertex {
    /// The first operator of the chain.
    pub fn head(&self) -> &OperatorSpec {
        &self.operators[0]
    }

    /// The last operator of the chain.
    pub fn tail(&self) -> &OperatorSpec {
        &self.operators[self.operators.len() - 1]
    }

    pub fn is_source(&self) -> bool {
        self.head().kind.role() == Role::Source
    }
}

/// A data exchange between two vertices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEdge {
    pub source: JobVertexId,
    pub target: JobVertexId,
    pub ship: ShipStrategy,
    /// Which input of the target's head operator this edge feeds (0 unless a union).
    pub target_input: usize,
}

/// The vertex id of a chain headed by `operator_id`: 128-bit FNV-1a of its bytes.
pub fn vertex_id_for(operator_id: &str) -> JobVertexId {
    const OFFSET_BASIS: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let hash = operator_id.bytes().fold(OFFSET_BASIS, |h, b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    JobVertexId::from_u128(hash)
}

impl ValidatedJob {
    /// Derives the plan (see the module documentation).
    pub fn job_graph(&self) -> JobGraph {
        JobGraph::from_validated(self)
    }
}

impl JobGraph {
    /// Chains the operators of `job` into vertices and connects them.
    pub fn from_validated(job: &ValidatedJob) -> JobGraph {
        let index: BTreeMap<&str, usize> =
            job.operators.iter().enumerate().map(|(i, o)| (o.spec.id.as_str(), i)).collect();
        let mut consumers = vec![0usize; job.operators.len()];
        for op in &job.operators {
            for input in &op.inputs {
                consumers[index[input.operator.as_str()]] += 1;
            }
        }
        let mut vertices: Vec<JobVertex> = Vec::new();
        let mut vertex_of = vec![0usize; job.operators.len()];
        let mut heads = Vec::new();
        for (i, op) in job.operators.iter().enumerate() {
            let chained_to = match op.inputs.as_slice() {
                [input] if input.ship == ShipStrategy::Forward => {
                    let up = index[input.operator.as_str()];
                    (consumers[up] == 1 && job.operators[up].spec.parallelism == op.spec.parallelism).then_some(up)
                }
                _ => None,
            };
            match chained_to {
                Some(up) => {
                    let v = vertex_of[up];
                    vertex_of[i] = v;
                    vertices[v].operators.push(op.spec.clone());
                }
                None => {
                    vertex_of[i] = vertices.len();
                    heads.push(i);
                    vertices.push(JobVertex {
                        id: vertex_id_for(&op.spec.id),
                        name: String::new(),
                        parallelism: op.spec.parallelism,
                        operators: vec![op.spec.clone()],
                        input_schema: op.spec.input_schema.clone(),
                        output_schema: None,
                    });
                }
            }
        }
        for v in &mut vertices {
            v.name = v.operators.iter().map(OperatorSpec::display_name).collect::<Vec<_>>().join(" -> ");
            v.output_schema = v.tail().output_schema.clone();
        }
        let mut edges = Vec::new();
        for &head in &heads {
            for (k, input) in job.operators[head].inputs.iter().enumerate() {
                edges.push(JobEdge {
                    source: vertices[vertex_of[index[input.operator.as_str()]]].id,
                    target: vertices[vertex_of[head]].id,
                    ship: input.ship.clone(),
                    target_input: k,
                });
            }
        }
        JobGraph {
            name: job.name.clone(),
            vertices,
            edges,
            config: job.config.clone(),
            max_parallelism: job.max_parallelism,
            artifacts: BTreeMap::new(),
            offloaded_operators: BTreeMap::new(),
        }
    }

    /// The artifacts the operators of `vertex` read: those its package-relative
    /// `source.file` paths name, as files or as directories.
    pub fn artifacts_of(&self, vertex: &JobVertex) -> BTreeMap<String, Artifact> {
        let mut out = BTreeMap::new();
        for op in &vertex.operators {
            for path in op.kind.artifact_paths() {
                let prefix = path.trim_end_matches('/');
                for (name, artifact) in &self.artifacts {
                    if name == prefix || name.strip_prefix(prefix).is_some_and(|r| r.starts_with('/')) {
                        out.insert(name.clone(), artifact.clone());
                    }
                }
            }
        }
        out
    }

    pub fn vertex(&self, id: JobVertexId) -> Option<&JobVertex> {
        self.vertices.iter().find(|v| v.id == id)
    }

    /// The vertex whose chain contains operator `operator_id`.
    pub fn vertex_of_operator(&self, operator_id: &str) -> Option<&JobVertex> {
        self.vertices.iter().find(|v| v.operators.iter().any(|o| o.id == operator_id))
    }

    /// The edges into `id`, by `target_input`.
    pub fn inputs_of(&self, id: JobVertexId) -> Vec<&JobEdge> {
        let mut edges: Vec<&JobEdge> = self.edges.iter().filter(|e| e.target == id).collect();
        edges.sort_by_key(|e| e.target_input);
        edges
    }

    /// The edges out of `id`.
    pub fn outputs_of(&self, id: JobVertexId) -> Vec<&JobEdge> {
        self.edges.iter().filter(|e| e.source == id).collect()
    }

    /// True when every source ends by itself (`source.sequence` with `to`,
    /// `source.datagen` with `rows`, `source.file`); a socket or an unbounded generator
    /// makes the job run until cancelled.
    pub fn is_bounded(&self) -> bool {
        self.vertices
            .iter()
            .flat_map(|v| &v.operators)
            .filter_map(|o| o.kind.is_bounded_source())
            .all(|bounded| bounded)
    }

    /// The slots the job needs with slot sharing: its largest vertex parallelism.
    pub fn slots_needed(&self) -> u32 {
        self.vertices.iter().map(|v| v.parallelism).max().unwrap_or(0)
    }

    /// The plan as Flink's REST API shows it: the object under `"plan"` in
    /// `GET /jobs/:jobid/plan` (which wraps it as `{"plan": ...}`) and in
    /// `GET /jobs/:jobid`. Nodes are listed sinks first, as Flink lists them; a node's
    /// `description` is its chain as a tree (`A<br/>+- B<br/>   +- C<br/>`).
    pub fn plan_json(&self, job_id: JobId) -> serde_json::Value {
        let nodes: Vec<serde_json::Value> = self
            .vertices
            .iter()
            .rev()
            .map(|v| {
                let mut node = serde_json::Map::new();
                node.insert("id".into(), json!(v.id.to_string()));
                node.insert("parallelism".into(), json!(v.parallelism));
                node.insert("operator".into(), json!(""));
                node.insert("operator_strategy".into(), json!(""));
                node.insert("description".into(), json!(chain_description(&v.operators)));
                let inputs: Vec<serde_json::Value> = self
                    .inputs_of(v.id)
                    .into_iter()
                    .map(|e| {
                        json!({
                            "num": e.target_input,
                            "id": e.source.to_string(),
                            "ship_strategy": e.ship.flink_name(),
                            "exchange": "pipelined_bounded",
                        })
                    })
                    .collect();
                if !inputs.is_empty() {
                    node.insert("inputs".into(), serde_json::Value::Array(inputs));
                }
                node.insert("optimizer_properties".into(), json!({}));
                serde_json::Value::Object(node)
            })
            .collect();
        json!({
            "jid": job_id.to_string(),
            "name": self.name,
            "type": "STREAMING",
            "nodes": nodes,
        })
    }
}

/// Flink's tree description of a linear chain, HTML-escaped, lines ending in `<br/>`.
fn chain_description(operators: &[OperatorSpec]) -> String {
    let mut out = String::new();
    for (depth, op) in operators.iter().enumerate() {
        if depth > 0 {
            out.push_str(&"   ".repeat(depth - 1));
            out.push_str("+- ");
        }
        for c in op.display_name().chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                c => out.push(c),
            }
        }
        out.push_str("<br/>");
    }
    out
}
