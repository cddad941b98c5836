/*
 * Decoder of Loki's push request (logproto.PushRequest) wire format into flat columnar buffers.
 *
 * decode(data) walks the protobuf bytes once, without the GIL, and returns
 *   (labels, counts, ts, line_offsets, line_data, md_offsets, key_offsets, key_data, value_offsets, value_data)
 * labels is a list of str (one per stream, invalid UTF-8 replaced by U+FFFD); every other item is a buffer:
 *   counts        int64[streams]       entries per stream
 *   ts            int64[entries]       nanoseconds since the epoch
 *   line_offsets  int64[entries + 1]   into line_data (Arrow large_string layout)
 *   md_offsets    int32[entries + 1]   structured-metadata pairs of each entry (Arrow map layout)
 *   key_offsets   int32[pairs + 1]     into key_data; value_offsets likewise into value_data
 * Invalid UTF-8 in lines, names and values is replaced by U+FFFD (one per maximal ill-formed subpart, as
 * Python's "replace" error handler does), so the buffers are valid Arrow strings.
 *
 * The input is hostile until proven otherwise: every length is checked against the end of its enclosing
 * message, unknown fields are skipped by wire type, and any malformed input raises ValueError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ buffers owned by Python objects */

typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t len;
} OutBuffer;

static char empty_data[8];

static void OutBuffer_dealloc(OutBuffer *self) {
    free(self->data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int OutBuffer_getbuffer(OutBuffer *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data ? self->data : empty_data, self->len, 0, flags);
}

static Py_ssize_t OutBuffer_length(OutBuffer *self) { return self->len; }

static PyBufferProcs OutBuffer_as_buffer = {(getbufferproc)OutBuffer_getbuffer, NULL};
static PySequenceMethods OutBuffer_as_sequence = {.sq_length = (lenfunc)OutBuffer_length};

static PyTypeObject OutBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "loglake.ingest._pushdecode.OutBuffer",
    .tp_doc = "A block of memory filled by the push decoder (supports the buffer protocol).",
    .tp_basicsize = sizeof(OutBuffer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)OutBuffer_dealloc,
    .tp_as_buffer = &OutBuffer_as_buffer,
    .tp_as_sequence = &OutBuffer_as_sequence,
};

/* ------------------------------------------------------------------ growable byte buffers (no GIL needed) */

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} gbuf;

static int gbuf_reserve(gbuf *b, size_t extra) {
    if (b->cap - b->len >= extra) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

static int gbuf_put_i64(gbuf *b, int64_t v) {
    if (gbuf_reserve(b, 8)) return -1;
    memcpy(b->data + b->len, &v, 8);
    b->len += 8;
    return 0;
}

static int gbuf_put_i32(gbuf *b, int32_t v) {
    if (gbuf_reserve(b, 4)) return -1;
    memcpy(b->data + b->len, &v, 4);
    b->len += 4;
    return 0;
}

/* ------------------------------------------------------------------ UTF-8 */

/* Length of the well-formed UTF-8 sequence at s (> 0), or minus the length of its maximal ill-formed
 * subpart (Unicode 15, section 3.9, "U+FFFD substitution of maximal subparts"). n >= 1. */
static inline int utf8_step(const uint8_t *s, size_t n) {
    uint8_t b0 = s[0];
    if (b0 < 0x80) return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 1;
    } else if (b0 == 0xE0) {
        need = 2;
        lo = 0xA0;
    } else if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) {
        need = 2;
    } else if (b0 == 0xED) {
        need = 2;
        hi = 0x9F;
    } else if (b0 == 0xF0) {
        need = 3;
        lo = 0x90;
    } else if (b0 >= 0xF1 && b0 <= 0xF3) {
        need = 3;
    } else if (b0 == 0xF4) {
        need = 3;
        hi = 0x8F;
    } else {
        return -1;
    }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) return -k;
        uint8_t b = s[k];
        if (b < lo || b > hi) return -k;
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

