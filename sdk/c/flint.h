/*
 * Flint's WebAssembly guest ABI for C (docs/wasm.md). Build a module with Debian's clang and
 * wasi-libc:
 *
 *   clang --target=wasm32-wasi -O2 -nostartfiles -Wl,--no-entry -I sdk/c -o my.wasm my.c
 *
 * A module exports its memory, flint_alloc, and the functions the job file names
 * (map / flat_map / process / on_timer by default); it may export flint_open and
 * flint_close. Batches are columnar: see struct flint_batch.
 */
#ifndef FLINT_H
#define FLINT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FLINT_EXPORT(name) __attribute__((export_name(name)))
#define FLINT_IMPORT(name) __attribute__((import_module("flint"), import_name(name)))

enum flint_type { FLINT_INTEGER = 1, FLINT_FLOAT = 2, FLINT_STRING = 3, FLINT_BOOLEAN = 4, FLINT_BYTES = 5, FLINT_NULL = 6 };
enum flint_state_kind { FLINT_VALUE = 0, FLINT_LIST = 1, FLINT_MAP = 2 };
enum flint_level { FLINT_TRACE = 0, FLINT_DEBUG = 1, FLINT_INFO = 2, FLINT_WARN = 3, FLINT_ERROR = 4 };

/* One column: `values` is int64_t[rows], double[rows], uint8_t[rows] (booleans) or, for
 * strings and bytes, int32_t offsets[rows + 1] into `data`. `validity` is 0 (no nulls) or
 * uint8_t[rows] with 1 for a value. Pointers are addresses in this module's memory. */
struct flint_column {
    uint32_t type;
    uint32_t validity;
    uint32_t values;
    uint32_t data;
};

/* A batch. `groups`/`group_offsets` (uint32_t[groups + 1] row offsets) are set for
 * process.wasm and timer calls: rows group_offsets[g]..group_offsets[g+1] share a key. */
struct flint_batch {
    uint32_t rows;
    uint32_t columns;
    uint32_t groups;
    uint32_t group_offsets;
    uint32_t reserved[2];
    struct flint_column column[];
};

FLINT_IMPORT("log") void flint_log(int32_t level, const char *message, int32_t len);
FLINT_IMPORT("counter_add") void flint_counter_add(const char *name, int32_t len, int64_t delta);
FLINT_IMPORT("fail") void flint_fail(const char *message, int32_t len);
FLINT_IMPORT("state") int32_t flint_state(int32_t kind, const char *name, int32_t len);
FLINT_IMPORT("key") void flint_key(int32_t group);
FLINT_IMPORT("value_get_i64") int64_t flint_value_get_i64(int32_t state, int64_t absent);
FLINT_IMPORT("value_set_i64") void flint_value_set_i64(int32_t state, int64_t value);
FLINT_IMPORT("value_get") int32_t flint_value_get(int32_t state, void *buf, int32_t cap);
FLINT_IMPORT("value_set") void flint_value_set(int32_t state, const void *value, int32_t len);
FLINT_IMPORT("clear") void flint_clear(int32_t state);
FLINT_IMPORT("list_add") void flint_list_add(int32_t state, const void *value, int32_t len);
FLINT_IMPORT("list_len") int32_t flint_list_len(int32_t state);
FLINT_IMPORT("list_get") int32_t flint_list_get(int32_t state, int32_t index, void *buf, int32_t cap);
FLINT_IMPORT("map_put") void flint_map_put(int32_t state, const void *key, int32_t klen, const void *value, int32_t vlen);
FLINT_IMPORT("map_get") int32_t flint_map_get(int32_t state, const void *key, int32_t klen, void *buf, int32_t cap);
FLINT_IMPORT("map_remove") int32_t flint_map_remove(int32_t state, const void *key, int32_t klen);
FLINT_IMPORT("map_len") int32_t flint_map_len(int32_t state);
FLINT_IMPORT("map_key_at") int32_t flint_map_key_at(int32_t state, int32_t index, void *buf, int32_t cap);
FLINT_IMPORT("timer_register") void flint_timer_register(int64_t timestamp);
FLINT_IMPORT("timer_delete") void flint_timer_delete(int64_t timestamp);
FLINT_IMPORT("watermark") int64_t flint_watermark(void);

