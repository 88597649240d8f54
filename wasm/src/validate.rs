//! Submission-time checks of a module against what the job file asks of it.

use wasmtime::{ExternType, FuncType, ValType};

use crate::abi::{ALLOC_EXPORT, CLOSE_EXPORT, HOST_FUNCTIONS, HOST_MODULE, MEMORY_EXPORT, OPEN_EXPORT, WASI_MODULE};
use crate::guest::GuestRole;

/// Host functions only `process.wasm` may import.
const KEYED_ONLY: &[&str] = &[
    "state",
    "key",
    "value_get_i64",
    "value_set_i64",
    "value_get",
    "value_set",
    "clear",
    "list_add",
    "list_len",
    "list_get",
    "map_put",
    "map_get",
    "map_remove",
    "map_len",
    "map_key_at",
    "timer_register",
    "timer_delete",
    "watermark",
];

fn signature(ty: &FuncType) -> String {
    let list = |types: &mut dyn Iterator<Item = ValType>| types.map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
    format!("({}) -> ({})", list(&mut ty.params()), list(&mut ty.results()))
}

fn same(ty: &FuncType, params: &[ValType], results: &[ValType]) -> bool {
    ty.params().len() == params.len()
        && ty.results().len() == results.len()
        && ty.params().zip(params).all(|(a, b)| ValType::eq(&a, b))
        && ty.results().zip(results).all(|(a, b)| ValType::eq(&a, b))
}

/// Checks module `name` (its bytes) for an operator of `role` calling `functions` (one
/// batch export per operator; every declared export of a scalar function module) and
/// `timer_function` (optional in the module): every problem found, empty when it is fine.
pub fn validate(
    name: &str,
    bytes: &[u8],
    role: GuestRole,
    functions: &[&str],
    timer_function: Option<&str>,
) -> Vec<String> {
    let module = match crate::engine::compile(name, bytes) {
        Ok(m) => m,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    let mut want = |export: &str, required: bool, params: &[ValType], results: &[ValType], what: &str| match module
        .get_export(export)
    {
        Some(ExternType::Func(ty)) if same(&ty, params, results) => {}
        Some(ExternType::Func(ty)) => problems.push(format!(
            "module '{name}': export '{export}' has signature {}, {what} needs {}",
            signature(&ty),
            signature(&FuncType::new(module.engine(), params.iter().cloned(), results.iter().cloned()))
        )),
        Some(_) => problems.push(format!("module '{name}': export '{export}' is not a function")),
        None if required => problems.push(format!("module '{name}' does not export '{export}' ({what})")),
        None => {}
    };
    use ValType::I32;
    want(ALLOC_EXPORT, true, &[I32], &[I32], "the allocator the host writes batches into");
    for function in functions {
        want(function, true, &[I32], &[I32], role.op_type());
    }
    if let Some(timer) = timer_function {
        want(timer, false, &[I32], &[I32], "the timer function");
    }
    want(OPEN_EXPORT, false, &[I32, I32], &[I32], "the open hook");
    want(CLOSE_EXPORT, false, &[], &[], "the close hook");
    match module.get_export(MEMORY_EXPORT) {
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
        Some(_) => problems.push(format!("module '{name}': export '{MEMORY_EXPORT}' is not a 32-bit unshared memory")),
        None => problems.push(format!("module '{name}' does not export its memory as '{MEMORY_EXPORT}'")),
    }
    for import in module.imports() {
        let what = format!("{}::{}", import.module(), import.name());
        match (import.module(), import.ty()) {
            (HOST_MODULE, ExternType::Func(ty)) => match HOST_FUNCTIONS.iter().find(|(n, _, _)| *n == import.name()) {
                None => problems.push(format!("module '{name}' imports {what}, which Flint does not provide")),
                Some((_, params, results)) if !same(&ty, params, results) => problems.push(format!(
                    "module '{name}' imports {what} with signature {}, Flint provides {}",
                    signature(&ty),
                    signature(&FuncType::new(module.engine(), params.iter().cloned(), results.iter().cloned()))
                )),
                Some(_) if role != GuestRole::Process && KEYED_ONLY.contains(&import.name()) => problems.push(format!(
                    "module '{name}' imports {what}, which only process.wasm provides (keyed state and timers), not {}",
                    role.op_type()
                )),
                Some(_) => {}
            },
            (WASI_MODULE, ExternType::Func(_)) => {}
            _ => problems.push(format!("module '{name}' imports {what}, which Flint does not provide")),
        }
    }
    if role == GuestRole::Process
        && module.imports().any(|i| i.module() == HOST_MODULE && i.name() == "timer_register")
        && !timer_function.is_some_and(|t| matches!(module.get_export(t), Some(ExternType::Func(_))))
    {
        problems.push(format!(
            "module '{name}' registers timers (imports flint::timer_register) but does not export the timer function '{}'",
            timer_function.unwrap_or("on_timer")
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"(module
        (import "flint" "log" (func (param i32 i32 i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "flint_alloc") (param i32) (result i32) i32.const 1024)
        (func (export "map") (param i32) (result i32) local.get 0))"#;

    #[test]
    fn a_module_with_the_declared_exports_passes() {
        assert_eq!(validate("ok", OK.as_bytes(), GuestRole::Map, &["map"], None), Vec::<String>::new());
    }

    #[test]
    fn every_mismatch_is_reported() {
        let problems = validate("ok", OK.as_bytes(), GuestRole::FlatMap, &["explode"], None);
        assert_eq!(problems, vec!["module 'ok' does not export 'explode' (flat_map.wasm)"]);
        let bad = r#"(module
            (import "flint" "value_get_i64" (func (param i32 i64) (result i64)))
            (import "flint" "nope" (func))
            (import "flint" "log" (func (param i32)))
            (import "env" "f" (func))
            (func (export "flint_alloc") (param i64) (result i32) i32.const 0)
            (func (export "map") (param i32) (result i32) i32.const 0))"#;
        let problems = validate("bad", bad.as_bytes(), GuestRole::Map, &["map"], None).join("\n");
        for expected in [
            "export 'flint_alloc' has signature (i64) -> (i32), the allocator the host writes batches into needs (i32) -> (i32)",
            "does not export its memory",
            "flint::value_get_i64, which only process.wasm provides",
            "flint::nope, which Flint does not provide",
            "flint::log with signature (i32) -> ()",
            "env::f, which Flint does not provide",
        ] {
            assert!(problems.contains(expected), "{problems}\nmissing: {expected}");
        }
        let malformed = validate("broken", b"\0asm garbage", GuestRole::Map, &["map"], None);
        assert!(malformed[0].starts_with("module 'broken' does not compile"), "{malformed:?}");
    }
}
