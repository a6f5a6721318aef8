/*
 * headwater.records._speedups: optional C accelerator for headwater.records.batch.
 *
 * It provides
 *   - Record, a C twin of the pure-Python batch.Record (same constructor, attributes,
 *     __eq__, __repr__, unhashable), and
 *   - decode_records(), the inner loop of batch._decode_records: it parses the
 *     uncompressed records section of one RecordBatch v2 into a list of Record.
 *
 * The contract is *identical behaviour* to the pure-Python decoder, bad input included:
 * the same inputs are accepted, they decode to equal records, and every rejected input
 * raises headwater.errors.CorruptBatchError with the same reason text. The Python code
 * has two layers, and so does this file:
 *
 *   - a fast path (decode_one / decode_header) that only decides whether a record is
 *     well formed and builds it. When it is not, nothing about *why* is kept;
 *   - a slow path (record_fault and friends), a line-by-line port of
 *     batch._find_record_fault, that re-parses the one bad record to word the error.
 *
 * The fast path accepts exactly what the Python fast path accepts. The Python one
 * may read a field past the end of its record, but then its position ends up beyond
 * the record end and the final "p != end" check fails, so bounding every read here
 * by the record end rejects the same inputs sooner. The subtle rules it copies:
 *   - a null key or value is only the one byte 0x01; a longer encoding of -1 is an
 *     error (the Python fast path maps every other negative length to _BAD_LENGTH);
 *   - a null header value may be any encoding of -1;
 *   - varints are up to 10 bytes and must fit in 64 bits (decode_uvarint's rules);
 *     non-canonical encodings (0x80 0x00 for 0) are accepted everywhere.
 *
 * The input is untrusted: every read is checked against the end of its record or of
 * the section, and every length is compared with the bytes left before it is used.
 * tests/unit/records/test_speedups.py compares both decoders on generated and mutated
 * input. To run it under AddressSanitizer, build this file into a scratch copy of src/:
 *   gcc -shared -fPIC -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
 *       $(python3-config --includes) _speedups.c \
 *       -o _speedups$(python3-config --extension-suffix)
 * and run pytest on that copy with PYTHONPATH=<copy>/src PYTHONMALLOC=malloc
 * ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD="$(gcc -print-file-name=libasan.so)
 * $(gcc -print-file-name=libubsan.so)".
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* attributes + timestamp delta + offset delta + key length + value length + header
 * count, each at least one byte: the smallest legal record body (batch._MIN_RECORD_BODY). */
#define MIN_RECORD_BODY 6
/* A record is its length varint (>= 1 byte) plus a body of >= MIN_RECORD_BODY bytes. */
#define MIN_RECORD_SIZE (1 + MIN_RECORD_BODY)
/* A 64-bit value never needs more than this many LEB128 bytes (varint.MAX_VARINT_BYTES). */
#define MAX_VARINT_BYTES 10

/* headwater.errors.CorruptBatchError, looked up once when the module is initialised. */
static PyObject *CorruptBatchError = NULL;

/* ------------------------------------------------------------------------------------ */
/* Record                                                                               */
/* ------------------------------------------------------------------------------------ */

/* The fields in constructor (and repr) order. */
enum {
    F_TOPIC,
    F_PARTITION,
    F_OFFSET,
    F_TIMESTAMP,
    F_KEY,
    F_VALUE,
    F_HEADERS,
    N_FIELDS
};

static const char *const field_names[N_FIELDS] = {
    "topic", "partition", "offset", "timestamp", "key", "value", "headers",
};

/*
 * Garbage-collector tracking. A record is a GC container, but one that references only
 * atomic objects (str, int, bytes, None: types without GC support) can never be part
 * of a reference cycle, so it need not be tracked. This is the optimisation CPython
 * applies to tuples and dicts, and it matters here: a consumer decodes records by the
 * million, and tracked objects that live across a poll get promoted and then scanned
 * again by every full collection (with them tracked, end-to-end consumption ran at a
 * third of the speed).
 *
 * So decode_records leaves a record without headers untracked, and does not even build
 * its empty headers list (`headers_pending`): `record.headers` builds it on first use.
 * The invariant is: a record holding a reference to a GC-capable object is tracked.
 * Every path that stores a reference keeps it: the setters and __init__ through
 * store_field(), the lazy list in get_field(), and decode_one() itself. Records made by
 * the constructor are always tracked (PyType_GenericNew tracks them).
 */