/* Length of the longest valid UTF-8 prefix of s. Runs of ASCII are checked 32, then 8 bytes at a time. */
static size_t utf8_valid_prefix(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        while (i + 32 <= n) {
            uint64_t w[4];
            memcpy(w, s + i, 32);
            if ((w[0] | w[1] | w[2] | w[3]) & 0x8080808080808080ULL) break;
            i += 32;
        }
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int k = utf8_step(s + i, n - i);
        if (k < 0) return i;
        i += (size_t)k;
    }
    return n;
}

/* Append s to out, replacing ill-formed UTF-8 by U+FFFD. */
static int append_utf8(gbuf *out, const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    size_t valid = utf8_valid_prefix(s, n);
    if (valid == n) {
        if (gbuf_reserve(out, n)) return -1;
        memcpy(out->data + out->len, s, n);
        out->len += n;
        return 0;
    }
    /* Each ill-formed byte becomes at most three bytes. */
    if (n > (SIZE_MAX - out->len) / 3 || gbuf_reserve(out, n * 3)) return -1;
    char *w = out->data + out->len;
    size_t i = 0;
    while (i < n) {
        size_t run = utf8_valid_prefix(s + i, n - i);
        memcpy(w, s + i, run);
        w += run;
        i += run;
        if (i >= n) break;
        int k = utf8_step(s + i, n - i);
        /* k < 0 here: the prefix stopped at an ill-formed subpart. */
        w[0] = (char)0xEF;
        w[1] = (char)0xBF;
        w[2] = (char)0xBD;
        w += 3;
        i += (size_t)(-k);
    }
    out->len = (size_t)(w - out->data);
    return 0;
}

/* ------------------------------------------------------------------ wire format */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

typedef struct {
    const uint8_t *base;
    gbuf labels; /* (int64 offset, int64 length) per stream; offset -1 when the stream had no labels field */
    gbuf counts, ts, line_off, line_data, md_off, key_off, key_data, val_off, val_data;
    int64_t n_entries, n_pairs, n_streams;
    int oom;
    char err[320];
} pstate;

static int fail(pstate *st, const uint8_t *at, const char *what) {
    if (!st->err[0])
        snprintf(st->err, sizeof st->err, "%s (at byte %lld of the decompressed request)", what,
                 (long long)(at - st->base));
    return -1;
}

static int oom(pstate *st) {
    st->oom = 1;
    return -1;
}

/* Read a base-128 varint of at most ten bytes. */
static inline int read_varint(pstate *st, const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= end) return fail(st, *pp, "truncated varint");
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *pp = p;
            *out = v;
            return 0;
        }
    }
    return fail(st, *pp, "varint longer than ten bytes");
}

static inline int read_tag(pstate *st, const uint8_t **pp, const uint8_t *end, uint32_t *field, int *wt) {
    const uint8_t *at = *pp;
    uint64_t tag;
    if (read_varint(st, pp, end, &tag)) return -1;
    if (tag >> 32) return fail(st, at, "field tag out of range");
    *field = (uint32_t)(tag >> 3);
    *wt = (int)(tag & 7);
    if (*field == 0) return fail(st, at, "field number 0 is not allowed");
    return 0;
}

/* Read the length prefix of a LEN field and check it against the end of the enclosing message. */
static inline int read_len(pstate *st, const uint8_t **pp, const uint8_t *end, const uint8_t **sub_end) {
    const uint8_t *at = *pp;
    uint64_t n;
    if (read_varint(st, pp, end, &n)) return -1;
    if (n > (uint64_t)(end - *pp)) return fail(st, at, "length-delimited field runs past the end of its message");
    *sub_end = *pp + n;
    return 0;
}

#define MAX_GROUP_DEPTH 100

