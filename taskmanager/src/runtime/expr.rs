//! Vectorized evaluation of `map` and `filter` expressions over record batches.
//!
//! [`VectorExpr::compile`] walks the `evalexpr` tree of a [`CompiledExpr`] once and turns
//! it into a flat list of *steps*, each computing one whole column (an Arrow array) from
//! earlier steps; [`VectorExpr::eval`] runs the steps once per batch. Per batch there is
//! one pass per step with an Arrow compute kernel (arithmetic, comparisons, boolean logic,
//! `if` via `zip`) or, for the builtins Arrow has no kernel for, one tight loop over the
//! column; nothing walks the tree per record.
//!
//! While compiling:
//! - steps that only read constants are evaluated once (constant folding), so literals
//!   and constant sub-expressions are Arrow scalars that kernels broadcast;
//! - identical sub-expressions share one step (`str::from(n)` written twice is computed
//!   once per batch), and steps the result does not need are dropped;
//! - integers meeting floats are cast to float once, as `evalexpr` does.
//!
//! Semantics follow `evalexpr` 11 (the validator's reference, `docs/jobs.md`):
//! integer `+ - * /` and unary `-` are checked: overflow and integer division (or `%`) by
//! zero fail the batch with a [`TaskError`] naming the expression, not retryable: the same
//! input fails the same way on every attempt, so the job fails with this cause instead of
//! restarting until its strategy gives up; float arithmetic follows IEEE 754 (`x / 0.0` is
//! infinite). `/` on integers truncates, `%` takes the sign of the dividend. `==` between
//! different types is false (`1 == 1.0`). Where the two differ, the deviations are:
//! `i64::MIN % -1` is 0 (evalexpr fails), float `==`/`<` use Arrow's total order (NaN
//! equals NaN, `-0.0 < 0.0`), `math::abs(i64::MIN)`, shifts by 64 or more, and
//! `str::substring` off a character boundary fail the batch instead of panicking.
//!
//! WebAssembly scalar functions (`wasm::<module>::<export>(...)`, declared in the job file)
//! are steps too: per batch, the argument columns go into the module's instance as one
//! batch and its single result column comes back (`docs/wasm.md`). They are never folded
//! into constants (a module may count or log), and a call fails the batch, not retryable,
//! naming the module and the export.
//!
//! Nulls (only nullable input fields carry them) propagate: any null operand makes the
//! result null, except that `&&`/`||` follow SQL's three-valued logic (`false && null` is
//! false). `filter` drops records whose predicate is null.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    new_null_array, Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, Datum, Float64Array, Int64Array,
    NullArray, PrimitiveArray, Scalar, StringArray, StringBuilder, UInt32Array,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::kernels::{boolean, cmp, numeric, zip::zip};
use arrow::compute::{cast, take, try_binary};
use arrow::datatypes::SchemaRef;
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema as ArrowSchema};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use evalexpr::{Node, Operator as EOp, Value};
use flint_common::job::expr::{wasm_argument_fits, WASM_FUNCTION_PREFIX};
use flint_common::job::{CompiledExpr, FieldType, WasmFunction};
use flint_wasm::Guest;

use super::operator::TaskError;
use super::schema::{arrow_type, flint_type};
use super::wasm::{scalar_input, scalar_output, ScalarGuests};

/// An expression compiled for batch-at-a-time evaluation.
#[derive(Debug, Clone)]
pub struct VectorExpr {
    source: String,
    steps: Vec<Step>,
    root: Slot,
    /// The WebAssembly functions its `Op::Wasm` steps call.
    calls: Vec<ScalarCall>,
}

/// One WebAssembly scalar function an expression calls, bound to its module's instance.
#[derive(Clone)]
struct ScalarCall {
    function: WasmFunction,
    guest: Arc<Mutex<Guest>>,
    input: SchemaRef,
    output: SchemaRef,
}

impl std::fmt::Debug for ScalarCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.function.name)
    }
}

impl VectorExpr {
    /// Compiles `expr` against the schema of the batches it will be evaluated on. An
    /// expression calling WebAssembly functions needs [`VectorExpr::compile_with`].
    pub fn compile(expr: &CompiledExpr, input: &ArrowSchema) -> Result<Self, TaskError> {
        Self::compile_with(expr, input, None)
    }

    /// [`VectorExpr::compile`], instantiating the modules of the WebAssembly functions the
    /// expression calls in `guests` (shared by the operator's expressions).
    pub fn compile_with(
        expr: &CompiledExpr,
        input: &ArrowSchema,
        guests: Option<&mut ScalarGuests>,
    ) -> Result<Self, TaskError> {
        let fail = |detail: String| TaskError::fatal(format!("expression '{}': {detail}", expr.source));
        let mut builder = Builder {
            input,
            steps: Vec::new(),
            keys: HashMap::new(),
            functions: &expr.wasm,
            guests,
            calls: Vec::new(),
            guest_error: None,
        };
        let built = builder.build(&expr.node);
        if let Some(e) = builder.guest_error.take() {
            return Err(e);
        }
        let root = built.map_err(fail)?;
        let calls = std::mem::take(&mut builder.calls);
        let (steps, root) = prune(builder.steps, root);
        let compiled = Self { source: expr.source.clone(), steps, root, calls };
        if compiled.ty() != expr.ty {
            return Err(fail(format!("evaluates to {} but was typed {}", compiled.ty(), expr.ty)));
        }
        Ok(compiled)
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The type of the result.
    pub fn ty(&self) -> FieldType {
        self.steps[self.root].ty
    }

    /// The Arrow type of the result.
    pub fn data_type(&self) -> DataType {
        arrow_type(self.ty())
    }

    /// The value when the expression reads no field (a one-element array), else `None`.
    pub fn constant(&self) -> Option<&ArrayRef> {
        match &self.steps[self.root].op {
            Op::Const(v) => Some(v.array()),
            _ => None,
        }
    }

    /// Evaluates the expression over every row of `batch`: an array of `batch.num_rows()`
    /// values of [`Self::data_type`].
    pub fn eval(&self, batch: &RecordBatch) -> Result<ArrayRef, TaskError> {
        let rows = batch.num_rows();
        let value = self.eval_value(batch)?;
        match value {
            Val::Array(a) => Ok(a),
            Val::Scalar(a, _) => broadcast(a, rows).map_err(|e| self.error(e.to_string())),
        }
    }

    /// Evaluates a boolean expression into a filter mask. A constant result comes back as
    /// `Err(value)` without building a mask (`None` for a null constant).
    pub(crate) fn eval_mask(&self, batch: &RecordBatch) -> Result<Result<BooleanArray, Option<bool>>, TaskError> {
        match self.eval_value(batch)? {
            Val::Array(a) => Ok(Ok(a.as_boolean().clone())),
            Val::Scalar(a, _) => {
                let a = a.as_boolean();
                Ok(Err(a.is_valid(0).then(|| a.value(0))))
            }
        }
    }

    fn eval_value(&self, batch: &RecordBatch) -> Result<Val, TaskError> {
        let rows = batch.num_rows();
        let mut vals: Vec<Val> = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let v = match &step.op {
                Op::Wasm { call, args } => self.call_wasm(&self.calls[*call], args, &vals, rows)?,
                op => eval_op(op, &vals, Some(batch), rows).map_err(|e| self.error(e))?,
            };
            vals.push(v);
        }
        Ok(vals.swap_remove(self.root))
    }

    /// Calls a WebAssembly scalar function with the argument columns of one batch.
    fn call_wasm(&self, call: &ScalarCall, args: &[Slot], vals: &[Val], rows: usize) -> Result<Val, TaskError> {
        let mut columns = Vec::with_capacity(args.len());
        for (slot, field) in args.iter().zip(call.input.fields()) {
            let column = full(&vals[*slot], rows).map_err(|e| self.error(e))?;
            // A null literal is an argument of the declared type with every value null.
            let column =
                if column.data_type() == field.data_type() { column } else { new_null_array(field.data_type(), rows) };
            columns.push(column);
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&call.input),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| self.error(e.to_string()))?;
        let name = &call.function.name;
        let out = call
            .guest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .call_function(&call.function.export, &batch, &call.output)
            .map_err(|e| TaskError {
                message: format!("expression '{}': {name}: {e}", self.source),
                retryable: e.is_retryable(),
            })?;
        let got = out.as_ref().map_or(0, RecordBatch::num_rows);
        match out {
            Some(out) if got == rows => Ok(Val::Array(Arc::clone(out.column(0)))),
            _ => Err(self.error(format!("{name} returned {got} values for {rows} rows (it must return one per row)"))),
        }
    }

    fn error(&self, detail: String) -> TaskError {
        TaskError::fatal(format!("expression '{}' failed: {detail}", self.source))
    }
}