typedef struct {
    PyObject_HEAD
    /* NULL when unset (between tp_new and __init__, or after `del record.field`), exactly
     * when the Python class would raise AttributeError for an unset slot; and for
     * headers also while headers_pending. */
    PyObject *fields[N_FIELDS];
    /* headers is an empty list not built yet (see above). */
    char headers_pending;
} RecordObject;

static PyTypeObject RecordType;

/* Raise the AttributeError the Python class gives for an unset slot. */
static void
missing_field(int index)
{
    PyErr_Format(PyExc_AttributeError, "'Record' object has no attribute '%s'",
                 field_names[index]);
}

/* Keep the invariant: track `self` before it holds a reference to a GC-capable object. */
static inline void
track_for(RecordObject *self, PyObject *value)
{
    if (PyObject_IS_GC(value) && !PyObject_GC_IsTracked((PyObject *)self)) {
        PyObject_GC_Track(self);
    }
}

/* Borrowed reference to a field, building a pending headers list; NULL with
 * AttributeError (unset) or MemoryError set on failure. */
static PyObject *
get_field(RecordObject *self, int index)
{
    if (index == F_HEADERS && self->headers_pending) {
        PyObject *headers = PyList_New(0);
        if (headers == NULL) {
            return NULL;
        }
        track_for(self, headers);
        self->fields[F_HEADERS] = headers;
        self->headers_pending = 0;
    }
    if (self->fields[index] == NULL) {
        missing_field(index);
    }
    return self->fields[index];
}

/* Store a new reference to `value` (NULL deletes) in a field. */
static int
store_field(RecordObject *self, int index, PyObject *value)
{
    if (index == F_HEADERS && self->headers_pending) {
        self->headers_pending = 0;
    }
    else if (value == NULL && self->fields[index] == NULL) {
        missing_field(index);
        return -1;
    }
    if (value != NULL) {
        track_for(self, value);
    }
    Py_XSETREF(self->fields[index], Py_XNewRef(value));
    return 0;
}

static PyObject *
Record_get(RecordObject *self, void *closure)
{
    return Py_XNewRef(get_field(self, (int)(intptr_t)closure));
}

static int
Record_set(RecordObject *self, PyObject *value, void *closure)
{
    return store_field(self, (int)(intptr_t)closure, value);
}

static int
Record_init(RecordObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {
        "topic", "partition", "offset", "timestamp", "key", "value", "headers", NULL,
    };
    PyObject *values[N_FIELDS];

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOO:Record", kwlist, &values[0],
                                     &values[1], &values[2], &values[3], &values[4],
                                     &values[5], &values[6])) {
        return -1;
    }
    for (int i = 0; i < N_FIELDS; i++) {
        store_field(self, i, values[i]); /* cannot fail: the value is not NULL */
    }
    return 0;
}

static int
Record_traverse(RecordObject *self, visitproc visit, void *arg)
{
    for (int i = 0; i < N_FIELDS; i++) {
        Py_VISIT(self->fields[i]);
    }
    return 0;
}

static int
Record_clear(RecordObject *self)
{
    for (int i = 0; i < N_FIELDS; i++) {
        Py_CLEAR(self->fields[i]);
    }
    self->headers_pending = 0;
    return 0;
}

static void
Record_dealloc(RecordObject *self)
{
    PyObject_GC_UnTrack(self); /* a no-op for an untracked record */
    /* The trashcan bounds the C recursion when records nest deeply through headers. */
    Py_TRASHCAN_BEGIN(self, Record_dealloc)
    Record_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
    Py_TRASHCAN_END
}

/* New references to all seven fields in `out` (release them with release_fields), or
 * -1 with an exception if one is unset, as reading it in Python would raise. New
 * references, because the repr or == of one field may run code that reassigns another. */
static int
get_fields(RecordObject *self, PyObject *out[N_FIELDS])
{
    for (int i = 0; i < N_FIELDS; i++) {
        out[i] = Py_XNewRef(get_field(self, i));
        if (out[i] == NULL) {
            while (--i >= 0) {
                Py_DECREF(out[i]);
            }
            return -1;
        }
    }
    return 0;
}

static void
release_fields(PyObject *fields[N_FIELDS])
{
    for (int i = 0; i < N_FIELDS; i++) {
        Py_DECREF(fields[i]);
    }
}