/* Skip one field whose tag was just read. Groups are skipped iteratively, their end tags matched. */
static int skip_field(pstate *st, const uint8_t **pp, const uint8_t *end, uint32_t field, int wt) {
    uint32_t stack[MAX_GROUP_DEPTH];
    int depth = 0;
    for (;;) {
        const uint8_t *at = *pp;
        uint64_t v;
        const uint8_t *sub_end;
        switch (wt) {
        case WT_VARINT:
            if (read_varint(st, pp, end, &v)) return -1;
            break;
        case WT_I64:
            if (end - *pp < 8) return fail(st, at, "truncated fixed64 field");
            *pp += 8;
            break;
        case WT_I32:
            if (end - *pp < 4) return fail(st, at, "truncated fixed32 field");
            *pp += 4;
            break;
        case WT_LEN:
            if (read_len(st, pp, end, &sub_end)) return -1;
            *pp = sub_end;
            break;
        case WT_SGROUP:
            if (depth >= MAX_GROUP_DEPTH) return fail(st, at, "groups nested too deeply");
            stack[depth++] = field;
            break;
        case WT_EGROUP:
            if (depth == 0 || stack[depth - 1] != field) return fail(st, at, "unmatched end-group tag");
            depth--;
            break;
        default:
            return fail(st, at, "invalid wire type 6 or 7");
        }
        if (depth == 0) return 0;
        if (read_tag(st, pp, end, &field, &wt)) return -1;
    }
}

static int wrong_type(pstate *st, const uint8_t *at, const char *field) {
    char msg[160];
    snprintf(msg, sizeof msg, "wrong wire type for field %s", field);
    return fail(st, at, msg);
}

static int parse_timestamp(pstate *st, const uint8_t *p, const uint8_t *end, int64_t *seconds, int64_t *nanos) {
    while (p < end) {
        const uint8_t *at = p;
        uint32_t field;
        int wt;
        uint64_t v;
        if (read_tag(st, &p, end, &field, &wt)) return -1;
        if (field == 1 || field == 2) {
            if (wt != WT_VARINT) return wrong_type(st, at, field == 1 ? "Timestamp.seconds" : "Timestamp.nanos");
            if (read_varint(st, &p, end, &v)) return -1;
            if (field == 1)
                *seconds = (int64_t)v;
            else
                *nanos = (int64_t)(int32_t)(uint32_t)v;
        } else if (skip_field(st, &p, end, field, wt)) {
            return -1;
        }
    }
    return 0;
}

static int parse_pair(pstate *st, const uint8_t *p, const uint8_t *end) {
    const uint8_t *name = NULL, *value = NULL;
    size_t name_len = 0, value_len = 0;
    while (p < end) {
        const uint8_t *at = p;
        uint32_t field;
        int wt;
        const uint8_t *sub_end;
        if (read_tag(st, &p, end, &field, &wt)) return -1;
        if (field == 1 || field == 2) {
            if (wt != WT_LEN) return wrong_type(st, at, field == 1 ? "LabelPairAdapter.name" : "LabelPairAdapter.value");
            if (read_len(st, &p, end, &sub_end)) return -1;
            if (field == 1) {
                name = p;
                name_len = (size_t)(sub_end - p);
            } else {
                value = p;
                value_len = (size_t)(sub_end - p);
            }
            p = sub_end;
        } else if (skip_field(st, &p, end, field, wt)) {
            return -1;
        }
    }
    if (append_utf8(&st->key_data, name ? name : (const uint8_t *)"", name_len)) return oom(st);
    if (append_utf8(&st->val_data, value ? value : (const uint8_t *)"", value_len)) return oom(st);
    if (st->key_data.len > INT32_MAX || st->val_data.len > INT32_MAX || st->n_pairs >= INT32_MAX - 1)
        return fail(st, end, "structured metadata of one push exceeds 2 GiB");
    st->n_pairs++;
    if (gbuf_put_i32(&st->key_off, (int32_t)st->key_data.len)) return oom(st);
    if (gbuf_put_i32(&st->val_off, (int32_t)st->val_data.len)) return oom(st);
    return 0;
}

#define NS_PER_S 1000000000LL