/// Index of a step (its result) in the step list.
type Slot = usize;

/// An intermediate value: a column of the batch's length, or one value for every row
/// (kept both as the one-element array and as the Arrow scalar kernels take).
#[derive(Debug, Clone)]
enum Val {
    Array(ArrayRef),
    Scalar(ArrayRef, Scalar<ArrayRef>),
}

impl Val {
    fn array(&self) -> &ArrayRef {
        match self {
            Val::Array(a) | Val::Scalar(a, _) => a,
        }
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Val::Scalar(..))
    }

    fn datum(&self) -> &dyn Datum {
        match self {
            Val::Array(a) => a,
            Val::Scalar(_, s) => s,
        }
    }

    /// Wraps a kernel result: a scalar when every input was one (constant folding).
    fn wrap(all_scalar: bool, array: ArrayRef) -> Val {
        if all_scalar {
            Val::scalar(array)
        } else {
            Val::Array(array)
        }
    }

    fn scalar(array: ArrayRef) -> Val {
        Val::Scalar(array.clone(), Scalar::new(array))
    }
}

/// `value` repeated `rows` times.
fn broadcast(value: ArrayRef, rows: usize) -> Result<ArrayRef, ArrowError> {
    if value.data_type() == &DataType::Null {
        return Ok(new_null_array(&DataType::Null, rows));
    }
    take(&value, &UInt32Array::from(vec![0u32; rows]), None)
}

#[derive(Debug, Clone, Copy)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy)]
enum CmpOp {
    Eq,
    Neq,
    Lt,
    Leq,
    Gt,
    Geq,
}

#[derive(Debug, Clone, Copy)]
enum Bit {
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

/// What one step computes; operands are earlier slots.
#[derive(Debug, Clone)]
enum Op {
    Column(usize),
    Const(Val),
    ToFloat(Slot),
    Arith(Arith, Slot, Slot),
    Neg(Slot),
    Cmp(CmpOp, Slot, Slot),
    And(Slot, Slot),
    Or(Slot, Slot),
    Not(Slot),
    Concat(Slot, Slot),
    If(Slot, Slot, Slot),
    MinMax {
        max: bool,
        a: Slot,
        b: Slot,
    },
    Float1(fn(f64) -> f64, Slot),
    Float2(fn(f64, f64) -> f64, Slot, Slot),
    FloatIs(fn(f64) -> bool, Slot),
    AbsInt(Slot),
    Len(Slot),
    ToStr(Slot),
    Case {
        upper: bool,
        s: Slot,
    },
    Trim(Slot),
    Substring(Slot, Slot, Option<Slot>),
    Bit(Bit, Slot, Slot),
    BitNot(Slot),
    /// A WebAssembly scalar function (`VectorExpr::calls[call]`) of the argument columns.
    Wasm {
        call: usize,
        args: Vec<Slot>,
    },
}

impl Op {
    fn inputs(&self) -> Vec<Slot> {
        match self {
            Op::Wasm { args, .. } => args.clone(),
            Op::Column(_) | Op::Const(_) => vec![],
            Op::ToFloat(a)
            | Op::Neg(a)
            | Op::Not(a)
            | Op::Float1(_, a)
            | Op::FloatIs(_, a)
            | Op::AbsInt(a)
            | Op::Len(a)
            | Op::ToStr(a)
            | Op::Case { s: a, .. }
            | Op::Trim(a)
            | Op::BitNot(a) => vec![*a],
            Op::Arith(_, a, b)
            | Op::Cmp(_, a, b)
            | Op::And(a, b)
            | Op::Or(a, b)
            | Op::Concat(a, b)
            | Op::MinMax { a, b, .. }
            | Op::Float2(_, a, b)
            | Op::Bit(_, a, b) => vec![*a, *b],
            Op::If(a, b, c) => vec![*a, *b, *c],
            Op::Substring(a, b, c) => [Some(*a), Some(*b), *c].into_iter().flatten().collect(),
        }
    }