static PyObject *
Record_repr(RecordObject *self)
{
    PyObject *f[N_FIELDS];

    if (get_fields(self, f) < 0) {
        return NULL;
    }
    PyObject *repr = PyUnicode_FromFormat(
        "Record(topic=%R, partition=%R, offset=%R, timestamp=%R, key=%R, value=%R, "
        "headers=%R)",
        f[F_TOPIC], f[F_PARTITION], f[F_OFFSET], f[F_TIMESTAMP], f[F_KEY], f[F_VALUE],
        f[F_HEADERS]);
    release_fields(f);
    return repr;
}

/* __eq__ compares the fields in the order the Python class does, with `==` and truth
 * testing (no identity shortcut), and stops at the first unequal one. __ne__ is its
 * negation, as object.__ne__ makes it for the Python class; other orderings are not
 * supported. */
static PyObject *
Record_richcompare(PyObject *a, PyObject *b, int op)
{
    static const int order[N_FIELDS] = {
        F_OFFSET, F_PARTITION, F_TOPIC, F_TIMESTAMP, F_KEY, F_VALUE, F_HEADERS,
    };

    if ((op != Py_EQ && op != Py_NE) || !Py_IS_TYPE(a, &RecordType)
        || !Py_IS_TYPE(b, &RecordType)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    int equal = 1;
    for (int i = 0; i < N_FIELDS && equal; i++) {
        PyObject *x = get_field((RecordObject *)a, order[i]);
        PyObject *y = x ? get_field((RecordObject *)b, order[i]) : NULL;
        if (y == NULL) {
            return NULL;
        }
        /* x and y are borrowed: keep them alive while __eq__ runs arbitrary code. */
        Py_INCREF(x);
        Py_INCREF(y);
        PyObject *result = PyObject_RichCompare(x, y, Py_EQ);
        Py_DECREF(x);
        Py_DECREF(y);
        if (result == NULL) {
            return NULL;
        }
        equal = PyObject_IsTrue(result);
        Py_DECREF(result);
        if (equal < 0) {
            return NULL;
        }
    }
    return PyBool_FromLong(op == Py_EQ ? equal : !equal);
}

/* Pickle and copy support: rebuild through the constructor. (The Python class pickles
 * through its slots; a C type with no __dict__ needs an explicit __reduce__.) */
static PyObject *
Record_reduce(RecordObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *f[N_FIELDS];

    if (get_fields(self, f) < 0) {
        return NULL;
    }
    PyObject *reduced = Py_BuildValue("O(OOOOOOO)", (PyObject *)Py_TYPE(self), f[F_TOPIC],
                                      f[F_PARTITION], f[F_OFFSET], f[F_TIMESTAMP], f[F_KEY],
                                      f[F_VALUE], f[F_HEADERS]);
    release_fields(f);
    return reduced;
}

static PyMethodDef Record_methods[] = {
    {"__reduce__", (PyCFunction)Record_reduce, METH_NOARGS,
     PyDoc_STR("Return the constructor and arguments that rebuild this record.")},
    {NULL, NULL, 0, NULL},
};

#define FIELD(index, doc) \
    {field_names[index], (getter)Record_get, (setter)Record_set, PyDoc_STR(doc), \
     (void *)(intptr_t)(index)}

static PyGetSetDef Record_getset[] = {
    FIELD(F_TOPIC, "Topic name (empty when the caller did not say)."),
    FIELD(F_PARTITION, "Partition number (-1 when the caller did not say)."),
    FIELD(F_OFFSET, "Absolute offset in the partition."),
    FIELD(F_TIMESTAMP, "Milliseconds since the epoch."),
    FIELD(F_KEY, "Key bytes, or None."),
    FIELD(F_VALUE, "Value bytes, or None (a tombstone)."),
    FIELD(F_HEADERS, "(key, value) pairs in wire order."),
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(Record_doc,
"Record(topic, partition, offset, timestamp, key, value, headers)\n--\n\n"
"One decoded record, placed in its topic-partition.\n"
"\n"
"The C implementation of headwater.records.batch.Record.\n"
"\n"
"Attributes:\n"
"    topic: Topic name (empty when the caller did not say).\n"
"    partition: Partition number (-1 when the caller did not say).\n"
"    offset: Absolute offset in the partition.\n"
"    timestamp: Milliseconds since the epoch.\n"
"    key: Key bytes, or None.\n"
"    value: Value bytes, or None (a tombstone).\n"
"    headers: ``(key, value)`` pairs in wire order.\n");

static PyTypeObject RecordType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "headwater.records._speedups.Record",
    .tp_basicsize = sizeof(RecordObject),
    .tp_itemsize = 0,
    /* Not subclassable (no Py_TPFLAGS_BASETYPE): decode_records builds instances
     * directly, and a subclass could not be told apart in __eq__. */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = Record_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Record_init,
    .tp_dealloc = (destructor)Record_dealloc,
    .tp_traverse = (traverseproc)Record_traverse,
    .tp_clear = (inquiry)Record_clear,
    .tp_repr = (reprfunc)Record_repr,
    /* The Python class defines __eq__ without __hash__, which makes it unhashable. */
    .tp_hash = PyObject_HashNotImplemented,
    .tp_richcompare = Record_richcompare,
    .tp_methods = Record_methods,
    .tp_getset = Record_getset,
};

/* ------------------------------------------------------------------------------------ */
/* Varints                                                                              */
/* ------------------------------------------------------------------------------------ */

static inline int64_t
unzigzag(uint64_t z)
{
    return (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
}

/* Fast path: read one zigzag varint from [*pp, limit). On success store it, advance *pp
 * and return 0. Return -1 (leaving *pp alone) when the varint is truncated, longer
 * than 10 bytes or wider than 64 bits: the inputs decode_varint rejects. */
static inline int
read_varint(const uint8_t **pp, const uint8_t *limit, int64_t *out)
{
    const uint8_t *p = *pp;

    if (p < limit && *p < 0x80) {
        *out = unzigzag(*p);
        *pp = p + 1;
        return 0;
    }
    uint64_t result = 0;
    for (int shift = 0; shift < 7 * MAX_VARINT_BYTES; shift += 7) {
        if (p >= limit) {
            return -1;
        }
        uint8_t byte = *p++;
        /* The tenth byte (shift 63) holds bit 63 only: 0 or 1, and no continuation. */
        if (shift == 63 && byte > 1) {
            return -1;
        }
        result |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            *out = unzigzag(result);
            *pp = p;
            return 0;
        }
    }
    return -1; /* not reached: the tenth byte always returns above */
}

/* Slow path: decode_varint(buf, pos) on a buffer of `size` bytes, with its error text.
 * On success store the value and the position after it and return 0. On failure return
 * -1 with *reason set to a new str, or *reason NULL and an exception set when even that
 * could not be built. */
static int
careful_varint(const uint8_t *buf, Py_ssize_t size, Py_ssize_t pos, int64_t *value,
               Py_ssize_t *next, PyObject **reason)
{
    Py_ssize_t start = pos;
    uint64_t result = 0;
    int shift = 0;

    for (;;) {
        if (pos >= size) {
            *reason = PyUnicode_FromFormat("truncated varint at byte %zd (buffer has %zd bytes)",
                                           pos, size);
            return -1;
        }
        uint8_t byte = buf[pos++];
        result |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            if (shift == 63 && byte > 1) {
                *reason = PyUnicode_FromFormat("varint at byte %zd does not fit in 64 bits",
                                               start);
                return -1;
            }
            break;
        }
        shift += 7;
        if (shift >= 7 * MAX_VARINT_BYTES) {
            *reason = PyUnicode_FromFormat("varint at byte %zd is longer than %d bytes", start,
                                           MAX_VARINT_BYTES);
            return -1;
        }
    }
    *value = unzigzag(result);
    *next = pos;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Slow path: word the error for one malformed record                                   */
/* ------------------------------------------------------------------------------------ */

/* Port of batch._decode_headers on the record body `rec` of `rlen` bytes, from q.
 * Return 0 with *next set, or -1 as careful_varint does. The direct reads of the
 * Python code (data[pos]) fail with "headers run past the end of the record" while the
 * varint reads fail with decode_varint's words; the `q >= rlen` tests keep that split. */
static int
careful_headers(const uint8_t *rec, Py_ssize_t rlen, Py_ssize_t q, Py_ssize_t *next,
                PyObject **reason)
{
    static const char run_past[] = "headers run past the end of the record";
    int64_t count, n;

    if (q >= rlen) {
        *reason = PyUnicode_FromString(run_past);
        return -1;
    }
    if (careful_varint(rec, rlen, q, &count, &q, reason) < 0) {
        return -1;
    }
    if (count < 0) {
        *reason = PyUnicode_FromFormat("negative header count %lld", (long long)count);
        return -1;
    }
    /* Each pass consumes at least one byte or fails, so `count` cannot make this spin. */
    for (int64_t i = 0; i < count; i++) {
        if (q >= rlen) {
            *reason = PyUnicode_FromString(run_past);
            return -1;
        }
        if (careful_varint(rec, rlen, q, &n, &q, reason) < 0) {
            return -1;
        }
        if (n < 0) {
            *reason = PyUnicode_FromFormat("invalid header key length %lld", (long long)n);
            return -1;
        }
        if (n > rlen - q) {
            *reason = PyUnicode_FromFormat(
                "header key of %lld bytes runs past the end of the record", (long long)n);
            return -1;
        }
        PyObject *key = PyUnicode_DecodeUTF8((const char *)rec + q, (Py_ssize_t)n, NULL);
        if (key == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                return -1; /* MemoryError and the like propagate */
            }
            PyErr_Clear();
            PyObject *raw = PyBytes_FromStringAndSize((const char *)rec + q, (Py_ssize_t)n);
            if (raw == NULL) {
                return -1;
            }
            *reason = PyUnicode_FromFormat("header key is not valid UTF-8: %R", raw);
            Py_DECREF(raw);
            return -1;
        }
        Py_DECREF(key);
        q += (Py_ssize_t)n;
        if (q >= rlen) {
            *reason = PyUnicode_FromString(run_past);
            return -1;
        }
        if (careful_varint(rec, rlen, q, &n, &q, reason) < 0) {
            return -1;
        }
        if (n < 0) {
            if (n != -1) {
                *reason = PyUnicode_FromFormat("invalid header value length %lld",
                                               (long long)n);
                return -1;
            }
            continue;
        }
        if (n > rlen - q) {
            *reason = PyUnicode_FromFormat(
                "header value of %lld bytes runs past the end of the record", (long long)n);
            return -1;
        }
        q += (Py_ssize_t)n;
    }
    *next = q;
    return 0;
}