static int parse_entry(pstate *st, const uint8_t *p, const uint8_t *end) {
    const uint8_t *start = p;
    const uint8_t *line = NULL;
    size_t line_len = 0;
    int64_t seconds = 0, nanos = 0;
    while (p < end) {
        const uint8_t *at = p;
        uint32_t field;
        int wt;
        const uint8_t *sub_end;
        if (read_tag(st, &p, end, &field, &wt)) return -1;
        if (field >= 1 && field <= 4) {
            static const char *names[] = {"", "EntryAdapter.timestamp", "EntryAdapter.line",
                                          "EntryAdapter.structuredMetadata", "EntryAdapter.parsed"};
            if (wt != WT_LEN) return wrong_type(st, at, names[field]);
            if (read_len(st, &p, end, &sub_end)) return -1;
            if (field == 1) {
                if (parse_timestamp(st, p, sub_end, &seconds, &nanos)) return -1;
            } else if (field == 2) {
                line = p;
                line_len = (size_t)(sub_end - p);
            } else if (field == 3) {
                if (parse_pair(st, p, sub_end)) return -1;
            }
            /* field 4 (parsed labels) is only meaningful in query responses: ignored. */
            p = sub_end;
        } else if (skip_field(st, &p, end, field, wt)) {
            return -1;
        }
    }
    if (nanos < 0 || nanos >= NS_PER_S) {
        char msg[160];
        snprintf(msg, sizeof msg, "timestamp nanos %lld outside 0..999999999", (long long)nanos);
        return fail(st, start, msg);
    }
    /* For negative seconds, borrow one second so that the intermediate product stays in range at INT64_MIN. */
    int64_t whole = seconds, frac = nanos, ns;
    if (whole < 0 && frac > 0) {
        whole += 1;
        frac -= NS_PER_S;
    }
    if (__builtin_mul_overflow(whole, NS_PER_S, &ns) || __builtin_add_overflow(ns, frac, &ns)) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "timestamp seconds %lld cannot be represented in nanoseconds (allowed years 1678 to 2262)",
                 (long long)seconds);
        return fail(st, start, msg);
    }
    if (gbuf_put_i64(&st->ts, ns)) return oom(st);
    if (append_utf8(&st->line_data, line ? line : (const uint8_t *)"", line_len)) return oom(st);
    if (gbuf_put_i64(&st->line_off, (int64_t)st->line_data.len)) return oom(st);
    if (gbuf_put_i32(&st->md_off, (int32_t)st->n_pairs)) return oom(st);
    st->n_entries++;
    return 0;
}

static int parse_stream(pstate *st, const uint8_t *p, const uint8_t *end) {
    int64_t first_entry = st->n_entries;
    int64_t labels_off = -1, labels_len = 0;
    while (p < end) {
        const uint8_t *at = p;
        uint32_t field;
        int wt;
        const uint8_t *sub_end;
        uint64_t v;
        if (read_tag(st, &p, end, &field, &wt)) return -1;
        if (field == 1 || field == 2) {
            if (wt != WT_LEN) return wrong_type(st, at, field == 1 ? "StreamAdapter.labels" : "StreamAdapter.entries");
            if (read_len(st, &p, end, &sub_end)) return -1;
            if (field == 1) {
                labels_off = (int64_t)(p - st->base);
                labels_len = (int64_t)(sub_end - p);
            } else if (parse_entry(st, p, sub_end)) {
                return -1;
            }
            p = sub_end;
        } else if (field == 3) {
            if (wt != WT_VARINT) return wrong_type(st, at, "StreamAdapter.hash");
            if (read_varint(st, &p, end, &v)) return -1;
        } else if (skip_field(st, &p, end, field, wt)) {
            return -1;
        }
    }
    if (gbuf_put_i64(&st->labels, labels_off) || gbuf_put_i64(&st->labels, labels_len)) return oom(st);
    if (gbuf_put_i64(&st->counts, st->n_entries - first_entry)) return oom(st);
    st->n_streams++;
    return 0;
}

