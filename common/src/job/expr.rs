//! Expressions of `map` and `filter`, parsed with `evalexpr` and typed against a schema.
//!
//! [`CompiledExpr::compile`] parses the text once, checks that every identifier it reads is
//! a field of the input schema, and infers the result type by walking the parsed tree
//! with the rules `evalexpr` itself applies when it evaluates (integer arithmetic stays
//! integer, any float makes a float, `+` of two strings concatenates, comparisons and
//! logic are boolean). Assignments, `;` sequences and functions outside the supported
//! builtins are rejected here, so a job that validates never fails on them at run time.
//! The parsed tree is kept for the runtime; it serializes as its source text and is
//! parsed again when read back.
//!
//! Besides the builtins, an expression may call the WebAssembly scalar functions the job
//! file declares under `functions` (`wasm::<module>::<export>(args...)`, typed by their
//! declaration; see `docs/wasm.md`). A compiled expression carries the declarations of the
//! functions it calls, so the taskmanager can load their modules.

use std::collections::{BTreeMap, BTreeSet};

use evalexpr::{Node, Operator, Value};
use serde::{Deserialize, Serialize};

use super::schema::{FieldType, Schema};

/// An expression parsed and typed against an input schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CompiledExprRepr", into = "CompiledExprRepr")]
pub struct CompiledExpr {
    /// The expression as written.
    pub source: String,
    /// The parsed tree (evaluate it with [`CompiledExpr::eval_with_context`]).
    pub node: Node,
    /// The type of the result.
    pub ty: FieldType,
    /// The input fields it reads, in order of first use.
    pub fields: Vec<String>,
    /// The WebAssembly scalar functions it calls, each once, in order of first use.
    pub wasm: Vec<WasmFunction>,
}

/// The prefix of WebAssembly scalar function names in expressions.
pub const WASM_FUNCTION_PREFIX: &str = "wasm::";

/// A WebAssembly scalar function declared in the job file's `functions`: an export of a
/// module of the job package, called per batch with one column per argument and returning
/// one column of `returns` (`docs/wasm.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WasmFunction {
    /// The name in expressions: `wasm::<module>::<export>`.
    pub name: String,
    /// The module's path in the job package; the taskmanager points it at its copy.
    pub module: String,
    /// The export called per batch.
    pub export: String,
    /// The argument types, in order.
    pub args: Vec<FieldType>,
    /// The result type (every result may be null).
    pub returns: FieldType,
    /// Given to the module's `flint_open` as `key=value` lines.
    #[serde(default)]
    pub params: Vec<(String, String)>,
}

/// The declared scalar functions of a job, by their name in expressions.
pub type ScalarFunctions = BTreeMap<String, WasmFunction>;

/// The wire form: the tree travels as its source text.
#[derive(Serialize, Deserialize)]
struct CompiledExprRepr {
    source: String,
    ty: FieldType,
    fields: Vec<String>,
    #[serde(default)]
    wasm: Vec<WasmFunction>,
}

impl TryFrom<CompiledExprRepr> for CompiledExpr {
    type Error = String;

    fn try_from(repr: CompiledExprRepr) -> Result<Self, String> {
        let node = evalexpr::build_operator_tree(&repr.source)
            .map_err(|e| format!("invalid expression '{}': {e}", repr.source))?;
        Ok(Self { source: repr.source, node, ty: repr.ty, fields: repr.fields, wasm: repr.wasm })
    }
}

impl From<CompiledExpr> for CompiledExprRepr {
    fn from(expr: CompiledExpr) -> Self {
        Self { source: expr.source, ty: expr.ty, fields: expr.fields, wasm: expr.wasm }
    }
}

/// The longest expression source accepted.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// The most operators and parentheses in one expression (user expressions have tens).
pub const MAX_EXPRESSION_OPERATORS: usize = 256;

impl CompiledExpr {
    /// Parses `source` and types it against `input`. On failure returns every problem
    /// found (all unknown fields, or the first type error).
    pub fn compile(source: &str, input: &Schema) -> Result<CompiledExpr, Vec<String>> {
        Self::compile_with(source, input, &ScalarFunctions::new())
    }