/* Port of batch._find_record_fault: re-parse the record at `pos` of the records section
 * `data` (`size` bytes) and return a new str saying what is wrong with it, or NULL with
 * an exception set. Positions in the messages are relative to the section for the
 * length varint and to the record body after it, as in the Python code. */
static PyObject *
record_fault(const uint8_t *data, Py_ssize_t size, Py_ssize_t pos, Py_ssize_t index,
             Py_ssize_t count)
{
    static const char *const names[2] = {"key", "value"};
    PyObject *reason = NULL;
    int64_t length, n;
    Py_ssize_t p;

    if (pos >= size) {
        return PyUnicode_FromFormat(
            "the batch claims %zd records but its records section ends after %zd", count,
            index);
    }
    if (careful_varint(data, size, pos, &length, &p, &reason) < 0) {
        return reason;
    }
    if (length < 0) {
        return PyUnicode_FromFormat("negative record length %lld", (long long)length);
    }
    if (length < MIN_RECORD_BODY) {
        return PyUnicode_FromFormat("record length %lld is below the minimum of %d",
                                    (long long)length, MIN_RECORD_BODY);
    }
    if (length > size - p) {
        return PyUnicode_FromFormat(
            "record length %lld runs past the records section (%zd bytes left)",
            (long long)length, size - p);
    }
    const uint8_t *rec = data + p;
    Py_ssize_t rlen = (Py_ssize_t)length;
    Py_ssize_t q = 1; /* skip the attributes byte */
    if (careful_varint(rec, rlen, q, &n, &q, &reason) < 0       /* timestamp delta */
        || careful_varint(rec, rlen, q, &n, &q, &reason) < 0) { /* offset delta */
        return reason;
    }
    for (int i = 0; i < 2; i++) {
        if (careful_varint(rec, rlen, q, &n, &q, &reason) < 0) {
            return reason;
        }
        if (n < -1) {
            return PyUnicode_FromFormat("invalid %s length %lld", names[i], (long long)n);
        }
        if (n > rlen - q) {
            return PyUnicode_FromFormat(
                "%s of %lld bytes runs past the end of the %lld-byte record", names[i],
                (long long)n, (long long)length);
        }
        if (n > 0) {
            q += (Py_ssize_t)n;
        }
    }
    if (careful_headers(rec, rlen, q, &q, &reason) < 0) {
        return reason;
    }
    if (q != rlen) {
        return PyUnicode_FromFormat("its fields take %zd bytes but its length says %lld", q,
                                    (long long)length);
    }
    return PyUnicode_FromString("malformed record");
}

