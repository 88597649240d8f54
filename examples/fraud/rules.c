/*
 * A scalar function for expressions: risk(amount) is 0 for a small amount, 2 for a large
 * one and 1 otherwise (null where the amount is null). The job declares it under
 * `functions` and filters out the ordinary transactions before the keyed detector, which
 * only reacts to small and large ones:
 *
 *   functions:
 *     rules: { module: rules.wasm, params: { small: 1.0, large: 500.0 },
 *              exports: { risk: { args: [float], returns: integer } } }
 *   ... predicate: 'wasm::rules::risk(amount) != 1'
 *
 * Build: clang --target=wasm32-wasi -O2 -nostartfiles -Wl,--no-entry -Wl,--strip-all -I ../../sdk/c -o rules.wasm rules.c
 */
#include "flint.h"

static double small = 1.0, large = 500.0;
static struct flint_out out;
static const uint32_t types[] = {FLINT_INTEGER};

FLINT_EXPORT("flint_open") int32_t open_(const char *params, int32_t len) {
    char value[64];
    if (flint_param(params, len, "small", value, sizeof value)) small = strtod(value, 0);
    if (flint_param(params, len, "large", value, sizeof value)) large = strtod(value, 0);
    return 0;
}

/* One column in (amount: float), one out (risk: integer), row for row. */
FLINT_EXPORT("risk") struct flint_batch *risk(const struct flint_batch *in) {
    const double *amount = flint_floats(in, 0);
    struct flint_batch *b = flint_out_reset(&out, 1, types, in->rows, 0);
    int64_t *risk = (int64_t *)(uintptr_t)b->column[0].values;
    for (uint32_t r = 0; r < in->rows; r++) risk[r] = amount[r] < small ? 0 : amount[r] > large ? 2 : 1;
    b->rows = in->rows;
    b->column[0].validity = in->column[0].validity;
    return b;
}