    fn remap(&mut self, map: &HashMap<Slot, Slot>) {
        let m = |s: &mut Slot| *s = map[s];
        match self {
            Op::Wasm { args, .. } => args.iter_mut().for_each(m),
            Op::Column(_) | Op::Const(_) => {}
            Op::ToFloat(a)
            | Op::Neg(a)
            | Op::Not(a)
            | Op::Float1(_, a)
            | Op::FloatIs(_, a)
            | Op::AbsInt(a)
            | Op::Len(a)
            | Op::ToStr(a)
            | Op::Case { s: a, .. }
            | Op::Trim(a)
            | Op::BitNot(a) => m(a),
            Op::Arith(_, a, b)
            | Op::Cmp(_, a, b)
            | Op::And(a, b)
            | Op::Or(a, b)
            | Op::Concat(a, b)
            | Op::MinMax { a, b, .. }
            | Op::Float2(_, a, b)
            | Op::Bit(_, a, b) => {
                m(a);
                m(b);
            }
            Op::If(a, b, c) => {
                m(a);
                m(b);
                m(c);
            }
            Op::Substring(a, b, c) => {
                m(a);
                m(b);
                if let Some(c) = c {
                    m(c);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    ty: FieldType,
}

/// Keeps the steps `root` depends on, renumbered in order.
fn prune(steps: Vec<Step>, root: Slot) -> (Vec<Step>, Slot) {
    let mut live = HashSet::from([root]);
    for (slot, step) in steps.iter().enumerate().rev() {
        if live.contains(&slot) {
            live.extend(step.op.inputs());
        }
    }
    let mut map = HashMap::new();
    let mut kept = Vec::with_capacity(live.len());
    for (slot, mut step) in steps.into_iter().enumerate() {
        if live.contains(&slot) {
            step.op.remap(&map);
            map.insert(slot, kept.len());
            kept.push(step);
        }
    }
    let root = map[&root];
    (kept, root)
}

/// Turns the `evalexpr` tree into steps.
struct Builder<'a> {
    input: &'a ArrowSchema,
    steps: Vec<Step>,
    /// Step description → slot, to share identical sub-expressions.
    keys: HashMap<String, Slot>,
    /// The WebAssembly functions the expression was typed with.
    functions: &'a [WasmFunction],
    guests: Option<&'a mut ScalarGuests>,
    calls: Vec<ScalarCall>,
    /// A module that failed to load or instantiate (reported as it is, not as a type error).
    guest_error: Option<TaskError>,
}

type Built = Result<Slot, String>;

impl Builder<'_> {
    fn ty(&self, slot: Slot) -> FieldType {
        self.steps[slot].ty
    }

    fn const_value(&self, slot: Slot) -> Option<&ArrayRef> {
        match &self.steps[slot].op {
            Op::Const(v) => Some(v.array()),
            _ => None,
        }
    }

    /// Adds a step (folded to a constant when all its operands are constants), or
    /// returns the slot of an identical one.
    fn push(&mut self, op: Op, ty: FieldType) -> Built {
        let inputs = op.inputs();
        let foldable = !matches!(op, Op::Wasm { .. });
        let op = if foldable && !inputs.is_empty() && inputs.iter().all(|s| self.const_value(*s).is_some()) {
            let vals: Vec<Val> = self
                .steps
                .iter()
                .map(|s| match &s.op {
                    Op::Const(v) => v.clone(),
                    _ => Val::scalar(Arc::new(NullArray::new(1))),
                })
                .collect();
            Op::Const(eval_op(&op, &vals, None, 1)?)
        } else {
            op
        };
        let key = format!("{ty:?} {op:?}");
        if let Some(slot) = self.keys.get(&key) {
            return Ok(*slot);
        }
        let slot = self.steps.len();
        self.steps.push(Step { op, ty });
        self.keys.insert(key, slot);
        Ok(slot)
    }

    fn constant(&mut self, value: &Value) -> Built {
        let (array, ty): (ArrayRef, FieldType) = match value {
            Value::Int(i) => (Arc::new(Int64Array::from(vec![*i])), FieldType::Int),
            Value::Float(f) => (Arc::new(Float64Array::from(vec![*f])), FieldType::Float),
            Value::String(s) => (Arc::new(StringArray::from(vec![s.as_str()])), FieldType::String),
            Value::Boolean(b) => (Arc::new(BooleanArray::from(vec![*b])), FieldType::Bool),
            Value::Empty => (Arc::new(NullArray::new(1)), FieldType::Null),
            Value::Tuple(_) => return Err("a tuple is not a field value".to_owned()),
        };
        self.push(Op::Const(Val::scalar(array)), ty)
    }

    fn bool_const(&mut self, b: bool) -> Built {
        self.constant(&Value::Boolean(b))
    }

    fn build(&mut self, node: &Node) -> Built {
        let children = node.children();
        let op = node.operator();
        let operands = |b: &mut Self, n: usize| -> Result<Vec<Slot>, String> {
            if children.len() != n {
                return Err(format!("operator '{}' needs {n} operand(s)", op.to_string().trim()));
            }
            children.iter().map(|c| b.build(c)).collect()
        };
        match op {
            EOp::RootNode => match children {
                [] => self.constant(&Value::Empty),
                [only] => self.build(only),
                _ => Err("malformed expression".to_owned()),
            },
            EOp::Const { value } => self.constant(value),
            EOp::VariableIdentifierRead { identifier } => {
                let (index, field) =
                    self.input.column_with_name(identifier).ok_or_else(|| format!("unknown field '{identifier}'"))?;
                let ty = flint_type(field.data_type())
                    .filter(|t| *t != FieldType::Bytes)
                    .ok_or_else(|| format!("field '{identifier}' of type {} cannot be used", field.data_type()))?;
                self.push(Op::Column(index), ty)
            }
            EOp::Add => {
                let s = operands(self, 2)?;
                if self.ty(s[0]) == FieldType::String && self.ty(s[1]) == FieldType::String {
                    self.push(Op::Concat(s[0], s[1]), FieldType::String)
                } else {
                    self.arith(Arith::Add, s[0], s[1])
                }
            }
            EOp::Sub | EOp::Mul | EOp::Div | EOp::Mod => {
                let s = operands(self, 2)?;
                let a = match op {
                    EOp::Sub => Arith::Sub,
                    EOp::Mul => Arith::Mul,
                    EOp::Div => Arith::Div,
                    _ => Arith::Rem,
                };
                self.arith(a, s[0], s[1])
            }
            EOp::Exp => {
                let s = operands(self, 2)?;
                self.float2(f64::powf, s[0], s[1])
            }
            EOp::Neg => {
                let s = operands(self, 1)?;
                match self.ty(s[0]) {
                    ty @ (FieldType::Int | FieldType::Float) => self.push(Op::Neg(s[0]), ty),
                    other => Err(format!("'-' needs a number, got {other}")),
                }
            }
            EOp::Eq | EOp::Neq => {
                let s = operands(self, 2)?;
                self.equal(s[0], s[1], *op == EOp::Neq)
            }
            EOp::Lt | EOp::Leq | EOp::Gt | EOp::Geq => {
                let s = operands(self, 2)?;
                let c = match op {
                    EOp::Lt => CmpOp::Lt,
                    EOp::Leq => CmpOp::Leq,
                    EOp::Gt => CmpOp::Gt,
                    _ => CmpOp::Geq,
                };
                let (a, b) = match (self.ty(s[0]), self.ty(s[1])) {
                    (FieldType::String, FieldType::String) => (s[0], s[1]),
                    _ => {
                        let (a, b, _) = self.numeric_pair(&op.to_string(), s[0], s[1])?;
                        (a, b)
                    }
                };
                self.push(Op::Cmp(c, a, b), FieldType::Bool)
            }
            EOp::And | EOp::Or | EOp::Not => {
                let s = operands(self, if *op == EOp::Not { 1 } else { 2 })?;
                if let Some(bad) = s.iter().find(|s| self.ty(**s) != FieldType::Bool) {
                    return Err(format!("'{op}' needs booleans, got {}", self.ty(*bad)));
                }
                let step = match op {
                    EOp::And => Op::And(s[0], s[1]),
                    EOp::Or => Op::Or(s[0], s[1]),
                    _ => Op::Not(s[0]),
                };
                self.push(step, FieldType::Bool)
            }
            EOp::FunctionIdentifier { identifier } => {
                let [arg] = children else { return Err(format!("function '{identifier}' has no arguments")) };
                self.function(identifier, &function_args(arg))
            }
            EOp::Tuple => Err("a tuple is only allowed as an argument of contains and contains_any".to_owned()),
            other => Err(format!("'{}' is not supported", other.to_string().trim())),
        }
    }

    fn as_float(&mut self, slot: Slot) -> Built {
        match self.ty(slot) {
            FieldType::Float => Ok(slot),
            FieldType::Int => self.push(Op::ToFloat(slot), FieldType::Float),
            other => Err(format!("expected a number, got {other}")),
        }
    }

    /// Both operands as the same numeric type: integers if both are, else floats.
    fn numeric_pair(&mut self, what: &str, a: Slot, b: Slot) -> Result<(Slot, Slot, FieldType), String> {
        match (self.ty(a), self.ty(b)) {
            (FieldType::Int, FieldType::Int) => Ok((a, b, FieldType::Int)),
            (FieldType::Int | FieldType::Float, FieldType::Int | FieldType::Float) => {
                Ok((self.as_float(a)?, self.as_float(b)?, FieldType::Float))
            }
            (x, y) => Err(format!("'{}' needs numbers, got {x} and {y}", what.trim())),
        }
    }

    fn arith(&mut self, op: Arith, a: Slot, b: Slot) -> Built {
        let (a, b, ty) = self.numeric_pair(&format!("{op:?}"), a, b)?;
        self.push(Op::Arith(op, a, b), ty)
    }

    fn float1(&mut self, f: fn(f64) -> f64, a: Slot) -> Built {
        let a = self.as_float(a)?;
        self.push(Op::Float1(f, a), FieldType::Float)
    }

    fn float2(&mut self, f: fn(f64, f64) -> f64, a: Slot, b: Slot) -> Built {
        let (a, b) = (self.as_float(a)?, self.as_float(b)?);
        self.push(Op::Float2(f, a, b), FieldType::Float)
    }

    /// `a == b` (or `!=`): values of different types are never equal, as in `evalexpr`.
    fn equal(&mut self, a: Slot, b: Slot, negate: bool) -> Built {
        match (self.ty(a), self.ty(b)) {
            (FieldType::Null, FieldType::Null) => self.bool_const(!negate),
            (x, y) if x != y => self.bool_const(negate),
            _ => self.push(Op::Cmp(if negate { CmpOp::Neq } else { CmpOp::Eq }, a, b), FieldType::Bool),
        }
    }

    /// `(x1 == y) || (x2 == y) || ...` over the elements of a tuple.
    fn any_equal(&mut self, items: &[Slot], value: Slot) -> Built {
        let mut result: Option<Slot> = None;
        for item in items {
            let eq = self.equal(*item, value, false)?;
            result = Some(match result {
                None => eq,
                Some(acc) => self.push(Op::Or(acc, eq), FieldType::Bool)?,
            });
        }
        match result {
            Some(r) => Ok(r),
            None => self.bool_const(false),
        }
    }

    /// The elements of a tuple argument such as `("a", "b")`.
    fn tuple(&mut self, node: &Node) -> Result<Vec<Slot>, String> {
        let mut node = node;
        while let (EOp::RootNode, [only]) = (node.operator(), node.children()) {
            node = only;
        }
        if *node.operator() != EOp::Tuple {
            return Err("expected a tuple such as (\"a\", \"b\")".to_owned());
        }
        node.children().iter().map(|c| self.build(c)).collect()
    }

    fn function(&mut self, name: &str, args: &[&Node]) -> Built {
        let arity = |n: &[usize]| -> Result<(), String> {
            if n.contains(&args.len()) {
                Ok(())
            } else {
                Err(format!("function '{name}' takes {n:?} argument(s), got {}", args.len()))
            }
        };
        if name == "contains" || name == "contains_any" {
            arity(&[2])?;
            let items = self.tuple(args[0])?;
            if name == "contains" {
                let value = self.build(args[1])?;
                return self.any_equal(&items, value);
            }
            let values = self.tuple(args[1])?;
            let mut result: Option<Slot> = None;
            for value in values {
                let any = self.any_equal(&items, value)?;
                result = Some(match result {
                    None => any,
                    Some(acc) => self.push(Op::Or(acc, any), FieldType::Bool)?,
                });
            }
            return match result {
                Some(r) => Ok(r),
                None => self.bool_const(false),
            };
        }
        let a: Vec<Slot> = args.iter().map(|a| self.build(a)).collect::<Result<_, _>>()?;
        if name.starts_with(WASM_FUNCTION_PREFIX) {
            return self.wasm(name, &a);
        }
        let float1: Option<fn(f64) -> f64> = match name {
            "floor" => Some(f64::floor),
            "round" => Some(f64::round),
            "ceil" => Some(f64::ceil),
            "math::sqrt" => Some(f64::sqrt),
            "math::cbrt" => Some(f64::cbrt),
            "math::exp" => Some(f64::exp),
            "math::exp2" => Some(f64::exp2),
            "math::ln" => Some(f64::ln),
            "math::log2" => Some(f64::log2),
            "math::log10" => Some(f64::log10),
            "math::sin" => Some(f64::sin),
            "math::cos" => Some(f64::cos),
            "math::tan" => Some(f64::tan),
            "math::asin" => Some(f64::asin),
            "math::acos" => Some(f64::acos),
            "math::atan" => Some(f64::atan),
            "math::sinh" => Some(f64::sinh),
            "math::cosh" => Some(f64::cosh),
            "math::tanh" => Some(f64::tanh),
            "math::asinh" => Some(f64::asinh),
            "math::acosh" => Some(f64::acosh),
            "math::atanh" => Some(f64::atanh),
            _ => None,
        };
        if let Some(f) = float1 {
            arity(&[1])?;
            return self.float1(f, a[0]);
        }
        let float2: Option<fn(f64, f64) -> f64> = match name {
            "math::log" => Some(f64::log),
            "math::pow" => Some(f64::powf),
            "math::atan2" => Some(f64::atan2),
            "math::hypot" => Some(f64::hypot),
            _ => None,
        };
        if let Some(f) = float2 {
            arity(&[2])?;
            return self.float2(f, a[0], a[1]);
        }
        let float_is: Option<fn(f64) -> bool> = match name {
            "math::is_nan" => Some(f64::is_nan),
            "math::is_finite" => Some(f64::is_finite),
            "math::is_infinite" => Some(f64::is_infinite),
            "math::is_normal" => Some(f64::is_normal),
            _ => None,
        };
        if let Some(f) = float_is {
            arity(&[1])?;
            let x = self.as_float(a[0])?;
            return self.push(Op::FloatIs(f, x), FieldType::Bool);
        }
        let want = |b: &Self, i: usize, ty: FieldType| -> Result<(), String> {
            if b.ty(a[i]) == ty {
                Ok(())
            } else {
                Err(format!("function '{name}' needs {ty} as argument {}, got {}", i + 1, b.ty(a[i])))
            }
        };
        match name {
            "if" => {
                arity(&[3])?;
                want(self, 0, FieldType::Bool)?;
                if self.ty(a[1]) != self.ty(a[2]) {
                    return Err(format!(
                        "the branches of 'if' have different types: {} and {}",
                        self.ty(a[1]),
                        self.ty(a[2])
                    ));
                }
                if let Some(c) = self.const_value(a[0]) {
                    let c = c.as_boolean();
                    return Ok(if c.is_valid(0) && c.value(0) { a[1] } else { a[2] });
                }
                if self.ty(a[1]) == FieldType::Null {
                    return Ok(a[1]);
                }
                self.push(Op::If(a[0], a[1], a[2]), self.ty(a[1]))
            }
            "min" | "max" => {
                if a.len() < 2 {
                    return Err(format!("function '{name}' takes 2 or more arguments, got {}", a.len()));
                }
                let ty = self.ty(a[0]);
                if !matches!(ty, FieldType::Int | FieldType::Float) || a.iter().any(|s| self.ty(*s) != ty) {
                    return Err(format!("function '{name}' needs all integers or all floats"));
                }
                let mut acc = a[0];
                for b in &a[1..] {
                    acc = self.push(Op::MinMax { max: name == "max", a: acc, b: *b }, ty)?;
                }
                Ok(acc)
            }
            "math::abs" => {
                arity(&[1])?;
                match self.ty(a[0]) {
                    FieldType::Int => self.push(Op::AbsInt(a[0]), FieldType::Int),
                    FieldType::Float => self.float1(f64::abs, a[0]),
                    other => Err(format!("function 'math::abs' needs a number, got {other}")),
                }
            }
            "len" => {
                arity(&[1])?;
                want(self, 0, FieldType::String)?;
                self.push(Op::Len(a[0]), FieldType::Int)
            }
            "typeof" => {
                arity(&[1])?;
                let name = match self.ty(a[0]) {
                    FieldType::String => "string",
                    FieldType::Float => "float",
                    FieldType::Int => "int",
                    FieldType::Bool => "boolean",
                    FieldType::Null => "empty",
                    FieldType::Bytes => return Err("bytes cannot be used in expressions".to_owned()),
                };
                self.constant(&Value::String(name.to_owned()))
            }
            "str::from" => {
                arity(&[1])?;
                match self.ty(a[0]) {
                    FieldType::String => Ok(a[0]),
                    FieldType::Null => self.constant(&Value::String("()".to_owned())),
                    _ => self.push(Op::ToStr(a[0]), FieldType::String),
                }
            }
            "str::to_lowercase" | "str::to_uppercase" => {
                arity(&[1])?;
                want(self, 0, FieldType::String)?;
                self.push(Op::Case { upper: name == "str::to_uppercase", s: a[0] }, FieldType::String)
            }
            "str::trim" => {
                arity(&[1])?;
                want(self, 0, FieldType::String)?;
                self.push(Op::Trim(a[0]), FieldType::String)
            }
            "str::substring" => {
                arity(&[2, 3])?;
                want(self, 0, FieldType::String)?;
                want(self, 1, FieldType::Int)?;
                if a.len() == 3 {
                    want(self, 2, FieldType::Int)?;
                }
                self.push(Op::Substring(a[0], a[1], a.get(2).copied()), FieldType::String)
            }
            "bitand" | "bitor" | "bitxor" | "shl" | "shr" => {
                arity(&[2])?;
                want(self, 0, FieldType::Int)?;
                want(self, 1, FieldType::Int)?;
                let op = match name {
                    "bitand" => Bit::And,
                    "bitor" => Bit::Or,
                    "bitxor" => Bit::Xor,
                    "shl" => Bit::Shl,
                    _ => Bit::Shr,
                };
                self.push(Op::Bit(op, a[0], a[1]), FieldType::Int)
            }
            "bitnot" => {
                arity(&[1])?;
                want(self, 0, FieldType::Int)?;
                self.push(Op::BitNot(a[0]), FieldType::Int)
            }
            _ => Err(format!("unknown function '{name}'")),
        }
    }
}

impl Builder<'_> {
    /// A call of WebAssembly scalar function `name` with the argument slots `a`.
    fn wasm(&mut self, name: &str, a: &[Slot]) -> Built {
        let function = self
            .functions
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| format!("unknown function '{name}' (not declared in the job's 'functions')"))?
            .clone();
        if a.len() != function.args.len() {
            return Err(format!("function '{name}' takes {} argument(s), got {}", function.args.len(), a.len()));
        }
        let mut args = Vec::with_capacity(a.len());
        for (i, (slot, declared)) in a.iter().zip(&function.args).enumerate() {
            let given = self.ty(*slot);
            if !wasm_argument_fits(*declared, given) {
                return Err(format!("function '{name}' needs {declared} as argument {}, got {given}", i + 1));
            }
            args.push(if *declared == FieldType::Float && given == FieldType::Int {
                self.as_float(*slot)?
            } else {
                *slot
            });
        }
        let call = match self.calls.iter().position(|c| c.function.name == name) {
            Some(call) => call,
            None => {
                let Some(guests) = self.guests.as_deref_mut() else {
                    return Err(format!("function '{name}': WebAssembly functions are not available here"));
                };
                let guest = match guests.instance(&function) {
                    Ok(guest) => guest,
                    Err(e) => {
                        self.guest_error = Some(e);
                        return Err(format!("function '{name}': its module did not load"));
                    }
                };
                let input = scalar_input(&function.args);
                let output = scalar_output(function.returns);
                self.calls.push(ScalarCall { function: function.clone(), guest, input, output });
                self.calls.len() - 1
            }
        };
        self.push(Op::Wasm { call, args }, function.returns)
    }
}

/// The arguments of a call, as the validator reads them: `f()` has none, `f(a, b)` the
/// tuple's items, `f(a)` one.
fn function_args(arg: &Node) -> Vec<&Node> {
    match (arg.operator(), arg.children()) {
        (EOp::RootNode, []) => Vec::new(),
        (EOp::RootNode, [only]) if *only.operator() == EOp::Tuple => only.children().iter().collect(),
        _ => vec![arg],
    }
}

/// Runs one step. `vals` holds the results of the earlier steps; `rows` is the batch
/// length (1 when folding constants, where every operand is a scalar).
fn eval_op(op: &Op, vals: &[Val], batch: Option<&RecordBatch>, rows: usize) -> Result<Val, String> {
    let v = |s: &Slot| &vals[*s];
    let err = |e: ArrowError| e.to_string();
    Ok(match op {
        Op::Wasm { .. } => return Err("a WebAssembly function is called per batch, not folded".to_owned()),
        Op::Column(i) => Val::Array(batch.ok_or("a column read while folding constants")?.column(*i).clone()),
        Op::Const(c) => c.clone(),
        Op::ToFloat(a) => Val::wrap(v(a).is_scalar(), cast(v(a).array(), &DataType::Float64).map_err(err)?),
        Op::Arith(op, a, b) => {
            let (a, b) = (v(a), v(b));
            let f = match op {
                Arith::Add => numeric::add,
                Arith::Sub => numeric::sub,
                Arith::Mul => numeric::mul,
                Arith::Div => numeric::div,
                Arith::Rem => numeric::rem,
            };
            Val::wrap(a.is_scalar() && b.is_scalar(), f(a.datum(), b.datum()).map_err(err)?)
        }
        Op::Neg(a) => Val::wrap(v(a).is_scalar(), numeric::neg(v(a).array()).map_err(err)?),
        Op::Cmp(op, a, b) => {
            let (a, b) = (v(a), v(b));
            let f = match op {
                CmpOp::Eq => cmp::eq,
                CmpOp::Neq => cmp::neq,
                CmpOp::Lt => cmp::lt,
                CmpOp::Leq => cmp::lt_eq,
                CmpOp::Gt => cmp::gt,
                CmpOp::Geq => cmp::gt_eq,
            };
            Val::wrap(a.is_scalar() && b.is_scalar(), Arc::new(f(a.datum(), b.datum()).map_err(err)?))
        }
        Op::And(a, b) | Op::Or(a, b) => {
            let (a, b) = (v(a), v(b));
            let (x, y) = (full(a, rows)?, full(b, rows)?);
            let f = if matches!(op, Op::And(..)) { boolean::and_kleene } else { boolean::or_kleene };
            Val::wrap(a.is_scalar() && b.is_scalar(), Arc::new(f(x.as_boolean(), y.as_boolean()).map_err(err)?))
        }
        Op::Not(a) => Val::wrap(v(a).is_scalar(), Arc::new(boolean::not(v(a).array().as_boolean()).map_err(err)?)),
        Op::Concat(a, b) => concat(v(a), v(b), rows)?,
        Op::If(c, a, b) => {
            let (c, a, b) = (v(c), v(a), v(b));
            let out = zip(c.array().as_boolean(), a.datum(), b.datum()).map_err(err)?;
            Val::wrap(c.is_scalar() && a.is_scalar() && b.is_scalar(), out)
        }
        Op::MinMax { max, a, b } => match (v(a).array().data_type(), *max) {
            (DataType::Int64, false) => prim2::<Int64Type>(v(a), v(b), |x, y| Ok(x.min(y)))?,
            (DataType::Int64, true) => prim2::<Int64Type>(v(a), v(b), |x, y| Ok(x.max(y)))?,
            (_, false) => prim2::<Float64Type>(v(a), v(b), |x, y| Ok(x.min(y)))?,
            (_, true) => prim2::<Float64Type>(v(a), v(b), |x, y| Ok(x.max(y)))?,
        },
        Op::Float1(f, a) => {
            Val::wrap(v(a).is_scalar(), Arc::new(v(a).array().as_primitive::<Float64Type>().unary::<_, Float64Type>(f)))
        }
        Op::Float2(f, a, b) => prim2::<Float64Type>(v(a), v(b), |x, y| Ok(f(x, y)))?,
        Op::FloatIs(f, a) => {
            let x = v(a).array().as_primitive::<Float64Type>();
            Val::wrap(v(a).is_scalar(), Arc::new(BooleanArray::from_unary(x, f)))
        }
        Op::AbsInt(a) => {
            let x = v(a).array().as_primitive::<Int64Type>();
            let out = x
                .try_unary::<_, Int64Type, _>(|i| {
                    i.checked_abs().ok_or_else(|| ArrowError::ComputeError(format!("overflow in math::abs({i})")))
                })
                .map_err(err)?;
            Val::wrap(v(a).is_scalar(), Arc::new(out))
        }
        Op::Len(a) => {
            let s = v(a).array().as_string::<i32>();
            let lengths: Vec<i64> = s.offsets().windows(2).map(|w| i64::from(w[1] - w[0])).collect();
            Val::wrap(v(a).is_scalar(), Arc::new(Int64Array::new(lengths.into(), s.nulls().cloned())))
        }
        Op::ToStr(a) => Val::wrap(v(a).is_scalar(), to_str(v(a).array())),
        Op::Case { upper, s } => Val::wrap(v(s).is_scalar(), change_case(v(s).array().as_string::<i32>(), *upper)),
        Op::Trim(a) => trim(v(a), rows)?,
        Op::Substring(s, start, end) => substring(v(s), v(start), end.map(|e| v(&e)), rows)?,
        Op::Bit(op, a, b) => {
            let (a, b) = (v(a), v(b));
            match op {
                Bit::And => prim2::<Int64Type>(a, b, |x, y| Ok(x & y))?,
                Bit::Or => prim2::<Int64Type>(a, b, |x, y| Ok(x | y))?,
                Bit::Xor => prim2::<Int64Type>(a, b, |x, y| Ok(x ^ y))?,
                Bit::Shl => prim2::<Int64Type>(a, b, |x, y| {
                    u32::try_from(y).ok().and_then(|y| x.checked_shl(y)).ok_or_else(|| shift_error("shl", x, y))
                })?,
                Bit::Shr => prim2::<Int64Type>(a, b, |x, y| {
                    u32::try_from(y).ok().and_then(|y| x.checked_shr(y)).ok_or_else(|| shift_error("shr", x, y))
                })?,
            }
        }
        Op::BitNot(a) => {
            let x = v(a).array().as_primitive::<Int64Type>();
            Val::wrap(v(a).is_scalar(), Arc::new(x.unary::<_, Int64Type>(|i| !i)))
        }
    })
}

fn shift_error(name: &str, x: i64, y: i64) -> ArrowError {
    ArrowError::ComputeError(format!("{name}({x}, {y}): the shift must be between 0 and 63"))
}

/// A boolean operand as an array of `rows` values (kernels for `&&`/`||` take arrays).
fn full(v: &Val, rows: usize) -> Result<ArrayRef, String> {
    match v {
        Val::Array(a) => Ok(a.clone()),
        Val::Scalar(a, _) => broadcast(a.clone(), rows).map_err(|e| e.to_string()),
    }
}

/// `f` over two primitive operands, either of which may be a scalar.
fn prim2<T: ArrowPrimitiveType>(
    a: &Val,
    b: &Val,
    f: impl Fn(T::Native, T::Native) -> Result<T::Native, ArrowError>,
) -> Result<Val, String> {
    let (x, y) = (a.array().as_primitive::<T>(), b.array().as_primitive::<T>());
    let out: PrimitiveArray<T> = match (a, b) {
        (Val::Scalar(..), Val::Array(_)) if x.is_null(0) => {
            return Ok(Val::Array(new_null_array(&T::DATA_TYPE, y.len())))
        }
        (Val::Array(_), Val::Scalar(..)) if y.is_null(0) => {
            return Ok(Val::Array(new_null_array(&T::DATA_TYPE, x.len())))
        }
        (Val::Scalar(..), Val::Array(_)) => {
            let xv = x.value(0);
            y.try_unary::<_, T, _>(|yv| f(xv, yv)).map_err(|e| e.to_string())?
        }
        (Val::Array(_), Val::Scalar(..)) => {
            let yv = y.value(0);
            x.try_unary::<_, T, _>(|xv| f(xv, yv)).map_err(|e| e.to_string())?
        }
        _ => try_binary(x, y, f).map_err(|e| e.to_string())?,
    };
    Ok(Val::wrap(a.is_scalar() && b.is_scalar(), Arc::new(out)))
}

/// Bytes a [`Utf8Out`] copy may read and write past a value's end: values of up to this
/// length are copied with one fixed-size move instead of a library call.
const SLACK: usize = 32;

/// Builds a string column from pieces of valid UTF-8 (whole values, or pieces cut at
/// character boundaries), into one value buffer sized up front.
pub(crate) struct Utf8Out {
    /// Written bytes, then zeroed room (at least [`SLACK`] bytes beyond `len`).
    buf: Vec<u8>,
    len: usize,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl Utf8Out {
    pub(crate) fn new(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self { buf: vec![0; bytes + SLACK], len: 0, offsets, nulls: NullBufferBuilder::new(rows) }
    }

    #[inline]
    fn reserve(&mut self, extra: usize) {
        if self.len + extra > self.buf.len() {
            self.buf.resize((self.len + extra).max(self.buf.len() * 2), 0);
        }
    }

    /// Appends `src[start..start + n]` to the current value.
    #[inline]
    pub(crate) fn write(&mut self, src: &[u8], start: usize, n: usize) {
        self.reserve(n + SLACK);
        if n <= SLACK && start + SLACK <= src.len() {
            // One fixed-size move; the bytes past `n` are overwritten by what follows.
            self.buf[self.len..self.len + SLACK].copy_from_slice(&src[start..start + SLACK]);
        } else {
            self.buf[self.len..self.len + n].copy_from_slice(&src[start..start + n]);
        }
        self.len += n;
    }

    /// Appends the decimal form of `v` to the current value.
    #[inline]
    pub(crate) fn write_i64(&mut self, v: i64) {
        const E8: u64 = 100_000_000;
        // Sign, up to 20 digits, and room for the last 8-byte store.
        self.reserve(1 + 20 + 8);
        if v < 0 {
            self.buf[self.len] = b'-';
            self.len += 1;
        }
        let n = v.unsigned_abs();
        let at = self.len;
        self.len = if n < E8 {
            write_u32(&mut self.buf, at, n as u32)
        } else if n < E8 * E8 {
            let at = write_u32(&mut self.buf, at, (n / E8) as u32);
            write_8_digits(&mut self.buf, at, (n % E8) as u32)
        } else {
            let at = write_u32(&mut self.buf, at, (n / (E8 * E8)) as u32);
            let at = write_8_digits(&mut self.buf, at, (n / E8 % E8) as u32);
            write_8_digits(&mut self.buf, at, (n % E8) as u32)
        };
    }

    /// Ends the current value.
    #[inline]
    pub(crate) fn end_value(&mut self) {
        self.offsets.push(self.len as i32);
        self.nulls.append_non_null();
    }

    /// Appends a null (the current value must be empty).
    #[inline]
    pub(crate) fn push_null(&mut self) {
        self.offsets.push(self.len as i32);
        self.nulls.append_null();
    }

    pub(crate) fn finish(mut self) -> Result<StringArray, ArrowError> {
        if self.len > i32::MAX as usize {
            return Err(ArrowError::ComputeError("a string column of over 2 GiB".to_owned()));
        }
        self.buf.truncate(self.len);
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        StringArray::try_new(offsets, Buffer::from_vec(self.buf), self.nulls.finish())
    }
}

/// The 8 decimal digits of `x < 10^8` as ASCII bytes, first digit in the lowest byte:
/// the two 4-digit halves, their 2-digit pairs and then the digits are split in SIMD
/// lanes of one `u64` with multiply-shift divisions.
#[inline]
fn eight_digits(x: u32) -> u64 {
    let merged = u64::from(x / 10_000) | (u64::from(x % 10_000) << 32);
    let hundreds_high = ((merged * 10_486) >> 20) & ((0x7F << 32) | 0x7F);
    let hundreds_low = merged - 100 * hundreds_high;
    let pairs = (hundreds_low << 16) + hundreds_high;
    let tens = ((pairs * 103) >> 10) & ((0xF << 48) | (0xF << 32) | (0xF << 16) | 0xF);
    (tens + ((pairs - 10 * tens) << 8)) | 0x3030_3030_3030_3030
}

/// Writes `x < 10^8` as exactly 8 digits at `at` (an 8-byte store); returns the end.
#[inline]
fn write_8_digits(buf: &mut [u8], at: usize, x: u32) -> usize {
    buf[at..at + 8].copy_from_slice(&eight_digits(x).to_le_bytes());
    at + 8
}

/// Writes `x < 10^8` without leading zeros at `at` (an 8-byte store; the bytes past the
/// digits are overwritten later); returns the end.
#[inline]
fn write_u32(buf: &mut [u8], at: usize, x: u32) -> usize {
    let digits = x.checked_ilog10().map_or(1, |d| d as usize + 1);
    let shifted = eight_digits(x) >> ((8 - digits) * 8);
    buf[at..at + 8].copy_from_slice(&shifted.to_le_bytes());
    at + digits
}

/// Reads a string operand row by row as `(buffer, start, length)`, whether it is a
/// column or a scalar (kept padded so [`Utf8Out::write`] can copy it in one move).
enum Strs<'a> {
    One(Option<(Vec<u8>, usize)>),
    Many(&'a StringArray),
}

impl<'a> Strs<'a> {
    fn of(v: &'a Val) -> Self {
        let a = v.array().as_string::<i32>();
        if v.is_scalar() {
            Strs::One(a.is_valid(0).then(|| {
                let mut padded = a.value(0).as_bytes().to_vec();
                let n = padded.len();
                padded.resize(n + SLACK, 0);
                (padded, n)
            }))
        } else {
            Strs::Many(a)
        }
    }