/* Raise CorruptBatchError(message); steals the reference to message. */
static void
raise_corrupt(PyObject *message)
{
    if (message == NULL) {
        return;
    }
    PyObject *exc = PyObject_CallOneArg(CorruptBatchError, message);
    Py_DECREF(message);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

/* batch._record_error: CorruptBatchError("record {index}: {reason}"). */
static void
raise_record_error(const uint8_t *data, Py_ssize_t size, Py_ssize_t pos, Py_ssize_t index,
                   Py_ssize_t count)
{
    PyObject *reason = record_fault(data, size, pos, index, count);
    if (reason == NULL) {
        return;
    }
    PyObject *message = PyUnicode_FromFormat("record %zd: %U", index, reason);
    Py_DECREF(reason);
    raise_corrupt(message);
}

/* ------------------------------------------------------------------------------------ */
/* Fast path                                                                            */
/* ------------------------------------------------------------------------------------ */

/* Outcome of decoding one piece of a record. */
typedef enum {
    DECODED = 0,
    MALFORMED = 1,  /* the input is bad: word the error with record_fault */
    FAILED = -1,    /* a Python exception (MemoryError) is set: propagate it */
} outcome;

/* a + b as a Python int. Python ints never overflow; a corrupt or hostile batch can
 * make the int64 sum do so, and then it is computed with Python arithmetic. */
static PyObject *
long_from_sum(int64_t a, int64_t b)
{
    if ((b > 0 && a > INT64_MAX - b) || (b < 0 && a < INT64_MIN - b)) {
        PyObject *x = PyLong_FromLongLong(a);
        PyObject *y = x ? PyLong_FromLongLong(b) : NULL;
        PyObject *sum = y ? PyNumber_Add(x, y) : NULL;
        Py_XDECREF(x);
        Py_XDECREF(y);
        return sum;
    }
    return PyLong_FromLongLong(a + b);
}

/* A nullable key or value at *pp. Only the single byte 0x01 means null (see the top of
 * the file). Stores a new reference in *out. */
static inline outcome
decode_bytes(const uint8_t **pp, const uint8_t *end, PyObject **out)
{
    const uint8_t *p = *pp;
    int64_t n;

    if (p < end && *p == 0x01) {
        *out = Py_NewRef(Py_None);
        *pp = p + 1;
        return DECODED;
    }
    if (read_varint(&p, end, &n) < 0 || n < 0 || n > end - p) {
        return MALFORMED;
    }
    *out = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    if (*out == NULL) {
        return FAILED;
    }
    *pp = p + n;
    return DECODED;
}

/* One header at *pp: a UTF-8 key and a nullable value (any encoding of -1 is null),
 * appended to `headers` as a (str, bytes | None) tuple. */
static outcome
decode_header(const uint8_t **pp, const uint8_t *end, PyObject *headers)
{
    const uint8_t *p = *pp;
    int64_t n;
    PyObject *key, *value, *pair;

    if (read_varint(&p, end, &n) < 0 || n < 0 || n > end - p) {
        return MALFORMED;
    }
    key = PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, NULL);
    if (key == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            return FAILED;
        }
        PyErr_Clear();
        return MALFORMED;
    }
    p += n;
    if (read_varint(&p, end, &n) < 0 || n < -1 || n > end - p) {
        Py_DECREF(key);
        return MALFORMED;
    }
    if (n == -1) {
        value = Py_NewRef(Py_None);
    }
    else {
        value = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
        if (value == NULL) {
            Py_DECREF(key);
            return FAILED;
        }
        p += n;
    }
    pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(key);
        Py_DECREF(value);
        return FAILED;
    }
    PyTuple_SET_ITEM(pair, 0, key);   /* steals */
    PyTuple_SET_ITEM(pair, 1, value); /* steals */
    int rc = PyList_Append(headers, pair);
    Py_DECREF(pair);
    if (rc < 0) {
        return FAILED;
    }
    *pp = p;
    return DECODED;
}

