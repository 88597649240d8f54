//! `process.wasm` keyed by `key`: input (key: string, ...), output (key: string, count:
//! integer), one row per input row with the key's running count, kept in value state
//! `count` (checkpointed by Flint, restored at any parallelism). Counts its rows in the user
//! counter `rows`.
//!
//! ```yaml
//! - { id: count, op: process.wasm, inputs: [keys], key: [key], module: flint_count.wasm,
//!     schema: { key: string, count: integer } }
//! ```

use flint_guest::host::{self, Level, ValueState};
use flint_guest::{Batch, Output, Params, Type};

flint_guest::guest_module!();
flint_guest::export_open!(open);
flint_guest::export_batch!(process => count);

fn open(params: &Params) -> Result<(), String> {
    host::log(Level::Info, &format!("counter ready ({} parameters)", params.iter().count()));
    Ok(())
}

fn count(input: &Batch, out: &mut Output) {
    let counts = ValueState::new("count");
    out.reset(&[Type::String, Type::Integer]);
    for group in 0..input.groups() {
        host::key(group);
        let mut n = counts.get_i64(0);
        for row in input.group_rows(group) {
            n += 1;
            out.column(0).push_str(input.str(0, row));
            out.column(1).push_int(n);
        }
        counts.set_i64(n);
    }
    host::counter_add("rows", input.rows() as u64);
}
