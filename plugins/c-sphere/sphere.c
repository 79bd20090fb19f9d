/*
 * A plugin written in C against optx_plugin.h: the runner "sphere" computes the sum of
 * the squares of a trial's parameters at once and keeps it in the run metadata; the
 * metric "f" reads it back. optx's tests build it with `cc -shared -fPIC`.
 *
 * Test builds may define SPHERE_ABI_MAJOR (to build a plugin of another ABI version) or
 * SPHERE_NO_ENTRY (to build a library that is not a plugin at all).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optx_plugin.h"

#ifndef SPHERE_ABI_MAJOR
#define SPHERE_ABI_MAJOR OPTX_ABI_MAJOR
#endif

enum kind { RUNNER = 1, METRIC = 2 };

static int32_t answer(optx_buf *out, const char *text, int32_t code) {
    size_t n = strlen(text);
    uint8_t *p = malloc(n);
    if (p == NULL) {
        out->ptr = NULL;
        out->len = 0;
        return OPTX_ERROR;
    }
    memcpy(p, text, n);
    out->ptr = p;
    out->len = n;
    return code;
}

/* A NUL-terminated copy of a request. */
static char *text_of(const uint8_t *req, size_t len) {
    char *s = malloc(len + 1);
    if (s != NULL) {
        memcpy(s, req, len);
        s[len] = '\0';
    }
    return s;
}

/* Sum of squares of the numbers in the "parameters" object (flat, numbers only). */
static int sphere(const char *req, double *f) {
    const char *p = strstr(req, "\"parameters\"");
    if (p == NULL || (p = strchr(p, '{')) == NULL) return 0;
    double sum = 0.0;
    p++;
    while (*p != '\0' && *p != '}') {
        const char *colon = strchr(p, ':');
        if (colon == NULL) return 0;
        char *end;
        double x = strtod(colon + 1, &end);
        if (end == colon + 1) return 0; /* not a number */
        sum += x * x;
        p = end;
        while (*p == ' ' || *p == ',') p++;
    }
    *f = sum;
    return 1;
}

static int32_t sphere_open(const uint8_t *req, size_t len, void **instance, optx_buf *out) {
    char *r = text_of(req, len);
    if (r == NULL) return answer(out, "{\"message\":\"out of memory\"}", OPTX_ERROR);
    enum kind k = 0;
    if (strstr(r, "\"kind\":\"runner\"") && strstr(r, "\"name\":\"sphere\"")) k = RUNNER;
    if (strstr(r, "\"kind\":\"metric\"") && strstr(r, "\"name\":\"f\"")) k = METRIC;
    free(r);
    if (k == 0) return answer(out, "{\"message\":\"the C plugin offers the runner sphere and the metric f\"}", OPTX_ERROR);
    enum kind *inst = malloc(sizeof *inst);
    if (inst == NULL) return answer(out, "{\"message\":\"out of memory\"}", OPTX_ERROR);
    *inst = k;
    *instance = inst;
    return answer(out, "{}", OPTX_OK);
}

static int32_t sphere_call(void *instance, uint32_t op, const uint8_t *req, size_t len, optx_buf *out) {
    enum kind k = *(enum kind *)instance;
    char *r = text_of(req, len);
    char buf[128];
    int32_t code;
    double f;
    if (r == NULL) return answer(out, "{\"message\":\"out of memory\"}", OPTX_ERROR);
    if (k == RUNNER && op == OPTX_OP_RUN_TRIAL) {
        if (sphere(r, &f)) {
            snprintf(buf, sizeof buf, "{\"f\":%.17g}", f);
            code = answer(out, buf, OPTX_OK);
        } else {
            code = answer(out, "{\"message\":\"cannot read the parameters\"}", OPTX_ERROR);
        }
    } else if (k == RUNNER && op == OPTX_OP_POLL_TRIAL) {
        code = answer(out, "{\"status\":\"completed\"}", OPTX_OK);
    } else if (k == METRIC && op == OPTX_OP_FETCH) {
        const char *p = strstr(r, "\"f\":");
        if (p != NULL) {
            snprintf(buf, sizeof buf, "[{\"mean\":%.17g}]", strtod(p + 4, NULL));
            code = answer(out, buf, OPTX_OK);
        } else {
            code = answer(out, "{\"message\":\"no f in the run metadata\",\"retry\":false}", OPTX_ERROR);
        }
    } else {
        code = answer(out, "{\"message\":\"not supported\"}", OPTX_UNSUPPORTED);
    }
    free(r);
    return code;
}

static void sphere_close(void *instance) { free(instance); }

static void sphere_release(optx_buf buf) { free(buf.ptr); }

static const char *const RUNNERS[] = {"sphere"};
static const char *const METRICS[] = {"f"};

static const optx_plugin_v1_t TABLE = {
    SPHERE_ABI_MAJOR, OPTX_ABI_MINOR, sizeof(optx_plugin_v1_t),
    "c-sphere", "1.0.0",
    RUNNERS, 1,
    METRICS, 1,
    sphere_open, sphere_call, sphere_close, sphere_release,
};

#ifdef SPHERE_NO_ENTRY
const optx_plugin_v1_t *not_an_optx_plugin(void) { return &TABLE; }
#else
const optx_plugin_v1_t *optx_plugin_v1(void) { return &TABLE; }
#endif
