/*
 * optx_plugin.h: the optx plugin ABI, version 1.0, for plugins written in C (or any
 * language with a C ABI). The Rust crate optx-plugin-api defines the same ABI.
 *
 * A plugin is a shared library exporting one function:
 *
 *     const optx_plugin_v1_t *optx_plugin_v1(void);
 *
 * returning a table that lives as long as the library (optx never unloads a plugin).
 * Everything else crosses the boundary as UTF-8 JSON:
 *
 *   open(req)  req = {"kind": "runner"|"metric", "name": ..., "config": {...},
 *                     "experiment": ...}; sets *instance; answer {} (or an error).
 *   call(instance, op, req) with op one of OPTX_OP_* below.
 *   close(instance) when optx is done with it.
 *   release(buf) for every buffer the plugin wrote into *out (also with errors).
 *
 * Every call returns OPTX_OK with its answer in *out, OPTX_ERROR with
 * {"message": "...", "retry": false} in *out (retry: the same call may succeed later), or
 * OPTX_UNSUPPORTED when the instance does not implement the operation (optx falls back:
 * one poll per trial, one run per trial, no capacity limit, no stop).
 *
 * Calls on one instance may come from several threads at once.
 */
#ifndef OPTX_PLUGIN_H
#define OPTX_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OPTX_ABI_MAJOR 1u
#define OPTX_ABI_MINOR 0u

#define OPTX_OK 0
#define OPTX_ERROR 1
#define OPTX_UNSUPPORTED 2

/* Runner: req is the trial context {"trial_index", "parameters": {...}, "trial_dir",
 * "experiment", "slot", "config"}; answer: run metadata, a JSON object that optx stores
 * and hands back to every later call about the trial, also after a restart. */
#define OPTX_OP_RUN_TRIAL 1u
/* Runner: req {"trial_index", "metadata"}; answer {"status": "staged" | "running" |
 * "completed" | "failed" | "abandoned", "reason": "..." (optional)}. */
#define OPTX_OP_POLL_TRIAL 2u
/* Runner (optional): req {"trial_index", "metadata", "reason"}; answer: stop metadata (an object). */
#define OPTX_OP_STOP_TRIAL 3u
/* Runner (optional): req {"trials": [{"trial_index", "metadata"}, ...]}; answer
 * [{"trial_index", "status", "reason"}, ...]; trials left out keep their status. */
#define OPTX_OP_POLL_TRIALS 4u
/* Runner (optional): req {"trials": [context, ...]}; answer [metadata, ...] in order. */
#define OPTX_OP_RUN_TRIALS 5u
/* Runner (optional): req {}; answer {"capacity": n} (null: no limit). */
#define OPTX_OP_AVAILABLE_CAPACITY 6u
/* Metric: req {"trial_index", "metadata"}; answer
 * [{"progression": p | null, "mean": m, "sem": s | null}, ...]. */
#define OPTX_OP_FETCH 7u

/* A buffer the plugin allocated; optx gives it back to release(). */
typedef struct optx_buf {
    uint8_t *ptr;
    size_t len;
} optx_buf;

typedef int32_t (*optx_open_fn)(const uint8_t *req, size_t req_len, void **instance, optx_buf *out);
typedef int32_t (*optx_call_fn)(void *instance, uint32_t op, const uint8_t *req, size_t req_len, optx_buf *out);
typedef void (*optx_close_fn)(void *instance);
typedef void (*optx_release_fn)(optx_buf buf);

typedef struct optx_plugin_v1 {
    /* First in every version, so a host can read them before anything else. */
    uint32_t abi_major;
    uint32_t abi_minor;
    /* sizeof(optx_plugin_v1) as the plugin was built: later minors only append fields. */
    size_t struct_size;
    const char *name;    /* NUL-terminated UTF-8 */
    const char *version;
    const char *const *runners; /* n_runners names */
    size_t n_runners;
    const char *const *metrics; /* n_metrics names */
    size_t n_metrics;
    optx_open_fn open;
    optx_call_fn call;
    optx_close_fn close;
    optx_release_fn release;
} optx_plugin_v1_t;

/* The one symbol a plugin exports. */
const optx_plugin_v1_t *optx_plugin_v1(void);

#ifdef __cplusplus
}
#endif

#endif /* OPTX_PLUGIN_H */