/* The host asks for its input region with flint_alloc and reuses it. */
FLINT_EXPORT("flint_alloc") void *flint_alloc(int32_t size) { return malloc((size_t)size); }

static inline void flint_info(const char *text) { flint_log(FLINT_INFO, text, (int32_t)strlen(text)); }
static inline void flint_failf(const char *text) { flint_fail(text, (int32_t)strlen(text)); }

static inline const int64_t *flint_ints(const struct flint_batch *b, uint32_t c) {
    return (const int64_t *)(uintptr_t)b->column[c].values;
}
static inline const double *flint_floats(const struct flint_batch *b, uint32_t c) {
    return (const double *)(uintptr_t)b->column[c].values;
}
static inline const uint32_t *flint_group_offsets(const struct flint_batch *b) {
    return (const uint32_t *)(uintptr_t)b->group_offsets;
}

/* Parameter `name` of flint_open's "name=value\n" lines, copied into `buf` (NUL-terminated,
 * cut at `cap - 1` bytes); returns buf, or 0 when the parameter is absent. */
static inline const char *flint_param(const char *params, int32_t len, const char *name, char *buf, size_t cap) {
    const char *p = params, *end = params + len;
    size_t name_len = strlen(name);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        const char *eq = memchr(p, '=', (size_t)(nl - p));
        if (eq && (size_t)(eq - p) == name_len && !memcmp(p, name, name_len)) {
            size_t n = (size_t)(nl - eq - 1) < cap - 1 ? (size_t)(nl - eq - 1) : cap - 1;
            memcpy(buf, eq + 1, n);
            buf[n] = 0;
            return buf;
        }
        p = nl + 1;
    }
    return 0;
}

/* An output batch under construction, reused from call to call (the host reads it before the
 * next call). */
struct flint_out {
    struct flint_batch *batch;
    uint32_t capacity_rows;
};

/* Makes `out` a batch of `columns` columns (types as given) with room for `rows` rows of
 * fixed-width values; string columns get offsets and `string_bytes` bytes of data each. */
static inline struct flint_batch *flint_out_reset(struct flint_out *out, uint32_t columns, const uint32_t *types,
                                                  uint32_t rows, uint32_t string_bytes) {
    size_t header = sizeof(struct flint_batch) + columns * sizeof(struct flint_column);
    size_t size = header;
    for (uint32_t c = 0; c < columns; c++)
        size += types[c] == FLINT_STRING || types[c] == FLINT_BYTES ? 4 * ((size_t)rows + 1) + string_bytes + 8
                                                                    : 8 * (size_t)rows;
    free(out->batch);
    out->batch = malloc(size);
    if (!out->batch) flint_failf("out of memory for the output batch");
    struct flint_batch *b = out->batch;
    memset(b, 0, header);
    b->columns = columns;
    char *at = (char *)b + header;
    for (uint32_t c = 0; c < columns; c++) {
        b->column[c].type = types[c];
        b->column[c].values = (uint32_t)(uintptr_t)at;
        if (types[c] == FLINT_STRING || types[c] == FLINT_BYTES) {
            at += 4 * ((size_t)rows + 1);
            at = (char *)(((uintptr_t)at + 7) & ~(uintptr_t)7);
            b->column[c].data = (uint32_t)(uintptr_t)at;
            ((int32_t *)(uintptr_t)b->column[c].values)[0] = 0;
            at += string_bytes;
        } else {
            at += 8 * (size_t)rows;
        }
    }
    out->capacity_rows = rows;
    return b;
}

#endif