static int parse_request(pstate *st, const uint8_t *p, const uint8_t *end) {
    while (p < end) {
        const uint8_t *at = p;
        uint32_t field;
        int wt;
        const uint8_t *sub_end;
        if (read_tag(st, &p, end, &field, &wt)) return -1;
        if (field == 1) {
            if (wt != WT_LEN) return wrong_type(st, at, "PushRequest.streams");
            if (read_len(st, &p, end, &sub_end)) return -1;
            if (parse_stream(st, p, sub_end)) return -1;
            p = sub_end;
        } else if (skip_field(st, &p, end, field, wt)) {
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ module function */

static void pstate_free(pstate *st) {
    gbuf *all[] = {&st->labels, &st->counts, &st->ts, &st->line_off, &st->line_data, &st->md_off,
                   &st->key_off, &st->key_data, &st->val_off, &st->val_data};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(all[i]->data);
        all[i]->data = NULL;
    }
}

/* Hand a gbuf's memory to a new OutBuffer (the gbuf is emptied). */
static PyObject *to_outbuffer(gbuf *b) {
    OutBuffer *o = PyObject_New(OutBuffer, &OutBufferType);
    if (!o) return NULL;
    o->data = b->data;
    o->len = (Py_ssize_t)b->len;
    if (o->data && b->cap > b->len + 4096) {
        char *shrunk = realloc(o->data, b->len ? b->len : 1);
        if (shrunk) o->data = shrunk;
    }
    b->data = NULL;
    b->len = b->cap = 0;
    return (PyObject *)o;
}

static PyObject *pushdecode_decode(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *data = (const uint8_t *)view.buf;
    size_t n = (size_t)view.len;

    pstate st;
    memset(&st, 0, sizeof st);
    st.base = data;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    /* Sizes known up front: line bytes cannot exceed the input unless bytes are replaced. */
    rc = 0;
    if (gbuf_reserve(&st.line_data, n ? n : 1) || gbuf_put_i64(&st.line_off, 0) || gbuf_put_i32(&st.md_off, 0) ||
        gbuf_put_i32(&st.key_off, 0) || gbuf_put_i32(&st.val_off, 0)) {
        st.oom = 1;
        rc = -1;
    }
    if (rc == 0) rc = parse_request(&st, data, data + n);
    Py_END_ALLOW_THREADS

    PyObject *result = NULL, *labels = NULL;
    if (rc != 0) {
        if (st.oom)
            PyErr_NoMemory();
        else
            PyErr_SetString(PyExc_ValueError, st.err);
        goto done;
    }
    labels = PyList_New((Py_ssize_t)st.n_streams);
    if (!labels) goto done;
    const int64_t *lab = (const int64_t *)st.labels.data;
    for (int64_t i = 0; i < st.n_streams; i++) {
        int64_t off = lab[2 * i], len = lab[2 * i + 1];
        PyObject *s = off < 0 ? PyUnicode_FromStringAndSize("", 0)
                              : PyUnicode_DecodeUTF8((const char *)data + off, (Py_ssize_t)len, "replace");
        if (!s) goto done;
        PyList_SET_ITEM(labels, (Py_ssize_t)i, s);
    }
    result = PyTuple_New(10);
    if (!result) goto done;
    PyTuple_SET_ITEM(result, 0, labels);
    labels = NULL;
    gbuf *outs[] = {&st.counts, &st.ts, &st.line_off, &st.line_data, &st.md_off,
                    &st.key_off, &st.key_data, &st.val_off, &st.val_data};
    for (int i = 0; i < 9; i++) {
        PyObject *o = to_outbuffer(outs[i]);
        if (!o) {
            Py_CLEAR(result);
            goto done;
        }
        PyTuple_SET_ITEM(result, i + 1, o);
    }
done:
    Py_XDECREF(labels);
    pstate_free(&st);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *pushdecode_utf8_replace(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    gbuf out = {0};
    PyObject *result = NULL;
    if (append_utf8(&out, (const uint8_t *)view.buf, (size_t)view.len) == 0)
        result = PyBytes_FromStringAndSize(out.data ? out.data : "", (Py_ssize_t)out.len);
    else
        PyErr_NoMemory();
    free(out.data);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", pushdecode_decode, METH_O,
     "Decode an uncompressed logproto.PushRequest into (labels, counts, ts, line_offsets, line_data, md_offsets, "
     "key_offsets, key_data, value_offsets, value_data); raise ValueError on malformed input."},
    {"utf8_replace", pushdecode_utf8_replace, METH_O,
     "Return the bytes with ill-formed UTF-8 replaced by U+FFFD (as the decoder does; exposed for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pushdecode", "Fast decoder of Loki push requests into columnar buffers.", -1, methods,
};

PyMODINIT_FUNC PyInit__pushdecode(void) {
    if (PyType_Ready(&OutBufferType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&OutBufferType);
    if (PyModule_AddObject(m, "OutBuffer", (PyObject *)&OutBufferType) < 0) {
        Py_DECREF(&OutBufferType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
