/*
 * Fraud detection per account, as Flink's fraud-detection walkthrough does it with a
 * KeyedProcessFunction: a small transaction followed by a large one on the same account
 * within a minute (event time) raises an alert.
 *
 * Input:  (account: string, amount: float, ts: integer)   keyed by account
 * Output: (account: string, ts: integer, amount: float)   one row per alert
 *
 * State per account: value "small_at" (the time of the last small transaction, while it
 * can still be followed by a large one). A timer at small_at + window clears it.
 * Parameters (flint_open): small, large (amounts) and window_ms.
 *
 * Build: clang --target=wasm32-wasi -O2 -nostartfiles -Wl,--no-entry -I ../../sdk/c -o fraud.wasm fraud.c
 */
#include "flint.h"

static double small = 1.0, large = 500.0;
static int64_t window_ms = 60000;
static int32_t small_at = -1;
static struct flint_out out;
static const uint32_t types[] = {FLINT_STRING, FLINT_INTEGER, FLINT_FLOAT};

/* Parameters come as "name=value\n" lines. */
FLINT_EXPORT("flint_open") int32_t open_(const char *params, int32_t len) {
    char value[64];
    if (flint_param(params, len, "small", value, sizeof value)) small = strtod(value, 0);
    if (flint_param(params, len, "large", value, sizeof value)) large = strtod(value, 0);
    if (flint_param(params, len, "window_ms", value, sizeof value)) window_ms = strtoll(value, 0, 10);
    small_at = flint_state(FLINT_VALUE, "small_at", 8);
    flint_info("fraud detector ready");
    return 0;
}

/* Appends an alert: the account (string bytes), the time and the amount. */
static void alert(struct flint_batch *b, const char *account, int32_t account_len, int64_t ts, double amount) {
    uint32_t row = b->rows++;
    int32_t *offsets = (int32_t *)(uintptr_t)b->column[0].values;
    memcpy((char *)(uintptr_t)b->column[0].data + offsets[row], account, (size_t)account_len);
    offsets[row + 1] = offsets[row] + account_len;
    ((int64_t *)(uintptr_t)b->column[1].values)[row] = ts;
    ((double *)(uintptr_t)b->column[2].values)[row] = amount;
    flint_counter_add("alerts", 6, 1);
}

FLINT_EXPORT("process") struct flint_batch *process(const struct flint_batch *in) {
    const int32_t *acct_offsets = (const int32_t *)(uintptr_t)in->column[0].values;
    const char *acct = (const char *)(uintptr_t)in->column[0].data;
    const double *amount = flint_floats(in, 1);
    const int64_t *ts = flint_ints(in, 2);
    const uint32_t *groups = flint_group_offsets(in);
    /* At most one alert per row; the account strings of all rows bound the string bytes. */
    struct flint_batch *b = flint_out_reset(&out, 3, types, in->rows, (uint32_t)acct_offsets[in->rows]);
    for (uint32_t g = 0; g < in->groups; g++) {
        flint_key((int32_t)g);
        int64_t flagged = flint_value_get_i64(small_at, -1);
        for (uint32_t r = groups[g]; r < groups[g + 1]; r++) {
            if (flagged >= 0 && ts[r] - flagged <= window_ms && amount[r] > large) {
                alert(b, acct + acct_offsets[r], acct_offsets[r + 1] - acct_offsets[r], ts[r], amount[r]);
                flint_timer_delete(flagged + window_ms);
                flagged = -1;
            }
            if (amount[r] < small) {
                if (flagged >= 0) flint_timer_delete(flagged + window_ms);
                flagged = ts[r];
                flint_timer_register(ts[r] + window_ms);
            }
        }
        if (flagged >= 0) flint_value_set_i64(small_at, flagged);
        else flint_clear(small_at);
    }
    return b;
}

/* A minute passed after a small transaction without a large one: forget it. */
FLINT_EXPORT("on_timer") struct flint_batch *on_timer(const struct flint_batch *timers) {
    for (uint32_t g = 0; g < timers->groups; g++) {
        flint_key((int32_t)g);
        flint_clear(small_at);
    }
    return 0;
}