    #[inline]
    fn get(&self, i: usize) -> Option<(&[u8], usize, usize)> {
        match self {
            Strs::One(v) => v.as_ref().map(|(padded, n)| (padded.as_slice(), 0, *n)),
            Strs::Many(a) if a.is_null(i) => None,
            Strs::Many(a) => {
                let offsets = a.value_offsets();
                let start = offsets[i] as usize;
                Some((a.value_data(), start, offsets[i + 1] as usize - start))
            }
        }
    }

    /// About how many bytes `rows` values take.
    fn bytes(&self, rows: usize) -> usize {
        match self {
            Strs::One(v) => v.as_ref().map_or(0, |(_, n)| *n) * rows,
            Strs::Many(a) => a.value_data().len(),
        }
    }
}

/// Reads an integer operand row by row, whether it is a column or a scalar.
enum Ints<'a> {
    One(Option<i64>),
    Many(&'a Int64Array),
}

impl<'a> Ints<'a> {
    fn of(v: &'a Val) -> Self {
        let a = v.array().as_primitive::<Int64Type>();
        if v.is_scalar() {
            Ints::One(a.is_valid(0).then(|| a.value(0)))
        } else {
            Ints::Many(a)
        }
    }

    #[inline]
    fn get(&self, i: usize) -> Option<i64> {
        match self {
            Ints::One(v) => *v,
            Ints::Many(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// `a + b` on strings.
fn concat(a: &Val, b: &Val, rows: usize) -> Result<Val, String> {
    let (x, y) = (Strs::of(a), Strs::of(b));
    let mut out = Utf8Out::new(rows, x.bytes(rows) + y.bytes(rows));
    for i in 0..rows {
        match (x.get(i), y.get(i)) {
            (Some((l, ls, ln)), Some((r, rs, rn))) => {
                out.write(l, ls, ln);
                out.write(r, rs, rn);
                out.end_value();
            }
            _ => out.push_null(),
        }
    }
    Ok(Val::wrap(a.is_scalar() && b.is_scalar(), Arc::new(out.finish().map_err(|e| e.to_string())?)))
}

/// Whether byte `i` of UTF-8 `text` starts a character (or is its end).
#[inline]
fn is_char_boundary(text: &[u8], i: usize) -> bool {
    i == text.len() || text.get(i).is_some_and(|b| (*b as i8) >= -0x40)
}

/// `str::substring(s, start[, end])` with byte offsets, failing as `evalexpr` does on a
/// negative or out-of-range offset (and on an offset inside a character).
fn substring(s: &Val, start: &Val, end: Option<&Val>, rows: usize) -> Result<Val, String> {
    let strs = Strs::of(s);
    let starts = Ints::of(start);
    let ends = end.map(Ints::of);
    let mut out = Utf8Out::new(rows, strs.bytes(rows));
    for i in 0..rows {
        let (Some((src, at, len)), Some(from)) = (strs.get(i), starts.get(i)) else {
            out.push_null();
            continue;
        };
        let to = match &ends {
            None => len as i64,
            Some(e) => match e.get(i) {
                Some(to) => to,
                None => {
                    out.push_null();
                    continue;
                }
            },
        };
        let text = &src[at..at + len];
        match (usize::try_from(from), usize::try_from(to)) {
            (Ok(f), Ok(t)) if f <= t && t <= len && is_char_boundary(text, f) && is_char_boundary(text, t) => {
                out.write(src, at + f, t - f);
                out.end_value();
            }
            _ => {
                return Err(format!(
                "str::substring: byte range {from}..{to} is outside the {len}-byte string {:?} or splits a character",
                String::from_utf8_lossy(text)
            ))
            }
        }
    }
    let all_scalar = s.is_scalar() && start.is_scalar() && end.is_none_or(Val::is_scalar);
    Ok(Val::wrap(all_scalar, Arc::new(out.finish().map_err(|e| e.to_string())?)))
}

/// `str::trim(s)`.
fn trim(s: &Val, rows: usize) -> Result<Val, String> {
    let strs = Strs::of(s);
    let mut out = Utf8Out::new(rows, strs.bytes(rows));
    for i in 0..rows {
        match strs.get(i) {
            Some((src, at, len)) => {
                // The input is valid UTF-8, so this conversion only re-checks it.
                let text = std::str::from_utf8(&src[at..at + len]).map_err(|e| e.to_string())?;
                let trimmed = text.trim();
                let offset = trimmed.as_ptr() as usize - text.as_ptr() as usize;
                out.write(src, at + offset, trimmed.len());
                out.end_value();
            }
            None => out.push_null(),
        }
    }
    Ok(Val::wrap(s.is_scalar(), Arc::new(out.finish().map_err(|e| e.to_string())?)))
}

/// `str::from(x)` of a non-string column, formatted as `evalexpr` does (`1.5`, `2`, `true`).
fn to_str(a: &ArrayRef) -> ArrayRef {
    let rows = a.len();
    match a.data_type() {
        DataType::Int64 => {
            let ints = a.as_primitive::<Int64Type>();
            let mut out = Utf8Out::new(rows, rows * 12);
            for (i, v) in ints.values().iter().enumerate() {
                if ints.is_null(i) {
                    out.push_null();
                } else {
                    out.write_i64(*v);
                    out.end_value();
                }
            }
            match out.finish() {
                Ok(strings) => Arc::new(strings),
                Err(_) => new_null_array(&DataType::Utf8, rows),
            }
        }
        DataType::Float64 => {
            let floats = a.as_primitive::<Float64Type>();
            let mut out = StringBuilder::with_capacity(rows, rows * 12);
            for (i, v) in floats.values().iter().enumerate() {
                if floats.is_null(i) {
                    out.append_null();
                } else {
                    let _ = write!(out, "{v}");
                    out.append_value("");
                }
            }
            Arc::new(out.finish())
        }
        DataType::Boolean => {
            let bools = a.as_boolean();
            let mut out = StringBuilder::with_capacity(rows, rows * 5);
            for v in bools.iter() {
                out.append_option(v.map(|b| if b { "true" } else { "false" }));
            }
            Arc::new(out.finish())
        }
        _ => new_null_array(&DataType::Utf8, rows),
    }
}

/// `str::to_lowercase` / `str::to_uppercase`: ASCII data is mapped byte by byte over the
/// whole value buffer (the offsets stay the same); other data row by row.
fn change_case(s: &StringArray, upper: bool) -> ArrayRef {
    if s.value_data().is_ascii() {
        let mapped: Vec<u8> = if upper {
            s.value_data().iter().map(u8::to_ascii_uppercase).collect()
        } else {
            s.value_data().iter().map(u8::to_ascii_lowercase).collect()
        };
        if let Ok(a) = StringArray::try_new(s.offsets().clone(), Buffer::from_vec(mapped), s.nulls().cloned()) {
            return Arc::new(a);
        }
    }
    let mut out = StringBuilder::with_capacity(s.len(), s.value_data().len());
    for value in s.iter() {
        out.append_option(value.map(|v| if upper { v.to_uppercase() } else { v.to_lowercase() }));
    }
    Arc::new(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::schema::arrow_schema;
    use evalexpr::{ContextWithMutableVariables, HashMapContext};
    use flint_common::job::{Field, Schema};

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("n", FieldType::Int),
            Field::new("d", FieldType::Int),
            Field::new("x", FieldType::Float),
            Field::new("s", FieldType::String),
            Field::new("b", FieldType::Bool),
            Field::nullable("maybe", FieldType::Int),
        ])
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            arrow_schema(&schema()),
            vec![
                Arc::new(Int64Array::from(vec![-7, 0, 3, 10, 12345])),
                Arc::new(Int64Array::from(vec![2, 5, -2, 3, 7])),
                Arc::new(Float64Array::from(vec![2.5, -0.5, 0.0, 1e10, 3.0])),
                Arc::new(StringArray::from(vec!["Hello", "", "  Mixed Case  ", "abc", "ÄÖü x"])),
                Arc::new(BooleanArray::from(vec![true, false, true, false, true])),
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3), None, Some(5)])),
            ],
        )
        .unwrap()
    }

    fn compile(source: &str) -> VectorExpr {
        let expr = CompiledExpr::compile(source, &schema()).unwrap_or_else(|p| panic!("{source}: {p:?}"));
        VectorExpr::compile(&expr, &arrow_schema(&schema())).unwrap()
    }

    fn eval(source: &str) -> ArrayRef {
        compile(source).eval(&batch()).unwrap()
    }

    fn to_value(a: &dyn Array, i: usize) -> Value {
        if a.is_null(i) {
            return Value::Empty;
        }
        match a.data_type() {
            DataType::Int64 => Value::Int(a.as_primitive::<Int64Type>().value(i)),
            DataType::Float64 => Value::Float(a.as_primitive::<Float64Type>().value(i)),
            DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).to_owned()),
            DataType::Boolean => Value::Boolean(a.as_boolean().value(i)),
            _ => Value::Empty,
        }
    }

    /// Evaluates row by row with evalexpr itself and compares with the vectorized result.
    fn same_as_evalexpr(source: &str) {
        let expr = CompiledExpr::compile(source, &schema()).unwrap_or_else(|p| panic!("{source}: {p:?}"));
        let batch = batch();
        let vectorized = VectorExpr::compile(&expr, batch.schema_ref()).unwrap().eval(&batch).unwrap();
        assert_eq!(vectorized.len(), batch.num_rows(), "{source}");
        assert_eq!(vectorized.data_type(), &arrow_type(expr.ty), "{source}");
        for row in 0..batch.num_rows() {
            let mut ctx = HashMapContext::new();
            for (i, field) in batch.schema().fields().iter().enumerate() {
                let value = to_value(batch.column(i).as_ref(), row);
                if value != Value::Empty {
                    ctx.set_value(field.name().clone(), value).unwrap();
                }
            }
            let expected = expr.eval_with_context(&ctx).unwrap_or_else(|e| panic!("{source} row {row}: {e}"));
            let got = to_value(vectorized.as_ref(), row);
            let equal = match (&expected, &got) {
                (Value::Float(a), Value::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
                _ => expected == got,
            };
            assert!(equal, "{source} row {row}: evalexpr {expected:?}, vectorized {got:?}");
        }
    }

    #[test]
    fn arithmetic_matches_evalexpr() {
        for source in [
            "n + 1",
            "n - d",
            "n * 2",
            "n / d",
            "n % d",
            "n / 2",
            "n % 3",
            "-n",
            "-x",
            "x + n",
            "n * 2.5",
            "x / 2.0",
            "x % 1.5",
            "x - d",
            "n ^ 2",
            "x ^ 0.5",
            "(n + 1) * (x - 1)",
            "2 * 3 + n",
            "1.0 / 0.0 + x",
        ] {
            same_as_evalexpr(source);
        }
    }

    #[test]
    fn comparisons_and_logic_match_evalexpr() {
        for source in [
            "n % 3 != 0",
            "n == d",
            "n == 3",
            "n == 3.0",
            "n != 3.0",
            "n < d",
            "n <= 3",
            "n > x",
            "x >= 0.0",
            "s == \"abc\"",
            "s < \"b\"",
            "s >= \"Hello\"",
            "b == true",
            "b && n > 0",
            "b || n > 0",
            "!b",
            "!(n > 0) && (x <= 2.5 || !b)",
        ] {
            same_as_evalexpr(source);
        }
    }

    #[test]
    fn builtins_match_evalexpr() {
        for source in [
            "if(b, n, d)",
            "if(n > 0, \"pos\", \"neg\")",
            "if(true, x, 1.0)",
            "min(n, d)",
            "max(n, d, 4)",
            "min(x, 1.5)",
            "max(x, 1.5, -3.0)",
            "floor(x)",
            "round(x)",
            "ceil(x)",
            "floor(n)",
            "len(s)",
            "typeof(x)",
            "typeof(n)",
            "typeof(s)",
            "typeof(b)",
            "str::from(n)",
            "str::from(x)",
            "str::from(b)",
            "str::from(s)",
            "\"k\" + str::from(n % 100000)",
            "s + \"!\"",
            "s + s",
            "str::to_lowercase(s)",
            "str::to_uppercase(s)",
            "str::trim(s)",
            "str::substring(s, 0, 0)",
            "str::substring(\"0000000000000000\" + str::from(n * n), len(str::from(n * n)))",
            "str::substring(str::from(n + 10000000000000000), 1)",
            "contains((\"abc\", \"Hello\"), s)",
            "contains((1, 3, 10), n)",
            "contains((1, 3.0), n)",
            "contains_any((\"x\", \"abc\"), (s, \"y\"))",
            "math::abs(n)",
            "math::abs(x)",
            "math::sqrt(x)",
            "math::cbrt(n)",
            "math::exp(x)",
            "math::exp2(n)",
            "math::ln(x)",
            "math::log2(x)",
            "math::log10(n)",
            "math::sin(x)",
            "math::cos(x)",
            "math::tan(x)",
            "math::asin(x)",
            "math::acos(x)",
            "math::atan(x)",
            "math::sinh(x)",
            "math::cosh(x)",
            "math::tanh(x)",
            "math::asinh(x)",
            "math::acosh(x)",
            "math::atanh(x)",
            "math::log(x, 2)",
            "math::pow(n, 2)",
            "math::atan2(x, n)",
            "math::hypot(n, d)",
            "math::is_nan(math::sqrt(x))",
            "math::is_finite(x / 0.0)",
            "math::is_infinite(x / 0.0)",
            "math::is_normal(x)",
            "bitand(n, 255)",
            "bitor(n, d)",
            "bitxor(n, 6)",
            "shl(d, 3)",
            "shr(n, 1)",
            "bitnot(n)",
        ] {
            same_as_evalexpr(source);
        }
    }

    #[test]
    fn exact_values() {
        let a = eval("n * 2");
        assert_eq!(a.as_primitive::<Int64Type>().values().to_vec(), vec![-14, 0, 6, 20, 24690]);
        let a = eval("str::substring(str::from(n + 10000000000000000), 1)");
        assert_eq!(a.as_string::<i32>().value(4), "0000000000012345");
        let a = eval("n % 3 != 0");
        assert_eq!(
            a.as_boolean().iter().collect::<Vec<_>>(),
            vec![Some(true), Some(false), Some(false), Some(true), Some(false)]
        );
        let a = eval("str::to_uppercase(s)");
        assert_eq!(a.as_string::<i32>().value(4), "ÄÖÜ X");
    }

    #[test]
    fn constants_fold_and_broadcast() {
        let e = compile("1 + 2 * 3");
        assert_eq!(e.steps.len(), 1);
        assert_eq!(e.constant().unwrap().as_primitive::<Int64Type>().value(0), 7);
        let a = e.eval(&batch()).unwrap();
        assert_eq!(a.as_primitive::<Int64Type>().values().to_vec(), vec![7; 5]);
        let a = eval("\"x\"");
        assert_eq!(a.as_string::<i32>().iter().collect::<Vec<_>>(), vec![Some("x"); 5]);
    }

    #[test]
    fn shared_subexpressions_are_computed_once() {
        let e = compile("str::substring(\"0000000000000000\" + str::from(n), len(str::from(n)))");
        // n, "000…", str::from(n), concat, len, substring
        assert_eq!(e.steps.len(), 6, "{:?}", e.steps);
        // The unused branch of a constant `if` and typeof's operand are dropped.
        assert_eq!(compile("if(true, n, d * 2)").steps.len(), 1);
        assert_eq!(compile("typeof(n * 2)").steps.len(), 1);
    }

    #[test]
    fn nulls_propagate() {
        let values = |source: &str| {
            let a = eval(source);
            (0..a.len()).map(|i| to_value(a.as_ref(), i)).collect::<Vec<_>>()
        };
        use Value::{Boolean as B, Empty as E, Int as I};
        assert_eq!(values("maybe + n"), vec![I(-6), E, I(6), E, I(12350)]);
        assert_eq!(values("maybe > 2"), vec![B(false), E, B(true), E, B(true)]);
        assert_eq!(values("maybe > 2 && false"), vec![B(false); 5]);
        assert_eq!(values("maybe > 2 || true"), vec![B(true); 5]);
        assert_eq!(values("str::from(maybe)").get(1), Some(&E));
    }

    #[test]
    fn division_by_zero_and_overflow_fail_naming_the_expression() {
        let err = compile("n / (d - d)").eval(&batch()).unwrap_err();
        assert!(err.message.contains("expression 'n / (d - d)' failed"), "{}", err.message);
        assert!(err.message.to_lowercase().contains("divide by zero"), "{}", err.message);
        assert!(!err.retryable, "the same input fails the same way on a new attempt");
        let err = compile("n % 0 == 1 || b").eval(&batch());
        assert!(err.is_err());
        let err = compile("n * 9223372036854775807").eval(&batch()).unwrap_err();
        assert!(err.message.to_lowercase().contains("overflow"), "{}", err.message);
        // Constant expressions fail when compiled.
        let expr = CompiledExpr::compile("1 / 0", &schema()).unwrap();
        let err = VectorExpr::compile(&expr, &arrow_schema(&schema())).unwrap_err();
        assert!(err.message.contains("expression '1 / 0'"), "{}", err.message);
        let err = compile("str::substring(s, 2)").eval(&batch()).unwrap_err();
        assert!(err.message.contains("str::substring"), "{}", err.message);
        assert!(compile("shl(n, 64)").eval(&batch()).is_err());
    }

    #[test]
    fn integers_format_like_rust() {
        let mut values = vec![0, 1, 9, 10, 99, 100, 12345, 99_999_999, 100_000_000, 123_456_789_012];
        values.extend([9_999_999_999_999_999, 10_000_000_000_000_000, 10_000_000_000_000_001, i64::MAX, i64::MIN]);
        values.extend(values.clone().iter().map(|v: &i64| v.saturating_neg()));
        let mut out = Utf8Out::new(values.len(), 0);
        for v in &values {
            out.write_i64(*v);
            out.end_value();
        }
        let strings = out.finish().unwrap();
        let expected: Vec<String> = values.iter().map(i64::to_string).collect();
        assert_eq!(strings.iter().map(|s| s.unwrap().to_owned()).collect::<Vec<_>>(), expected);
    }

    #[test]
    fn float_division_by_zero_is_infinite() {
        let a = eval("x / 0.0");
        assert_eq!(a.as_primitive::<Float64Type>().value(0), f64::INFINITY);
    }
}