/* What every record of one batch shares. */
typedef struct {
    int64_t base_offset;
    int64_t base_timestamp;
    PyObject *append_time; /* borrowed; NULL for CreateTime */
    PyObject *topic;       /* borrowed */
    PyObject *partition;   /* borrowed */
    /* topic, partition or append_time is GC-capable: every record must be tracked. */
    int gc_shared;
    /* The last timestamp built, reused for the next record with the same delta
     * (producers often stamp many records of a batch with the same millisecond). */
    int64_t cached_delta;
    PyObject *cached_timestamp; /* owned, or NULL */
} batch_context;

/* Decode the record at *pp (the section ends at `limit`) into a new Record in *out. */
static outcome
decode_one(const uint8_t **pp, const uint8_t *limit, batch_context *ctx, PyObject **out)
{
    const uint8_t *p = *pp;
    int64_t length, timestamp_delta, offset_delta, header_count;
    PyObject *key = NULL, *value = NULL, *headers = NULL, *offset = NULL, *timestamp = NULL;
    outcome result = MALFORMED;

    if (read_varint(&p, limit, &length) < 0 || length < MIN_RECORD_BODY
        || length > limit - p) {
        return MALFORMED;
    }
    const uint8_t *end = p + length;
    p++; /* attributes: no record-level attribute is defined */
    if (read_varint(&p, end, &timestamp_delta) < 0 || read_varint(&p, end, &offset_delta) < 0) {
        return MALFORMED;
    }
    if ((result = decode_bytes(&p, end, &key)) != DECODED
        || (result = decode_bytes(&p, end, &value)) != DECODED) {
        goto done;
    }
    if (read_varint(&p, end, &header_count) < 0 || header_count < 0) {
        result = MALFORMED;
        goto done;
    }
    /* No headers: leave the list unbuilt (see "Garbage-collector tracking"). */
    if (header_count > 0) {
        headers = PyList_New(0);
        if (headers == NULL) {
            result = FAILED;
            goto done;
        }
        /* Each header takes at least two bytes or fails, so a huge count cannot spin. */
        for (int64_t i = 0; i < header_count; i++) {
            if ((result = decode_header(&p, end, headers)) != DECODED) {
                goto done;
            }
        }
    }
    if (p != end) {
        result = MALFORMED;
        goto done;
    }

    result = FAILED; /* from here on only allocations can fail */
    offset = long_from_sum(ctx->base_offset, offset_delta);
    if (offset == NULL) {
        goto done;
    }
    if (ctx->append_time != NULL) {
        timestamp = Py_NewRef(ctx->append_time);
    }
    else if (ctx->cached_timestamp != NULL && ctx->cached_delta == timestamp_delta) {
        timestamp = Py_NewRef(ctx->cached_timestamp);
    }
    else {
        timestamp = long_from_sum(ctx->base_timestamp, timestamp_delta);
        if (timestamp == NULL) {
            goto done;
        }
        Py_XSETREF(ctx->cached_timestamp, Py_NewRef(timestamp));
        ctx->cached_delta = timestamp_delta;
    }
    RecordObject *record = PyObject_GC_New(RecordObject, &RecordType);
    if (record == NULL) {
        goto done;
    }
    record->fields[F_TOPIC] = Py_NewRef(ctx->topic);
    record->fields[F_PARTITION] = Py_NewRef(ctx->partition);
    /* The record takes over the references built above. */
    record->fields[F_OFFSET] = offset;
    record->fields[F_TIMESTAMP] = timestamp;
    record->fields[F_KEY] = key;
    record->fields[F_VALUE] = value;
    record->fields[F_HEADERS] = headers;
    record->headers_pending = headers == NULL;
    /* The other fields are str, int, bytes or None unless the caller passed odd ones. */
    if (headers != NULL || ctx->gc_shared) {
        PyObject_GC_Track(record);
    }
    offset = timestamp = key = value = headers = NULL;
    *out = (PyObject *)record;
    *pp = p;
    result = DECODED;

done:
    Py_XDECREF(key);
    Py_XDECREF(value);
    Py_XDECREF(headers);
    Py_XDECREF(offset);
    Py_XDECREF(timestamp);
    return result;
}