    /// [`CompiledExpr::compile`], with the job's declared WebAssembly scalar functions.
    pub fn compile_with(
        source: &str,
        input: &Schema,
        functions: &ScalarFunctions,
    ) -> Result<CompiledExpr, Vec<String>> {
        if source.trim().is_empty() {
            return Err(vec!["empty expression".to_owned()]);
        }
        // The parser and the typer recurse over the tree: its size is bounded before
        // parsing (by its bytes and by its operators and parentheses, each at most one level
        // of the tree), so no expression can exhaust a thread's stack.
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err(vec![format!(
                "expression of {} bytes: at most {MAX_EXPRESSION_BYTES} bytes are allowed",
                source.len()
            )]);
        }
        let operators = source.bytes().filter(|b| b"+-*/%^!&|<>=(,".contains(b)).count();
        if operators > MAX_EXPRESSION_OPERATORS {
            return Err(vec![format!(
                "expression with {operators} operators and parentheses: at most {MAX_EXPRESSION_OPERATORS} are allowed"
            )]);
        }
        let node =
            evalexpr::build_operator_tree(source).map_err(|e| vec![format!("invalid expression '{source}': {e}")])?;
        if node.iter_write_variable_identifiers().next().is_some() {
            return Err(vec![format!("expression '{source}': assignments are not supported")]);
        }
        let mut seen = BTreeSet::new();
        let mut fields: Vec<String> = Vec::new();
        let mut problems = Vec::new();
        for ident in node.iter_read_variable_identifiers() {
            if !seen.insert(ident) {
                continue;
            }
            if input.field(ident).is_some() {
                fields.push(ident.to_owned());
            } else {
                problems.push(format!(
                    "unknown field '{ident}' in expression '{source}' (input fields: {})",
                    input.names_list()
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut wasm: Vec<WasmFunction> = Vec::new();
        for ident in node.iter_function_identifiers() {
            if let Some(f) = functions.get(ident) {
                if !wasm.iter().any(|w| w.name == f.name) {
                    wasm.push(f.clone());
                }
            }
        }
        match infer(&node, input, functions) {
            Ok(Ty::Val(ty)) => Ok(CompiledExpr { source: source.to_owned(), node, ty, fields, wasm }),
            Ok(Ty::Tuple) => Err(vec![format!("expression '{source}': a tuple is not a field value")]),
            Err(detail) => Err(vec![format!("expression '{source}': {detail}")]),
        }
    }

    /// Whether the result may be null: it reads a nullable (or null-typed) field or calls a
    /// WebAssembly function (whose results may be null).
    pub fn nullable(&self, input: &Schema) -> bool {
        self.ty == FieldType::Null
            || !self.wasm.is_empty()
            || self.fields.iter().any(|f| input.field(f).is_some_and(|f| f.nullable || f.ty == FieldType::Null))
    }

    /// Evaluates the expression with the fields of one record bound in `context`.
    pub fn eval_with_context<C: evalexpr::Context>(&self, context: &C) -> evalexpr::EvalexprResult<Value> {
        self.node.eval_with_context(context)
    }
}

/// The builtin functions expressions may call (those `evalexpr` offers without optional
/// features), in documentation order.
pub const BUILTIN_FUNCTIONS: &[&str] = &[
    "if",
    "min",
    "max",
    "floor",
    "round",
    "ceil",
    "len",
    "typeof",
    "contains",
    "contains_any",
    "str::from",
    "str::to_lowercase",
    "str::to_uppercase",
    "str::trim",
    "str::substring",
    "math::abs",
    "math::sqrt",
    "math::cbrt",
    "math::exp",
    "math::exp2",
    "math::ln",
    "math::log",
    "math::log2",
    "math::log10",
    "math::pow",
    "math::hypot",
    "math::sin",
    "math::cos",
    "math::tan",
    "math::asin",
    "math::acos",
    "math::atan",
    "math::atan2",
    "math::sinh",
    "math::cosh",
    "math::tanh",
    "math::asinh",
    "math::acosh",
    "math::atanh",
    "math::is_nan",
    "math::is_finite",
    "math::is_infinite",
    "math::is_normal",
    "bitand",
    "bitor",
    "bitxor",
    "bitnot",
    "shl",
    "shr",
];

/// If `text` is a call `name(a, b, ...)` whose arguments are all plain identifiers,
/// returns the function name and the identifiers (used for aggregate specs like `sum(x)`).
pub(crate) fn parse_simple_call(text: &str) -> Option<(String, Vec<String>)> {
    let root = evalexpr::build_operator_tree(text).ok()?;
    let [call] = root.children() else { return None };
    let Operator::FunctionIdentifier { identifier } = call.operator() else { return None };
    let [arg] = call.children() else { return None };
    let args = function_args(arg)
        .into_iter()
        .map(|a| match (a.operator(), a.children()) {
            (Operator::VariableIdentifierRead { identifier }, _) => Some(identifier.clone()),
            (Operator::RootNode, [only]) => match only.operator() {
                Operator::VariableIdentifierRead { identifier } => Some(identifier.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((identifier.clone(), args))
}

/// A value type, or a tuple (only meaningful as an argument of `contains`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ty {
    Val(FieldType),
    Tuple,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Val(t) => t.name(),
            Ty::Tuple => "tuple",
        }
    }

    fn numeric(self) -> Option<FieldType> {
        match self {
            Ty::Val(t) if t.is_numeric() => Some(t),
            _ => None,
        }
    }
}

/// The arguments of a function call: `f()` has none, `f(a, b)` a tuple's items, `f(a)` one.
fn function_args(arg: &Node) -> Vec<&Node> {
    match (arg.operator(), arg.children()) {
        (Operator::RootNode, []) => Vec::new(),
        (Operator::RootNode, [only]) if *only.operator() == Operator::Tuple => only.children().iter().collect(),
        _ => vec![arg],
    }
}

fn infer(node: &Node, input: &Schema, functions: &ScalarFunctions) -> Result<Ty, String> {
    let children = node.children();
    let op = node.operator();
    let operands = |n: usize| -> Result<Vec<Ty>, String> {
        if children.len() != n {
            return Err(format!("operator '{}' is missing an operand", op.to_string().trim()));
        }
        children.iter().map(|c| infer(c, input, functions)).collect()
    };
    match op {
        Operator::RootNode => match children {
            [] => Ok(Ty::Val(FieldType::Null)),
            [only] => infer(only, input, functions),
            _ => Err("malformed expression".to_owned()),
        },
        Operator::Const { value } => Ok(match value {
            Value::Int(_) => Ty::Val(FieldType::Int),
            Value::Float(_) => Ty::Val(FieldType::Float),
            Value::String(_) => Ty::Val(FieldType::String),
            Value::Boolean(_) => Ty::Val(FieldType::Bool),
            Value::Empty => Ty::Val(FieldType::Null),
            Value::Tuple(_) => Ty::Tuple,
        }),
        Operator::VariableIdentifierRead { identifier } => match input.field(identifier) {
            Some(f) if f.ty == FieldType::Bytes => {
                Err(format!("field '{identifier}' has type bytes, which expressions cannot use"))
            }
            Some(f) => Ok(Ty::Val(f.ty)),
            None => Err(format!("unknown field '{identifier}'")),
        },
        Operator::Add => {
            let t = operands(2)?;
            match (t[0], t[1]) {
                (Ty::Val(FieldType::String), Ty::Val(FieldType::String)) => Ok(Ty::Val(FieldType::String)),
                (a, b) => arithmetic("+", a, b).map_err(|e| {
                    if a == Ty::Val(FieldType::String) || b == Ty::Val(FieldType::String) {
                        format!(
                            "'+' needs two numbers or two strings, got {} and {} (convert with str::from(...))",
                            a.name(),
                            b.name()
                        )
                    } else {
                        e
                    }
                }),
            }
        }
        Operator::Sub | Operator::Mul | Operator::Div | Operator::Mod => {
            let t = operands(2)?;
            arithmetic(&op.to_string(), t[0], t[1])
        }
        Operator::Exp => {
            let t = operands(2)?;
            arithmetic("^", t[0], t[1]).map(|_| Ty::Val(FieldType::Float))
        }
        Operator::Neg => {
            let t = operands(1)?;
            t[0].numeric().map(Ty::Val).ok_or_else(|| format!("'-' needs a number, got {}", t[0].name()))
        }
        Operator::Eq | Operator::Neq => {
            operands(2)?;
            Ok(Ty::Val(FieldType::Bool))
        }
        Operator::Gt | Operator::Lt | Operator::Geq | Operator::Leq => {
            let t = operands(2)?;
            let comparable = (t[0].numeric().is_some() && t[1].numeric().is_some())
                || (t[0] == Ty::Val(FieldType::String) && t[1] == Ty::Val(FieldType::String));
            if comparable {
                Ok(Ty::Val(FieldType::Bool))
            } else {
                Err(format!("'{op}' compares two numbers or two strings, got {} and {}", t[0].name(), t[1].name()))
            }
        }
        Operator::And | Operator::Or | Operator::Not => {
            let t = operands(if *op == Operator::Not { 1 } else { 2 })?;
            match t.iter().find(|t| **t != Ty::Val(FieldType::Bool)) {
                None => Ok(Ty::Val(FieldType::Bool)),
                Some(bad) => Err(format!("'{op}' needs booleans, got {}", bad.name())),
            }
        }
        Operator::Tuple => {
            for c in children {
                infer(c, input, functions)?;
            }
            Ok(Ty::Tuple)
        }
        Operator::Chain => Err("';' sequences are not supported".to_owned()),
        Operator::FunctionIdentifier { identifier } => {
            let [arg] = children else { return Err(format!("function '{identifier}' is missing its arguments")) };
            let args =
                function_args(arg).into_iter().map(|a| infer(a, input, functions)).collect::<Result<Vec<_>, _>>()?;
            if identifier.starts_with(WASM_FUNCTION_PREFIX) {
                return wasm_function(identifier, &args, functions);
            }
            builtin(identifier, &args)
        }
        Operator::VariableIdentifierWrite { .. }
        | Operator::Assign
        | Operator::AddAssign
        | Operator::SubAssign
        | Operator::MulAssign
        | Operator::DivAssign
        | Operator::ModAssign
        | Operator::ExpAssign
        | Operator::AndAssign
        | Operator::OrAssign => Err("assignments are not supported".to_owned()),
    }
}

/// Whether an argument of type `given` may be passed where `declared` is expected: the
/// same type, an integer for a float (converted), or a null.
pub fn wasm_argument_fits(declared: FieldType, given: FieldType) -> bool {
    given == declared || given == FieldType::Null || (declared == FieldType::Float && given == FieldType::Int)
}

/// The result type of a call of the declared WebAssembly scalar function `name`.
fn wasm_function(name: &str, args: &[Ty], functions: &ScalarFunctions) -> Result<Ty, String> {
    let Some(f) = functions.get(name) else {
        let declared = functions.keys().map(String::as_str).collect::<Vec<_>>();
        return Err(if declared.is_empty() {
            format!("unknown function '{name}': the job declares no WebAssembly functions (top-level 'functions')")
        } else {
            format!("unknown function '{name}' (declared: {})", declared.join(", "))
        });
    };
    if args.len() != f.args.len() {
        return Err(format!("function '{name}' takes {} argument(s), got {}", f.args.len(), args.len()));
    }
    for (i, (declared, given)) in f.args.iter().zip(args).enumerate() {
        let fits = match given {
            Ty::Val(given) => wasm_argument_fits(*declared, *given),
            Ty::Tuple => false,
        };
        if !fits {
            return Err(format!("function '{name}' needs {declared} as argument {}, got {}", i + 1, given.name()));
        }
    }
    Ok(Ty::Val(f.returns))
}

/// `-`, `*`, `/`, `%` (and `+` of numbers): integer if both are, else float.
fn arithmetic(op: &str, a: Ty, b: Ty) -> Result<Ty, String> {
    match (a.numeric(), b.numeric()) {
        (Some(FieldType::Int), Some(FieldType::Int)) => Ok(Ty::Val(FieldType::Int)),
        (Some(_), Some(_)) => Ok(Ty::Val(FieldType::Float)),
        _ => Err(format!("'{op}' needs numbers, got {} and {}", a.name(), b.name())),
    }
}

/// The result type of builtin `name` applied to arguments of types `args`.
fn builtin(name: &str, args: &[Ty]) -> Result<Ty, String> {
    let arity = |allowed: &[usize]| -> Result<(), String> {
        if allowed.contains(&args.len()) {
            return Ok(());
        }
        let expected = allowed.iter().map(usize::to_string).collect::<Vec<_>>().join(" or ");
        Err(format!("function '{name}' takes {expected} argument(s), got {}", args.len()))
    };
    let want = |i: usize, ok: bool, what: &str| -> Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err(format!("function '{name}' needs {what} as argument {}, got {}", i + 1, args[i].name()))
        }
    };
    let numbers = |n: usize| -> Result<(), String> {
        arity(&[n])?;
        (0..n).try_for_each(|i| want(i, args[i].numeric().is_some(), "a number"))
    };
    let float = Ty::Val(FieldType::Float);
    match name {
        "floor" | "round" | "ceil" | "math::sqrt" | "math::cbrt" | "math::exp" | "math::exp2" | "math::ln"
        | "math::log2" | "math::log10" | "math::sin" | "math::cos" | "math::tan" | "math::asin" | "math::acos"
        | "math::atan" | "math::sinh" | "math::cosh" | "math::tanh" | "math::asinh" | "math::acosh" | "math::atanh" => {
            numbers(1).map(|_| float)
        }
        "math::log" | "math::pow" | "math::atan2" | "math::hypot" => numbers(2).map(|_| float),
        "math::is_nan" | "math::is_finite" | "math::is_infinite" | "math::is_normal" => {
            numbers(1).map(|_| Ty::Val(FieldType::Bool))
        }
        "math::abs" => numbers(1).map(|_| args[0]),
        "min" | "max" => {
            if args.len() < 2 {
                return Err(format!("function '{name}' takes 2 or more arguments, got {}", args.len()));
            }
            (0..args.len()).try_for_each(|i| want(i, args[i].numeric().is_some(), "a number"))?;
            if args.iter().all(|a| *a == args[0]) {
                Ok(args[0])
            } else {
                Err(format!(
                    "function '{name}' mixes integer and float arguments, so its result type is unknown \
                     (make them all float, e.g. x * 1.0)"
                ))
            }
        }
        "if" => {
            arity(&[3])?;
            want(0, args[0] == Ty::Val(FieldType::Bool), "a boolean")?;
            if args[1] != args[2] || args[1] == Ty::Tuple {
                return Err(format!(
                    "the branches of 'if' have different types: {} and {}",
                    args[1].name(),
                    args[2].name()
                ));
            }
            Ok(args[1])
        }
        "len" => {
            arity(&[1])?;
            want(0, args[0] == Ty::Val(FieldType::String), "a string")?;
            Ok(Ty::Val(FieldType::Int))
        }
        "typeof" | "str::from" => arity(&[1]).map(|_| Ty::Val(FieldType::String)),
        "str::to_lowercase" | "str::to_uppercase" | "str::trim" => {
            arity(&[1])?;
            want(0, args[0] == Ty::Val(FieldType::String), "a string")?;
            Ok(Ty::Val(FieldType::String))
        }
        "str::substring" => {
            arity(&[2, 3])?;
            want(0, args[0] == Ty::Val(FieldType::String), "a string")?;
            (1..args.len()).try_for_each(|i| want(i, args[i] == Ty::Val(FieldType::Int), "an integer"))?;
            Ok(Ty::Val(FieldType::String))
        }
        "contains" | "contains_any" => {
            arity(&[2])?;
            want(0, args[0] == Ty::Tuple, "a tuple such as (\"a\", \"b\")")?;
            if name == "contains" {
                want(1, args[1] != Ty::Tuple, "a single value")?;
            } else {
                want(1, args[1] == Ty::Tuple, "a tuple")?;
            }
            Ok(Ty::Val(FieldType::Bool))
        }
        "bitand" | "bitor" | "bitxor" | "shl" | "shr" | "bitnot" => {
            let n = if name == "bitnot" { 1 } else { 2 };
            arity(&[n])?;
            (0..n).try_for_each(|i| want(i, args[i] == Ty::Val(FieldType::Int), "an integer"))?;
            Ok(Ty::Val(FieldType::Int))
        }
        _ => Err(format!("unknown function '{name}' (known: {})", BUILTIN_FUNCTIONS.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::schema::Field;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("n", FieldType::Int),
            Field::new("x", FieldType::Float),
            Field::new("s", FieldType::String),
            Field::new("b", FieldType::Bool),
            Field::nullable("maybe", FieldType::Int),
            Field::new("raw", FieldType::Bytes),
        ])
    }

    fn ty(source: &str) -> FieldType {
        match CompiledExpr::compile(source, &schema()) {
            Ok(e) => e.ty,
            Err(p) => panic!("'{source}' did not compile: {p:?}"),
        }
    }

    fn err(source: &str) -> String {
        match CompiledExpr::compile(source, &schema()) {
            Ok(e) => panic!("'{source}' compiled to {:?}", e.ty),
            Err(p) => p.join("\n"),
        }
    }

    #[test]
    fn infers_arithmetic_types() {
        assert_eq!(ty("n * 2"), FieldType::Int);
        assert_eq!(ty("n / 2 + n % 3 - -n"), FieldType::Int);
        assert_eq!(ty("n * 2.5"), FieldType::Float);
        assert_eq!(ty("x + n"), FieldType::Float);
        assert_eq!(ty("n ^ 2"), FieldType::Float);
        assert_eq!(ty("(n + 1) * (x - 1)"), FieldType::Float);
    }

    #[test]
    fn infers_comparison_logic_and_string_types() {
        assert_eq!(ty("n % 3 != 0"), FieldType::Bool);
        assert_eq!(ty("n > 1 && (x <= 2.0 || !b)"), FieldType::Bool);
        assert_eq!(ty("s == \"a\""), FieldType::Bool);
        assert_eq!(ty("s < \"m\""), FieldType::Bool);
        assert_eq!(ty("\"k\" + str::from(n % 100000)"), FieldType::String);
        assert_eq!(ty("s + s"), FieldType::String);
    }

    #[test]
    fn infers_builtin_types() {
        assert_eq!(ty("len(s)"), FieldType::Int);
        assert_eq!(ty("floor(x)"), FieldType::Float);
        assert_eq!(ty("math::abs(n)"), FieldType::Int);
        assert_eq!(ty("math::sqrt(n)"), FieldType::Float);
        assert_eq!(ty("min(n, 3, maybe)"), FieldType::Int);
        assert_eq!(ty("max(x, 1.5)"), FieldType::Float);
        assert_eq!(ty("if(b, \"yes\", \"no\")"), FieldType::String);
        assert_eq!(ty("str::to_uppercase(str::trim(s))"), FieldType::String);
        assert_eq!(ty("str::substring(s, 0, 2)"), FieldType::String);
        assert_eq!(ty("contains((\"a\", \"b\"), s)"), FieldType::Bool);
        assert_eq!(ty("bitand(n, 255)"), FieldType::Int);
        assert_eq!(ty("typeof(x)"), FieldType::String);
    }

    #[test]
    fn records_referenced_fields_once_in_order() {
        let e = CompiledExpr::compile("x + n * n + x", &schema()).unwrap();
        assert_eq!(e.fields, vec!["x", "n"]);
        assert!(!e.nullable(&schema()));
        assert!(CompiledExpr::compile("maybe + 1", &schema()).unwrap().nullable(&schema()));
    }

    #[test]
    fn reports_every_unknown_field() {
        let message = err("nn + y * n");
        assert!(
            message.contains("unknown field 'nn' in expression 'nn + y * n' (input fields: n, x, s, b, maybe, raw)")
        );
        assert!(message.contains("unknown field 'y'"));
    }

    #[test]
    fn reports_type_errors() {
        assert!(err("\"k\" + n").contains("'+' needs two numbers or two strings, got string and integer"));
        assert!(err("b * 2").contains("'*' needs numbers, got boolean and integer"));
        assert!(err("s > 1").contains("compares two numbers or two strings"));
        assert!(err("n && b").contains("'&&' needs booleans, got integer"));
        assert!(err("min(n, x)").contains("mixes integer and float"));
        assert!(err("if(n, 1, 2)").contains("needs a boolean as argument 1"));
        assert!(err("if(b, 1, \"a\")").contains("different types"));
        assert!(err("len(n)").contains("function 'len' needs a string"));
        assert!(err("floor(x, 1)").contains("takes 1 argument(s), got 2"));
        assert!(err("raw == raw").contains("field 'raw' has type bytes"));
        assert!(err("frobnicate(n)").contains("unknown function 'frobnicate' (known: if, min"));
    }

    #[test]
    fn rejects_syntax_errors_assignments_and_sequences() {
        assert!(err("n +").contains("operator '+' is missing an operand"));
        assert!(err("(n").contains("invalid expression '(n'"));
        assert!(err("n = 3").contains("assignments are not supported"));
        assert!(err("n; n").contains("sequences are not supported"));
        assert!(err("(1, 2)").contains("a tuple is not a field value"));
        assert_eq!(err("  "), "empty expression");
    }

    #[test]
    fn evaluates_and_survives_serialization() {
        let e = CompiledExpr::compile("n * 2 + 1", &schema()).unwrap();
        let mut ctx = evalexpr::HashMapContext::new();
        evalexpr::ContextWithMutableVariables::set_value(&mut ctx, "n".into(), Value::Int(20)).unwrap();
        assert_eq!(e.eval_with_context(&ctx).unwrap(), Value::Int(41));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json, serde_json::json!({"source": "n * 2 + 1", "ty": "integer", "fields": ["n"], "wasm": []}));
        let back: CompiledExpr = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    /// The worst expressions within the limits compile (or are type errors), and those beyond
    /// are refused, on a 256 KiB stack, an eighth of a worker thread's. Before the limits a
    /// chain of 2,000 additions or 4,095 minus signs overflowed a 2 MiB stack.
    #[test]
    fn hostile_expressions_are_bounded() {
        let n = MAX_EXPRESSION_OPERATORS;
        let within = [
            format!("{}n{}", "(".repeat(n), ")".repeat(n)),
            "n+".repeat(n) + "n",
            "-".repeat(n) + "n",
            "!".repeat(n) + "b",
            "n*(".repeat(n / 2) + "n" + &")".repeat(n / 2),
        ];
        let beyond = [
            "n+".repeat(2000) + "n",
            "-".repeat(MAX_EXPRESSION_BYTES - 1) + "n",
            format!("n + {}", "1".repeat(MAX_EXPRESSION_BYTES)),
        ];
        let (within, beyond) = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let schema = schema();
                let within: Vec<bool> = within.iter().map(|e| CompiledExpr::compile(e, &schema).is_ok()).collect();
                let beyond: Vec<String> =
                    beyond.iter().map(|e| CompiledExpr::compile(e, &schema).unwrap_err().join("; ")).collect();
                (within, beyond)
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert_eq!(within, [true; 5]);
        assert!(beyond[0].contains("at most 256 are allowed"), "{}", beyond[0]);
        assert!(beyond[1].contains("at most 256 are allowed"), "{}", beyond[1]);
        assert!(beyond[2].contains("at most 4096 bytes"), "{}", beyond[2]);
    }

    #[test]
    fn parses_simple_calls() {
        assert_eq!(parse_simple_call("count()"), Some(("count".to_owned(), vec![])));
        assert_eq!(parse_simple_call("sum(x)"), Some(("sum".to_owned(), vec!["x".to_owned()])));
        assert_eq!(parse_simple_call("sum(x + 1)"), None);
        assert_eq!(parse_simple_call("count"), None);
        assert_eq!(parse_simple_call("sum(x"), None);
    }
}