/* Decode `count` records from the records section [data, data + size). */
static PyObject *
decode_section(const uint8_t *data, Py_ssize_t size, Py_ssize_t count, batch_context *ctx)
{
    const uint8_t *p = data;
    const uint8_t *limit = data + size;
    /* A record takes at least MIN_RECORD_SIZE bytes, so a section can hold no more than
     * size / MIN_RECORD_SIZE of them: this bounds the list whatever recordsCount claims,
     * and a record past that bound must fail to decode. */
    Py_ssize_t capacity = count <= 0 ? 0 : Py_MIN(count, size / MIN_RECORD_SIZE);
    PyObject *records = PyList_New(capacity);
    if (records == NULL) {
        return NULL;
    }
    for (Py_ssize_t index = 0; index < count; index++) {
        const uint8_t *start = p;
        PyObject *record = NULL;
        outcome result = index < capacity ? decode_one(&p, limit, ctx, &record) : MALFORMED;
        if (result != DECODED) {
            /* The list may hold NULL slots past `index`; list_dealloc copes with them. */
            Py_DECREF(records);
            if (result == MALFORMED) {
                raise_record_error(data, size, start - data, index, count);
            }
            return NULL;
        }
        PyList_SET_ITEM(records, index, record); /* steals */
    }
    if (p != limit) {
        Py_DECREF(records);
        raise_corrupt(PyUnicode_FromFormat("%zd bytes left over after the last of %zd records",
                                           (Py_ssize_t)(limit - p), count));
        return NULL;
    }
    return records;
}

PyDoc_STRVAR(decode_records_doc,
"decode_records(data, start, end, count, base_offset, base_timestamp, append_time,\n"
"               topic, partition)\n"
"--\n\n"
"Decode the uncompressed records section data[start:end] of one batch.\n"
"\n"
"The C version of batch._decode_records plus the LogAppendTime override of\n"
"batch._decode: same results and same CorruptBatchError reasons.\n"
"\n"
"Args:\n"
"    data: Any contiguous bytes-like object.\n"
"    start: Index of the first record byte.\n"
"    end: Index after the last record byte.\n"
"    count: recordsCount from the batch header.\n"
"    base_offset: baseOffset from the batch header.\n"
"    base_timestamp: baseTimestamp from the batch header.\n"
"    append_time: maxTimestamp for a LogAppendTime batch (every record gets it),\n"
"        or None to use baseTimestamp plus each record's delta.\n"
"    topic: Put in every record.\n"
"    partition: Put in every record.\n"
"\n"
"Returns:\n"
"    A list of count Record objects.\n"
"\n"
"Raises:\n"
"    CorruptBatchError: If the records are malformed.\n"
"    ValueError: If start and end do not lie within data.\n");

static PyObject *
decode_records(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, end, count;
    long long base_offset, base_timestamp;
    PyObject *append_time, *topic, *partition;

    if (!PyArg_ParseTuple(args, "y*nnnLLOOO:decode_records", &view, &start, &end, &count,
                          &base_offset, &base_timestamp, &append_time, &topic, &partition)) {
        return NULL;
    }
    if (start < 0 || start > end || end > view.len) {
        PyErr_Format(PyExc_ValueError,
                     "records section [%zd, %zd) does not lie within the %zd-byte buffer",
                     start, end, view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    batch_context ctx = {
        .base_offset = base_offset,
        .base_timestamp = base_timestamp,
        .append_time = append_time == Py_None ? NULL : append_time,
        .topic = topic,
        .partition = partition,
        .gc_shared = PyObject_IS_GC(topic) || PyObject_IS_GC(partition)
                     || (append_time != Py_None && PyObject_IS_GC(append_time)),
        .cached_delta = 0,
        .cached_timestamp = NULL,
    };
    /* Holding the buffer export keeps a bytearray from being resized under us. */
    PyObject *records = decode_section((const uint8_t *)view.buf + start, end - start, count,
                                       &ctx);
    Py_XDECREF(ctx.cached_timestamp);
    PyBuffer_Release(&view);
    return records;
}

/* ------------------------------------------------------------------------------------ */
/* Module                                                                               */
/* ------------------------------------------------------------------------------------ */

static PyMethodDef module_methods[] = {
    {"decode_records", (PyCFunction)decode_records, METH_VARARGS, decode_records_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "headwater.records._speedups",
    .m_doc = "Optional C accelerator for headwater.records.batch (RecordBatch v2 decoding).",
    /* -1: the module keeps global state (the static Record type, CorruptBatchError). */
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&RecordType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Record", (PyObject *)&RecordType) < 0) {
        goto error;
    }
    PyObject *errors = PyImport_ImportModule("headwater.errors");
    if (errors == NULL) {
        goto error;
    }
    PyObject *error_type = PyObject_GetAttrString(errors, "CorruptBatchError");
    Py_DECREF(errors);
    if (error_type == NULL) {
        goto error;
    }
    Py_XSETREF(CorruptBatchError, error_type);
    return module;

error:
    Py_DECREF(module);
    return NULL;
}
