# cython: language_level=3
"""The Cauwenberghs-Poggio engine: exact incremental and decremental SVM steps.

This module knows nothing of estimators. It holds two objects:

``KernelStore``
    The training points and their kernel values. Rows of the kernel matrix are
    computed on demand (or all at once when asked to precompute) and cached;
    several engines (one per one-versus-rest head) share one store, because
    kernel values do not depend on labels.

``CPEngine``
    The state of one binary SVM over the active examples of a store: the
    coefficients ``alpha``, the bias ``b``, the margin gradients
    ``g_i = y_i f(x_i) - 1``, the set of every example (margin S, error E,
    reserve R), and ``Rinv``, the inverse of the bordered margin matrix
    ``A = [[0, y_S'], [y_S, Q_SS]]``. ``learn`` and ``unlearn`` move the state
    along the adiabatic path of the design note (``shared/design/cp-algorithm.md``)
    until every active example satisfies the KKT conditions again.

The step loop runs without the GIL and touches no Python object; failures are
reported as integer status codes that the Python layer turns into exceptions.
All arithmetic is float64.
"""

include "_blas_int.pxi"

cimport cython
from cpython.pythread cimport (
    PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
    PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK,
)
from libc.math cimport exp, expm1, log1p, fabs, pow, sqrt, frexp, ldexp, INFINITY, isfinite
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memset
from libc.float cimport DBL_EPSILON
from scipy.linalg.cython_blas cimport daxpy, ddot, dgemm, dgemv, dsymv, dsyr
from scipy.linalg.cython_lapack cimport dpotrf, dsytrf, dsytri

import numpy as np

from .exceptions import EngineError

# ---------------------------------------------------------------------------
# Constants shared with the Python layer
# ---------------------------------------------------------------------------

KERNEL_CODES = {"linear": 0, "rbf": 1, "poly": 2, "precomputed": 3}

# Set codes (SET_*) and statuses (STATUS_*) are declared once, in _cp_core.pxd;
# their members are also plain int attributes of this module (SET_MARGIN, ...).
globals().update({k: int(v) for k, v in SetCode.__members__.items()})
globals().update({k: int(v) for k, v in Status.__members__.items()})

STATUS_MESSAGES = {
    STATUS_OK: "ok",
    STATUS_STEP_LIMIT: "step bound exceeded (cycling among tied events)",
    STATUS_NO_EVENT: "numerical breakdown: the path found no event",
    STATUS_SINGULAR: "the bordered margin matrix could not be refactorised",
    STATUS_NO_MEMORY: "out of memory",
    STATUS_INJECTED_FAULT: "fault injected by the test hook",
    STATUS_NON_FINITE: "a non-finite value appeared in the state",
    STATUS_INCONSISTENT: "the path ended outside the KKT conditions (degenerate, rank-deficient data)",
}

cdef enum:
    K_LINEAR = 0
    K_RBF = 1
    K_POLY = 2
    K_PRECOMPUTED = 3

# Short names of the codes of _cp_core.pxd, for the compiled code.
cdef enum:
    S_INACTIVE = SET_INACTIVE
    S_RESERVE = SET_RESERVE
    S_MARGIN = SET_MARGIN
    S_ERROR = SET_ERROR
    S_DRIVEN = SET_DRIVEN

cdef enum:
    ST_OK = STATUS_OK
    ST_STEP_LIMIT = STATUS_STEP_LIMIT
    ST_NO_EVENT = STATUS_NO_EVENT
    ST_SINGULAR = STATUS_SINGULAR
    ST_NO_MEMORY = STATUS_NO_MEMORY
    ST_INJECTED_FAULT = STATUS_INJECTED_FAULT
    ST_NON_FINITE = STATUS_NON_FINITE
    ST_INCONSISTENT = STATUS_INCONSISTENT


cdef int check(int st) except -1:
    """Raise EngineError for any status but STATUS_OK (def entry points never return one)."""
    if st != ST_OK:
        raise EngineError(st, STATUS_MESSAGES.get(st, f"status {st}"))
    return 0


# ---------------------------------------------------------------------------
# Memory: every allocation and release of the engine goes through here
# ---------------------------------------------------------------------------
# _xmalloc is the only way the compiled code allocates (numpy buffers check
# _np_alloc_check first), so a test can make the k-th allocation fail
# (set_alloc_fault) and check that every caller reports it and leaves the
# model as it was. _zfree zeroes a buffer before releasing it, so that freed
# memory holds nothing of the rows, kernel values or coefficients it held;
# the memset goes through a volatile pointer, which the compiler may not
# drop as a dead store before free().

cdef extern from *:
    """
    #include <string.h>
    #include <stdlib.h>
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    static void *(*const volatile eco_memset_v)(void *, int, size_t) = memset;
    static void eco_secure_zero(void *p, size_t n) { if (p && n) eco_memset_v(p, 0, n); }
    /* A large block on transparent huge pages where Linux offers them (a
       hint, madvise mode): an update of one column of KS touches one value
       in every slot's row, a page apart at a few hundred margin vectors, and
       on 4 KiB pages each of those is a TLB miss. Released by _zfree; NULL
       where huge pages are not offered or the block is small. */
    static void *eco_malloc_huge(size_t n) {
        void *p = NULL;
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (n >= ((size_t)4 << 20)) {
            if (posix_memalign(&p, (size_t)2 << 20, n) != 0) return NULL;
            madvise(p, n, MADV_HUGEPAGE);
        }
    #endif
        return p;
    }
    /* A hint that the line at p will be written soon. A pass over one column
       of KS reads or writes one value per slot, ks_ld doubles apart: a stride
       beyond what the hardware prefetchers follow, so without the hint every
       row waits for its own miss (a quarter of a margin removal's time at
       10,000 rows). */
    #if defined(__GNUC__) || defined(__clang__)
    #define eco_prefetch_w(p) __builtin_prefetch((const void *)(p), 1, 3)
    #else
    #define eco_prefetch_w(p) ((void)0)
    #endif
    /* The vector kernels below (eco_fill_dots, eco_rbf_tile) are built for
       the CPU's widest vectors (target_clones: picked at load time, where
       GCC offers it) and with no-trapping-math, which lets the selects of
       eco_exp vectorise (FP exceptions are never looked at here; no value
       changes). eco_exp carries the same options so that it inlines there.
       The module is built with -ffp-contract=off: no fused multiply-add, so
       every lane of a vector does exactly the rounded operations written,
       and the bits are the same at every vector width and on every CPU. */
    #if defined(__GNUC__) && !defined(__clang__)
    #define ECO_NO_TRAP __attribute__((optimize("no-trapping-math")))
    #else
    #define ECO_NO_TRAP
    #endif
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define ECO_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default"))) ECO_NO_TRAP
    #else
    #define ECO_VECTOR_CLONES ECO_NO_TRAP
    #endif
    /* exp(x) in plain IEEE arithmetic (no libm): x = k ln2 + r with
       |r| <= ln2 / 2 (Cody-Waite, k by the round-to-nearest of adding
       1.5 2^52), exp(r) by its Taylor series to r^13 (truncation below
       1e-17 relative), times 2^k as two normal powers of two so that the
       subnormal range rounds once, like any product. Within 2 units in the
       last place of exp (1.12 measured; tests/test_kernel_values.py checks
       it), and branch free: a loop of it vectorises, and every
       lane computes the same bits as the scalar code. libm's exp differs
       between libraries and versions; this one gives the same kernel values
       on every machine. exp(0) is exactly 1. */
    ECO_NO_TRAP static inline double eco_exp(double x) {
        const double shift = 6755399441055744.0;            /* 1.5 * 2^52 */
        const double ln2_hi = 6.93147180369123816490e-01;   /* ln2, 32 bits: k ln2_hi exact */
        const double ln2_lo = 1.90821492927058770002e-10;
        double kf, r, p;
        long long k, k1, k2;
        union { double d; long long i; } u, s1, s2;
        x = x < -750.0 ? -750.0 : x;
        x = x > 710.0 ? 710.0 : x;
        u.d = x * 1.44269504088896338700 + shift;
        kf = u.d - shift;
        k = u.i - 0x4338000000000000LL;                     /* the integer kf, from the bits */
        r = (x - kf * ln2_hi) - kf * ln2_lo;
        p = 1.0 / 6227020800.0;
        p = 1.0 / 479001600.0 + r * p;
        p = 1.0 / 39916800.0 + r * p;
        p = 1.0 / 3628800.0 + r * p;
        p = 1.0 / 362880.0 + r * p;
        p = 1.0 / 40320.0 + r * p;
        p = 1.0 / 5040.0 + r * p;
        p = 1.0 / 720.0 + r * p;
        p = 1.0 / 120.0 + r * p;
        p = 1.0 / 24.0 + r * p;
        p = 1.0 / 6.0 + r * p;
        p = 0.5 + r * p;
        p = 1.0 + r * p;
        p = 1.0 + r * p;
        k1 = k >> 1;
        k2 = k - k1;
        s1.i = (k1 + 1023) << 52;
        s2.i = (k2 + 1023) << 52;
        return (p * s1.d) * s2.d;
    }
    /* The dot products of a tile of kernel rows: outs[b][j] = sum_k
       xs[b d + k] XT[k ld + j] for j in [jt, je), each summed from 0.0 over
       k = 0, 1, ... in that order, one rounded product and one rounded sum
       per term: the result of the plain loop, on every machine. Row by
       row, four features per pass over the outputs (the order of the terms
       of each sum unchanged): a quarter of the loads and stores of a pass
       per feature. */
    ECO_VECTOR_CLONES
    static void eco_fill_dots_rows(const double *XT, Py_ssize_t ld, Py_ssize_t d,
                                   const double *xs, Py_ssize_t nb, double **outs,
                                   Py_ssize_t jt, Py_ssize_t je) {
        Py_ssize_t b, k, j;
        if (d < 4) {
            for (b = 0; b < nb; b++) {
                double *o = outs[b];
                for (j = jt; j < je; j++) o[j] = 0.0;
            }
        }
        for (k = 0; k + 4 <= d; k += 4) {
            const double *__restrict__ c0 = XT + k * ld;
            const double *__restrict__ c1 = c0 + ld;
            const double *__restrict__ c2 = c1 + ld;
            const double *__restrict__ c3 = c2 + ld;
            for (b = 0; b < nb; b++) {
                double *__restrict__ o = outs[b];
                const double x0 = xs[b * d + k], x1 = xs[b * d + k + 1];
                const double x2 = xs[b * d + k + 2], x3 = xs[b * d + k + 3];
                for (j = jt; j < je; j++) {
                    /* the first four features start each sum at 0.0 (no pass to zero o) */
                    double s = k == 0 ? 0.0 : o[j];
                    s = s + x0 * c0[j];
                    s = s + x1 * c1[j];
                    s = s + x2 * c2[j];
                    s = s + x3 * c3[j];
                    o[j] = s;
                }
            }
        }
        for (; k < d; k++) {
            const double *__restrict__ c0 = XT + k * ld;
            for (b = 0; b < nb; b++) {
                double *__restrict__ o = outs[b];
                const double x0 = xs[b * d + k];
                for (j = jt; j < je; j++) o[j] = o[j] + x0 * c0[j];
            }
        }
    }
    /* The same dot products eight rows at a time: for eight columns, the
       eight sums of each row stay in registers over all k (explicit vectors
       of eight doubles: GCC's vectoriser does not widen this loop in the
       clones), so each value of XT is loaded once for eight rows instead of
       once per row. The same terms in the same order, so the same bits as
       eco_fill_dots_rows. Measured on the 2-core machine (AVX-512), eight rows
       of 5,000 columns: 0.15 against 0.21 ms at d = 50, 0.26 against 0.28 ms
       at d = 64; 328 rows: 4.9 against 8.8 ms at d = 50. Without AVX2 the
       vectors are split into pairs and the row-by-row loop is faster. */
    typedef double eco_v8d __attribute__((vector_size(64), aligned(8), may_alias));
    #define ECO_ACC8(R) s##R = s##R + x##R[k] * c
    ECO_VECTOR_CLONES
    static void eco_fill_dots(const double *XT, Py_ssize_t ld, Py_ssize_t d, const double *xs,
                              Py_ssize_t nb, double **outs, Py_ssize_t jt, Py_ssize_t je) {
        Py_ssize_t b = 0, k, j, jv = jt + ((je - jt) / 8) * 8, wide = 1;
        #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
        wide = __builtin_cpu_supports("avx2");
        #endif
        for (; wide && b + 8 <= nb; b += 8) {
            const double *x0 = xs + b * d, *x1 = x0 + d, *x2 = x1 + d, *x3 = x2 + d;
            const double *x4 = x3 + d, *x5 = x4 + d, *x6 = x5 + d, *x7 = x6 + d;
            for (j = jt; j < jv; j += 8) {
                eco_v8d s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
                eco_v8d s4 = {0}, s5 = {0}, s6 = {0}, s7 = {0};
                for (k = 0; k < d; k++) {
                    const eco_v8d c = *(const eco_v8d *)(XT + k * ld + j);
                    ECO_ACC8(0); ECO_ACC8(1); ECO_ACC8(2); ECO_ACC8(3);
                    ECO_ACC8(4); ECO_ACC8(5); ECO_ACC8(6); ECO_ACC8(7);
                }
                *(eco_v8d *)(outs[b] + j) = s0;
                *(eco_v8d *)(outs[b + 1] + j) = s1;
                *(eco_v8d *)(outs[b + 2] + j) = s2;
                *(eco_v8d *)(outs[b + 3] + j) = s3;
                *(eco_v8d *)(outs[b + 4] + j) = s4;
                *(eco_v8d *)(outs[b + 5] + j) = s5;
                *(eco_v8d *)(outs[b + 6] + j) = s6;
                *(eco_v8d *)(outs[b + 7] + j) = s7;
            }
            if (jv < je) eco_fill_dots_rows(XT, ld, d, x0, 8, outs + b, jv, je);
        }
        if (b < nb) eco_fill_dots_rows(XT, ld, d, xs + b * d, nb - b, outs + b, jt, je);
    }
    /* The rbf kernel value from a dot product and the two squared norms:
       exp(-gamma max(sq_i + sq_j - 2 dot, 0)). The one definition: the
       tiles below and every scalar value (_transform) use it. */
    ECO_NO_TRAP static inline double eco_rbf(double dot, double sq_i, double sq_j,
                                             double gamma) {
        double d2 = sq_i + sq_j - 2.0 * dot;
        d2 = d2 < 0.0 ? 0.0 : d2;
        return eco_exp(-gamma * d2);
    }
    /* The rbf values of one tile of a kernel row, in place of its dot
       products: o[j] = eco_rbf(o[j], sq_i, sq[j], gamma). */
    ECO_VECTOR_CLONES
    static void eco_rbf_tile(double *o, const double *sq, double sq_i, double gamma,
                             Py_ssize_t jt, Py_ssize_t je) {
        Py_ssize_t j;
        for (j = jt; j < je; j++) o[j] = eco_rbf(o[j], sq_i, sq[j], gamma);
    }
    """
    void eco_secure_zero(void* p, size_t n) noexcept nogil
    void* eco_malloc_huge(size_t n) noexcept nogil
    void eco_prefetch_w(const void* p) noexcept nogil
    void eco_fill_dots(const double* XT, Py_ssize_t ld, Py_ssize_t d, const double* xs,
                       Py_ssize_t nb, double** outs, Py_ssize_t jt, Py_ssize_t je) noexcept nogil
    void eco_rbf_tile(double* o, const double* sq, double sq_i, double gamma,
                      Py_ssize_t jt, Py_ssize_t je) noexcept nogil
    double eco_rbf(double dot, double sq_i, double sq_j, double gamma) noexcept nogil


# ---------------------------------------------------------------------------
# The second core. The products over many rows of KS (_row_product: the
# rates of a step, the joins and the end-of-path refresh of a screened path,
# refinement, the bound path) and the tiles of kernel rows (_fill_rows) are
# cut into chunks that the calling thread and one helper thread claim from a
# shared counter. The caller never waits for a helper that is not
# running: it claims chunks itself until none is left, then waits only for
# the chunks the helper has claimed and is computing. On a loaded machine a
# descheduled helper costs nothing (BLAS threads and OpenMP wait at a
# barrier for every thread, which made a request 5-10x slower on the shared
# 2-core machine). Every row is computed by one call of the same routine
# over the same chunk bounds whoever runs it, so the results are bit for bit
# those of one thread. One job at a time per process: a caller that finds
# the helper busy (heads in parallel) computes alone.

cdef extern from *:
    r"""
    #if defined(__unix__) || defined(__APPLE__)
    #define ECO_POOL 1
    #include <pthread.h>
    #include <signal.h>
    #include <unistd.h>
    #include <sched.h>
    #else
    #define ECO_POOL 0
    #endif
    typedef void (*eco_task_fn)(void *ctx, long begin, long end) ;
    #if ECO_POOL
    typedef struct {
        pthread_mutex_t busy;     /* one job at a time (trylock) */
        pthread_mutex_t m;        /* guards the job's fields and gen */
        pthread_cond_t cv;        /* wakes a sleeping helper */
        int started;
        pid_t pid;                /* the process that started the helper */
        eco_task_fn fn;
        void *ctx;
        long n, chunk, nchunks;
        long gen;                 /* job number, bumped under m */
        long long claim;          /* (gen << 32) | next chunk, atomic */
        long done;                /* chunks finished in this job, atomic */
        long long helped;         /* chunks the helper has run, ever (atomic) */
    } eco_pool_t;
    static eco_pool_t eco_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                                  PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    /* test hook: the caller waits until the helper has claimed the first
       chunk of every shared product, so that tests run every product on
       both threads however small it is */
    static int eco_helper_first = 0;

    /* Claim and run chunks of job `gen` until none is left or another job
       has replaced it (the generation in the claim word differs). */
    static void eco_pool_work(long gen, eco_task_fn fn, void *ctx, long n, long chunk,
                              long nchunks, int helper) {
        long long v, idx, b, e;
        for (;;) {
            v = __atomic_load_n(&eco_pool.claim, __ATOMIC_ACQUIRE);
            if ((v >> 32) != (long long)(gen & 0x7fffffff)) return;
            idx = v & 0xffffffffLL;
            if (idx >= nchunks) return;
            if (!__atomic_compare_exchange_n(&eco_pool.claim, &v, v + 1, 0,
                                             __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                continue;
            b = idx * chunk;
            e = b + chunk < n ? b + chunk : n;
            fn(ctx, (long)b, (long)e);
            if (helper) __atomic_fetch_add(&eco_pool.helped, 1, __ATOMIC_RELAXED);
            __atomic_fetch_add(&eco_pool.done, 1, __ATOMIC_RELEASE);
        }
    }

    static void *eco_pool_helper(void *arg) {
        long seen = 0, gen, n, chunk, nchunks, spins;
        eco_task_fn fn;
        void *ctx;
        sigset_t all;
        (void)arg;
        sigfillset(&all);   /* signals are the main thread's (Python's handlers) */
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        for (;;) {
            /* steps follow each other within microseconds: look for the next
               job a little while before sleeping */
            for (spins = 0; spins < 2000
                 && __atomic_load_n(&eco_pool.gen, __ATOMIC_ACQUIRE) == seen; spins++)
                sched_yield();
            pthread_mutex_lock(&eco_pool.m);
            while (eco_pool.gen == seen)
                pthread_cond_wait(&eco_pool.cv, &eco_pool.m);
            gen = seen = eco_pool.gen;
            fn = eco_pool.fn; ctx = eco_pool.ctx;
            n = eco_pool.n; chunk = eco_pool.chunk; nchunks = eco_pool.nchunks;
            pthread_mutex_unlock(&eco_pool.m);
            eco_pool_work(gen, fn, ctx, n, chunk, nchunks, 1);
        }
        return NULL;
    }

    /* A forked child has no helper, and only the thread that forked: its
       locks start afresh (one held at the fork would never be released). */
    static void eco_pool_atfork_child(void) {
        pthread_mutex_init(&eco_pool.busy, NULL);
        pthread_mutex_init(&eco_pool.m, NULL);
        pthread_cond_init(&eco_pool.cv, NULL);
        eco_pool.started = 0;
    }

    /* A helper for this process (started on first use); 0 if none can be. */
    static int eco_pool_ready(void) {
        static int atfork_done = 0;
        pthread_t t;
        pthread_attr_t attr;
        if (eco_pool.started && eco_pool.pid == getpid()) return 1;
        if (!atfork_done) {
            if (pthread_atfork(NULL, NULL, eco_pool_atfork_child) != 0) return 0;
            atfork_done = 1;
        }
        if (pthread_attr_init(&attr) != 0) return 0;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, eco_pool_helper, NULL) != 0) {
            pthread_attr_destroy(&attr);
            return 0;
        }
        pthread_attr_destroy(&attr);
        eco_pool.started = 1;
        eco_pool.pid = getpid();
        return 1;
    }
    #endif

    /* fn over [0, n) in chunks of `chunk`, with the helper when `helped` and
       it is free; returns 1 when the helper was offered the job. */
    static int eco_parallel_for(eco_task_fn fn, void *ctx, long n, long chunk, int helped) {
        long b, nchunks = (n + chunk - 1) / chunk, gen;
    #if ECO_POOL
        if (helped && nchunks > 1 && pthread_mutex_trylock(&eco_pool.busy) == 0) {
            if (eco_pool_ready()) {
                pthread_mutex_lock(&eco_pool.m);
                eco_pool.fn = fn; eco_pool.ctx = ctx;
                eco_pool.n = n; eco_pool.chunk = chunk; eco_pool.nchunks = nchunks;
                __atomic_store_n(&eco_pool.done, 0, __ATOMIC_RELEASE);
                gen = __atomic_add_fetch(&eco_pool.gen, 1, __ATOMIC_ACQ_REL);
                __atomic_store_n(&eco_pool.claim, (long long)(gen & 0x7fffffff) << 32,
                                 __ATOMIC_RELEASE);
                pthread_cond_signal(&eco_pool.cv);
                pthread_mutex_unlock(&eco_pool.m);
                while (eco_helper_first
                       && (__atomic_load_n(&eco_pool.claim, __ATOMIC_ACQUIRE) & 0xffffffffLL) == 0)
                    sched_yield();
                eco_pool_work(gen, fn, ctx, n, chunk, nchunks, 0);
                /* only chunks the helper claimed, and is running, are left;
                   yield, in case it shares this core */
                while (__atomic_load_n(&eco_pool.done, __ATOMIC_ACQUIRE) < nchunks)
                    sched_yield();
                pthread_mutex_unlock(&eco_pool.busy);
                return 1;
            }
            pthread_mutex_unlock(&eco_pool.busy);
        }
    #endif
        (void)helped; (void)gen;
        for (b = 0; b < nchunks; b++)
            fn(ctx, b * chunk, (b + 1) * chunk < n ? (b + 1) * chunk : n);
        return 0;
    }

    static long long eco_helper_chunks(void) {
    #if ECO_POOL
        return __atomic_load_n(&eco_pool.helped, __ATOMIC_RELAXED);
    #else
        return 0;
    #endif
    }
    static int eco_set_helper_first(int on) {
    #if ECO_POOL
        int old = eco_helper_first;
        eco_helper_first = on;
        return old;
    #else
        (void)on;
        return 0;
    #endif
    }
    """
    ctypedef void (*eco_task_fn)(void* ctx, long begin, long end) noexcept nogil
    int eco_parallel_for(eco_task_fn fn, void* ctx, long n, long chunk, int helped) noexcept nogil
    long long eco_helper_chunks() noexcept nogil
    int eco_set_helper_first(int on) noexcept nogil

cdef long long _alloc_countdown = 0   # > 0: the allocation that brings it to 0 fails
cdef long long _alloc_count = 0       # allocations seen since the hook was armed
cdef bint _alloc_fired = False
# quarantine (tests): released buffers are zeroed and kept here, not freed,
# so that a test can check they hold nothing
cdef void** _q_ptr = NULL
cdef size_t* _q_size = NULL
cdef Py_ssize_t _q_n = 0, _q_cap = 0
cdef bint _q_on = False
cdef PyThread_type_lock _q_lock = PyThread_allocate_lock()


cdef inline bint _alloc_fails() noexcept nogil:
    # the test hook; racy across threads by design (tests arm it around
    # calls that allocate from one thread), free when disarmed
    global _alloc_countdown, _alloc_count, _alloc_fired
    if _alloc_countdown <= 0:
        return False
    _alloc_count += 1
    _alloc_countdown -= 1
    if _alloc_countdown == 0:
        _alloc_fired = True
        return True
    return False


cdef void* _xmalloc(size_t size) noexcept nogil:
    """malloc, or NULL when the test hook says this allocation fails."""
    if _alloc_fails():
        return NULL
    return malloc(size if size > 0 else 1)


cdef void* _xmalloc_large(size_t size) noexcept nogil:
    """_xmalloc for a large block that is updated column by column (KS)."""
    cdef void* p
    if _alloc_fails():
        return NULL
    p = eco_malloc_huge(size)
    return p if p != NULL else malloc(size if size > 0 else 1)


cdef void _zfree(void* p, size_t size) noexcept nogil:
    """Zero the `size` bytes at `p`, then free it (NULL is ignored)."""
    global _q_ptr, _q_size, _q_n, _q_cap
    cdef void** np_
    cdef size_t* ns
    cdef Py_ssize_t cap
    if p == NULL:
        return
    eco_secure_zero(p, size)
    if _q_on:
        PyThread_acquire_lock(_q_lock, WAIT_LOCK)
        if _q_n == _q_cap:
            cap = 2 * _q_cap + 64
            np_ = <void**>realloc(_q_ptr, cap * sizeof(void*))
            if np_ != NULL:
                _q_ptr = np_
            ns = <size_t*>realloc(_q_size, cap * sizeof(size_t))
            if ns != NULL:
                _q_size = ns
            if np_ != NULL and ns != NULL:
                _q_cap = cap
        if _q_n < _q_cap:
            _q_ptr[_q_n] = p
            _q_size[_q_n] = size
            _q_n += 1
            p = NULL
        PyThread_release_lock(_q_lock)
    free(p)


cdef int _np_alloc_check() except -1:
    """MemoryError when the test hook says this (numpy) allocation fails."""
    if _alloc_fails():
        raise MemoryError("allocation failed (injected by the test hook)")
    return 0


cdef _zero_array(arr):
    # a numpy buffer about to be dropped: nothing of what it held stays in memory
    if arr is not None:
        arr.fill(0)


def set_alloc_fault(long long k):
    """Test hook: make the `k`-th allocation from now fail (once); 0 disarms it.

    Counts every allocation of the engine and kernel store (C buffers and
    their numpy arrays). See :func:`eco.testing.engine_alloc_fault`.
    """
    global _alloc_countdown, _alloc_count, _alloc_fired
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    _alloc_countdown = k
    _alloc_count = 0
    _alloc_fired = False


def alloc_fault_state():
    """Test hook: (allocations counted since armed, whether the fault fired)."""
    return int(_alloc_count), bool(_alloc_fired)


def set_quarantine(bint on):
    """Test hook: keep released buffers (zeroed) instead of freeing them; off frees them."""
    global _q_on, _q_n
    cdef Py_ssize_t i
    PyThread_acquire_lock(_q_lock, WAIT_LOCK)
    _q_on = on
    if not on:
        for i in range(_q_n):
            free(_q_ptr[i])
        _q_n = 0
    PyThread_release_lock(_q_lock)


def quarantine_report():
    """Test hook: (buffers released, bytes released, buffers holding a nonzero byte)."""
    cdef Py_ssize_t i, k, dirty = 0
    cdef size_t total = 0
    cdef const unsigned char* b
    PyThread_acquire_lock(_q_lock, WAIT_LOCK)
    for i in range(_q_n):
        total += _q_size[i]
        b = <const unsigned char*>_q_ptr[i]
        for k in range(<Py_ssize_t>_q_size[i]):
            if b[k] != 0:
                dirty += 1
                break
    n = _q_n
    PyThread_release_lock(_q_lock)
    return int(n), int(total), int(dirty)


# Validation at the def boundary: the compiled loops run without bounds
# checks, so every index and size that crosses into them is checked here
# and refused with ValueError/IndexError rather than read out of bounds.

cdef int _check_slots(const Py_ssize_t[::1] slots, Py_ssize_t n, str what) except -1:
    """Every slot in [0, n), none twice."""
    cdef Py_ssize_t i
    for i in range(slots.shape[0]):
        if not 0 <= slots[i] < n:
            raise IndexError(f"{what}: slot {slots[i]} is outside the store's {n} slots")
    if slots.shape[0] > 1 and np.unique(np.asarray(slots)).shape[0] != slots.shape[0]:
        raise ValueError(f"{what}: a slot is given twice")
    return 0


def _check_kernel(kernel):
    if kernel not in KERNEL_CODES:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {tuple(KERNEL_CODES)}")
    return KERNEL_CODES[kernel]

# Certificates divide a gradient violation by 1 + |b| + CANCEL sum_j |alpha_j K_ij|:
# absolute (1e-8 at _FIT_TOL) while the terms g_i is summed from are of order
# one, and allowing 1e-14 of their size (about a hundred roundings) when they
# are large and cancel (features scaled by 1e6: terms of 1e11 for decision
# values of 10). Invariant under rescaling (features times s, C over s^2).
cdef double CANCEL = 1e-6
# Rows ahead at which a strided pass over one column of KS prefetches (the
# misses of about this many rows are then in flight at once)
cdef enum:
    KS_AHEAD = 16

# Row products shared with the helper thread (eco_parallel_for): the rows of
# one chunk, and the least work (multiply-adds) of a product worth offering.
# Below it, waking the helper (tens of microseconds) costs more than it saves.
cdef enum:
    ROW_CHUNK = 64
# One core, or ECO_HELPER_THREAD=0 in the environment: no helper thread.
# ECO_PARALLEL_MIN_WORK overrides the threshold (0: every product of two or
# more chunks, how the test suite can be run through the helper).
import os as _os
cdef double _parallel_min_work = (
    INFINITY if (_os.cpu_count() or 1) < 2 or _os.environ.get("ECO_HELPER_THREAD", "1") == "0"
    else float(_os.environ.get("ECO_PARALLEL_MIN_WORK", "2e5")))


def set_parallel_min_work(double work):
    """Least work (multiply-adds) of a row product that the helper thread shares.

    Returns the previous value. ``inf`` turns the helper off (as
    ``ECO_HELPER_THREAD=0`` does at import); 0 shares every product of two
    or more chunks (the tests' setting). Results are the same bit for bit
    whatever the setting.
    """
    global _parallel_min_work
    old = _parallel_min_work
    _parallel_min_work = work
    return old


cdef enum:
    FILL_TILE = 512     # columns of kernel rows computed together
    # purify takes a free set of more candidates than this in one
    # factorisation when it is clearly independent (_purify_direct)
    PURIFY_DIRECT_MIN = 64

# the least Cholesky pivot of Q_SS, relative to Q_kk, that _purify_direct takes
cdef double PURIFY_DIRECT_PIVOT = 1e-4


cdef struct FillJob:
    # kernel rows outs[b][j] = K(x_slots[b], x_j), j in [j0, j1), by tiles
    const double* XT
    Py_ssize_t ld, d, nb, j0, j1
    const double* sqnorm
    int kernel_code
    double gamma, coef0, degree
    const Py_ssize_t* slots
    double** outs
    const double* xs
    Py_ssize_t n_blocks     # blocks of eight rows per tile (_fill_task)


cdef void _fill_tile(const FillJob* t, Py_ssize_t b0, Py_ssize_t nb,
                     Py_ssize_t jt, Py_ssize_t je) noexcept nogil:
    # rows b0 .. b0 + nb - 1 of a FillJob over the columns [jt, je)
    cdef Py_ssize_t b, j
    cdef double* o
    eco_fill_dots(t.XT, t.ld, t.d, t.xs + b0 * t.d, nb, t.outs + b0, jt, je)
    if t.kernel_code == K_RBF:
        for b in range(b0, b0 + nb):
            eco_rbf_tile(t.outs[b], t.sqnorm, t.sqnorm[t.slots[b]], t.gamma, jt, je)
    elif t.kernel_code != K_LINEAR:
        for b in range(b0, b0 + nb):
            o = t.outs[b]
            for j in range(jt, je):
                o[j] = _transform(t.kernel_code, o[j], t.sqnorm[t.slots[b]],
                                  t.sqnorm[j], t.gamma, t.coef0, t.degree)


cdef void _fill_task(void* ctx, long begin, long end) noexcept nogil:
    # chunks begin .. end - 1 of a FillJob: chunk c is the block of eight rows
    # c % n_blocks over the tile c // n_blocks, so that the chunks one thread
    # claims in a row read the same tile of features (up to eight rows, one
    # block: chunk c is tile c)
    cdef FillJob* t = <FillJob*>ctx
    cdef Py_ssize_t jt, je, b0, nb
    cdef long c
    for c in range(begin, end):
        jt = t.j0 + (c // t.n_blocks) * FILL_TILE
        je = jt + FILL_TILE
        if je > t.j1:
            je = t.j1
        b0 = (c % t.n_blocks) * 8
        nb = t.nb - b0
        if nb > 8:
            nb = 8
        _fill_tile(t, b0, nb, jt, je)


def helper_chunks():
    """Chunks of row products the helper thread has computed in this process."""
    return eco_helper_chunks()


def set_helper_first(bint on):
    """Test hook: the caller of a shared product waits until the helper has
    claimed its first chunk (every shared product then runs on both threads).
    Returns the previous setting."""
    return bool(eco_set_helper_first(on))


cdef struct RowProduct:
    # out[j] = KS[j, :m] . w for the rows j = rows[i] (or j = i when rows is NULL)
    const double* KS
    Py_ssize_t ld
    blas_int ld_b
    const Py_ssize_t* rows
    const double* w
    double* out
    blas_int m


cdef void _row_product_task(void* ctx, long begin, long end) noexcept nogil:
    cdef RowProduct* t = <RowProduct*>ctx
    cdef blas_int one_i = 1, nb
    cdef double one = 1.0, zero = 0.0
    cdef long i
    cdef Py_ssize_t j
    if t.rows == NULL:
        # a block of consecutive rows: one transposed product
        nb = <blas_int>(end - begin)
        dgemv(b"T", &t.m, &nb, &one, t.KS + begin * t.ld, &t.ld_b, t.w, &one_i, &zero,
              t.out + begin, &one_i)
        return
    for i in range(begin, end):
        j = t.rows[i]
        t.out[j] = ddot(&t.m, t.KS + j * t.ld, &one_i, t.w, &one_i)

cdef struct Transpose:
    # KS[j, p] = rows[p][j] for the slots j of a chunk, every member p
    double* KS
    Py_ssize_t ld, m, j0, n
    double** rows


cdef enum:
    TRANSPOSE_CHUNK = 256    # slots per chunk of a Transpose


cdef void _transpose_task(void* ctx, long begin, long end) noexcept nogil:
    # chunks begin .. end - 1: 32 members at a time, 32 rows read in order
    # (streams the prefetcher follows) into 32 contiguous values of every
    # slot's row. Reading all m members per slot is slower once the rows are
    # long: rows of equal, page-aligned length put the m values of one slot in
    # the same cache set. The row pointers and KS are held in locals: stores
    # through double* would otherwise reload them at every value (the
    # extension is built with -fno-strict-aliasing)
    cdef Transpose* t = <Transpose*>ctx
    cdef double* KS = t.KS
    cdef double** rows = t.rows
    cdef double* dst
    cdef Py_ssize_t ld = t.ld, m = t.m, p, p0, p1, j
    cdef Py_ssize_t j0 = t.j0 + begin * TRANSPOSE_CHUNK
    cdef Py_ssize_t j1 = t.j0 + end * TRANSPOSE_CHUNK
    if j1 > t.j0 + t.n:
        j1 = t.j0 + t.n
    p0 = 0
    while p0 < m:
        p1 = p0 + 32 if p0 + 32 < m else m
        for j in range(j0, j1):
            dst = KS + j * ld
            for p in range(p0, p1):
                dst[p] = rows[p][j]
        p0 = p1


# Kinds of event that end a step.
cdef enum:
    EV_NONE = 0
    EV_END = 1            # the driven coefficients reached their target
    EV_LEARNED_MARGIN = 2 # the learned example's gradient reached 0
    EV_MARGIN_TO_RESERVE = 3
    EV_MARGIN_TO_ERROR = 4
    EV_TO_MARGIN = 5      # an error or reserve example's gradient reached 0
    EV_SLACK_TO_MARGIN = 6  # the same at a rate below the noise tolerance (at the slack)

# _migrate: the path goes on (any other value is the status that ends it)
cdef enum:
    PATH_GO_ON = -1

# State of a row on a screened path (CPEngine.scr_state)
cdef enum:
    SCR_SCREENED = 0      # its gradient is g_j(0) and a bound proves it is no event
    SCR_FOLLOWED = 1      # exact gradient and rate every step (a candidate)
    SCR_IGNORED = 2       # not a reserve or error row at the start (margin, driven, inactive)
    SCR_TOUCHED = 3       # followed, and its alpha may move (driven, or in S during the path)


# ---------------------------------------------------------------------------
# Kernel values
# ---------------------------------------------------------------------------

# Kernel values of the training rows are computed by plain loops (see
# KernelStore._fill_rows) rather than BLAS on purpose: each value is then a pure
# function of its two rows, whatever block it is computed in and whenever it is
# computed, so the kernel cache, save/load and the order of increments never
# change a result by one bit. The loops run over contiguous columns and
# vectorise (eco_fill_dots, eco_rbf_tile in the prologue): one rounded
# product and one rounded sum per term, in the order of the features, and
# eco's own exp, so that a kernel value has the same bits on every CPU and
# every C library (tests/test_kernel_values.py rebuilds them in NumPy).


cdef inline double _schur_complement(double q_kk, const double* w, const double* beta_k,
                                     Py_ssize_t m1, double* scale) noexcept nogil:
    # kappa = Q_kk + w'beta_k, and in `scale` the size of its terms
    # (|Q_kk| + sum |w_p beta_p|), against which _expand judges it
    cdef double kappa = q_kk, size = fabs(q_kk)
    cdef Py_ssize_t p
    for p in range(m1):
        kappa += w[p] * beta_k[p]
        size += fabs(w[p] * beta_k[p])
    scale[0] = size
    return kappa


cdef inline double _transform(int kernel, double dot, double sq_i, double sq_j,
                              double gamma, double coef0, double degree) noexcept nogil:
    cdef double d2
    if kernel == K_RBF:
        return eco_rbf(dot, sq_i, sq_j, gamma)
    elif kernel == K_POLY:
        if coef0 > 0.0 and gamma > 0.0 and degree >= 1.0:
            # the constant monomial coef0^degree is left out: it adds the same
            # c to every kernel value, which changes neither the dual solution
            # nor b nor any decision value (sum_j y_j alpha_j = 0), but it
            # buries the informative part under c: on small features
            # (x'y ~ 1e-5) the quadratic part sits at 1e-10 of the value and
            # float64 keeps 6 of its digits, and tolerances relative to
            # K_kk ~ c misjudge it (docs/cp-engine.md, section 4). Near the
            # constant, expm1/log1p give the difference to full relative
            # precision; away from it the plain difference loses nothing.
            d2 = gamma * dot / coef0
            if d2 > -0.5 and d2 < 0.5:
                return pow(coef0, degree) * expm1(degree * log1p(d2))
            return pow(gamma * dot + coef0, degree) - pow(coef0, degree)
        return pow(gamma * dot + coef0, degree)
    return dot


# An rbf value is exp(-gamma (|a|^2 + |b|^2 - 2 a'b)): the dot product from BLAS
# and the norms from plain loops round differently, by up to about
# d eps (|a|^2 + |b|^2) in the exponent, and that difference is not cancelled
# where the distance is small against the norms (features of 1e8, or far
# from the origin). Beyond this bound on the exponent's error, a row's dot
# products are recomputed in the training rows' order (eco_fill_dots), in
# which the dot of a row with itself is its squared norm to the bit.
cdef double RBF_BLAS_EXPONENT_TOL = 1e-12


def kernel_matrix(const double[:, ::1] A, const double[:, ::1] B, str kernel,
                  double gamma, int degree=3, double coef0=0.0):
    """Kernel matrix between the rows of ``A`` and ``B`` (one BLAS call).

    Used for decision values of new points and independent certificates.
    For rbf, a row of ``A`` far from the origin against its distances to
    ``B`` (see RBF_BLAS_EXPONENT_TOL) takes its dot products from the
    loops that compute the training rows instead of BLAS: its values are
    then the training kernel's (K(x, x) = 1 exactly), where the BLAS
    product's rounding, left uncancelled, could move them by any amount.

    Parameters
    ----------
    A : ndarray of shape (m, d), float64, C-contiguous
    B : ndarray of shape (n, d), float64, C-contiguous
    kernel : {"linear", "rbf", "poly"}
    gamma, degree, coef0 : float
        As scikit-learn defines them.

    Returns
    -------
    K : ndarray of shape (m, n)
    """
    cdef int code = _check_kernel(kernel)
    if code == K_PRECOMPUTED:
        raise ValueError("kernel_matrix cannot compute a precomputed kernel")
    if A.shape[1] != B.shape[1]:
        raise ValueError("A and B must have the same number of columns")
    cdef Py_ssize_t m = A.shape[0], n = B.shape[0], d = A.shape[1]
    out = np.empty((m, n), dtype=np.float64)
    cdef double[:, ::1] K = out
    if m == 0 or n == 0:
        return out
    cdef blas_int bm = <blas_int>n, bn = <blas_int>m, bk = <blas_int>d
    cdef double one = 1.0, zero = 0.0
    cdef double[::1] sqa = np.empty(m), sqb = np.empty(n)
    cdef double[:, ::1] BT = None
    cdef Py_ssize_t i, j, k
    cdef double s, sqb_max = 0.0
    cdef double* row
    with nogil:
        if d > 0:
            # K = A @ B.T, as the column-major product B' A in BLAS terms
            dgemm(b"T", b"N", &bm, &bn, &bk, &one, &B[0, 0], &bk, &A[0, 0], &bk,
                  &zero, &K[0, 0], &bm)
        else:
            for i in range(m):
                for j in range(n):
                    K[i, j] = 0.0
        if code != K_LINEAR:
            for i in range(m):
                s = 0.0
                for k in range(d):
                    s = s + A[i, k] * A[i, k]
                sqa[i] = s
            for j in range(n):
                s = 0.0
                for k in range(d):
                    s = s + B[j, k] * B[j, k]
                sqb[j] = s
                if s > sqb_max:
                    sqb_max = s
    if code == K_RBF and d > 0:
        for i in range(m):
            if gamma * (sqa[i] + sqb_max) * d * 2.220446049250313e-16 > RBF_BLAS_EXPONENT_TOL:
                if BT is None:
                    BT = np.ascontiguousarray(np.asarray(B).T)
                row = &K[i, 0]
                with nogil:
                    eco_fill_dots(&BT[0, 0], n, d, &A[i, 0], 1, &row, 0, n)
    with nogil:
        if code != K_LINEAR:
            for i in range(m):
                if code == K_RBF:  # vectorised, the same values as _transform
                    eco_rbf_tile(&K[i, 0], &sqb[0], sqa[i], gamma, 0, n)
                    continue
                for j in range(n):
                    K[i, j] = _transform(code, K[i, j], sqa[i], sqb[j], gamma, coef0, degree)
    return out


cdef class KernelStore:
    """Training points and a cache of their kernel rows.

    Slots are the internal indices of the stored points, in the order they
    were added; they never shift. A row holds the kernel values of one slot
    against every stored slot.

    Parameters
    ----------
    n_features : int
        Number of features (ignored for ``kernel="precomputed"``).
    kernel : {"linear", "rbf", "poly", "precomputed"}
    gamma, degree, coef0 : float
        Kernel parameters, already resolved to numbers.
    precompute : bool
        Compute every row as soon as points are added (the full kernel
        matrix) instead of on demand.
    cache_size : float
        Megabytes of kernel rows kept between operations (:meth:`trim`
        evicts the least recently used beyond it; an operation may hold more
        while it runs). Rows are bit-deterministic, so the limit changes
        speed, never a result. Ignored when every row is precomputed.
    """

    cdef readonly int kernel_code
    cdef readonly double gamma, coef0
    cdef readonly int degree
    cdef readonly bint precompute
    cdef readonly Py_ssize_t n_slots, capacity, n_features
    cdef readonly double max_diag          # largest K(x_i, x_i) over the slots
    cdef object _XT_array                 # numpy (n_features, capacity)
    cdef double[:, ::1] XT                # features, one column per slot
    cdef double[::1] sqnorm               # squared norm of every slot
    cdef double** rows                    # per slot: pointer to its row, or NULL
    cdef Py_ssize_t n_cached
    cdef PyThread_type_lock lock          # guards installing a computed row
    cdef public double cache_size         # MB of rows kept by trim()
    cdef object _last_arr                 # numpy (capacity,) int64
    cdef long long[::1] last_use          # per slot: tick of its last use (LRU)
    cdef long long tick
    cdef readonly long n_truncations      # engines check their slots after a truncate
    cdef readonly long n_rows_computed    # kernel rows computed and cached so far
    cdef object _truncated_to             # n_slots after each truncate, in order

    def __cinit__(self):
        self.rows = NULL
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError("could not allocate a lock")

    def __init__(self, Py_ssize_t n_features, str kernel="rbf", double gamma=1.0,
                 int degree=3, double coef0=0.0, bint precompute=False,
                 double cache_size=200.0):
        if n_features < 0:
            raise ValueError(f"n_features must be >= 0, got {n_features}")
        if degree < 0:
            raise ValueError(f"degree must be >= 0, got {degree}")
        if not isfinite(gamma) or not isfinite(coef0):
            raise ValueError("gamma and coef0 must be finite")
        self.kernel_code = _check_kernel(kernel)
        self.n_truncations = 0
        self.n_rows_computed = 0
        self._truncated_to = []
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.precompute = precompute or self.kernel_code == K_PRECOMPUTED
        self.n_features = 0 if self.kernel_code == K_PRECOMPUTED else n_features
        self.n_slots = 0
        self.capacity = 0
        self.n_cached = 0
        self.max_diag = 0.0
        if not cache_size >= 0.0:
            raise ValueError(f"cache_size must be >= 0 (MB), got {cache_size}")
        self.cache_size = cache_size
        self.tick = 0
        self._reserve(16)

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.rows != NULL:
            for i in range(self.capacity):
                if self.rows[i] != NULL:
                    _zfree(self.rows[i], self.capacity * sizeof(double))
            _zfree(self.rows, self.capacity * sizeof(double*))
        if self.lock != NULL:
            PyThread_free_lock(self.lock)
        # the features: nothing of them stays in released memory
        _zero_array(self._XT_array)
        if self.sqnorm is not None:
            self.sqnorm[:] = 0.0

    @property
    def kernel(self):
        return {v: k for k, v in KERNEL_CODES.items()}[self.kernel_code]

    @property
    def n_cached_rows(self):
        """Number of kernel rows currently held in memory."""
        return self.n_cached

    cdef _reserve(self, Py_ssize_t needed):
        # Grow every per-slot buffer to hold `needed` slots (amortised doubling).
        cdef Py_ssize_t new_cap, i
        cdef double** new_rows
        cdef double* r
        if needed <= self.capacity:
            return
        new_cap = max(needed, 2 * self.capacity, 16)
        _np_alloc_check()
        XT = np.zeros((self.n_features, new_cap), dtype=np.float64)
        _np_alloc_check()
        sq = np.zeros(new_cap, dtype=np.float64)
        _np_alloc_check()
        last = np.zeros(new_cap, dtype=np.int64)
        if self.capacity > 0:
            XT[:, :self.n_slots] = self._XT_array[:, :self.n_slots]
            sq[:self.n_slots] = np.asarray(self.sqnorm)[:self.n_slots]
            last[:self.n_slots] = self._last_arr[:self.n_slots]
        new_rows = <double**>_xmalloc(new_cap * sizeof(double*))
        if new_rows == NULL:
            XT.fill(0)
            sq.fill(0)
            raise MemoryError("could not grow the kernel store")
        for i in range(new_cap):
            new_rows[i] = self.rows[i] if i < self.capacity else NULL
        _zfree(self.rows, self.capacity * sizeof(double*))
        self.rows = new_rows
        # each row is moved to a larger buffer and the old one zeroed and
        # freed (no realloc: it would release the old bytes as they are). A
        # failure leaves some rows larger than the capacity: harmless.
        for i in range(self.capacity):
            if self.rows[i] != NULL:
                r = <double*>_xmalloc(new_cap * sizeof(double))
                if r == NULL:
                    XT.fill(0)
                    sq.fill(0)
                    raise MemoryError("could not grow a kernel row")
                memcpy(r, self.rows[i], self.capacity * sizeof(double))
                _zfree(self.rows[i], self.capacity * sizeof(double))
                self.rows[i] = r
        _zero_array(self._XT_array)
        _zero_array(np.asarray(self.sqnorm) if self.capacity > 0 else None)
        self._XT_array = XT
        self.XT = XT
        self.sqnorm = sq
        self._last_arr = last
        self.last_use = last
        self.capacity = new_cap

    def append(self, const double[:, ::1] X):
        """Add points and return their slots.

        For a precomputed kernel, ``X`` holds the kernel rows of the new
        points against every stored point followed by the new points
        themselves, shape ``(m, n_slots + m)``.

        Returns
        -------
        slots : ndarray of int64
        """
        cdef Py_ssize_t m = X.shape[0], n_old = self.n_slots, n_new = n_old + X.shape[0]
        cdef Py_ssize_t i, j, k
        cdef double s
        cdef double* r
        if self.kernel_code == K_PRECOMPUTED:
            if X.shape[1] != n_new:
                raise ValueError(
                    f"a precomputed kernel block must have {n_new} columns, got {X.shape[1]}")
        elif X.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {X.shape[1]}")
        self._reserve(n_new)
        cdef double* xs = NULL
        if self.kernel_code == K_PRECOMPUTED:
            for i in range(m):
                r = <double*>_xmalloc(self.capacity * sizeof(double))
                if r == NULL:
                    for j in range(i):  # the rows made so far: the store is as it was
                        _zfree(self.rows[n_old + j], self.capacity * sizeof(double))
                        self.rows[n_old + j] = NULL
                        self.n_cached -= 1
                    raise MemoryError("could not allocate a kernel row")
                for j in range(n_new):
                    r[j] = X[i, j]
                self.rows[n_old + i] = r
                self.n_cached += 1
            # old rows gain the new columns; the kernel is symmetric
            for j in range(n_old):
                for i in range(m):
                    self.rows[j][n_old + i] = X[i, j]
            self.n_slots = n_new
            self._update_max_diag(n_old)
        else:
            # allocated before anything changes: the store stays as it was on failure
            xs = <double*>_xmalloc((self.n_features + 1) * sizeof(double))
            if xs == NULL:
                raise MemoryError("could not allocate the kernel store's scratch row")
            with nogil:
                for i in range(m):
                    s = 0.0
                    for k in range(self.n_features):
                        self.XT[k, n_old + i] = X[i, k]
                        s = s + X[i, k] * X[i, k]
                    self.sqnorm[n_old + i] = s
            self.n_slots = n_new
            self._update_max_diag(n_old)
            # cached rows gain the new columns
            with nogil:
                for j in range(n_old):
                    if self.rows[j] != NULL:
                        self._fill_rows(&j, 1, &self.rows[j], xs, n_old, n_new)
                _zfree(xs, (self.n_features + 1) * sizeof(double))
            if self.precompute:
                self.ensure_rows(np.arange(n_old, n_new, dtype=np.intp))
        return np.arange(n_old, n_new, dtype=np.intp)

    cdef int _fill_row(self, Py_ssize_t slot, double* out, Py_ssize_t j0,
                       Py_ssize_t j1) noexcept nogil:
        # out[j] = K(x_slot, x_j) for j in [j0, j1), through the block routine so
        # that a value never depends on how it was computed; ST_NO_MEMORY when
        # its scratch cannot be allocated (out is then not written)
        cdef double* xs = <double*>_xmalloc((self.n_features + 1) * sizeof(double))
        if xs == NULL:
            return ST_NO_MEMORY
        self._fill_rows(&slot, 1, &out, xs, j0, j1)
        _zfree(xs, (self.n_features + 1) * sizeof(double))
        return 0

    cdef double _diag(self, Py_ssize_t i) noexcept nogil:
        # K(x_i, x_i) without computing the row
        if self.kernel_code == K_PRECOMPUTED:
            return self.rows[i][i]
        return _transform(self.kernel_code, self.sqnorm[i], self.sqnorm[i], self.sqnorm[i],
                          self.gamma, self.coef0, self.degree)

    cdef void _update_max_diag(self, Py_ssize_t j0) noexcept nogil:
        # the largest |K(x_i, x_i)|: the scale of rounding noise in kernel sums
        cdef Py_ssize_t i
        cdef double v
        if j0 == 0:
            self.max_diag = 0.0
        for i in range(j0, self.n_slots):
            v = fabs(self._diag(i))
            if v > self.max_diag:
                self.max_diag = v

    cdef double* row(self, Py_ssize_t slot) noexcept nogil:
        """Pointer to the kernel row of `slot`, computing it if needed.

        Safe to call from several threads: a row is computed outside the lock
        and installed under it; the loser of a race frees its copy.
        Returns NULL when memory runs out.
        """
        cdef double* r = self.rows[slot]
        # a racy tick is harmless: it only orders evictions
        self.tick += 1
        self.last_use[slot] = self.tick
        if r != NULL:
            return r
        r = <double*>_xmalloc(self.capacity * sizeof(double))
        if r == NULL:
            return NULL
        if self._fill_row(slot, r, 0, self.n_slots) != 0:
            _zfree(r, self.capacity * sizeof(double))
            return NULL
        PyThread_acquire_lock(self.lock, WAIT_LOCK)
        if self.rows[slot] == NULL:
            self.rows[slot] = r
            self.n_cached += 1
            self.n_rows_computed += 1
        else:
            _zfree(r, self.capacity * sizeof(double))
            r = self.rows[slot]
        PyThread_release_lock(self.lock)
        return r

    cdef void _fill_rows(self, const Py_ssize_t* slots, Py_ssize_t nb, double** outs,
                         double* xs, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
        # outs[b][j] = K(x_slots[b], x_j) for j in [j0, j1): several rows at once,
        # in tiles of columns, so that each tile of features is read once for
        # all of them. Every value is the sum over k = 0, 1, ... from 0.0, in that order,
        # so a row is bit for bit the same however and whenever it is computed
        # (and whichever thread computes which tile: the helper may share them).
        cdef Py_ssize_t d = self.n_features, b, k
        cdef FillJob t
        if j1 <= j0:
            return
        for b in range(nb):
            for k in range(d):
                xs[b * d + k] = self.XT[k, slots[b]]
        t.XT = &self.XT[0, 0] if d > 0 else NULL
        t.ld = self.capacity
        t.d = d
        t.sqnorm = &self.sqnorm[0]
        t.kernel_code = self.kernel_code
        t.gamma = self.gamma
        t.coef0 = self.coef0
        t.degree = self.degree
        t.slots = slots
        t.nb = nb
        t.outs = outs
        t.xs = xs
        t.j0 = j0
        t.j1 = j1
        t.n_blocks = (nb + 7) // 8
        eco_parallel_for(_fill_task, &t, t.n_blocks * ((j1 - j0 + FILL_TILE - 1) // FILL_TILE),
                         1, <double>nb * (j1 - j0) * (d + 1) >= _parallel_min_work)

    cdef int _ensure_rows(self, const Py_ssize_t* slots, Py_ssize_t count) noexcept nogil:
        # compute the missing rows among `slots` in one shared job: blocks of
        # eight rows (each tile of features read once per block) times tiles
        # of columns. One job for all the blocks lets the helper thread take
        # tiles of any block, instead of a start and a wait per block of eight
        # (on 240 rows of 5,000, the waits cost about a tenth of a polish)
        cdef Py_ssize_t n = self.n_slots, d = self.n_features
        cdef Py_ssize_t n_todo = 0, n_blocks, i, b, s
        cdef Py_ssize_t* todo = NULL
        cdef double** outs = NULL
        cdef double* xs = NULL
        cdef unsigned char* queued = NULL
        cdef int st = 0
        if self.kernel_code == K_PRECOMPUTED:
            return 0
        # every row cached (the rule: _ks_sync asks after every increment):
        # no allocation, no O(n) mask
        i = 0
        while i < count and self.rows[slots[i]] != NULL:
            i += 1
        if i == count:
            return 0
        todo = <Py_ssize_t*>_xmalloc(count * sizeof(Py_ssize_t))
        outs = <double**>_xmalloc(count * sizeof(double*)) if todo != NULL else NULL
        queued = <unsigned char*>_xmalloc(n + 1) if outs != NULL else NULL
        if queued == NULL:
            st = ST_NO_MEMORY
        else:
            memset(queued, 0, n + 1)
            for i in range(i, count):  # (the slots before the first missing one are cached)
                s = slots[i]
                if self.rows[s] == NULL and not queued[s]:
                    queued[s] = 1
                    todo[n_todo] = s
                    n_todo += 1
            for i in range(n_todo):
                outs[i] = <double*>_xmalloc(self.capacity * sizeof(double))
                if outs[i] == NULL:
                    for b in range(i):
                        _zfree(outs[b], 0)  # not written yet
                    n_todo = 0
                    st = ST_NO_MEMORY
                    break
        if st == 0 and n_todo > 0:
            n_blocks = (n_todo + 7) // 8
            xs = <double*>_xmalloc((n_blocks * 8 * d + 1) * sizeof(double))
            if xs == NULL:
                for b in range(n_todo):
                    _zfree(outs[b], 0)
                st = ST_NO_MEMORY
            else:
                self._fill_rows(todo, n_todo, outs, xs, 0, n)
                PyThread_acquire_lock(self.lock, WAIT_LOCK)
                for b in range(n_todo):
                    self.tick += 1
                    self.last_use[todo[b]] = self.tick
                    if self.rows[todo[b]] == NULL:
                        self.rows[todo[b]] = outs[b]
                        self.n_cached += 1
                        self.n_rows_computed += 1
                    else:
                        _zfree(outs[b], self.capacity * sizeof(double))
                PyThread_release_lock(self.lock)
                _zfree(xs, (n_blocks * 8 * d + 1) * sizeof(double))
        _zfree(queued, n + 1)
        _zfree(outs, count * sizeof(double*))
        _zfree(todo, count * sizeof(Py_ssize_t))
        return st

    def ensure_rows(self, const Py_ssize_t[::1] slots):
        """Compute (and cache) the rows of `slots`, several at a time, without the GIL."""
        cdef int st = 0
        cdef Py_ssize_t i
        if slots.shape[0] == 0:
            return
        for i in range(slots.shape[0]):
            if not 0 <= slots[i] < self.n_slots:
                raise IndexError(f"ensure_rows: slot {slots[i]} is outside the store")
        with nogil:
            st = self._ensure_rows(&slots[0], slots.shape[0])
        if st != 0:
            raise MemoryError("could not allocate kernel rows")

    def truncate(self, Py_ssize_t n):
        """Forget the slots from `n` on (undo an append that could not complete).

        Their rows are freed; entries of other rows beyond `n` are simply no
        longer read. Engines must be restored to a state without these slots.
        """
        cdef Py_ssize_t i
        if not 0 <= n <= self.n_slots:
            raise ValueError(f"cannot truncate {self.n_slots} slots to {n}")
        if n == self.n_slots:
            return  # nothing to forget (a rollback of an update that stored no row)
        for i in range(n, self.n_slots):
            if self.rows[i] != NULL:
                _zfree(self.rows[i], self.capacity * sizeof(double))
                self.rows[i] = NULL
                self.n_cached -= 1
            if self.n_features > 0:
                for k in range(self.n_features):
                    self.XT[k, i] = 0.0
                self.sqnorm[i] = 0.0
        self.n_slots = n
        self._update_max_diag(0)
        self._truncated_to.append(n)
        self.n_truncations += 1

    def truncated_floor(self, long since):
        """Fewest slots the store held after the truncations numbered `since` on."""
        return min(self._truncated_to[since:], default=self.n_slots)

    @property
    def cache_rows(self):
        """Rows that :meth:`trim` keeps: ``cache_size`` MB of rows of the current capacity."""
        return int(self.cache_size * 1048576.0 / (8.0 * max(self.capacity, 1)))

    def trim(self):
        """Free the least recently used cached rows beyond ``cache_size``.

        Call only between operations (no engine of this store running):
        engines hold plain pointers to rows while a path runs. Their own
        packed margin rows are separate and stay. A precomputed kernel keeps
        every row.

        Returns
        -------
        int
            The number of rows freed.
        """
        cdef Py_ssize_t keep = self.cache_rows, i, s, freed = 0
        if self.precompute or self.n_cached <= keep:
            return 0
        cached = np.array([i for i in range(self.n_slots) if self.rows[i] != NULL],
                          dtype=np.intp)
        order = cached[np.argsort(self._last_arr[cached], kind="stable")]
        for i in range(len(order) - keep):
            s = order[i]
            _zfree(self.rows[s], self.capacity * sizeof(double))
            self.rows[s] = NULL
            self.n_cached -= 1
            freed += 1
        return freed

    cdef bint fits(self, Py_ssize_t count) noexcept nogil:
        # True when `count` rows fit in the cache: a sweep over them caches
        # them; else it streams them through a scratch row (bounded memory)
        return self.precompute or count <= <Py_ssize_t>(
            self.cache_size * 1048576.0 / (8.0 * (self.capacity if self.capacity > 0 else 1)))

    cdef double* sweep_row(self, Py_ssize_t slot, bint cache, double* scratch,
                           double* xs) noexcept nogil:
        # the row of `slot` for a sweep over many rows: cached (computed and
        # kept when `cache`), else computed into `scratch`; the same bits
        if cache:
            return self.row(slot)
        return self.peek_row(slot, scratch, xs)

    cdef double* peek_row(self, Py_ssize_t slot, double* scratch, double* xs) noexcept nogil:
        # the cached row of `slot`, else the row computed into `scratch`
        # (capacity doubles) without caching it; `xs` holds n_features + 1
        if self.rows[slot] != NULL:
            return self.rows[slot]
        self._fill_rows(&slot, 1, &scratch, xs, 0, self.n_slots)
        return scratch

    def release_rows(self, const Py_ssize_t[::1] slots):
        """Drop the cached rows of `slots` (a precomputed kernel keeps them)."""
        cdef Py_ssize_t i, s
        _check_slots(slots, self.n_slots, "release_rows")
        if self.precompute:
            return
        for i in range(slots.shape[0]):
            s = slots[i]
            if self.rows[s] != NULL:
                _zfree(self.rows[s], self.capacity * sizeof(double))
                self.rows[s] = NULL
                self.n_cached -= 1

    def get_row(self, Py_ssize_t slot):
        """Copy of the kernel row of `slot` over all stored slots."""
        if not 0 <= slot < self.n_slots:
            raise IndexError(f"slot {slot} out of range")
        cdef double* r
        with nogil:
            r = self.row(slot)
        if r == NULL:
            raise MemoryError("could not allocate a kernel row")
        out = np.empty(self.n_slots)
        cdef double[::1] o = out
        if self.n_slots:
            memcpy(&o[0], r, self.n_slots * sizeof(double))
        return out

    def features(self):
        """Copy of the stored feature matrix, shape (n_slots, n_features)."""
        return np.ascontiguousarray(self._XT_array[:, :self.n_slots].T)

    def features_of(self, const Py_ssize_t[::1] slots):
        """Copy of the features of `slots`, shape (len(slots), n_features)."""
        cdef Py_ssize_t i
        for i in range(slots.shape[0]):
            if not 0 <= slots[i] < self.n_slots:
                raise IndexError(f"features_of: slot {slots[i]} is outside the store")
        return np.ascontiguousarray(self._XT_array[:, np.asarray(slots)].T)

    def kernel_block(self, const Py_ssize_t[::1] slots):
        """Kernel rows of `slots` against all stored slots, shape (len, n_slots)."""
        out = np.empty((slots.shape[0], self.n_slots))
        for i in range(slots.shape[0]):
            out[i] = self.get_row(slots[i])
        return out

    # -- erasure: a removed example leaves nothing behind ------------------------

    def erase(self, const Py_ssize_t[::1] slots, live=None):
        """Overwrite with zeros everything the store holds of `slots`.

        Their feature columns and squared norms become 0; their cached rows
        are zeroed and freed (a precomputed kernel keeps a row of zeros, so
        that it is never recomputed); their entries in every other cached row
        become 0. Slots may lie beyond ``n_slots`` (rows forgotten by
        :meth:`truncate`) but not beyond the capacity.

        Parameters
        ----------
        slots : ndarray of intp
        live : array of bool, shape (n_slots,), optional
            The slots that still hold an example; ``max_diag`` (a tolerance
            scale) is recomputed over them, so that it depends on no removed
            example.
        """
        cdef Py_ssize_t i, n = slots.shape[0]
        for i in range(n):
            if not 0 <= slots[i] < self.capacity:
                raise ValueError(f"slot {slots[i]} is outside the store")
        cdef const unsigned char[::1] lv
        if live is not None:
            live_arr = np.ascontiguousarray(live, dtype=np.uint8)
            if live_arr.ndim != 1 or live_arr.shape[0] != self.n_slots:
                raise ValueError(f"live must have one entry per stored slot ({self.n_slots})")
        with nogil:
            self._erase(&slots[0] if n > 0 else NULL, n)
        if live is not None:
            lv = live_arr
            self._max_diag_over(lv)

    cdef void _erase(self, const Py_ssize_t* slots, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t i, j, k, s
        cdef double* r
        for i in range(n):
            s = slots[i]
            for k in range(self.n_features):
                self.XT[k, s] = 0.0
            self.sqnorm[s] = 0.0
            r = self.rows[s]
            if r != NULL:
                if self.kernel_code != K_PRECOMPUTED:
                    _zfree(r, self.capacity * sizeof(double))
                    self.rows[s] = NULL
                    self.n_cached -= 1
                else:
                    memset(r, 0, self.capacity * sizeof(double))
        # the removed columns of every other cached row
        for j in range(self.capacity):
            r = self.rows[j]
            if r != NULL:
                for i in range(n):
                    r[slots[i]] = 0.0

    cdef void _max_diag_over(self, const unsigned char[::1] live) noexcept nogil:
        self._max_diag_scan(<const signed char*>&live[0] if live.shape[0] > 0 else NULL,
                            live.shape[0], 0)

    cdef void _max_diag_scan(self, const signed char* flags, Py_ssize_t n,
                             signed char dead) noexcept nogil:
        # max_diag over the slots i < n with flags[i] != dead (a live mask, or
        # an engine's sets with dead = S_INACTIVE). It bounds the diagonal of
        # every stored slot (appends raise it, erasures recompute it), so a
        # live slot that reaches it proves it unchanged: on an rbf kernel
        # (diagonal 1 everywhere) the first live slot ends the scan, instead
        # of n calls of exp per erasure
        cdef Py_ssize_t i
        cdef double v, old = self.max_diag, best = 0.0
        for i in range(n):
            if flags[i] != dead:
                v = fabs(self._diag(i))
                if v >= old:
                    best = v
                    break
                if v > best:
                    best = v
        self.max_diag = best

    cdef void _compact(self, const Py_ssize_t* keep, Py_ssize_t m) noexcept nogil:
        # move slot keep[i] to slot i (keep strictly increasing), free and zero
        # the rows of the others, zero everything beyond the new n_slots
        cdef Py_ssize_t n = self.n_slots, i, j, k, s
        cdef double* r
        j = 0
        for s in range(n):
            if j < m and keep[j] == s:
                j += 1
                continue
            r = self.rows[s]
            if r != NULL:
                _zfree(r, self.capacity * sizeof(double))
                self.rows[s] = NULL
                self.n_cached -= 1
        for i in range(m):
            s = keep[i]
            if s != i:
                for k in range(self.n_features):
                    self.XT[k, i] = self.XT[k, s]
                self.sqnorm[i] = self.sqnorm[s]
                self.rows[i] = self.rows[s]
                self.rows[s] = NULL
        for i in range(m, n):
            for k in range(self.n_features):
                self.XT[k, i] = 0.0
            self.sqnorm[i] = 0.0
        for i in range(m):
            r = self.rows[i]
            if r != NULL:
                for j in range(m):
                    r[j] = r[keep[j]]
                if n > m:
                    memset(r + m, 0, (n - m) * sizeof(double))
        self.n_slots = m
        self._update_max_diag(0)


# ---------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------

cdef class CPEngine:
    """Exact state of one binary SVM over the active slots of a store.

    Parameters
    ----------
    store : KernelStore
    max_steps : int
        Bound on the path steps of one operation; 0 means ``50 + 10 * n``.
    """

    cdef readonly KernelStore store
    cdef readonly Py_ssize_t capacity
    # per-slot state; numpy arrays so that snapshots and saving are plain copies
    cdef object _y_arr, _C_arr, _alpha_arr, _g_arr, _set_arr, _pos_arr, _margin_arr, _blocked_arr
    cdef double[::1] y, C, alpha, g
    cdef signed char[::1] setof
    cdef int[::1] pos            # position of a margin vector in `margin`
    cdef int[::1] margin         # slots of the margin vectors, in the order of Rinv
    cdef long[::1] blocked       # epoch at which an expansion was refused
    cdef readonly Py_ssize_t n_margin, n_active, n_positive
    # examples with C > 0 (a zero-weight example counts as absent for the
    # one-class and no-example rules) and those of them with y = +1
    cdef readonly Py_ssize_t n_weighted, n_weighted_positive
    cdef readonly double b
    # Rinv = A^-1, column-major, leading dimension r_cap
    cdef double* Rinv
    cdef Py_ssize_t r_cap
    # KS: the kernel values between every slot and the margin vectors, slot
    # by slot (row j = K(x_j, x_margin[p]) for p < n_margin, leading dimension
    # ks_ld >= n_margin; ks_rows rows allocated, the first ks_n filled). The
    # product of every step is one BLAS call over contiguous memory, and the
    # values of one slot against S are contiguous: what a screened path, a
    # refinement and the residual of the margin equations read.
    cdef double* KS
    cdef Py_ssize_t ks_ld, ks_rows, ks_n
    # work buffers of length r_cap
    cdef double* vbuf
    cdef double* beta
    cdef double* wbuf
    cdef double* wbuf2
    cdef double* rbuf             # 2 r_cap: scratch of _refine_solve
    cdef blas_int* ipiv
    # work buffers of length capacity
    cdef object _h_arr, _u_arr
    cdef double[::1] h, u
    # set by every function that writes h or u: they then may hold values
    # computed from rows that a later removal erases; _erase zeroes them
    # only then (a reserve drop, which runs no path, does not pay O(n))
    cdef bint scratch_dirty
    # counters
    cdef long epoch              # bumped whenever the margin set changes
    cdef readonly long n_steps, n_migrations, n_refactorisations
    cdef long updates_since_check
    # Rinv is the inverse of the border-scaled matrix [[0, sigma y'], [sigma y, Q]]:
    # sigma, a power of two near the largest kernel diagonal, puts the border
    # on the scale of Q, so that the rank-one updates keep their accuracy
    # when the features are scaled by 1e6 or 1e-6 (the refactorisation
    # factors the unscaled border: _refactorise). Powers of two make the
    # conversion to and from the plain inverse exact (rinv, set_state).
    # Only its upper triangle is kept, with zeros below (symmetric BLAS).
    cdef double sigma
    # tuning
    cdef public long max_steps
    cdef public double tol_event      # |gamma| or |beta| below this (times scale) is no event
    cdef public double tol_kappa      # Schur complement below this (times K_kk) is dependent
    cdef public double tol_kappa_hard # the same on a hard problem, where beta_k is refined
    cdef bint hard                    # solves with Rinv are refined (_sync_hard)
    # the margin set took a member whose Schur complement only a refined
    # solve could tell from rounding (_expand): its bordered matrix is
    # ill-conditioned, so the solves are refined until S empties
    cdef bint ill
    # max C over the active slots when cmax_known; never below it (activations
    # raise it in _set_active, bound moves forget it), so that _sync_hard needs
    # no O(n) scan while a slot holding the maximum stays active
    cdef double cmax_active
    cdef bint cmax_known
    cdef public double drift_tol      # refactorise when ||Rinv A x - x|| exceeds this
    cdef public long drift_check_every
    cdef public long fail_at_step     # test hook: fail with STATUS_INJECTED_FAULT at this step
    cdef long seen_truncations        # store.n_truncations when the slots were last checked
    cdef public double check_tol      # largest relative KKT violation (incremental g) accepted after an operation
    # state of the path being followed (see _path)
    cdef bint pth_learning, pth_moves
    cdef Py_ssize_t pth_c, pth_slot
    cdef int pth_kind
    cdef double pth_t_left, pth_t_total, pth_s_drv, pth_usum, pth_tol_base, pth_tol
    cdef double pth_beta_b, pth_tau
    cdef Py_ssize_t* pth_drv          # the driven set and its direction (for screening)
    cdef double* pth_dvec
    cdef Py_ssize_t pth_ndrv
    cdef double pth_rho               # rounding bound of one raw gradient rate
    # safe screening of the path (see _scr_begin and docs/cp-engine.md, section 10)
    cdef public bint screening        # screen rows on the path (False: every row, every step)
    cdef bint scr_on                  # screening in use on the path being followed
    cdef double* scr_dA               # per slot: stepped change of alpha since the path start
    cdef double* scr_key              # per slot: |g_j(0)| - safety, its distance to an event
    cdef double* scr_s                # per slot: sqrt(K_jj)
    cdef signed char* scr_state       # per slot: SCR_* below
    cdef Py_ssize_t* scr_L            # rows followed exactly (candidates and touched)
    cdef Py_ssize_t* scr_T            # touched rows: driven or in S at some time of the path
    cdef Py_ssize_t* scr_rows         # screened rows (compacted as they leave)
    cdef double** scr_Trow            # kernel rows of the touched ones
    cdef Py_ssize_t scr_nL, scr_nT, scr_nrows
    # Delta w for the refreshes (_scr_delta_coefs): y dA of the members of S
    # by margin position, and the touched rows outside S that moved
    cdef double* scr_wdA
    cdef double** scr_Xrow
    cdef double* scr_Xc
    cdef Py_ssize_t scr_nX
    cdef Py_ssize_t scr_alloc_n          # length of the per-slot screening buffers
    cdef int scr_fail                 # a status raised inside a void helper
    cdef double scr_A, scr_E, scr_db, scr_B, scr_C, scr_eB, scr_eC, scr_W0, scr_DB0
    cdef double scr_P, scr_dP          # sum_T |dA_k| sqrt(K_kk), and its rate along the step
    cdef Py_ssize_t scr_nL0           # rows followed when the screening (re)started
    cdef double scr_smax              # max_j sqrt(K_jj) over the path's rows
    cdef long scr_step0               # the path's step at which it (re)started
    # restart the screening when the rows followed since its start, times the
    # steps since then, exceed this many times the rows (_scr_maybe_restart)
    cdef public double screening_restart
    cdef readonly long n_screen_restarts  # restarts of the screening, summed over paths
    cdef readonly long n_rated_rows   # gradient rates computed on paths (rows, summed over steps)
    # migration log for tests and benchmarks: (slot, from_set, to_set) per migration
    cdef public bint record_migrations
    cdef int* mig_buf
    cdef Py_ssize_t mig_n, mig_cap
    cdef double pth_T                 # sum_j alpha_j sqrt(K_jj) over the path (for the gradient slack)
    cdef bint pth_noisy               # the path met a dependent example or a slack event
    cdef double pth_sl0, pth_sl1      # the slack of this step's events (see _next_event)

    def __cinit__(self):
        self.Rinv = NULL
        self.KS = NULL
        self.ks_ld = 0
        self.ks_rows = 0
        self.ks_n = 0
        self.vbuf = NULL
        self.beta = NULL
        self.wbuf = NULL
        self.wbuf2 = NULL
        self.rbuf = NULL
        self.ipiv = NULL
        self.r_cap = 0
        self._scr_reset()
        self.mig_buf = NULL
        self.mig_n = 0
        self.mig_cap = 0

    def __init__(self, KernelStore store not None, long max_steps=0):
        self.store = store
        self.seen_truncations = store.n_truncations
        self.capacity = 0
        self.n_margin = 0
        self.n_active = 0
        self.n_positive = 0
        self.n_weighted = 0
        self.n_weighted_positive = 0
        self.b = 0.0
        self.epoch = 0
        self.max_steps = max_steps
        self.tol_event = 1e-11
        self.tol_kappa = 1e-7
        self.tol_kappa_hard = 1e-10
        self.hard = False
        self.ill = False
        self.cmax_active = 0.0
        self.cmax_known = False
        self.drift_tol = 1e-9
        self.drift_check_every = 32
        self.fail_at_step = -1
        self.check_tol = 1e-8
        self.n_steps = 0
        self.n_migrations = 0
        self.n_refactorisations = 0
        self.updates_since_check = 0
        self.sigma = 1.0
        # on by default: the same events at a fraction of the row products
        # (docs/cp-engine.md, section 10); every engine of every backend
        # screens alike, so that their states agree bit for bit
        self.screening = True
        self.screening_restart = 2.0
        self.n_screen_restarts = 0
        self.n_rated_rows = 0
        self.record_migrations = False
        self.sync_capacity()
        if self._grow_r(16) != 0:
            raise MemoryError("could not allocate the margin matrix")

    def __dealloc__(self):
        self._free_r(self.Rinv, self.vbuf, self.beta, self.wbuf, self.wbuf2, self.rbuf,
                     self.ipiv, self.r_cap)
        _zfree(self.KS, self.ks_ld * self.ks_rows * sizeof(double))
        for arr in (self._alpha_arr, self._g_arr, self._y_arr, self._C_arr,
                    self._h_arr, self._u_arr):
            _zero_array(arr)
        self._scr_free()
        _zfree(self.mig_buf, self.mig_cap * 3 * sizeof(int))

    cdef void _free_r(self, double* R, double* v, double* be, double* w, double* w2,
                      double* rb, blas_int* ip, Py_ssize_t cap) noexcept nogil:
        # the bordered-matrix buffers of order `cap`, zeroed and freed
        _zfree(R, cap * cap * sizeof(double))
        _zfree(v, cap * sizeof(double))
        _zfree(be, cap * sizeof(double))
        _zfree(w, cap * sizeof(double))
        _zfree(w2, cap * sizeof(double))
        _zfree(rb, 2 * cap * sizeof(double))
        _zfree(ip, cap * sizeof(blas_int))

    # -- capacity -----------------------------------------------------------

    def check_store(self):
        """Refuse to run over slots the store no longer holds (it was truncated under them).

        After a truncate, an engine must be given a state over the remaining
        slots (``restore``, ``set_state``) before it can be used again.
        """
        cdef Py_ssize_t i, floor
        if self.store.n_truncations == self.seen_truncations:
            return
        self.sync_capacity()
        floor = self.store.truncated_floor(self.seen_truncations)
        for i in range(floor, self.capacity):
            if self.setof[i] != S_INACTIVE:
                raise ValueError(f"slot {i} is active in the engine but the store was "
                                 f"truncated to {floor} slots; restore the engine's state first")
        self.seen_truncations = self.store.n_truncations

    def sync_capacity(self):
        """Grow the per-slot arrays to the store's capacity.

        Every entry point that reads or writes per-slot arrays calls it
        first, so the engine follows appends to its store by itself.
        """
        cdef Py_ssize_t cap = self.store.capacity, n = self.capacity
        if cap <= n:
            return

        def grown(old, fill, dtype):
            _np_alloc_check()
            new = np.full(cap, fill, dtype=dtype)
            if old is not None:
                new[:n] = old[:n]
            return new

        # every new array first, then the swap: a failed allocation leaves
        # the engine as it was; the old arrays are then zeroed
        old = (self._y_arr, self._C_arr, self._alpha_arr, self._g_arr, self._set_arr,
               self._pos_arr, self._margin_arr, self._blocked_arr, self._h_arr, self._u_arr)
        new = [grown(self._y_arr, 0.0, np.float64), grown(self._C_arr, 0.0, np.float64),
               grown(self._alpha_arr, 0.0, np.float64), grown(self._g_arr, 0.0, np.float64),
               grown(self._set_arr, S_INACTIVE, np.int8), grown(self._pos_arr, -1, np.int32),
               grown(self._margin_arr, -1, np.int32), grown(self._blocked_arr, -1, np.int64),
               grown(None, 0.0, np.float64), grown(None, 0.0, np.float64)]
        (self._y_arr, self._C_arr, self._alpha_arr, self._g_arr, self._set_arr,
         self._pos_arr, self._margin_arr, self._blocked_arr, self._h_arr, self._u_arr) = new
        for arr in old:
            _zero_array(arr)
        self.y = self._y_arr
        self.C = self._C_arr
        self.alpha = self._alpha_arr
        self.g = self._g_arr
        self.setof = self._set_arr
        self.pos = self._pos_arr
        self.margin = self._margin_arr
        self.blocked = self._blocked_arr
        self.h = self._h_arr
        self.u = self._u_arr
        self.capacity = cap

    cdef int _grow_r(self, Py_ssize_t needed) noexcept nogil:
        # Make room for a bordered matrix of order `needed`; keeps the contents.
        cdef Py_ssize_t new_cap, j, m1
        cdef double* R2
        cdef double* v
        cdef double* be
        cdef double* w
        cdef double* w2
        cdef double* rb
        cdef blas_int* ip
        if needed <= self.r_cap:
            return 0
        new_cap = 2 * self.r_cap
        if new_cap < needed:
            new_cap = needed
        if new_cap < 16:
            new_cap = 16
        # every new buffer first: on failure the old ones stay, untouched
        R2 = <double*>_xmalloc(new_cap * new_cap * sizeof(double))
        v = <double*>_xmalloc(new_cap * sizeof(double)) if R2 != NULL else NULL
        be = <double*>_xmalloc(new_cap * sizeof(double)) if v != NULL else NULL
        w = <double*>_xmalloc(new_cap * sizeof(double)) if be != NULL else NULL
        w2 = <double*>_xmalloc(new_cap * sizeof(double)) if w != NULL else NULL
        rb = <double*>_xmalloc(2 * new_cap * sizeof(double)) if w2 != NULL else NULL
        ip = <blas_int*>_xmalloc(new_cap * sizeof(blas_int)) if rb != NULL else NULL
        if ip == NULL:
            self._free_r(R2, v, be, w, w2, rb, ip, 0)
            return ST_NO_MEMORY
        if self.Rinv != NULL:
            m1 = self.n_margin + 1
            for j in range(m1):
                memcpy(R2 + j * new_cap, self.Rinv + j * self.r_cap, m1 * sizeof(double))
        self._free_r(self.Rinv, self.vbuf, self.beta, self.wbuf, self.wbuf2, self.rbuf,
                     self.ipiv, self.r_cap)
        self.Rinv = R2
        self.vbuf = v
        self.beta = be
        self.wbuf = w
        self.wbuf2 = w2
        self.rbuf = rb
        self.ipiv = ip
        self.r_cap = new_cap
        return 0

    cdef int _ks_reserve(self, Py_ssize_t cols) noexcept nogil:
        # room for `cols` margin vectors in the row of every store slot
        cdef Py_ssize_t rows = self.store.capacity, new_ld, j
        cdef double* K2
        if cols <= self.ks_ld and rows <= self.ks_rows:
            return 0
        new_ld = self.ks_ld
        if new_ld < cols:
            # headroom, so that the margin set can grow after a rebuild
            # (restore, load, polish) without another copy of the whole block
            new_ld = 2 * self.ks_ld
            if new_ld < cols + cols // 2 + 16:
                new_ld = cols + cols // 2 + 16
        if rows < self.ks_rows:
            rows = self.ks_rows
        K2 = <double*>_xmalloc_large(rows * new_ld * sizeof(double))
        if K2 == NULL:
            return ST_NO_MEMORY
        if self.KS != NULL:
            if new_ld == self.ks_ld:
                memcpy(K2, self.KS, self.ks_n * self.ks_ld * sizeof(double))
            else:
                for j in range(self.ks_n):
                    memcpy(K2 + j * new_ld, self.KS + j * self.ks_ld,
                           self.n_margin * sizeof(double))
            _zfree(self.KS, self.ks_ld * self.ks_rows * sizeof(double))
        self.KS = K2
        self.ks_ld = new_ld
        self.ks_rows = rows
        return 0

    cdef int _ks_sync(self) noexcept nogil:
        # bring the packed rows up to the current slots of the store
        cdef Py_ssize_t n = self.store.n_slots, p
        if self._ks_reserve(self.n_margin) != 0:
            return ST_NO_MEMORY
        if self.ks_n > n:
            # the store was truncated: the rows of the slots it kept are still
            # valid; those of the others are zeroed (erasure)
            if self.KS != NULL:
                memset(self.KS + n * self.ks_ld, 0,
                       (self.ks_n - n) * self.ks_ld * sizeof(double))
            self.ks_n = n
        if self.ks_n == n:
            return 0
        # a transpose of the members' kernel rows into the slots' rows
        # (_transpose_task), shared with the helper thread when it is large
        cdef Py_ssize_t m = self.n_margin
        cdef int st
        cdef Transpose job
        cdef size_t rows_bytes = (m if m > 0 else 1) * sizeof(double*)
        cdef double** rows = <double**>_xmalloc(rows_bytes)
        if rows == NULL:
            return ST_NO_MEMORY
        # the members' rows that are not cached (all of them after a load), in
        # one job of blocks of eight rows (_ensure_rows): a row at a time costs
        # about twice as much
        cdef size_t members_bytes = (m if m > 0 else 1) * sizeof(Py_ssize_t)
        cdef Py_ssize_t* members = <Py_ssize_t*>_xmalloc(members_bytes)
        if members == NULL:
            _zfree(rows, rows_bytes)
            return ST_NO_MEMORY
        for p in range(m):
            members[p] = self.margin[p]
        st = self.store._ensure_rows(members, m)
        _zfree(members, members_bytes)
        if st != 0:
            _zfree(rows, rows_bytes)
            return ST_NO_MEMORY
        for p in range(m):
            rows[p] = self.store.row(self.margin[p])
            if rows[p] == NULL:
                _zfree(rows, rows_bytes)
                return ST_NO_MEMORY
        job.KS = self.KS
        job.ld = self.ks_ld
        job.m = m
        job.j0 = self.ks_n
        job.n = n - self.ks_n
        job.rows = rows
        eco_parallel_for(_transpose_task, &job, (job.n + TRANSPOSE_CHUNK - 1) // TRANSPOSE_CHUNK,
                         1, <double>m * job.n >= _parallel_min_work)
        _zfree(rows, rows_bytes)
        self.ks_n = n
        return 0

    cdef int _ks_rebuild(self) noexcept nogil:
        # rows are rewritten, not zeroed, for the slots there are now: zero
        # those beyond them
        cdef Py_ssize_t n = self.store.n_slots
        if self.KS != NULL and self.ks_n > n:
            memset(self.KS + n * self.ks_ld, 0, (self.ks_n - n) * self.ks_ld * sizeof(double))
        self.ks_n = 0
        return self._ks_sync()

    # -- the scale of the border -------------------------------------------------

    cdef double _store_sigma(self) noexcept nogil:
        # the power of two nearest above the largest kernel diagonal (1 if none)
        cdef double md = self.store.max_diag
        cdef int e
        if not (md > 0.0) or not isfinite(md):
            return 1.0
        frexp(md, &e)
        return ldexp(1.0, e)

    cdef void _sync_hard(self) noexcept nogil:
        # Solves with Rinv are refined (_refine_solve) on linear and poly
        # kernels, whose margin sets are bounded by the dimension of their
        # feature space (so the m^2 of a refinement is small next to the n m
        # of a step) and whose low-dimensional, badly scaled or nearly
        # constant kernels give the ill-conditioned margin matrices; on the
        # others (rbf, precomputed) when C max K >= 1e6, where rounding of
        # Rinv at drift_tol would move gradients by more than the
        # certificate allows. Elsewhere one refinement (two m x m products)
        # costs time on every step and buys nothing the final _refine does not.
        #
        # The maximum bound over the active slots is cached: removals only
        # lower it, and while one active slot still holds the cached value it
        # is exact (the scan stops there: at once when all bounds are equal).
        # Otherwise, or when it is not known, one full scan.
        cdef Py_ssize_t j, n = self.store.n_slots
        cdef double cmax = 0.0
        if self.store.kernel_code == K_LINEAR or self.store.kernel_code == K_POLY:
            self.hard = True
            return
        if self.ill and self.n_margin == 0:
            self.ill = False
        if self.cmax_known:
            self.cmax_known = False
            for j in range(n):
                if self.setof[j] != S_INACTIVE and self.C[j] == self.cmax_active:
                    self.cmax_known = True
                    break
        if not self.cmax_known:
            for j in range(n):
                if self.setof[j] != S_INACTIVE and self.C[j] > cmax:
                    cmax = self.C[j]
            self.cmax_active = cmax
            self.cmax_known = True
        self.hard = self.ill or self.cmax_active * self.store.max_diag >= 1e6

    cdef void _sync_sigma(self) noexcept nogil:
        # follow the store's scale (points added or forgotten): rescaling the
        # border of Rinv by a power of two is exact
        cdef double new = self._store_sigma()
        self._sync_hard()
        if new == self.sigma:
            return
        if self.n_margin > 0:
            self._scale_border(self.sigma / new)
        self.sigma = new

    cdef void _scale_border(self, double r) noexcept nogil:
        # Rinv's border (row 0 of the kept upper triangle) times r, its corner
        # times r^2: the inverse for a border scaled by 1/r (exact when r is
        # a power of two)
        cdef Py_ssize_t j
        # (times r twice: r^2 under- or overflows for extreme sigma)
        self.Rinv[0] *= r
        self.Rinv[0] *= r
        for j in range(1, self.n_margin + 1):
            self.Rinv[j * self.r_cap] *= r

    # -- small helpers --------------------------------------------------------

    cdef double _q(self, Py_ssize_t i, Py_ssize_t j, double* row_i) noexcept nogil:
        # Q_ij = y_i y_j K_ij, given the kernel row of i
        return self.y[i] * self.y[j] * row_i[j]

    cdef inline double* _margin_values(self, Py_ssize_t si) noexcept nogil:
        # K(x_si, x_S) for a member si: its row of KS when KS covers the
        # store (no kernel row needed: the cache may have evicted it, and at
        # 10^5 rows recomputing |S| of them costs seconds), else its kernel
        # row (read by _q_s by slot). The values are the same bit for bit:
        # the kernel is computed symmetrically.
        if self.ks_n == self.store.n_slots and self.KS != NULL:
            return self.KS + si * self.ks_ld
        return self.store.row(si)

    cdef inline double _q_s(self, Py_ssize_t si, Py_ssize_t j, double* vals) noexcept nogil:
        # Q between member si and the member at margin position j, from
        # _margin_values(si)
        if self.ks_n == self.store.n_slots and self.KS != NULL:
            return self.y[si] * self.y[self.margin[j]] * vals[j]
        return self.y[si] * self.y[self.margin[j]] * vals[self.margin[j]]

    cdef void _set_active(self, Py_ssize_t slot, double yv, int delta) noexcept nogil:
        # (called once C[slot] holds the slot's bound)
        if delta > 0 and self.C[slot] > self.cmax_active:
            self.cmax_active = self.C[slot]
        self.n_active += delta
        if yv > 0:
            self.n_positive += delta
        if self.C[slot] > 0.0:
            self.n_weighted += delta
            if yv > 0:
                self.n_weighted_positive += delta

    cdef long _step_bound(self) noexcept nogil:
        if self.max_steps > 0:
            return self.max_steps
        return 50 + 10 * self.n_active

    # -- the bordered inverse ---------------------------------------------

    cdef int _expand(self, Py_ssize_t k, double* row_k) noexcept nogil:
        """Add slot k to the margin set; return 1 if k is dependent (not added)."""
        cdef Py_ssize_t m = self.n_margin, m1 = m + 1, i, j, p
        cdef double kappa, kscale, yk = self.y[k]
        cdef double* w = self.wbuf
        cdef double* bk = self.wbuf2
        cdef double* dst
        cdef blas_int n_ = <blas_int>m1, ld = <blas_int>self.r_cap, one_i = 1
        cdef double one = 1.0, minus_one = -1.0, zero = 0.0, inv_kappa
        cdef int st
        if m == 0:
            st = self._grow_r(2)
            if st != 0:
                return -st
            # Rinv = inverse of [[0, s y_k], [s y_k, Q_kk]] (s = sigma)
            # (divided twice: sigma^2 overflows beyond kernel values of 1e154)
            self.Rinv[0] = -(row_k[k] / self.sigma) / self.sigma
            self.Rinv[1] = 0.0  # the strict lower triangle is kept at zero
            self.Rinv[self.r_cap] = yk / self.sigma
            self.Rinv[1 + self.r_cap] = 0.0
        else:
            st = self._grow_r(m + 2)
            if st != 0:
                return -st
            w = self.wbuf
            bk = self.wbuf2
            ld = <blas_int>self.r_cap
            # w = [y_k; Q_Sk]
            w[0] = self.sigma * yk
            for p in range(m):
                w[p + 1] = self._q(k, self.margin[p], row_k)
            # beta_k = -Rinv w, refined: kappa and the null direction of a
            # dependent k are read from it
            dsymv(b"U", &n_, &minus_one, self.Rinv, &ld, w, &one_i, &zero, bk, &one_i)
            if self.hard:
                self._refine_solve(bk, w)
            # kappa = Q_kk + w'beta_k is a difference of terms of size about
            # Q_kk + sum |w_p beta_p|; below tol_kappa times that it is rounding
            # noise and k is (numerically) a combination of S
            kappa = _schur_complement(row_k[k], w, bk, m1, &kscale)
            if not self.hard and kappa <= self.tol_kappa * kscale:
                # Unrefined, kappa carries the rounding of Rinv (up to
                # tol_kappa of its scale): too close to tell. Refine beta_k
                # (from the kernel rows when KS is out of date) and judge as on
                # a hard problem. A kernel whose informative part sits far
                # below its values (rbf on features of scale 1e-2: K = 1 -
                # 1e-4, its quadratic part at 1e-8) has genuine Schur
                # complements in this zone; taken for dependent, their null
                # pivots were no null moves and the fit ended off the KKT
                # conditions.
                self._refine_solve(bk, w)
                kappa = _schur_complement(row_k[k], w, bk, m1, &kscale)
                if kappa <= self.tol_kappa_hard * kscale:
                    return 1
                # an ill-conditioned margin set: refine every solve from now
                # on, until S empties
                self.ill = True
                self.hard = True
            elif kappa <= (self.tol_kappa_hard if self.hard else self.tol_kappa) * kscale:
                return 1
            if kappa <= 1e-3 * kscale:
                # the update below loses about log10(kscale / kappa) digits:
                # have the next drift probe run now
                self.updates_since_check = self.drift_check_every
            inv_kappa = 1.0 / kappa
            # Rinv <- [[Rinv, 0], [0, 0]] + [beta_k; 1][beta_k; 1]' / kappa
            for i in range(m1):
                self.Rinv[i + m1 * self.r_cap] = 0.0
                self.Rinv[m1 + i * self.r_cap] = 0.0
            self.Rinv[m1 + m1 * self.r_cap] = 0.0
            bk[m1] = 1.0
            n_ = <blas_int>(m1 + 1)
            dsyr(b"U", &n_, &inv_kappa, bk, &one_i, self.Rinv, &ld)
        if self.ks_n == self.store.n_slots:
            if self._ks_reserve(m + 1) != 0:
                return -ST_NO_MEMORY
            dst = self.KS + m
            for j in range(self.ks_n):
                if j + KS_AHEAD < self.ks_n:
                    eco_prefetch_w(dst + (j + KS_AHEAD) * self.ks_ld)
                dst[j * self.ks_ld] = row_k[j]
        else:
            # KS out of date (purify): rebuilt whole by the next _ks_sync
            self.ks_n = 0
        self.margin[m] = <int>k
        self.pos[k] = <int>m
        self.setof[k] = S_MARGIN
        self.g[k] = 0.0
        self.n_margin = m + 1
        self.epoch += 1
        self.updates_since_check += 1
        return 0

    cdef void _contract(self, Py_ssize_t p) noexcept nogil:
        """Remove the margin vector at position p from Rinv (Schur contraction)."""
        cdef Py_ssize_t m = self.n_margin, m1 = m + 1, q = p + 1, last = m, i
        cdef Py_ssize_t ldr = self.r_cap, ksld = self.ks_ld
        cdef double* src
        cdef double* dst
        cdef double* col = self.wbuf
        cdef double scale
        cdef blas_int n_ = <blas_int>m1, ld = <blas_int>self.r_cap, one_i = 1
        cdef int moved
        # Rinv <- Rinv - Rinv[:, q] Rinv[q, :] / Rinv[q, q]  (row/col q become
        # junk); column q of the symmetric Rinv, read from its upper triangle
        for i in range(q + 1):
            col[i] = self.Rinv[i + q * ldr]
        for i in range(q + 1, m1):
            col[i] = self.Rinv[q + i * ldr]
        scale = -1.0 / col[q]
        dsyr(b"U", &n_, &scale, col, &one_i, self.Rinv, &ld)
        # move the last row and column into position q: in the upper triangle,
        # entry (i, q) for i < q, (q, q) and (q, j) for q < j < last are entries
        # (i, last), (last, last) and (j, last) of the last column
        if q != last:
            memcpy(self.Rinv + q * ldr, self.Rinv + last * ldr, q * sizeof(double))
            self.Rinv[q + q * ldr] = self.Rinv[last + last * ldr]
            for i in range(q + 1, last):
                self.Rinv[q + i * ldr] = self.Rinv[i + last * ldr]
            # one strided pass: the last member's column moves into p and
            # its old place is zeroed (what _scrub_beyond would do again);
            # none while KS is out of date (ks_n = 0: purify)
            src = self.KS + m - 1
            dst = self.KS + p
            for i in range(self.ks_n):
                if i + KS_AHEAD < self.ks_n:
                    eco_prefetch_w(src + (i + KS_AHEAD) * ksld)
                    eco_prefetch_w(dst + (i + KS_AHEAD) * ksld)
                dst[i * ksld] = src[i * ksld]
                src[i * ksld] = 0.0
            moved = self.margin[m - 1]
            self.margin[p] = moved
            self.pos[moved] = <int>p
        self.margin[m - 1] = -1
        self.n_margin = m - 1
        self._scrub_beyond(m, q != last)
        self.epoch += 1
        self.updates_since_check += 1

    cdef void _scrub_beyond(self, Py_ssize_t old_m, bint ks_done=False) noexcept nogil:
        # Zero what the margin set left behind when it shrank from old_m to
        # n_margin: the rows and columns of Rinv beyond the current order and
        # the columns of KS beyond the current set (erasure: they may hold
        # kernel values of an example later removed). Nothing reads them.
        cdef Py_ssize_t j, m1 = self.n_margin + 1, o1 = old_m + 1, rc = self.r_cap
        if old_m <= self.n_margin:
            return
        if o1 > rc:
            o1 = rc
        if self.Rinv != NULL:
            for j in range(o1):
                if j < m1:
                    memset(self.Rinv + j * rc + m1, 0, (o1 - m1) * sizeof(double))
                else:
                    memset(self.Rinv + j * rc, 0, o1 * sizeof(double))
        # (rows of KS from ks_n on are zero: _ks_sync and _ks_rebuild zero
        # what a shrinking store leaves behind)
        if self.KS != NULL and self.n_margin < self.ks_ld and not ks_done:
            if old_m > self.ks_ld:
                old_m = self.ks_ld
            for j in range(self.ks_n):
                if j + KS_AHEAD < self.ks_n:
                    eco_prefetch_w(self.KS + (j + KS_AHEAD) * self.ks_ld + self.n_margin)
                memset(self.KS + j * self.ks_ld + self.n_margin, 0,
                       (old_m - self.n_margin) * sizeof(double))

    cdef int _remove_from_margin(self, Py_ssize_t k, int new_set) noexcept nogil:
        cdef Py_ssize_t p = self.pos[k]
        if self.n_margin == 1:
            self.margin[0] = -1
            self.n_margin = 0
            self._scrub_beyond(1)
            self.epoch += 1
        else:
            self._contract(p)
        self.pos[k] = -1
        self.setof[k] = <signed char>new_set
        return 0

    cdef int _refactorise(self) noexcept nogil:
        """Rebuild Rinv = A^-1 from the kernel rows (symmetric indefinite
        factorisation, Bunch-Kaufman, through LAPACK).

        The factorisation is of the unscaled border (tau = 1, below). When
        it breaks down (a zero pivot) or its inverse is far off (drift above
        1e-3), on a kernel far from the scale of that border (a linear kernel
        on features of 1e9: Q ~ 1e18 next to a border of 1; measured: the
        factorisation failed, status 3, and every fit with it), the same
        matrix is factorised again with Q divided by tau, a power of two on
        the scale of the kernel (exact): the problem of the rescaled twin.
        """
        cdef int st
        cdef double tau
        cdef int e
        cdef int st2
        cdef double d1 = INFINITY
        self.sigma = self._store_sigma()
        self._sync_hard()
        if self.n_margin == 0:
            return 0
        st = self._factorise(1.0)
        if st == 0:
            d1 = self._drift()
        if (st == 0 and d1 <= 1e-3) or st == ST_NO_MEMORY \
                or not isfinite(self.store.max_diag) or not self.store.max_diag > 0.0:
            return st
        frexp(self.store.max_diag, &e)
        tau = ldexp(1.0, e)
        if tau == 1.0:
            return st
        st2 = self._factorise(tau)
        if st2 == 0 and (st != 0 or self._drift() < d1):
            return 0
        if st == 0:
            # the first was the better one: back to it
            return self._factorise(1.0)
        return st2

    cdef int _factorise(self, double tau) noexcept nogil:
        # Rinv from a Bunch-Kaufman factorisation of [[0, y'], [y, Q / tau]]
        # (tau a power of two), scaled to the inverse of the sigma-scaled
        # border matrix of Q
        cdef Py_ssize_t m = self.n_margin, m1 = m + 1, i, j, si
        cdef double* row_i
        cdef blas_int n_ = <blas_int>m1, ld = <blas_int>self.r_cap, info = 0, lwork
        cdef double* work
        cdef Py_ssize_t ldr = self.r_cap
        cdef double inv_tau = 1.0 / tau
        # the upper triangle of A (all that LAPACK reads); zeros below, as
        # the engine keeps Rinv
        self.Rinv[0] = 0.0
        for i in range(m):
            si = self.margin[i]
            row_i = self._margin_values(si)
            if row_i == NULL:
                return ST_NO_MEMORY
            self.Rinv[(i + 1) * ldr] = self.y[si]
            for j in range(i, m):
                self.Rinv[(i + 1) + (j + 1) * ldr] = self._q_s(si, j, row_i) * inv_tau
        for j in range(m):
            memset(self.Rinv + j * ldr + j + 1, 0, (m - j) * sizeof(double))
        # a symmetric factorisation keeps the inverse symmetric with a small
        # residual; the upper triangle of an LU inverse would not (its two
        # triangles carry different rounding, of size cond(A) eps). It is
        # taken of the unscaled border: with the border at the scale of Q,
        # the Bunch-Kaufman pivots eliminate it first and the residual grows
        # to cond(A) eps (measured: 1e-4 against 4e-9 at cond 6e9)
        lwork = <blas_int>(m1 * 64)
        work = <double*>_xmalloc(lwork * sizeof(double))
        if work == NULL:
            return ST_NO_MEMORY
        dsytrf(b"U", &n_, self.Rinv, &ld, self.ipiv, work, &lwork, &info)
        if info == 0:
            dsytri(b"U", &n_, self.Rinv, &ld, self.ipiv, work, &info)
        _zfree(work, lwork * sizeof(double))
        if info != 0:
            return ST_SINGULAR
        # to the border-scaled inverse (exact, sigma and tau are powers of
        # two): inv([[0, y'], [y, Q/tau]]) is the inverse for the border
        # scaled by sigma/tau of Q/tau, and that divided by tau the one of Q
        self._scale_border(tau / self.sigma)
        if tau != 1.0:
            for j in range(m1):
                for i in range(j + 1):
                    self.Rinv[i + j * ldr] *= inv_tau
        self.n_refactorisations += 1
        self.updates_since_check = 0
        return 0

    cdef double _drift(self) noexcept nogil:
        """max |Rinv (A x) - x| for x = (1, 1/2, 1/3, ...): a cheap drift probe."""
        cdef Py_ssize_t m = self.n_margin, m1 = m + 1, i, j, si
        cdef double* ax = self.vbuf
        cdef double* out = self.wbuf
        cdef double* row_i
        cdef double s, worst = 0.0
        cdef blas_int n_ = <blas_int>m1, ld = <blas_int>self.r_cap, one_i = 1
        cdef double one = 1.0, zero = 0.0
        if m == 0:
            return 0.0
        # ax = A x
        s = 0.0
        for j in range(m):
            s += self.y[self.margin[j]] / (j + 2.0)
        ax[0] = self.sigma * s
        for i in range(m):
            si = self.margin[i]
            row_i = self._margin_values(si)
            if row_i == NULL:
                return INFINITY
            s = self.sigma * self.y[si]
            for j in range(m):
                s += self._q_s(si, j, row_i) / (j + 2.0)
            ax[i + 1] = s
        dsymv(b"U", &n_, &one, self.Rinv, &ld, ax, &one_i, &zero, out, &one_i)
        for i in range(m1):
            s = fabs(out[i] - 1.0 / (i + 1.0))
            if s > worst or s != s:
                worst = s
        return worst

    cdef int _maybe_refactorise(self) noexcept nogil:
        # The probe costs O(|S|^2), like one rank-one update. It runs every
        # drift_check_every updates, and right after an expansion whose Schur
        # complement lost more than three digits (_expand asks for it: a
        # single such update can take Rinv from 1e-11 to 1e-4). On an
        # ill-conditioned margin matrix even a fresh factorisation reads
        # above drift_tol; the solves refine themselves (_refine_solve), so
        # the state stays exact, and the next probe refactorises again.
        cdef double drift
        if self.updates_since_check < self.drift_check_every:
            return 0
        self.updates_since_check = 0
        drift = self._drift()
        if drift > self.drift_tol or drift != drift:
            return self._refactorise()
        return 0

    # -- gradients ------------------------------------------------------------

    cdef double _f_without_b(self, Py_ssize_t i, double* row_i) noexcept nogil:
        # sum_j alpha_j y_j K_ij over the active examples with alpha_j != 0
        cdef Py_ssize_t j, n = self.store.n_slots
        cdef double s = 0.0
        for j in range(n):
            if self.alpha[j] != 0.0 and self.setof[j] != S_INACTIVE:
                s += self.alpha[j] * self.y[j] * row_i[j]
        return s

    # -- the path ---------------------------------------------------------------
    #
    # One operation drives the coefficients of a set D along d_D. Its state
    # lives in the pth_* attributes; each step is: _direction (beta), _rates
    # (gamma, the gradient rates), _next_event (the smallest step to a change
    # of set), _apply_step (move alpha, b, g by tau) and _migrate (move the
    # example of the event between sets, pivoting a dependent one).

    cdef int _path_init(self, Py_ssize_t* drv, double* dvec, Py_ssize_t n_drv,
                        bint learning, double t_total) noexcept nogil:
        # u = sum_D y_j d_j K_.j : the kernel-space direction of the driven set,
        # fixed for the whole operation (one vector for a batch, computed once)
        cdef Py_ssize_t n = self.store.n_slots, i, j
        cdef double coef, dscale = 0.0
        cdef double* row
        cdef blas_int bn = <blas_int>n, one_i = 1
        self.scratch_dirty = True
        self.pth_learning = learning
        self.pth_c = drv[0]
        self.pth_drv = drv
        self.pth_dvec = dvec
        self.pth_ndrv = n_drv
        self.pth_t_left = t_total
        self.pth_t_total = t_total
        self.pth_s_drv = 0.0
        self.pth_usum = 0.0
        for j in range(n):
            self.u[j] = 0.0
        for i in range(n_drv):
            row = self.store.row(drv[i])
            if row == NULL:
                return ST_NO_MEMORY
            coef = self.y[drv[i]] * dvec[i]
            self.pth_s_drv += coef
            self.pth_usum += fabs(coef)
            if fabs(dvec[i]) > dscale:
                dscale = fabs(dvec[i])
            daxpy(&bn, &coef, row, &one_i, &self.u[0], &one_i)
        self.pth_tol_base = self.tol_event * (dscale if dscale > 0 else 1.0)
        self.pth_T = self._alpha_scale()
        if learning:
            row = self.store.row(drv[0])
            self.pth_T += t_total * sqrt(row[drv[0]] if row[drv[0]] > 0.0 else 0.0)
        return ST_OK

    cdef inline void _direction(self) noexcept nogil:
        """[beta_b; beta_S] = -A^-1 [y_D'd_D; Q_SD d_D] (border-scaled), or the
        empty-S moves of b; sets pth_moves, pth_beta_b and beta."""
        cdef Py_ssize_t m = self.n_margin, p, k
        cdef blas_int bn, ld, one_i = 1
        cdef double minus_one = -1.0, zero = 0.0
        if m > 0:
            self.pth_moves = True
            self.vbuf[0] = self.sigma * self.pth_s_drv
            for p in range(m):
                k = self.margin[p]
                self.vbuf[p + 1] = self.y[k] * self.u[k]
            bn = <blas_int>(m + 1)
            ld = <blas_int>self.r_cap
            dsymv(b"U", &bn, &minus_one, self.Rinv, &ld, self.vbuf, &one_i,
                  &zero, self.beta, &one_i)
            if self.hard:
                self._refine_solve(self.beta, self.vbuf)
            self.pth_beta_b = self.sigma * self.beta[0]
        elif self.pth_learning:
            # S empty: alpha cannot move alone (sum y alpha = 0); move b so
            # that g_c rises, until an example reaches g = 0 and joins S
            self.pth_moves = False
            self.pth_beta_b = self.y[self.pth_c]
        elif fabs(self.pth_s_drv) <= self.pth_tol_base:
            # S empty and the batch keeps sum y alpha = 0 by itself
            self.pth_moves = True
            self.pth_beta_b = 0.0
        else:
            self.pth_moves = False
            self.pth_beta_b = self.pth_s_drv

    cdef void _refine_solve(self, double* x, const double* rhs) noexcept nogil:
        # One step of iterative refinement of A x = -rhs (A the border-scaled
        # margin matrix, x = -Rinv rhs on entry): r = A x + rhs from the packed
        # kernel rows, x -= Rinv r. Rinv carries the rounding of its updates
        # (a relative drift of up to drift_tol); on a hard-margin problem
        # (C max K ~ 1e13) a direction that far off moves the gradients by
        # drift C max K per step, orders above what the certificate allows,
        # and a null move (S a full basis) is no longer null. Refined, x is
        # accurate to the conditioning of A. Costs two m x m products.
        cdef Py_ssize_t m = self.n_margin, p, q, kp
        cdef double* r = self.rbuf
        cdef double* dx = self.rbuf + self.r_cap
        cdef double s, sb = 0.0
        cdef blas_int bn = <blas_int>(m + 1), ld = <blas_int>self.r_cap, one_i = 1
        cdef double one = 1.0, zero = 0.0
        cdef double* vals
        if m == 0:
            return
        for p in range(m):
            sb += self.y[self.margin[p]] * x[p + 1]
        r[0] = self.sigma * sb + rhs[0]
        for p in range(m):
            kp = self.margin[p]
            s = self.sigma * self.y[kp] * x[0]
            # its row of KS, or its kernel row when KS is out of date (purify)
            vals = self._margin_values(kp)
            if vals == NULL:
                return
            for q in range(m):
                s += self._q_s(kp, q, vals) * x[q + 1]
            r[p + 1] = s + rhs[p + 1]
        dsymv(b"U", &bn, &one, self.Rinv, &ld, r, &one_i, &zero, dx, &one_i)
        for p in range(m + 1):
            x[p] -= dx[p]

    cdef void _row_product(self, const Py_ssize_t* rows, Py_ssize_t count,
                           const double* w, double* out) noexcept nogil:
        # out[j] = KS[j, :m] . w for j = rows[0 .. count-1] (every j < count
        # when rows is NULL), in chunks of ROW_CHUNK rows shared with the
        # helper thread when the product is large enough (same bits either way)
        cdef RowProduct t
        cdef Py_ssize_t i
        if self.n_margin == 0:
            for i in range(count):
                out[rows[i] if rows != NULL else i] = 0.0
            return
        t.KS = self.KS
        t.ld = self.ks_ld
        t.ld_b = <blas_int>self.ks_ld
        t.rows = rows
        t.w = w
        t.out = out
        t.m = <blas_int>self.n_margin
        eco_parallel_for(_row_product_task, &t, count, ROW_CHUNK,
                         <double>count * self.n_margin >= _parallel_min_work)

    cdef inline void _rates(self) noexcept nogil:
        """h[j] = gamma_j, the gradient rate of every reserve and error example
        and of the learned one; sets pth_tol, the tolerance of those rates.

        Two tolerances, each relative to the size of what it judges:
        pth_tol_base for the coefficient rates beta (units of the driven
        coefficients), pth_tol for the gradient rates gamma, sums of kernel
        values weighted by beta and d plus beta_b. A gradient rate below the
        rounding noise of its sum is no event: on rank-deficient data,
        examples that depend on S have a rate that is 0 but for that noise.
        Both scale with the problem, so a problem and its rescaled twin take
        the same path.
        """
        cdef Py_ssize_t n = self.store.n_slots, m = self.n_margin, p, j
        cdef double wsum, bb = self.pth_beta_b, tol
        cdef bint moves = self.pth_moves
        self.scratch_dirty = True
        wsum = self.pth_usum if moves else 0.0
        for p in range(m):
            self.wbuf[p] = self.y[self.margin[p]] * self.beta[p + 1]
            wsum += fabs(self.wbuf[p])
        tol = self.tol_event * fabs(bb) + 1e-10 * wsum * self.store.max_diag
        self.pth_tol = tol if tol > 1e-300 else 1e-300
        self.pth_rho = 1e-10 * wsum * self.store.max_diag
        if self.scr_on:
            self._scr_rates()
            return
        # h = K_.S (y_S beta_S): the matrix-vector pass over the margin rows
        self._row_product(NULL, n, self.wbuf, &self.h[0])
        self.n_rated_rows += n
        for j in range(n):
            if (self.setof[j] == S_RESERVE or self.setof[j] == S_ERROR
                    or (self.pth_learning and j == self.pth_c)):
                self.h[j] = self.y[j] * (self.h[j] + (self.u[j] if moves else 0.0) + bb)

    cdef inline void _consider(self, double cand, int kind, Py_ssize_t slot) noexcept nogil:
        # the smallest step wins; ties go to the smallest slot (Bland), the end
        # of the drive first
        if cand < 0.0:
            cand = 0.0
        if cand < self.pth_tau or (cand == self.pth_tau and self.pth_kind != EV_END
                                   and slot < self.pth_slot):
            self.pth_tau = cand
            self.pth_kind = kind
            self.pth_slot = slot

    cdef inline void _next_event(self) noexcept nogil:
        """The smallest step tau to a change of set: pth_tau, pth_kind, pth_slot.

        A gradient rate below pth_tol is rounding noise for the event at
        g = 0 (no zero-length events among dependent examples), but it is
        not ignored for good: a long step at a small real rate (hard-margin
        problems, where rates are 1e-10 of the terms they are summed from)
        would carry g far past 0. Such an example has its event where g
        passes 0 by the slack, 1e-2 of what the KKT check after the
        operation allows it.
        """
        cdef Py_ssize_t n = self.store.n_slots, m = self.n_margin, p, k, j
        cdef Py_ssize_t c = self.pth_c
        cdef double bb, gam, tol = self.pth_tol, tol_base = self.pth_tol_base, dj
        cdef double sl0 = 1e-2 * self.check_tol * (1.0 + fabs(self.b))
        cdef double sl1 = 1e-2 * self.check_tol * CANCEL * self.pth_T
        self.pth_sl0 = sl0
        self.pth_sl1 = sl1
        self.pth_tau = INFINITY
        self.pth_kind = EV_NONE
        self.pth_slot = -1
        if self.pth_moves:
            self.pth_tau = self.pth_t_left
            self.pth_kind = EV_END
        if self.pth_learning:
            # a learned example refused as dependent on S keeps being
            # driven: along that direction no gradient moves (a null move)
            # until an S member reaches a bound and S changes
            gam = self.h[c]
            if gam > tol and self.blocked[c] != self.epoch:
                self._consider(-self.g[c] / gam, EV_LEARNED_MARGIN, c)
            elif gam > 0.0 and self.blocked[c] != self.epoch:
                dj = self.store._diag(c)
                self._consider((sl0 + sl1 * (sqrt(dj) if dj > 0.0 else 0.0) - self.g[c]) / gam,
                               EV_LEARNED_MARGIN, c)
        for p in range(m):
            k = self.margin[p]
            bb = self.beta[p + 1]
            if bb > tol_base:
                self._consider((self.C[k] - self.alpha[k]) / bb, EV_MARGIN_TO_ERROR, k)
            elif bb < -tol_base:
                self._consider(self.alpha[k] / (-bb), EV_MARGIN_TO_RESERVE, k)
        if self.scr_on:
            # the followed rows only; then the screened ones that the bound
            # cannot exclude at the end of this tentative step join them
            for j in range(self.scr_nL):
                self._consider_row(self.scr_L[j])
            self._scr_check()
            return
        for j in range(n):
            self._consider_row(j)

    cdef inline void _consider_row(self, Py_ssize_t j) noexcept nogil:
        # a reserve or error row whose gradient moves towards 0 (h[j] is its rate)
        cdef double gam, tol = self.pth_tol, dj
        if self.setof[j] != S_RESERVE and self.setof[j] != S_ERROR:
            return
        if self.C[j] <= 0.0 or self.blocked[j] == self.epoch:
            return
        gam = self.h[j]
        # a rate below tol is noise for the event at g = 0, but a long step
        # at it would carry g far past 0: its event is where g passes 0 by
        # the slack (see _next_event). A screened row cannot reach 0 at all.
        if self.setof[j] == S_ERROR:
            if gam > tol:
                self._consider(-self.g[j] / gam, EV_TO_MARGIN, j)
            elif gam > 0.0:
                dj = self.store._diag(j)
                self._consider((self.pth_sl0 + self.pth_sl1 * (sqrt(dj) if dj > 0.0 else 0.0)
                                - self.g[j]) / gam, EV_SLACK_TO_MARGIN, j)
        elif gam < -tol:
            self._consider(self.g[j] / (-gam), EV_TO_MARGIN, j)
        elif gam < 0.0:
            dj = self.store._diag(j)
            self._consider((self.g[j] + self.pth_sl0 + self.pth_sl1 * (sqrt(dj) if dj > 0.0 else 0.0))
                           / (-gam), EV_SLACK_TO_MARGIN, j)

    cdef inline int _apply_step(self, Py_ssize_t* drv, double* dvec,
                                Py_ssize_t n_drv) noexcept nogil:
        """Move alpha_S, b, alpha_D and the gradients by pth_tau."""
        cdef Py_ssize_t n = self.store.n_slots, m = self.n_margin, p, k, i, j
        cdef double tau = self.pth_tau
        if tau <= 0.0:
            return ST_OK
        for p in range(m):
            k = self.margin[p]
            self.alpha[k] += self.beta[p + 1] * tau
            if self.scr_on:
                self.scr_dA[k] += self.beta[p + 1] * tau
            # a tied member can pass its bound by a rounding error: it sits
            # at the bound (a zero-length event next step), never outside
            if self.alpha[k] < 0.0:
                self.alpha[k] = 0.0
            elif self.alpha[k] > self.C[k]:
                self.alpha[k] = self.C[k]
        self.b += self.pth_beta_b * tau
        if self.pth_moves:
            for i in range(n_drv):
                self.alpha[drv[i]] += dvec[i] * tau
                if self.scr_on:
                    self.scr_dA[drv[i]] += dvec[i] * tau
            self.pth_t_left -= tau
        if self.scr_on:
            self._scr_advance(tau)
        else:
            for j in range(n):
                if self.setof[j] == S_RESERVE or self.setof[j] == S_ERROR:
                    self.g[j] += self.h[j] * tau
        if self.pth_learning:
            self.g[self.pth_c] += self.h[self.pth_c] * tau
        if not isfinite(self.b):
            return ST_NON_FINITE
        return ST_OK

    cdef int _migrate(self) noexcept nogil:
        """Move the example of the event between sets.

        Returns PATH_GO_ON to take another step, else the status that ends the
        path (ST_OK when the operation is complete).
        """
        cdef Py_ssize_t k = self.pth_slot
        cdef int kind = self.pth_kind, st, from_set = -9
        if kind == EV_END or k < 0:
            return self._migrate_sets()
        from_set = self.setof[k]
        if self.scr_on and (kind == EV_TO_MARGIN or kind == EV_SLACK_TO_MARGIN):
            # its alpha may move from now on (in S, or by a null pivot)
            if self._scr_touch(k) != 0:
                return ST_NO_MEMORY
        st = self._migrate_sets()
        if self.record_migrations:
            self._log_migration(k, from_set, self.setof[k])
        return st

    cdef int _migrate_sets(self) noexcept nogil:
        cdef Py_ssize_t c = self.pth_c, k = self.pth_slot
        cdef int kind = self.pth_kind, st
        cdef double* row
        if kind == EV_END:
            return ST_OK
        self.n_migrations += 1
        if kind == EV_LEARNED_MARGIN:
            self.g[c] = 0.0
            row = self.store.row(c)
            if row == NULL:
                return ST_NO_MEMORY
            st = self._expand(c, row)
            if st < 0:
                return -st
            if st == 1:
                self.pth_noisy = True
                # c is linearly dependent on S: driving it on is itself a
                # move along the null direction (no gradient moves) until a
                # member of S reaches a bound; at alpha_c = 0 it is done
                if self.alpha[c] <= 0.0:
                    self.setof[c] = S_RESERVE
                    return ST_OK
                self.blocked[c] = self.epoch
                return PATH_GO_ON
            return self._maybe_refactorise()
        elif kind == EV_MARGIN_TO_RESERVE:
            self.alpha[k] = 0.0
            self.g[k] = 0.0
            self._remove_from_margin(k, S_RESERVE)
        elif kind == EV_MARGIN_TO_ERROR:
            self.alpha[k] = self.C[k]
            self.g[k] = 0.0
            self._remove_from_margin(k, S_ERROR)
        elif kind == EV_TO_MARGIN or kind == EV_SLACK_TO_MARGIN:
            self.g[k] = 0.0
            row = self.store.row(k)
            if row == NULL:
                return ST_NO_MEMORY
            st = self._expand(k, row)
            if st < 0:
                return -st
            if st == 1:
                self.pth_noisy = True
            if st == 1 and kind == EV_SLACK_TO_MARGIN:
                # dependent on S, and its rate is rounding noise: it stays at
                # its bound with g = 0 for the rest of the operation (a pivot
                # along a direction null only up to that noise would move
                # the gradients by it, and two such examples can take turns
                # for ever); the check after the operation judges it
                self.blocked[k] = self.epoch
                st = 0
            while st == 1:
                # dependent on S: pivot. Along the null direction no gradient
                # moves; alpha_k leaves its bound the way its gradient asks
                # (up from R, down from E) until a member of S reaches a bound
                # and leaves (then k enters) or k reaches its other bound
                # (g_k = 0 there: valid KKT)
                st = self._null_pivot(k, 1.0 if self.setof[k] == S_RESERVE else -1.0)
                if st == 0:
                    break
                st = self._expand(k, row)
                if st < 0:
                    return -st
        st = self._maybe_refactorise()
        if st != 0:
            return st
        return PATH_GO_ON

    cdef int _path(self, Py_ssize_t* drv, double* dvec, Py_ssize_t n_drv,
                   bint learning, double t_total) noexcept nogil:
        """Drive the coefficients of `drv` along `dvec` for `t_total` units.

        Learning (one example c = drv[0], dvec = +1): stops early when g_c
        reaches 0 (c joins S); otherwise c ends in E at alpha_c = C_c.
        Unlearning: all driven coefficients reach 0 together at t = t_total = 1.
        Keeps every other active example in KKT along the way.
        """
        cdef int st = self._path_init(drv, dvec, n_drv, learning, t_total), st2
        if st != ST_OK:
            return st
        if self.screening:
            st = self._scr_begin()
            if st != ST_OK:
                return st
        st = self._path_steps(drv, dvec, n_drv, t_total)
        # every screened gradient brought up to date (also on failure: the
        # state stays consistent for whoever takes over)
        st2 = self._scr_end()
        return st if st != ST_OK else st2

    cdef int _path_steps(self, Py_ssize_t* drv, double* dvec, Py_ssize_t n_drv,
                         double t_total) noexcept nogil:
        cdef long steps = 0, bound = self._step_bound()
        cdef int st
        while True:
            if self.pth_t_left <= 0.0:
                return ST_OK
            if steps == self.fail_at_step:
                return ST_INJECTED_FAULT
            if steps >= bound:
                return ST_STEP_LIMIT
            steps += 1
            self.n_steps += 1
            self._direction()
            self._rates()
            self._next_event()
            if self.scr_on and self.scr_fail != ST_OK:
                return self.scr_fail
            if self.pth_kind == EV_NONE and self.pth_t_left <= 1e-9 * t_total:
                # S emptied a rounding error before the end (the last member
                # reached its bound at t = 1 - 1e-16): nothing is left to move
                return ST_OK
            if self.pth_kind == EV_NONE or not isfinite(self.pth_tau):
                return ST_NO_EVENT
            st = self._apply_step(drv, dvec, n_drv)
            if st != ST_OK:
                return st
            st = self._migrate()
            if st != PATH_GO_ON:
                return st
            if self.scr_on:
                st = self._scr_maybe_restart(steps)
                if st != ST_OK:
                    return st

    # -- safe screening of the path ----------------------------------------------
    #
    # Most reserve and error rows are far from g = 0 and cannot be the next
    # event. With Delta w = sum_{k in T} y_k dA_k phi(x_k) (T: the rows whose
    # alpha a step has moved on this path, dA: those moves) and Delta b the
    # moves of b, every gradient satisfies g_j = g_j(0) + y_j (<Delta w,
    # phi(x_j)> + Delta b), so |g_j - g_j(0)| <= sqrt(K_jj) ||Delta w|| +
    # |Delta b| (Cauchy-Schwarz in the RKHS of a positive semi-definite kernel).
    # A screened row keeps g_j(0) and gets no rate; ||Delta w||^2 is followed
    # exactly along each step from the raw rates of the followed rows (it is a
    # quadratic in the step length). docs/cp-engine.md, section 10, has the
    # argument that the screened path takes the unscreened path's events.

    cdef void _scr_free(self) noexcept nogil:
        # zeroed on release like every buffer that held gradients or kernel values
        cdef size_t n1 = <size_t>self.scr_alloc_n
        _zfree(self.scr_dA, n1 * sizeof(double))
        _zfree(self.scr_key, n1 * sizeof(double))
        _zfree(self.scr_s, n1 * sizeof(double))
        _zfree(self.scr_state, n1 * sizeof(signed char))
        _zfree(self.scr_L, n1 * sizeof(Py_ssize_t))
        _zfree(self.scr_T, n1 * sizeof(Py_ssize_t))
        _zfree(self.scr_rows, n1 * sizeof(Py_ssize_t))
        _zfree(self.scr_Trow, n1 * sizeof(double*))
        _zfree(self.scr_wdA, n1 * sizeof(double))
        _zfree(self.scr_Xrow, n1 * sizeof(double*))
        _zfree(self.scr_Xc, n1 * sizeof(double))
        self._scr_reset()

    cdef void _scr_reset(self) noexcept nogil:
        # no screening buffers, no screened path (a new engine, or after _scr_free)
        self.scr_dA = NULL
        self.scr_key = NULL
        self.scr_s = NULL
        self.scr_state = NULL
        self.scr_L = NULL
        self.scr_T = NULL
        self.scr_rows = NULL
        self.scr_Trow = NULL
        self.scr_wdA = NULL
        self.scr_Xrow = NULL
        self.scr_Xc = NULL
        self.scr_nX = 0
        self.scr_alloc_n = 0
        self.scr_on = False

    cdef int _scr_touch(self, Py_ssize_t j) noexcept nogil:
        # j's alpha may move on this path: follow it. Its kernel row is
        # needed only for the times it is outside S (in S, its values are
        # KS's column): fetched then (_scr_x_row), not here, since the cache
        # need not hold the rows of S
        cdef double* row = NULL
        if self.scr_state[j] == SCR_TOUCHED:
            return 0
        if self.setof[j] != S_MARGIN:
            row = self.store.row(j)
            if row == NULL:
                return ST_NO_MEMORY
        if self.scr_state[j] != SCR_FOLLOWED:
            self.scr_L[self.scr_nL] = j
            self.scr_nL += 1
        self.scr_state[j] = SCR_TOUCHED
        self.scr_T[self.scr_nT] = j
        self.scr_Trow[self.scr_nT] = row
        self.scr_nT += 1
        return 0

    cdef inline double* _scr_x_row(self, Py_ssize_t t) noexcept nogil:
        # the kernel row of touched row t, fetched the first time it is read
        # (NULL when memory runs out: scr_fail says so)
        if self.scr_Trow[t] == NULL:
            self.scr_Trow[t] = self.store.row(self.scr_T[t])
            if self.scr_Trow[t] == NULL:
                self.scr_fail = ST_NO_MEMORY
        return self.scr_Trow[t]

    cdef void _scr_delta_coefs(self) noexcept nogil:
        # Delta w = sum_T y_k dA_k phi_k as the refreshes read it: scr_wdA[p]
        # for the members of S (their values against any row are that row of
        # KS), and the kernel rows and coefficients of the touched rows
        # outside S that have moved (scr_Xrow, scr_Xc; usually few)
        cdef Py_ssize_t p, t, k
        for p in range(self.n_margin):
            k = self.margin[p]
            self.scr_wdA[p] = self.y[k] * self.scr_dA[k]
        self.scr_nX = 0
        for t in range(self.scr_nT):
            k = self.scr_T[t]
            if self.setof[k] == S_MARGIN or self.scr_dA[k] == 0.0:
                continue
            if self._scr_x_row(t) == NULL:
                continue  # scr_fail is set: the path stops at this step
            self.scr_Xrow[self.scr_nX] = self.scr_Trow[t]
            self.scr_Xc[self.scr_nX] = self.y[k] * self.scr_dA[k]
            self.scr_nX += 1

    cdef inline double _scr_delta_g(self, Py_ssize_t j) noexcept nogil:
        # g_j - g_j(0) = y_j (<Delta w, phi_j> + Delta b), from _scr_delta_coefs,
        # summed as _scr_join sums it
        cdef Py_ssize_t x
        cdef double s = 0.0, moved = 0.0
        cdef blas_int bm = <blas_int>self.n_margin, one_i = 1
        if self.n_margin > 0:
            s = ddot(&bm, self.KS + j * self.ks_ld, &one_i, self.scr_wdA, &one_i)
        for x in range(self.scr_nX):
            moved += self.scr_Xrow[x][j] * self.scr_Xc[x]
        return self.y[j] * (s + moved + self.scr_db)

    cdef int _scr_begin(self) noexcept nogil:
        """Start a screened path: the buffers and sqrt(K_jj) of every row
        (once per path), then the keys (_scr_take_keys)."""
        cdef Py_ssize_t n = self.store.n_slots, j
        cdef int kc = self.store.kernel_code
        cdef double d
        self.scr_on = False
        # Cauchy-Schwarz needs a positive semi-definite kernel: a precomputed
        # Gram matrix (or a polynomial kernel with a negative offset) may not be
        if kc == K_PRECOMPUTED or (kc == K_POLY and (self.store.coef0 < 0.0
                                                     or self.store.gamma < 0.0)):
            return ST_OK
        self.scr_alloc_n = n + 1
        self.scr_dA = <double*>_xmalloc((n + 1) * sizeof(double))
        self.scr_key = <double*>_xmalloc((n + 1) * sizeof(double))
        self.scr_s = <double*>_xmalloc((n + 1) * sizeof(double))
        self.scr_state = <signed char*>_xmalloc((n + 1) * sizeof(signed char))
        self.scr_L = <Py_ssize_t*>_xmalloc((n + 1) * sizeof(Py_ssize_t))
        self.scr_T = <Py_ssize_t*>_xmalloc((n + 1) * sizeof(Py_ssize_t))
        self.scr_rows = <Py_ssize_t*>_xmalloc((n + 1) * sizeof(Py_ssize_t))
        self.scr_Trow = <double**>_xmalloc((n + 1) * sizeof(double*))
        self.scr_wdA = <double*>_xmalloc((n + 1) * sizeof(double))
        self.scr_Xrow = <double**>_xmalloc((n + 1) * sizeof(double*))
        self.scr_Xc = <double*>_xmalloc((n + 1) * sizeof(double))
        if (self.scr_dA == NULL or self.scr_key == NULL or self.scr_s == NULL
                or self.scr_state == NULL or self.scr_L == NULL or self.scr_T == NULL
                or self.scr_rows == NULL or self.scr_Trow == NULL or self.scr_wdA == NULL
                or self.scr_Xrow == NULL or self.scr_Xc == NULL):
            self._scr_free()
            return ST_NO_MEMORY
        self.scr_smax = 0.0
        for j in range(n):
            d = self.store._diag(j)
            self.scr_s[j] = sqrt(d) if d > 0.0 else 0.0
            if self.scr_s[j] > self.scr_smax:
                self.scr_smax = self.scr_s[j]
        return self._scr_take_keys(0)

    cdef int _scr_take_keys(self, long step) noexcept nogil:
        """Screen from the current point of the path (every gradient exact):
        the distance of every reserve and error row to an event; rows
        already close to one are followed. `step`: the path's step here.
        At the start of a path and at each restart (_scr_maybe_restart)."""
        cdef Py_ssize_t n = self.store.n_slots, j, p
        cdef double talpha = 0.0, key
        self.scr_on = False
        self.scr_nL = 0
        self.scr_nT = 0
        self.scr_nrows = 0
        self.scr_A = 0.0
        self.scr_E = 0.0
        self.scr_db = 0.0
        self.scr_W0 = 0.0
        self.scr_DB0 = 0.0
        self.scr_P = 0.0
        for j in range(n):
            self.scr_dA[j] = 0.0
            self.scr_state[j] = SCR_IGNORED
            if self.setof[j] != S_INACTIVE and self.alpha[j] > 0.0:
                talpha += self.alpha[j] * self.scr_s[j]
        for p in range(self.pth_ndrv):
            talpha += fabs(self.pth_dvec[p]) * self.pth_t_total * self.scr_s[self.pth_drv[p]]
        if 1e-8 * self.scr_smax * talpha > 1.0 + fabs(self.b):
            # the kernel terms of a gradient exceed it by more than 1e8: float64
            # knows the gradients to a few digits only (docs/cp-engine.md,
            # section 5), and the unscreened path is followed as it always was
            self._scr_free()
            return ST_OK
        for p in range(self.n_margin):
            if self._scr_touch(self.margin[p]) != 0:
                self._scr_free()
                return ST_NO_MEMORY
        for p in range(self.pth_ndrv):
            if self._scr_touch(self.pth_drv[p]) != 0:
                self._scr_free()
                return ST_NO_MEMORY
        for j in range(n):
            if self.scr_state[j] != SCR_IGNORED:
                continue
            if self.setof[j] != S_RESERVE and self.setof[j] != S_ERROR:
                continue
            if self.C[j] <= 0.0:
                key = INFINITY  # never an event; refreshed at the end
            else:
                # distance to g = 0 on the side the row sits, less a margin
                # far above the rounding of any gradient (1e-9 of the size of
                # the terms it is summed from), so that no rounding difference
                # between a screened and an unscreened path decides an event
                key = self.g[j] if self.setof[j] == S_RESERVE else -self.g[j]
                key -= 1e-9 * (1.0 + fabs(self.b) + self.scr_s[j] * talpha)
            if key > 0.0:
                self.scr_key[j] = key
                self.scr_state[j] = SCR_SCREENED
                self.scr_rows[self.scr_nrows] = j
                self.scr_nrows += 1
            else:
                self.scr_state[j] = SCR_FOLLOWED
                self.scr_L[self.scr_nL] = j
                self.scr_nL += 1
        self.scr_nX = 0
        self.scr_fail = ST_OK
        self.scr_nL0 = self.scr_nL
        self.scr_step0 = step
        self.scr_on = True
        return ST_OK

    cdef void _scr_rates(self) noexcept nogil:
        """Rates of the followed rows, and the growth of ||Delta w||^2 along the step.

        With dw = sum_S y_p beta_p phi_p (+ sum_D y_i d_i phi_i when the
        driven set moves), ||Delta w + t dw||^2 = A + 2 t B + t^2 C with
        B = <Delta w, dw> = sum_T y_k dA_k r_k and C = ||dw||^2 = sum_S y_p
        beta_p r_p (+ sum_D y_i d_i r_i), where r_k = <phi_k, dw> is the raw
        rate of row k: O(|S| |T|), no pass over all rows. eB and eC bound
        their rounding (pth_rho bounds that of one raw rate).
        """
        cdef Py_ssize_t n = self.store.n_slots, m = self.n_margin, nL = self.scr_nL, i, j, p
        cdef bint moves = self.pth_moves
        cdef double bb = self.pth_beta_b, r, B = 0.0, C = 0.0, aB = 0.0, aC = 0.0
        cdef double eB = 0.0, eC = 0.0, rho = self.pth_rho, coef, dP = 0.0
        self.scratch_dirty = True
        # K_LS (y_S beta_S): the row of KS of each followed row, m contiguous values
        self._row_product(self.scr_L, nL, self.wbuf, &self.h[0])
        self.n_rated_rows += nL
        for i in range(nL):
            j = self.scr_L[i]
            r = self.h[j] + (self.u[j] if moves else 0.0)
            self.h[j] = r
            if self.scr_state[j] == SCR_TOUCHED and self.scr_dA[j] != 0.0:
                coef = self.y[j] * self.scr_dA[j]
                B += coef * r
                aB += fabs(coef * r)
                eB += fabs(coef)
        for p in range(m):
            j = self.margin[p]
            C += self.wbuf[p] * self.h[j]
            aC += fabs(self.wbuf[p] * self.h[j])
            eC += fabs(self.wbuf[p])
            dP += fabs(self.wbuf[p]) * self.scr_s[j]
        if moves:
            for i in range(self.pth_ndrv):
                j = self.pth_drv[i]
                coef = self.y[j] * self.pth_dvec[i]
                C += coef * self.h[j]
                aC += fabs(coef * self.h[j])
                eC += fabs(coef)
                dP += fabs(coef) * self.scr_s[j]
        self.scr_B = B
        self.scr_C = C
        self.scr_dP = dP
        self.scr_eB = rho * eB + 1e-12 * aB
        self.scr_eC = rho * eC + 1e-12 * aC
        for i in range(nL):
            j = self.scr_L[i]
            if (self.setof[j] == S_RESERVE or self.setof[j] == S_ERROR
                    or (self.pth_learning and j == self.pth_c)):
                self.h[j] = self.y[j] * (self.h[j] + bb)

    cdef inline void _scr_grow(self, double tau, double* A, double* E) noexcept nogil:
        # ||Delta w||^2 after a step of length tau, and a bound on its rounding
        A[0] = self.scr_A + 2.0 * tau * self.scr_B + tau * tau * self.scr_C
        E[0] = (self.scr_E + 2.0 * tau * self.scr_eB + tau * tau * self.scr_eC
                + 1e-12 * (fabs(self.scr_A) + 2.0 * tau * fabs(self.scr_B)
                           + tau * tau * fabs(self.scr_C)))

    cdef inline double _scr_norm(self, double A, double E) noexcept nogil:
        # an upper bound on ||Delta w|| from its followed square and rounding
        return sqrt((A if A > 0.0 else 0.0) + E) * (1.0 + 1e-9)

    cdef inline void _scr_refresh(self, Py_ssize_t j) noexcept nogil:
        # g_j = g_j(0) + y_j (sum_T K_jk y_k dA_k + Delta b): O(|S| + |X|),
        # after _scr_delta_coefs
        self.g[j] += self._scr_delta_g(j)

    cdef void _scr_check(self) noexcept nogil:
        """Follow every screened row that might reach g = 0 within the tentative step.

        The bound sqrt(K_jj) ||Delta w(t)|| + |Delta b(t)| is convex in t
        along the step (a norm and an absolute value of affine functions),
        so on [0, tau] it is at most its larger endpoint value. A row below
        both endpoint values cannot reach 0 anywhere in the step, nor in a
        shorter one: rows that join can only shorten the step, so one round
        suffices.
        """
        cdef double tau = self.pth_tau, A, E, W = 0.0, DB = 0.0, P
        cdef Py_ssize_t i, j, kept = 0
        cdef bint every = not isfinite(tau)
        if not every:
            self._scr_grow(tau, &A, &E)
            W = self._scr_norm(A, E)
            if W < self.scr_W0:
                W = self.scr_W0
            # the rounding of the gradients grows with the terms the path
            # adds to them (sum_T |dA_k| sqrt(K_kk) at most): the margin of
            # _scr_begin, 1e-9 of the terms, follows it
            P = self.scr_P + tau * self.scr_dP
            W += 1e-9 * P
            DB = fabs(self.scr_db + self.pth_beta_b * tau) * (1.0 + 1e-9)
            if DB < self.scr_DB0:
                DB = self.scr_DB0
        cdef Py_ssize_t first = self.scr_nL, count = 0
        # the rows that join, appended to L in slot order (scr_rows keeps it)
        for i in range(self.scr_nrows):
            j = self.scr_rows[i]
            if every or self.scr_key[j] <= self.scr_s[j] * W + DB:
                count += 1
        if count == 0:
            return
        self._scr_delta_coefs()
        for i in range(self.scr_nrows):
            j = self.scr_rows[i]
            if every or self.scr_key[j] <= self.scr_s[j] * W + DB:
                self.scr_state[j] = SCR_FOLLOWED
                self.scr_L[self.scr_nL] = j
                self.scr_nL += 1
            else:
                self.scr_rows[kept] = j
                kept += 1
        self.scr_nrows = kept
        self._scr_join(first, count)

    cdef void _scr_join(self, Py_ssize_t first, Py_ssize_t count) noexcept nogil:
        # rows first .. first + count - 1 of L have just joined (after
        # _scr_delta_coefs; wbuf holds the step's y_S beta_S): the exact
        # gradient, rate and event of each. Their two sums over S (the change
        # of the gradient, the rate) are row products (_row_product: the
        # helper thread may share them), into scr_key (dead once a row has
        # joined) and h. The moved rows outside S add their part of the
        # gradient one kernel row at a time, read in slot order (the joining
        # rows are in slot order), not one scattered read per (joining row,
        # moved row) pair.
        cdef Py_ssize_t i, j, x
        cdef const Py_ssize_t* rows = self.scr_L + first
        cdef const double* xrow
        cdef double c
        self.scratch_dirty = True
        self._row_product(rows, count, self.scr_wdA, self.scr_key)
        for i in range(count):
            self.h[rows[i]] = 0.0
        for x in range(self.scr_nX):
            xrow = self.scr_Xrow[x]
            c = self.scr_Xc[x]
            for i in range(count):
                j = rows[i]
                self.h[j] += xrow[j] * c
        for i in range(count):
            j = rows[i]
            self.g[j] += self.y[j] * (self.scr_key[j] + self.h[j] + self.scr_db)
        self._row_product(rows, count, self.wbuf, &self.h[0])
        for i in range(count):
            j = rows[i]
            if self.pth_moves:
                self.h[j] += self.u[j]
            self.h[j] = self.y[j] * (self.h[j] + self.pth_beta_b)
            self._consider_row(j)
        self.n_rated_rows += count

    cdef void _scr_advance(self, double tau) noexcept nogil:
        # the step is taken: ||Delta w||^2, Delta b, the followed gradients
        cdef Py_ssize_t i, j
        cdef double A, E
        self._scr_grow(tau, &A, &E)
        self.scr_A = A
        self.scr_E = E
        self.scr_db += self.pth_beta_b * tau
        self.scr_W0 = self._scr_norm(A, E)
        self.scr_DB0 = fabs(self.scr_db) * (1.0 + 1e-9)
        self.scr_P += tau * self.scr_dP
        self.scr_W0 += 1e-9 * self.scr_P
        for i in range(self.scr_nL):
            j = self.scr_L[i]
            if self.setof[j] == S_RESERVE or self.setof[j] == S_ERROR:
                self.g[j] += self.h[j] * tau

    cdef int _scr_end(self) noexcept nogil:
        """End a screened path: every screened gradient brought up to date
        (_scr_bring_up_to_date), the buffers released."""
        cdef int st
        if not self.scr_on:
            return ST_OK
        st = self._scr_bring_up_to_date()
        self._scr_free()
        return st

    cdef int _scr_bring_up_to_date(self) noexcept nogil:
        """Every screened gradient, g_j = g_j(0) + y_j (K_jT y_T dA_T + Delta b),
        in one pass over the rows of T (one product with the packed margin
        rows for its members in S), or row by row when few rows are left
        screened."""
        cdef Py_ssize_t n = self.store.n_slots, m = self.n_margin, i, j, k, p
        cdef double coef
        cdef double* row
        cdef blas_int bn, one_i = 1
        self.scratch_dirty = True
        if 4 * self.scr_nrows < n:
            # few rows left screened: each from its row of KS
            self._scr_delta_coefs()
            if self.scr_fail != ST_OK:
                return ST_NO_MEMORY
            for i in range(self.scr_nrows):
                self._scr_refresh(self.scr_rows[i])
        else:
            for p in range(m):
                k = self.margin[p]
                self.wbuf[p] = self.y[k] * self.scr_dA[k]
            self._row_product(NULL, n, self.wbuf, &self.h[0])
            bn = <blas_int>n
            for i in range(self.scr_nT):
                k = self.scr_T[i]
                if self.setof[k] == S_MARGIN or self.scr_dA[k] == 0.0:
                    continue
                coef = self.y[k] * self.scr_dA[k]
                row = self._scr_x_row(i)
                if row == NULL:
                    return ST_NO_MEMORY
                daxpy(&bn, &coef, row, &one_i, &self.h[0], &one_i)
            for i in range(self.scr_nrows):
                j = self.scr_rows[i]
                self.g[j] += self.y[j] * (self.h[j] + self.scr_db)
        return ST_OK

    cdef int _scr_maybe_restart(self, long steps) noexcept nogil:
        """Start the screening again from the current point of the path, when it pays.

        The bound of a screened row grows with ||Delta w|| since the start
        of the screening, and a row that has joined is rated at every later
        step, even once its exact gradient has moved away from 0 again. On a
        long path (an error example) the followed rows pile up. A restart
        brings every screened gradient up to date as the end of a path does
        (_scr_bring_up_to_date), then measures every distance anew from the
        current point (_scr_take_keys, in the same buffers): the rows far
        from an event go back to screening, and ||Delta w|| counts from
        here. It costs about one unscreened step, so
        it is taken once the rows followed beyond those of the last start,
        times the steps since then, exceed `screening_restart` times the
        rows (a rent-or-buy rule: the rates paid for the extra rows between
        two restarts stay within about `screening_restart` times what one
        restart costs). The restarted path takes
        the same events: the argument of docs/cp-engine.md, section 10,
        holds from any starting point, with its margin against rounding.
        """
        cdef double extra = <double>(self.scr_nL - self.scr_nL0)
        cdef int st
        if extra <= 0.0 or extra * <double>(steps - self.scr_step0) \
                <= self.screening_restart * <double>self.store.n_slots:
            return ST_OK
        st = self._scr_bring_up_to_date()
        if st != ST_OK:
            self._scr_free()
            return st
        self.n_screen_restarts += 1
        # every gradient is exact here: if a driven row's kernel row cannot
        # be had, or the keys cannot be trusted, _scr_take_keys releases the
        # buffers and the path goes on unscreened
        self._scr_take_keys(steps)
        return ST_OK

    cdef void _log_migration(self, Py_ssize_t slot, int from_set, int to_set) noexcept nogil:
        cdef int* grown
        cdef Py_ssize_t cap
        if self.mig_n == self.mig_cap:
            cap = 2 * self.mig_cap if self.mig_cap > 0 else 64
            grown = <int*>_xmalloc(3 * cap * sizeof(int))
            if grown == NULL:
                return  # the log is a test aid: a full log drops entries
            if self.mig_n > 0:
                memcpy(grown, self.mig_buf, 3 * self.mig_n * sizeof(int))
            _zfree(self.mig_buf, 3 * self.mig_cap * sizeof(int))
            self.mig_buf = grown
            self.mig_cap = cap
        self.mig_buf[3 * self.mig_n] = <int>slot
        self.mig_buf[3 * self.mig_n + 1] = from_set
        self.mig_buf[3 * self.mig_n + 2] = to_set
        self.mig_n += 1

    def migration_log(self):
        """The migrations recorded while ``record_migrations`` was set, and clear the log.

        Returns
        -------
        ndarray of shape (n_migrations, 3), int
            One row per migration of a path: ``(slot, from_set, to_set)``
            with the ``SET_*`` codes (the event's example; members of S that a
            null pivot sends to a bound are not listed).
        """
        out = np.array([self.mig_buf[i] for i in range(3 * self.mig_n)],
                       dtype=np.int64).reshape(-1, 3)
        self.mig_n = 0
        return out

    # For test purposes only: the step helpers one at a time, on the current
    # state, driving `slots` along `d` (learning: one inactive slot set up as
    # a driven example by the caller through set_state).

    def work_buffers_for_tests(self):
        """For test purposes only: copies of the path's work vectors h and u (all slots).

        After an erasure both are zero (``erase``): the test of the flag that
        spares a reserve drop their O(n) zeroing.
        """
        self.sync_capacity()
        return np.array(self._h_arr), np.array(self._u_arr)

    def path_step_for_tests(self, const Py_ssize_t[::1] slots, const double[::1] d, bint learning,
                        str upto="migrate"):
        """For test purposes only: run one path step up to `upto` (unscreened).

        The step runs without screening, every row rated, so that each helper
        can be checked against NumPy on all rows; tests/test_screening.py
        checks the screened path against this unscreened one.

        `upto` is one of "direction", "rates", "event", "apply", "migrate".
        Returns a dict with beta_b, beta (of S, in margin order), moves,
        gamma (h over all slots after "rates"), tol, tau, kind, slot, status.
        """
        cdef Py_ssize_t n_drv = slots.shape[0], i, m
        cdef int st = ST_OK
        self.check_store()
        self.sync_capacity()
        _check_slots(slots, self.store.n_slots, "path_step_for_tests")
        if n_drv == 0 or d.shape[0] != n_drv:
            raise ValueError("path_step_for_tests: one direction entry per slot, at least one")
        order = ["direction", "rates", "event", "apply", "migrate"]
        stop = order.index(upto)
        drv_arr = np.asarray(slots, dtype=np.intp).copy()
        d_arr = np.asarray(d, dtype=np.float64).copy()
        cdef Py_ssize_t[::1] drv = drv_arr
        cdef double[::1] dv = d_arr
        self._ks_sync()
        self._sync_sigma()
        # what is left of the drive: to alpha_c = C_c when learning
        st = self._path_init(&drv[0], &dv[0], n_drv, learning, 1.0 if not learning else
                             self.C[drv[0]] - self.alpha[drv[0]])
        if st != ST_OK:
            return {"status": st}
        m = self.n_margin
        self._direction()
        out = {"beta_b": self.pth_beta_b, "moves": bool(self.pth_moves),
               "beta": np.array([self.beta[i + 1] for i in range(m)]) if m else np.zeros(0),
               "status": ST_OK}
        if stop >= 1:
            self._rates()
            out["gamma"] = np.array(self._h_arr[:self.store.n_slots])
            out["tol"] = self.pth_tol
        if stop >= 2:
            self._next_event()
            out["tau"] = self.pth_tau
            out["kind"] = self.pth_kind
            out["slot"] = self.pth_slot
        if stop >= 3:
            out["status"] = self._apply_step(&drv[0], &dv[0], n_drv)
        if stop >= 4 and out["status"] == ST_OK and self.pth_kind != EV_NONE:
            out["status"] = self._migrate()
        return out

    # -- public operations ------------------------------------------------------

    def learn(self, Py_ssize_t slot, double label, double C):
        """Learn one stored slot exactly.

        Parameters
        ----------
        slot : int
            A slot of the store that is not active in this engine.
        label : {-1.0, +1.0}
        C : float
            Box bound of the example (C times class and sample weight).

        Raises
        ------
        eco.exceptions.EngineError
            The path could not finish (its ``status`` says why).
        """
        if not 0 <= slot < self.store.n_slots:
            raise IndexError(f"slot {slot} is not in the store")
        if label != 1.0 and label != -1.0:
            raise ValueError(f"label must be +1 or -1, got {label}")
        if not (isfinite(C) and C >= 0.0):
            raise ValueError(f"C must be finite and >= 0, got {C}")
        self.check_store()
        self.sync_capacity()
        if self.setof[slot] != S_INACTIVE:
            raise ValueError(f"slot {slot} is already active")
        cdef int st
        with nogil:
            st = self._learn(slot, label, C)
        check(st)

    cdef int _learn(self, Py_ssize_t c, double label, double Cc) noexcept nogil:
        cdef double* row
        cdef Py_ssize_t drv[1]
        cdef double dvec[1]
        cdef int st
        if self._ks_sync() != 0:
            return ST_NO_MEMORY
        self._sync_sigma()
        self.epoch += 1  # refusals of dependent examples last one operation
        self.y[c] = label
        self.C[c] = Cc
        self.alpha[c] = 0.0
        self.blocked[c] = -1
        self.pos[c] = -1
        row = self.store.row(c)
        if row == NULL:
            return ST_NO_MEMORY
        self._set_active(c, label, 1)
        self.g[c] = label * (self._f_without_b(c, row) + self.b) - 1.0
        if self.g[c] >= 0.0 or Cc <= 0.0:
            self.setof[c] = S_RESERVE
            return self._finish()
        self.setof[c] = S_DRIVEN
        drv[0] = c
        dvec[0] = 1.0
        self.pth_noisy = False
        st = self._path(drv, dvec, 1, True, Cc)
        if st != ST_OK:
            return st
        if self.setof[c] == S_DRIVEN:
            # the drive ran to its end: c sits at its upper bound
            self.alpha[c] = Cc
            self.setof[c] = S_ERROR
        return self._checked_finish()

    def unlearn(self, const Py_ssize_t[::1] slots):
        """Unlearn active slots exactly, all along one path.

        Reserve members are dropped; margin members leave S first; the
        coefficients of the others move to zero together (direction
        ``-alpha_D``, t from 0 to 1). One slot is the single-point case.

        Raises
        ------
        eco.exceptions.EngineError
            The path could not finish (its ``status`` says why).
        """
        cdef Py_ssize_t i, n_d = slots.shape[0]
        self.check_store()
        self.sync_capacity()
        _check_slots(slots, self.store.n_slots, "unlearn")
        for i in range(n_d):
            if self.setof[slots[i]] == S_INACTIVE:
                raise ValueError(f"slot {slots[i]} is not active")
        cdef int st
        with nogil:
            st = self._unlearn(&slots[0] if n_d > 0 else NULL, n_d)
        check(st)

    cdef int _unlearn(self, const Py_ssize_t* slots, Py_ssize_t n_d) noexcept nogil:
        cdef Py_ssize_t i, k, n_drv = 0
        cdef Py_ssize_t* drv
        cdef double* dvec
        cdef int st = ST_OK
        if n_d == 0:
            return ST_OK
        if self._ks_sync() != 0:
            return ST_NO_MEMORY
        self._sync_sigma()
        self.epoch += 1  # refusals of dependent examples last one operation
        drv = <Py_ssize_t*>_xmalloc(n_d * sizeof(Py_ssize_t))
        dvec = <double*>_xmalloc(n_d * sizeof(double))
        if drv == NULL or dvec == NULL:
            _zfree(drv, 0); _zfree(dvec, 0)
            return ST_NO_MEMORY
        for i in range(n_d):
            k = slots[i]
            if self.setof[k] == S_MARGIN:
                self._remove_from_margin(k, S_DRIVEN)
            if self.alpha[k] == 0.0:
                # a reserve vector (or a margin vector at zero): nothing moves
                self._deactivate(k)
            else:
                self.setof[k] = S_DRIVEN
                drv[n_drv] = k
                dvec[n_drv] = -self.alpha[k]
                n_drv += 1
        if n_drv > 0:
            if self.n_margin > 0 and self.updates_since_check > 0:
                st = self._maybe_refactorise()
            self.pth_noisy = False
            if st == ST_OK:
                st = self._path(drv, dvec, n_drv, False, 1.0)
            if st == ST_OK:
                for i in range(n_drv):
                    self.alpha[drv[i]] = 0.0
                    self._deactivate(drv[i])
        _zfree(drv, n_d * sizeof(Py_ssize_t))
        _zfree(dvec, n_d * sizeof(double))
        if st != ST_OK:
            return st
        if n_drv > 0:
            return self._checked_finish()
        return self._finish()

    cdef void _deactivate(self, Py_ssize_t k) noexcept nogil:
        self.setof[k] = S_INACTIVE
        self.alpha[k] = 0.0
        self.g[k] = 0.0
        self.pos[k] = -1
        self._set_active(k, self.y[k], -1)

    cdef bint _margin_at_bounds(self) noexcept nogil:
        """True when every margin coefficient is at a bound (b is then not unique).

        "At a bound" allows a relative rounding of 1e-12: a coefficient that
        the path left at C - 1e-17 is at C, and then b is an interval.
        It must also be negligible for the gradients: moving alpha_k by d
        moves g_j by at most d sqrt(K_kk max_j K_jj), so on a kernel of
        scale 1e12 a coefficient of 1e-13 is not at 0 (its rescaled twin is
        0.1). True with no margin vector.
        """
        cdef Py_ssize_t p, k
        cdef double dist, kk
        for p in range(self.n_margin):
            k = self.margin[p]
            dist = self.alpha[k]
            if self.C[k] - self.alpha[k] < dist:
                dist = self.C[k] - self.alpha[k]
            kk = self.store._diag(k) * self.store.max_diag
            if (dist > 1e-12 * self.C[k]
                    or dist * (sqrt(kk) if kk > 0.0 else 0.0) > 1e-12 * (1.0 + fabs(self.b))):
                return False
        return True

    cdef int _finish(self) noexcept nogil:
        """Put the state in its canonical form after an operation.

        - no active example: b = 0;
        - one class left: every alpha is 0, the problem has no margin vector,
          and b = y of that class (the decision is that class everywhere);
        - no margin vector strictly between its bounds: b is not unique; take
          the midpoint of its feasible interval, as libsvm does, so that the
          result does not depend on the path that led to it.
        """
        cdef Py_ssize_t n = self.store.n_slots, j, p, k
        cdef double lo = -INFINITY, hi = INFINITY, bound, nb, yc
        if self.n_weighted == 0:
            # no example (or only zero-weight ones, which count as absent)
            self._clear_margin()
            self.b = 0.0
            for j in range(n):
                if self.setof[j] != S_INACTIVE:
                    self.alpha[j] = 0.0
                    self.setof[j] = S_RESERVE
                    self.g[j] = -1.0
            return ST_OK
        if self.n_weighted_positive == 0 or self.n_weighted_positive == self.n_weighted:
            yc = 1.0 if self.n_weighted_positive > 0 else -1.0
            self._clear_margin()
            self.b = yc
            for j in range(n):
                if self.setof[j] != S_INACTIVE:
                    self.alpha[j] = 0.0
                    self.setof[j] = S_RESERVE
                    self.g[j] = self.y[j] * yc - 1.0
            return ST_OK
        if not self._margin_at_bounds():
            return ST_OK
        # a margin vector at a bound is a reserve (alpha = 0) or error (= C) one
        for p in range(self.n_margin):
            k = self.margin[p]
            if self.alpha[k] <= 0.5 * self.C[k]:
                self.alpha[k] = 0.0
                self.setof[k] = S_RESERVE
            else:
                self.alpha[k] = self.C[k]
                self.setof[k] = S_ERROR
            self.pos[k] = -1
        self._clear_margin()
        # g_j(b') = g_j + y_j (b' - b): E needs g <= 0, R needs g >= 0
        for j in range(n):
            if self.setof[j] == S_INACTIVE or self.C[j] <= 0.0:
                continue
            if (self.setof[j] == S_ERROR) == (self.y[j] > 0):
                # E with y = +1, or R with y = -1: b' <= b - y_j g_j
                bound = self.b - self.y[j] * self.g[j]
                if bound < hi:
                    hi = bound
            else:
                bound = self.b - self.y[j] * self.g[j]
                if bound > lo:
                    lo = bound
        if isfinite(lo) and isfinite(hi):
            nb = 0.5 * (lo + hi)
        elif isfinite(lo):
            nb = lo
        elif isfinite(hi):
            nb = hi
        else:
            nb = self.b
        for j in range(n):
            if self.setof[j] != S_INACTIVE:
                self.g[j] += self.y[j] * (nb - self.b)
        self.b = nb
        return ST_OK

    cdef double _alpha_scale(self) noexcept nogil:
        # T = sum_j alpha_j sqrt(K_jj): with sqrt(K_ii), a bound on the size of
        # the terms g_i is summed from (Cauchy-Schwarz)
        cdef Py_ssize_t j, n = self.store.n_slots
        cdef double T = 0.0, dj
        for j in range(n):
            if self.setof[j] != S_INACTIVE and self.alpha[j] > 0.0:
                dj = self.store._diag(j)
                T += self.alpha[j] * (sqrt(dj) if dj > 0.0 else 0.0)
        return T

    cdef double _incremental_violation(self) noexcept nogil:
        # KKT violation measured on the incremental gradients: O(n), cheap
        # enough to run after every path. It catches a path that went astray
        # on degenerate data (an example refused as dependent whose gradient
        # kept moving); the certificate from scratch is kkt_violation().
        # Gradient violations are judged relative to a bound on the size of
        # the terms g_j is summed from, 1 + |b| + sum_i alpha_i |K_ij|
        # <= 1 + |b| + sqrt(K_jj) sum_i alpha_i sqrt(K_ii) (Cauchy-Schwarz on
        # a positive semi-definite kernel): the same for a problem and its
        # rescaled twin.
        cdef Py_ssize_t j, n = self.store.n_slots
        cdef double worst = 0.0, v, a, Cj, gj, T = self._alpha_scale(), dj
        for j in range(n):
            if self.setof[j] == S_INACTIVE or self.C[j] <= 0.0:
                continue
            a = self.alpha[j]
            Cj = self.C[j]
            gj = self.g[j]
            if a <= 0.0:
                v = -gj
            elif a >= Cj:
                v = gj
            else:
                v = fabs(gj)
            dj = self.store._diag(j)
            v = v / (1.0 + fabs(self.b) + CANCEL * (sqrt(dj) if dj > 0.0 else 0.0) * T)
            if a < 0.0 and -a / Cj > v:
                v = -a / Cj
            if a > Cj and (a - Cj) / Cj > v:
                v = (a - Cj) / Cj
            if v > worst or v != v:
                worst = v
        return worst

    cdef int _refine(self) noexcept nogil:
        """One step of iterative refinement of the bordered solve.

        The residual of the margin equations, ``g_S`` and ``sum_i y_i
        alpha_i``, is recomputed from the kernel rows (not from the
        incremental g) and the correction ``[db; dalpha_S] = -A^-1 r`` is
        applied, to the gradients of the others too. Costs two products with
        the margin rows, the cost of one path step. A correction that would
        take a coefficient out of its box is left for the path (the sets are
        what decides the state; refinement only removes rounding).
        """
        cdef Py_ssize_t n = self.store.n_slots, m = self.n_margin, p, j, k, n_terms = 0
        cdef double t, coef, ysum = 0.0, yscale = 0.0, db, noise
        cdef bint at_rounding = True
        cdef double* r = self.vbuf
        cdef double* sol = self.wbuf2
        cdef double* size = self.wbuf     # per margin equation: the size of its terms
        cdef double* row
        cdef blas_int bn, ld, one_i = 1
        cdef double minus_one = -1.0, zero = 0.0
        self.scratch_dirty = True
        if m == 0 or self.ks_n != n:
            return ST_OK
        # the margin equations sum over the support vectors only (alpha = 0
        # elsewhere): each adds its row of KS, contiguous, m values
        for p in range(m + 1):
            r[p] = 0.0
            size[p] = 0.0
        for j in range(n):
            if self.setof[j] == S_INACTIVE or self.setof[j] == S_DRIVEN or self.alpha[j] == 0.0:
                continue
            coef = self.alpha[j] * self.y[j]
            ysum += coef
            yscale += fabs(coef)
            n_terms += 1
            row = self.KS + j * self.ks_ld
            for p in range(m):
                t = coef * row[p]
                r[p + 1] += t
                size[p] += fabs(t)
        r[0] = self.sigma * ysum
        # A residual below the rounding of its own sums (about sqrt(terms)
        # units in the last place of their size, and far below the
        # certificate) is all that float64 can say of an exact solution:
        # refinement would only trade one rounding for another, at the cost
        # of a pass over every row. Then the state is left as it is.
        noise = 4.0 * DBL_EPSILON * sqrt(<double>(n_terms + 1))
        if fabs(r[0]) > noise * self.sigma * yscale:
            at_rounding = False
        for p in range(m):
            k = self.margin[p]
            t = self.y[k] * (r[p + 1] + self.b) - 1.0
            if fabs(t) > noise * (size[p] + fabs(self.b) + 1.0):
                at_rounding = False
            r[p + 1] = t
        if at_rounding:
            return ST_OK
        bn = <blas_int>(m + 1)
        ld = <blas_int>self.r_cap
        dsymv(b"U", &bn, &minus_one, self.Rinv, &ld, r, &one_i, &zero, sol, &one_i)
        for p in range(m):
            k = self.margin[p]
            t = self.alpha[k] + sol[p + 1]
            # past a bound by no more than 1e-12 C is at it (_margin_at_bounds):
            # a margin coefficient that the path left at C - 3e-14 (C = 0.008,
            # its rounding) and that the correction takes to C + 1e-18 lands
            # on C, and _finish then sees that b is not pinned
            if t < -1e-12 * self.C[k] or t > self.C[k] * (1.0 + 1e-12):
                return ST_OK
        db = self.sigma * sol[0]
        for p in range(m):
            k = self.margin[p]
            t = self.alpha[k] + sol[p + 1]
            if t < 0.0 or t > self.C[k]:
                t = 0.0 if t < 0.0 else self.C[k]
                sol[p + 1] = t - self.alpha[k]
            self.alpha[k] = t
            self.wbuf[p] = self.y[k] * sol[p + 1]
        self.b += db
        self._row_product(NULL, n, self.wbuf, &self.h[0])
        for j in range(n):
            if self.setof[j] == S_RESERVE or self.setof[j] == S_ERROR:
                self.g[j] += self.y[j] * (self.h[j] + db)
        for p in range(m):
            self.g[self.margin[p]] = 0.0
        return ST_OK

    cdef int _regradient(self) noexcept nogil:
        # every active gradient recomputed from the kernel rows of the
        # support vectors (the incremental g accumulates rounding in sums of
        # large terms); margin members keep their recomputed residual, which
        # _refine then removes
        cdef Py_ssize_t n = self.store.n_slots, i, j, count = 0
        cdef double coef
        cdef double* row
        cdef double* scratch = NULL
        cdef double* xs = NULL
        cdef bint cache
        cdef blas_int bn = <blas_int>n, one_i = 1
        cdef size_t scratch_bytes = (self.store.capacity + 1) * sizeof(double)
        cdef size_t xs_bytes = (self.store.n_features + 1) * sizeof(double)
        self.scratch_dirty = True
        for j in range(n):
            self.h[j] = 0.0
            if not (self.setof[j] == S_INACTIVE or self.setof[j] == S_DRIVEN
                    or self.alpha[j] == 0.0):
                count += 1
        cache = self.store.fits(count)
        if not cache:
            scratch = <double*>_xmalloc(scratch_bytes)
            xs = <double*>_xmalloc(xs_bytes)
            if scratch == NULL or xs == NULL:
                _zfree(scratch, 0)
                _zfree(xs, 0)
                return ST_NO_MEMORY
        for i in range(n):
            if self.setof[i] == S_INACTIVE or self.setof[i] == S_DRIVEN or self.alpha[i] == 0.0:
                continue
            row = self.store.sweep_row(i, cache, scratch, xs)
            if row == NULL:
                _zfree(scratch, scratch_bytes)
                _zfree(xs, xs_bytes)
                return ST_NO_MEMORY
            coef = self.alpha[i] * self.y[i]
            daxpy(&bn, &coef, row, &one_i, &self.h[0], &one_i)
        _zfree(scratch, scratch_bytes)
        _zfree(xs, xs_bytes)
        for j in range(n):
            if self.setof[j] == S_RESERVE or self.setof[j] == S_ERROR:
                self.g[j] = self.y[j] * (self.h[j] + self.b) - 1.0
        return ST_OK

    cdef int _checked_finish(self) noexcept nogil:
        cdef int st
        if self.pth_noisy:
            # a path through dependent examples moved along directions that
            # are null only up to rounding: its incremental gradients are not
            # to be trusted, recompute them before judging the state
            self.pth_noisy = False
            st = self._regradient()
            if st != ST_OK:
                return st
        st = self._refine()
        if st != ST_OK:
            return st
        st = self._finish()
        if st != ST_OK:
            return st
        if self._incremental_violation() > self.check_tol:
            # before calling the path astray, make sure it is not the
            # incremental gradients that drifted: recompute them, refine
            st = self._regradient()
            if st != ST_OK:
                return st
            self._refine()
            st = self._finish()
            if st != ST_OK:
                return st
            if self._incremental_violation() > self.check_tol:
                return ST_INCONSISTENT
        return ST_OK

    cdef void _clear_margin(self) noexcept nogil:
        cdef Py_ssize_t p, old_m = self.n_margin
        if self.Rinv != NULL:
            self.Rinv[0] = 0.0
        for p in range(self.n_margin):
            self.pos[self.margin[p]] = -1
            self.margin[p] = -1
        self.n_margin = 0
        self._scrub_beyond(old_m)
        self.epoch += 1

    # -- warm start (exact fit from a batch solution) -------------------------------

    def set_state(self, y, C, alpha, b, sets, margin_order, g, Rinv=None):
        """Install a complete state (used by fast fit, restore and load).

        See :meth:`_set_state`; raises EngineError when ``Rinv`` is None and
        the refactorisation fails.
        """
        if len(sets) == self.store.n_slots:
            self._check_state_arrays(y, C, alpha, b, sets, margin_order, g, Rinv, True)
        check(self._set_state(y, C, alpha, b, sets, margin_order, g, Rinv))

    def _set_state(self, const double[::1] y, const double[::1] C,
                   const double[::1] alpha, double b, const signed char[::1] sets,
                   const int[::1] margin_order, const double[::1] g, Rinv=None):
        """Install a complete state; returns a status (for polish and restore).

        ``sets`` gives the set of every stored slot (-1 for inactive),
        ``margin_order`` the margin vectors in the order of ``Rinv``. When
        ``Rinv`` is None it is computed by refactorisation.
        """
        cdef Py_ssize_t n = self.store.n_slots, i, m = margin_order.shape[0]
        cdef Py_ssize_t old_m = self.n_margin
        cdef int st
        if m > 0 and not 0 <= np.min(margin_order) <= np.max(margin_order) < n:
            raise ValueError("margin_order lists a slot outside the store")
        if y.shape[0] != n or C.shape[0] != n or alpha.shape[0] != n or sets.shape[0] != n \
                or g.shape[0] != n:
            raise ValueError("state arrays must have one entry per stored slot")
        self._check_state_arrays(y, C, alpha, b, sets, margin_order, g, Rinv, False)
        self.sync_capacity()
        self.n_active = 0
        self.n_positive = 0
        self.n_weighted = 0
        self.n_weighted_positive = 0
        for i in range(n):
            self.y[i] = y[i]
            self.C[i] = C[i]
            self.alpha[i] = alpha[i]
            self.g[i] = g[i]
            self.setof[i] = sets[i]
            self.pos[i] = -1
            self.blocked[i] = -1
            if sets[i] != S_INACTIVE:
                self._set_active(i, y[i], 1)
        for i in range(n, self.capacity):
            # slots beyond the store (for example forgotten by truncate)
            self.setof[i] = S_INACTIVE
            self.alpha[i] = 0.0
            self.g[i] = 0.0
            self.pos[i] = -1
        for i in range(self.capacity):
            self.margin[i] = -1
        if self._grow_r(m + 1) != 0:
            raise MemoryError("could not allocate the margin matrix")
        for i in range(m):
            self.margin[i] = margin_order[i]
            self.pos[margin_order[i]] = <int>i
        self.n_margin = m
        self._scrub_beyond(old_m)
        self.b = b
        self.epoch += 1
        self.seen_truncations = self.store.n_truncations  # the state covers the store as it is
        with nogil:
            st = self._ks_rebuild()
        if st != ST_OK:
            raise MemoryError("could not allocate the margin rows")
        if Rinv is None:
            with nogil:
                st = self._refactorise()
            if st != ST_OK:
                return st
        else:
            R = np.asarray(Rinv, dtype=np.float64)
            if R.shape != (m + 1, m + 1) and R.shape != ((m + 1) * (m + 2) // 2,):
                raise ValueError("Rinv has the wrong shape")
            # given as the plain inverse: to the border scale of this store
            self.sigma = self._store_sigma()
            if R.ndim == 1:  # the packed upper triangle of get_state(rinv_order="packed")
                P = np.array(R)
                starts = np.cumsum(np.arange(m + 1))  # where each column begins
                P[starts] /= self.sigma  # row 0 of every column: the border
                P[0] /= self.sigma
                self._copy_in_packed(P, m + 1)
            else:
                Rf = np.array(R, order="F")
                Rf[0, :] /= self.sigma
                Rf[:, 0] /= self.sigma
                self._copy_in_r(Rf.ravel(order="F"), m + 1)
        self.updates_since_check = 0
        return ST_OK

    def _check_state_arrays(self, y, C, alpha, b, sets, margin_order, g, Rinv, complete):
        # checked before anything is installed: a refused state leaves the engine as it was.
        # `complete`: margin_order lists every margin vector (the public entry
        # points; purify installs a free set first and orders it itself)
        sets_a = np.asarray(sets)
        active = sets_a != S_INACTIVE
        if not np.all(np.isin(sets_a, (S_INACTIVE, S_RESERVE, S_MARGIN, S_ERROR, S_DRIVEN))):
            raise ValueError("sets holds a code that is not a set")
        y_a, C_a = np.asarray(y), np.asarray(C)
        if not np.all((y_a[active] == 1.0) | (y_a[active] == -1.0)):
            raise ValueError("labels of active slots must be +1 or -1")
        if not (np.all(np.isfinite(C_a)) and np.all(C_a >= 0.0)):
            raise ValueError("C must be finite and >= 0")
        if not (np.all(np.isfinite(np.asarray(alpha))) and np.all(np.isfinite(np.asarray(g)))
                and np.isfinite(b)):
            raise ValueError("alpha, g and b must be finite")
        mo = np.asarray(margin_order)
        if np.unique(mo).shape[0] != mo.shape[0]:
            raise ValueError("margin_order lists a slot twice")
        if mo.shape[0] and not np.all(sets_a[mo] == S_MARGIN):
            raise ValueError("margin_order lists a slot that is not a margin vector")
        if complete and mo.shape[0] != np.count_nonzero(sets_a == S_MARGIN):
            raise ValueError("margin_order must list every margin vector")
        if Rinv is not None:
            R = np.asarray(Rinv)
            m1 = mo.shape[0] + 1
            if R.shape != (m1, m1) and R.shape != (m1 * (m1 + 1) // 2,):
                raise ValueError("Rinv has the wrong shape")
            if not np.all(np.isfinite(R)):
                raise ValueError("Rinv must be finite")

    def polish(self, y, C, sets):
        """Exact coefficients for a guess of the sets; see :meth:`_polish`.

        Raises EngineError when the bordered system cannot be solved.
        """
        check(self._polish(y, C, sets))

    def _polish(self, const double[::1] y, const double[::1] C, const signed char[::1] sets):
        """Exact coefficients for a guess of the sets.

        With alpha_E = C_E and alpha_R = 0 fixed by ``sets``, solve the
        bordered system ``A [b; alpha_S] = [-y_E'C_E; 1 - Q_SE C_E]`` for the
        margin vectors, build ``Rinv`` by refactorisation and recompute every
        gradient from scratch. The result is an exact KKT state if and only if
        every alpha_S lies within its bounds and every E (R) gradient is <= 0
        (>= 0); the caller checks that and repairs what is not.

        Returns
        -------
        status : int
        """
        cdef Py_ssize_t n = self.store.n_slots, i, p, j, m
        if np.asarray(sets).shape[0] != n or np.asarray(y).shape[0] != n \
                or np.asarray(C).shape[0] != n:
            raise ValueError("state arrays must have one entry per stored slot")
        self.store.ensure_rows(np.flatnonzero(
            (np.asarray(sets) == S_MARGIN) | (np.asarray(sets) == S_ERROR)).astype(np.intp))
        alpha0 = np.where(np.asarray(sets) == S_ERROR, np.asarray(C), 0.0)
        margin_order = np.flatnonzero(np.asarray(sets) == S_MARGIN).astype(np.int32)
        st = self._set_state(y, C, alpha0, 0.0, sets, margin_order, np.zeros(n), None)
        if st != ST_OK:
            return st
        m = self.n_margin
        if m == 0:
            self._g_arr[:n] = self.recompute_gradients()
            return ST_OK
        cdef double* rhs = self.vbuf
        cdef double* sol = self.wbuf
        cdef double* row
        cdef double s, yCsum = 0.0
        cdef blas_int bn = <blas_int>(m + 1), ld = <blas_int>self.r_cap, one_i = 1
        cdef double one = 1.0, zero = 0.0
        cdef bint failed = False
        # the error slots in increasing order (the sums below run over them
        # only, in the order a pass over every slot would take them)
        errors_a = np.flatnonzero(self._set_arr[:n] == S_ERROR).astype(np.intp)
        cdef const Py_ssize_t[::1] errors = errors_a
        cdef Py_ssize_t e, n_err = errors.shape[0]
        with nogil:
            for e in range(n_err):
                j = errors[e]
                yCsum += self.y[j] * self.C[j]
            rhs[0] = -self.sigma * yCsum
            for p in range(m):
                i = self.margin[p]
                row = self.store.row(i)
                if row == NULL:
                    failed = True
                    break
                # 1 - (Q_SE C_E)_p = 1 - y_i sum_{j in E} y_j C_j K_ij
                s = 0.0
                for e in range(n_err):
                    j = errors[e]
                    s += self.y[j] * self.C[j] * row[j]
                rhs[p + 1] = 1.0 - self.y[i] * s
            if not failed:
                # [b; alpha_S] = Rinv rhs
                dsymv(b"U", &bn, &one, self.Rinv, &ld, rhs, &one_i, &zero, sol, &one_i)
                self.b = self.sigma * sol[0]
                for p in range(m):
                    self.alpha[self.margin[p]] = sol[p + 1]
        if failed:
            return ST_NO_MEMORY
        if not np.all(np.isfinite(self._alpha_arr[:n])) or not isfinite(self.b):
            return ST_NON_FINITE
        with nogil:
            # two steps of iterative refinement of the solve
            self._refine()
            self._refine()
        self._g_arr[:n] = self.recompute_gradients()
        for p in range(m):
            self.g[self.margin[p]] = 0.0
        return ST_OK

    # -- dependent margin sets: null-direction pivots ----------------------------

    cdef int _null_pivot(self, Py_ssize_t k, double forced) noexcept nogil:
        """Take slot k, refused by _expand as dependent on S, off the free set.

        On return of ``_expand(k) == 1`` the buffer ``wbuf2`` holds
        ``[beta_b; beta_S] = -Rinv [y_k; Q_Sk]``. Because the Schur complement
        is 0, moving ``alpha_k`` by ``s t``, ``alpha_S`` by ``s beta_S t`` and
        ``b`` by ``s beta_b t`` changes no gradient (the direction has no
        component in feature space). Move along it, in the direction that
        reaches a bound first, until k or a member of S reaches a bound. The
        member that reaches it leaves S for R or E; when it is k, the pivot is
        done (returns 0); when it is a member of S, k can be expanded again
        (returns 2). Every call puts one coefficient at a bound for good, so a
        sequence of pivots ends. ``forced`` = +1 (-1) moves alpha_k up (down)
        only: a reserve (error) example that must enter S; 0 lets the shorter
        direction win. Ties go to k, then to the smallest slot (Bland).
        """
        cdef Py_ssize_t m = self.n_margin, p, i, best = -1
        cdef double* bk = self.wbuf2
        cdef double s, r, cand, t_best = INFINITY, rmax = 0.0, rtol
        cdef double s_best = -1.0, ak = self.alpha[k], Ck = self.C[k]
        cdef int sgn, leave_set
        for p in range(m):
            if fabs(bk[p + 1]) > rmax:
                rmax = fabs(bk[p + 1])
        # rates below the rounding noise of the combination are zero
        rtol = 1e-12 * (1.0 if rmax < 1.0 else rmax)
        for sgn in range(2):
            s = -1.0 if sgn == 0 else 1.0
            if forced != 0.0 and s != forced:
                continue
            # k itself: to 0 when decreasing, to C_k when increasing
            cand = ak if s < 0 else Ck - ak
            if cand < 0.0:
                cand = 0.0
            if cand < t_best:
                t_best = cand
                s_best = s
                best = -1
            for p in range(m):
                i = self.margin[p]
                r = s * bk[p + 1]
                if r > rtol:
                    cand = (self.C[i] - self.alpha[i]) / r
                elif r < -rtol:
                    cand = self.alpha[i] / (-r)
                else:
                    continue
                if cand < 0.0:
                    cand = 0.0
                # ties: k first, then the smallest slot (a fixed order)
                if cand < t_best or (cand == t_best and best >= 0 and s == s_best
                                     and i < self.margin[best]):
                    t_best = cand
                    s_best = s
                    best = p
        s = s_best
        if t_best > 0.0:
            self.alpha[k] += s * t_best
            for p in range(m):
                self.alpha[self.margin[p]] += s * bk[p + 1] * t_best
            self.b += s * self.sigma * bk[0] * t_best
        if best < 0:
            # k reached its bound
            if s < 0:
                self.alpha[k] = 0.0
                self.setof[k] = S_RESERVE
            else:
                self.alpha[k] = Ck
                self.setof[k] = S_ERROR
            self.g[k] = 0.0
            return 0
        i = self.margin[best]
        r = s * bk[best + 1]
        if r > 0:
            self.alpha[i] = self.C[i]
            leave_set = S_ERROR
        else:
            self.alpha[i] = 0.0
            leave_set = S_RESERVE
        self.g[i] = 0.0
        self._remove_from_margin(i, leave_set)
        self.n_migrations += 1
        return 2

    cdef int _purify(self, bint need_rinv) noexcept nogil:
        """Rebuild S as a linearly independent set without moving w.

        `need_rinv` False: only the sets are wanted (settle polishes next,
        and polish refactorises); a set that _purify_direct takes is then
        left in the set codes, with no margin list and no Rinv.

        The examples marked S_MARGIN (Rinv is not read) are expanded one by
        one in slot order; one that depends on those already in S is pivoted
        out along the null direction (_null_pivot) until every coefficient
        left free belongs to an independent margin set. Members outside their
        box are put at the bound they passed. Gradients are not touched: the
        caller polishes (solves the bordered system) afterwards.
        """
        cdef Py_ssize_t n = self.store.n_slots, k, guard, count = 0
        cdef double* row
        cdef int st
        self._clear_margin()
        self._sync_hard()
        for k in range(n):
            if self.setof[k] == S_MARGIN and 0.0 < self.alpha[k] < self.C[k]:
                count += 1
        if self._grow_r(count + 1) != 0:
            return ST_NO_MEMORY
        if self.hard:
            # the refined solves of _expand read KS: room for every candidate
            # at once (grown one expansion at a time, KS would be copied into
            # freshly faulted pages about log2 |S| times)
            if self._ks_reserve(count) != 0:
                return ST_NO_MEMORY
        else:
            # nothing reads KS here, and polish rebuilds it for the final set
            # in one blocked pass: the column writes of every expansion (one
            # strided pass over all rows each, about a tenth of a fit) are
            # skipped (_expand, _contract), KS is marked out of date
            self.ks_n = 0
        # members outside their box go to the bound they passed
        for k in range(n):
            if self.setof[k] == S_MARGIN and not 0.0 < self.alpha[k] < self.C[k]:
                self.alpha[k] = 0.0 if self.alpha[k] <= 0.0 else self.C[k]
                self.setof[k] = S_RESERVE if self.alpha[k] == 0.0 else S_ERROR
        if not self.hard and count > PURIFY_DIRECT_MIN:
            st = self._purify_direct(count, need_rinv)
            if st <= 0:
                return -st
        # every candidate left is inside its box: a null pivot moves only
        # k and the members of S, never a candidate not expanded yet
        for k in range(n):
            if self.setof[k] != S_MARGIN:
                continue
            row = self.store.row(k)
            if row == NULL:
                return ST_NO_MEMORY
            guard = 0
            while True:
                st = self._expand(k, row)
                if st < 0:
                    return -st
                if st == 0:
                    break
                st = self._null_pivot(k, 0.0)
                if st == 0:
                    break
                guard += 1
                if guard > n:
                    return ST_STEP_LIMIT
        return ST_OK

    cdef int _purify_direct(self, Py_ssize_t count, bint need_rinv) noexcept nogil:
        """_purify's margin set in one factorisation when it is clearly independent.

        The `count` candidates (S_MARGIN, inside their box) become the margin
        set in slot order, as the expansions would add them, when Q_SS is
        positive definite with every pivot of its Cholesky factorisation in
        slot order (the Schur complement of a candidate given the earlier
        ones, a lower bound of the bordered one _expand tests) at least
        PURIFY_DIRECT_PIVOT times its Q_kk: far above the dependence
        threshold of _expand (tol_kappa = 1e-7 of a scale >= Q_kk), so the
        expansions would have taken every candidate. Rinv is then one
        Bunch-Kaufman factorisation (_refactorise, LAPACK) instead of
        |S| rank-one updates, each a pass over the growing inverse, or none
        without `need_rinv` (the margin list is cleared, the set codes say
        which examples are free). Returns
        0 when done, 1 when the set is left to the expansions (nothing
        changed: a dependent or nearly dependent set, an indefinite kernel),
        a negative status on failure.
        """
        cdef Py_ssize_t n = self.store.n_slots, m = 0, k, i, j, si
        cdef Py_ssize_t ldr = self.r_cap
        cdef double* q = self.Rinv + 1 + ldr  # Q_SS where Rinv will hold it
        cdef double* diag = self.wbuf
        cdef double* row_i
        cdef blas_int m_ = <blas_int>count, ld = <blas_int>ldr, info = 0
        for k in range(n):
            if self.setof[k] == S_MARGIN:
                self.margin[m] = <int>k
                self.pos[k] = <int>m
                m += 1
        self.n_margin = m
        # the upper triangle of Q_SS, column by column, inside the buffer of
        # Rinv (its order is at least count + 1; _refactorise overwrites it)
        for i in range(m):
            si = self.margin[i]
            row_i = self._margin_values(si)
            if row_i == NULL:
                self._clear_margin()
                return -ST_NO_MEMORY
            for j in range(i, m):
                q[i + j * ldr] = self._q_s(si, j, row_i)
            diag[i] = q[i + i * ldr]
        dpotrf(b"U", &m_, q, &ld, &info)
        if info == 0:
            for i in range(m):
                # the pivot is the square of the factor's diagonal
                if not q[i + i * ldr] * q[i + i * ldr] >= PURIFY_DIRECT_PIVOT * diag[i]:
                    info = 1
                    break
        if info != 0 or (need_rinv and self._refactorise() != 0):
            self._clear_margin()
            return 1
        for i in range(m):
            self.g[self.margin[i]] = 0.0
        if not need_rinv:
            self._clear_margin()
        self.epoch += 1
        return 0

    def purify(self, const double[::1] y, const double[::1] C, const double[::1] alpha,
               double b, const signed char[::1] sets, bint rinv=True):
        """Install coefficients whose free set may be dependent; make it independent.

        ``alpha`` is an (approximate) solution and ``sets`` its sets, where
        S_MARGIN marks the free coefficients, however many and however
        dependent. Null-direction pivots (which change no gradient) move free
        coefficients to their bounds until the free set is linearly
        independent; the sets are then those of an exact solution with the
        same w, to be made exact by :meth:`polish` on :attr:`sets_all`.

        With ``rinv=False`` only :attr:`sets_all` is meant to be read
        afterwards (as :meth:`settle` does before :meth:`polish`): an
        independent free set may then be left without its inverse.

        Raises
        ------
        eco.exceptions.EngineError
            The state could not be installed or the pivots did not finish.
        """
        cdef Py_ssize_t n = self.store.n_slots
        cdef int st
        check(self._set_state(y, C, alpha, b, sets, np.zeros(0, np.int32), np.zeros(n),
                              np.zeros((1, 1))))
        self.store.ensure_rows(np.flatnonzero(np.asarray(sets) == S_MARGIN).astype(np.intp))
        with nogil:
            st = self._purify(rinv)
        check(st)

    def settle(self, const double[::1] y, const double[::1] C, alpha, double b, sets,
               double polish_tol=1e-10, int max_rounds=20):
        """Exact state from an approximate solution (a seed or a path gone astray).

        1. :meth:`purify`: null-direction pivots make the free set linearly
           independent without moving w (the dependent margin sets of
           rank-deficient kernels);
        2. :meth:`polish`: solve the bordered system on that set; a margin
           coefficient outside its box moves to the bound it passed, and the
           system is solved again;
        3. examples whose recomputed gradient has the wrong sign for their
           set (beyond ``polish_tol``) are unlearned together, then learned
           one by one: exact CP moves.

        The caller checks the certificate afterwards.

        Raises
        ------
        eco.exceptions.EngineError
            A step could not finish (its ``status`` says why).
        """
        cdef int rnd
        sets = np.array(sets, dtype=np.int8)
        # polish refactorises: purify only has to find the sets
        self.purify(y, C, np.asarray(alpha, dtype=np.float64), b, sets, False)
        sets = self.sets_all
        Ca = np.asarray(C)
        for rnd in range(max_rounds):
            self.polish(y, C, sets)
            # an ill-conditioned margin matrix (a poly kernel of degree 3 on
            # features of scale 10: cond 1e10) is solved exactly by the
            # refined solves; only an inverse too far off for refinement to
            # converge (a numerically singular set) is refused
            if not self.drift() <= 1e-3:
                check(ST_SINGULAR)
            a = self.alpha_all
            low = (sets == S_MARGIN) & (a < 0)
            high = (sets == S_MARGIN) & (a > Ca)
            if not (low.any() or high.any()):
                break
            sets[low] = S_RESERVE
            sets[high] = S_ERROR
        else:
            check(ST_STEP_LIMIT)
        self.finish()
        g = self.g_all
        sets = self.sets_all
        bad = np.flatnonzero(
            (Ca > 0) & (((sets == S_ERROR) & (g > polish_tol))
                        | ((sets == S_RESERVE) & (g < -polish_tol))))
        if len(bad):
            self.unlearn(bad.astype(np.intp))
            for s in bad:
                self.learn(int(s), y[s], C[s])

    def certificate(self):
        """KKT violation recomputed from scratch, relative to the size of its terms.

        For every active example with C_i > 0 the gradient
        ``g_i = y_i (sum_j alpha_j y_j K_ij + b) - 1`` is recomputed from the
        kernel rows and its violation (``|g_i|`` when free, the wrong-signed
        part at a bound) is divided by ``1 + |b| + 1e-6 sum_j |alpha_j K_ij|``:
        absolute while the terms g_i is summed from are of order one, and
        allowing for the rounding of their cancellation when they are large;
        a problem and its rescaled twin (features times s, C over s^2) get
        the same certificate. The
        equality ``sum_i y_i alpha_i = 0`` is judged relative to
        ``sum_i alpha_i``. A coefficient outside its box by any amount is a
        violation of at least 1 (bounds are exact constraints, never judged
        relative to C).
        """
        cdef Py_ssize_t n = self.store.n_slots, i, j
        cdef double worst = 0.0, v, a, Ci, gi, ysum = 0.0, asum = 0.0, coef
        cdef double* row
        cdef bint failed = False
        if n == 0:
            return 0.0
        fa = np.zeros(n)
        sa = np.zeros(n)
        cdef double[::1] f = fa, fs = sa
        self.check_store()
        self.sync_capacity()
        sv = np.flatnonzero((self._set_arr[:n] != S_INACTIVE)
                            & (self._alpha_arr[:n] != 0.0)).astype(np.intp)
        # rows of the support vectors: cached when they fit in the store's
        # cache, else computed one at a time into scratch (bounded memory;
        # the same bits either way)
        if self.store.fits(len(sv)):
            self.store.ensure_rows(sv)
        _np_alloc_check()
        scratch_a = np.zeros(self.store.capacity + 1)
        _np_alloc_check()
        xs_a = np.zeros(self.store.n_features + 1)
        cdef double[::1] scratch = scratch_a, xs = xs_a
        with nogil:
            for j in range(n):
                if self.setof[j] == S_INACTIVE:
                    continue
                a = self.alpha[j]
                if a < 0.0 or a > self.C[j] or a != a:
                    worst = 1.0 + fabs(a)
                ysum += self.y[j] * a
                asum += fabs(a)
                if a == 0.0:
                    continue
                row = self.store.peek_row(j, &scratch[0], &xs[0])
                if row == NULL:
                    failed = True
                    break
                coef = a * self.y[j]
                for i in range(n):
                    f[i] += coef * row[i]
                    fs[i] += fabs(coef * row[i])
            if not failed:
                if asum > 0.0 and fabs(ysum) / asum > worst:
                    worst = fabs(ysum) / asum
                for i in range(n):
                    if self.setof[i] == S_INACTIVE or self.C[i] <= 0.0:
                        continue
                    gi = self.y[i] * (f[i] + self.b) - 1.0
                    a = self.alpha[i]
                    Ci = self.C[i]
                    if a <= 0.0:
                        v = -gi
                    elif a >= Ci:
                        v = gi
                    else:
                        v = fabs(gi)
                    v = v / (1.0 + fabs(self.b) + CANCEL * fs[i])
                    if v > worst or v != v:
                        worst = v
        scratch_a.fill(0)  # it held kernel rows
        xs_a.fill(0)
        if failed:
            raise MemoryError("could not allocate kernel rows")
        return worst

    def refactorise(self):
        """Rebuild the inverse bordered matrix from scratch (EngineError on failure)."""
        cdef int st
        self.check_store()
        with nogil:
            self._sync_sigma()
            st = self._refactorise()
        check(st)

    def finish(self):
        """Canonicalise the state (see ``_finish``); EngineError on failure."""
        cdef int st
        self.check_store()
        with nogil:
            st = self._finish()
        check(st)

    def recompute_gradients(self):
        """Margin gradients of the active slots recomputed from scratch.

        Returns ``g`` over all stored slots (0 for inactive ones), computed as
        ``y_i (sum_j alpha_j y_j K_ij + b) - 1`` from the kernel rows of the
        support vectors; independent of the incremental ``g``.
        """
        cdef Py_ssize_t n = self.store.n_slots, j
        out = np.zeros(n)
        cdef double[::1] f = out
        cdef double* row
        cdef double coef
        cdef blas_int bn = <blas_int>n, one_i = 1
        cdef bint failed = False
        if n == 0:
            return out
        self.check_store()
        self.sync_capacity()
        sv = np.flatnonzero((self._set_arr[:n] != S_INACTIVE)
                            & (self._alpha_arr[:n] != 0.0)).astype(np.intp)
        cdef bint cache = self.store.fits(len(sv))
        if cache:
            self.store.ensure_rows(sv)
        _np_alloc_check()
        scratch_a = np.zeros(self.store.capacity + 1)
        _np_alloc_check()
        xs_a = np.zeros(self.store.n_features + 1)
        cdef double[::1] scratch = scratch_a, xs = xs_a
        with nogil:
            for j in range(n):
                if self.setof[j] == S_INACTIVE or self.alpha[j] == 0.0:
                    continue
                row = self.store.sweep_row(j, cache, &scratch[0], &xs[0])
                if row == NULL:
                    failed = True
                    break
                coef = self.alpha[j] * self.y[j]
                # f += alpha_j y_j K_.j  (the kernel is symmetric)
                daxpy(&bn, &coef, row, &one_i, &f[0], &one_i)
            if not failed:
                for j in range(n):
                    if self.setof[j] == S_INACTIVE:
                        f[j] = 0.0
                    else:
                        f[j] = self.y[j] * (f[j] + self.b) - 1.0
        scratch_a.fill(0)  # it held kernel rows
        xs_a.fill(0)
        if failed:
            raise MemoryError("could not allocate kernel rows")
        return out

    # -- views of the state ---------------------------------------------------

    cdef _copy_in_r(self, const double[::1] flat, Py_ssize_t m1):
        # flat holds an m1 x m1 matrix in column-major order: its upper
        # triangle is taken (Rinv is symmetric; the engine keeps the upper
        # triangle and zeros below it)
        cdef Py_ssize_t j
        for j in range(m1):
            memcpy(self.Rinv + j * self.r_cap, &flat[j * m1], (j + 1) * sizeof(double))
            memset(self.Rinv + j * self.r_cap + j + 1, 0, (m1 - j - 1) * sizeof(double))

    cdef _copy_in_packed(self, const double[::1] packed, Py_ssize_t m1):
        # packed holds the upper triangle of an m1 x m1 matrix column after
        # column (LAPACK's "U" packed layout); zeros go below it
        cdef Py_ssize_t j, at = 0
        for j in range(m1):
            memcpy(self.Rinv + j * self.r_cap, &packed[at], (j + 1) * sizeof(double))
            memset(self.Rinv + j * self.r_cap + j + 1, 0, (m1 - j - 1) * sizeof(double))
            at += j + 1

    cdef _rinv_packed(self):
        # the kept upper triangle, column after column (half the bytes of the
        # buffer: what a rollback snapshot copies and then zeroes); scaled to
        # the plain inverse as _rinv_copy scales it, bit for bit
        cdef Py_ssize_t m1 = self.n_margin + 1, j, at = 0
        if self.n_margin == 0:
            return np.zeros(1)
        out = np.empty(m1 * (m1 + 1) // 2)
        cdef double[::1] P = out
        with nogil:
            for j in range(m1):
                memcpy(&P[at], self.Rinv + j * self.r_cap, (j + 1) * sizeof(double))
                P[at] *= self.sigma  # row 0 of column j: the border
                at += j + 1
            P[0] *= self.sigma  # the corner is in row 0 and in column 0
        return out

    cdef _rinv_copy(self, bint full):
        # the engine's buffer (upper triangle, zeros below) in an (m1, m1)
        # column-major array, mirrored into the lower triangle when `full`;
        # scaled to the plain inverse (exact: sigma is a power of two)
        cdef Py_ssize_t m1 = self.n_margin + 1, i, j, i0, j0, i1, j1
        cdef Py_ssize_t B = 64
        if self.n_margin == 0:
            return np.zeros((1, 1), order="F")
        out = np.empty((m1, m1), order="F")
        cdef double[::1, :] R = out
        with nogil:
            for j in range(m1):
                memcpy(&R[0, j], self.Rinv + j * self.r_cap, m1 * sizeof(double))
            if full:
                # R[i, j] = R[j, i] for i > j, by tiles that stay in cache
                j0 = 0
                while j0 < m1:
                    j1 = j0 + B if j0 + B < m1 else m1
                    i0 = j0
                    while i0 < m1:
                        i1 = i0 + B if i0 + B < m1 else m1
                        for j in range(j0, j1):
                            for i in range(i0 if i0 > j + 1 else j + 1, i1):
                                R[i, j] = R[j, i]
                        i0 = i1
                    j0 = j1
        out[0, :] *= self.sigma
        out[:, 0] *= self.sigma
        return out

    def rinv(self):
        """Copy of the inverse bordered margin matrix, shape (|S|+1, |S|+1).

        With no margin vector there is no bordered matrix; the 1 x 1 result
        is then 0 (the buffer is not read, so digests stay deterministic).
        The engine updates the upper triangle only (symmetric rank-one
        updates, half the memory traffic); the copy is the symmetric matrix.
        """
        return self._rinv_copy(True)

    def get_state(self, str rinv_order="C"):
        """Copy of the whole state as a dict of numpy arrays and numbers.

        `rinv_order` is the layout of the inverse margin matrix: "C" for
        callers that hash or save it (the symmetric matrix); "F" for the
        buffer as the engine keeps it (column-major, the upper triangle with
        zeros below); "packed" for a snapshot that only :meth:`restore`
        reads (the upper triangle alone, column after column, in a 1-d
        array: half the bytes to copy and to zero).
        """
        if rinv_order not in ("C", "F", "packed"):
            raise ValueError(f"rinv_order must be 'C', 'F' or 'packed', got {rinv_order!r}")
        if rinv_order == "packed":
            R = self._rinv_packed()
        else:
            R = self._rinv_copy(False) if rinv_order == "F" else np.ascontiguousarray(self.rinv())
        return {
            "y": self.y_all,
            "C": self.C_all,
            "alpha": self.alpha_all,
            "g": self.g_all,
            "sets": self.sets_all,
            "margin_order": np.array(self._margin_arr[:self.n_margin]),
            "b": float(self.b),
            "Rinv": R,
            "updates_since_check": int(self.updates_since_check),
        }

    def restore(self, dict state):
        """Install a state produced by :meth:`get_state` (bit for bit)."""
        if len(state["sets"]) == self.store.n_slots:
            self._check_state_arrays(state["y"], state["C"], state["alpha"], state["b"],
                                     state["sets"], state["margin_order"], state["g"],
                                     state["Rinv"], True)
        check(self._set_state(state["y"], state["C"], state["alpha"], state["b"],
                              state["sets"], state["margin_order"], state["g"],
                              state["Rinv"]))
        # the drift check runs every drift_check_every updates of Rinv: keep
        # its phase so that a restored state refactorises when the original would
        self.updates_since_check = state.get("updates_since_check", 0)

    def drop_record(self, const Py_ssize_t[::1] slots):
        """What undoes the removal of `slots` when it moves nothing else; None otherwise.

        Removing reserve examples (alpha = 0, not in S) changes only their
        own entries (set, gradient, the active counts) as long as b stays
        unique: a margin coefficient strictly inside its box remains and
        both classes keep a weighted example (else :meth:`finish` moves b and
        every gradient). The border scale must also be current, so that the
        removal does not rescale ``Rinv``. Then this record (their slots,
        their coefficients and gradients, and b; a few numbers instead of
        the whole state of :meth:`get_state`) is all that :meth:`undo_drop`
        needs to put the engine back bit for bit. `slots` must be distinct.

        Returns
        -------
        record : dict or None
            ``{"drop_slots", "alpha", "g", "b"}``; None when the removal is
            not such a drop.
        """
        cdef Py_ssize_t i, k, n_lost = 0, n_lost_positive = 0
        self.check_store()
        self.sync_capacity()
        _check_slots(slots, self.store.n_slots, "drop_record")
        if self.n_margin == 0 or self.sigma != self._store_sigma() or self._margin_at_bounds():
            return None
        for i in range(slots.shape[0]):
            k = slots[i]
            if self.setof[k] != S_RESERVE or self.alpha[k] != 0.0:
                return None
            if self.C[k] > 0.0:
                n_lost += 1
                if self.y[k] > 0:
                    n_lost_positive += 1
        if (self.n_weighted_positive == n_lost_positive
                or self.n_weighted - n_lost == self.n_weighted_positive - n_lost_positive):
            return None  # one class left: finish() would move b
        slots_a = np.array(slots, dtype=np.intp)
        # alpha too, though it is zero: its bits (a -0.0) are put back as they were
        return {"drop_slots": slots_a, "alpha": self._alpha_arr[slots_a],
                "g": self._g_arr[slots_a], "b": float(self.b)}

    def undo_drop(self, dict record):
        """Put back the reserve examples of a :meth:`drop_record` (idempotent).

        Valid on the engine as the drop left it (or before it: each slot
        still reserve is left there), as a rollback finds it.
        """
        cdef const Py_ssize_t[::1] slots = record["drop_slots"]
        cdef const double[::1] alpha = record["alpha"]
        cdef const double[::1] g = record["g"]
        cdef Py_ssize_t i, k
        self.check_store()
        self.sync_capacity()
        _check_slots(slots, self.store.n_slots, "undo_drop")
        if g.shape[0] != slots.shape[0] or alpha.shape[0] != slots.shape[0]:
            raise ValueError("undo_drop: one coefficient and one gradient per slot expected")
        for i in range(slots.shape[0]):
            if self.setof[slots[i]] not in (S_INACTIVE, S_RESERVE):
                raise ValueError(f"undo_drop: slot {slots[i]} is not a dropped reserve example")
        for i in range(slots.shape[0]):
            k = slots[i]
            if self.setof[k] == S_INACTIVE:
                self.setof[k] = S_RESERVE
                self.pos[k] = -1
                self._set_active(k, self.y[k], 1)
            self.alpha[k] = alpha[i]
            self.g[k] = g[i]
        self.b = record["b"]

    cdef _slot_copy(self, int which):
        # a copy of a per-slot array, one entry per stored slot; the array is
        # looked up after sync_capacity, which replaces (and zeroes) the old ones
        self.sync_capacity()
        arr = (self._alpha_arr, self._g_arr, self._set_arr, self._y_arr, self._C_arr)[which]
        return np.array(arr[:self.store.n_slots])

    @property
    def alpha_all(self):
        return self._slot_copy(0)  # alpha

    @property
    def g_all(self):
        return self._slot_copy(1)  # g

    @property
    def sets_all(self):
        return self._slot_copy(2)  # set

    @property
    def y_all(self):
        return self._slot_copy(3)  # y

    @property
    def C_all(self):
        return self._slot_copy(4)  # C

    @property
    def margin_order(self):
        return np.array(self._margin_arr[:self.n_margin])

    @property
    def refines_solves(self):
        """True when solves with the inverse margin matrix are refined: always on
        linear and poly kernels, else when C max K_ii >= 1e6 over the active slots."""
        with nogil:
            self._sync_hard()
        return bool(self.hard)

    def drift(self):
        """max |Rinv (A x) - x| for a fixed probe x (0 when S is empty)."""
        cdef double d
        with nogil:
            self._sync_sigma()
            d = self._drift()
        return d

    def reset_counters(self):
        self.n_steps = 0
        self.n_migrations = 0
        self.n_refactorisations = 0

    def alpha_of(self, const Py_ssize_t[::1] slots):
        """Coefficients of `slots`."""
        cdef Py_ssize_t i
        for i in range(slots.shape[0]):
            if not 0 <= slots[i] < self.store.n_slots:
                raise IndexError(f"alpha_of: slot {slots[i]} is outside the store")
        self.sync_capacity()
        out = np.empty(slots.shape[0])
        cdef double[::1] o = out
        for i in range(slots.shape[0]):
            o[i] = self.alpha[slots[i]]
        return out

    def decision_of(self, Py_ssize_t slot):
        """Decision value f(x_slot) = sum_j alpha_j y_j K(x_j, x_slot) + b of a stored slot."""
        if not 0 <= slot < self.store.n_slots:
            raise IndexError(f"slot {slot} out of range")
        self.check_store()
        self.sync_capacity()
        cdef double* row
        cdef double f
        with nogil:
            row = self.store.row(slot)
            f = 0.0 if row == NULL else self._f_without_b(slot, row) + self.b
        if row == NULL:
            raise MemoryError("could not allocate a kernel row")
        return f

    def set_of(self, Py_ssize_t slot):
        """Set code of one slot (SET_INACTIVE for slots never learned or removed)."""
        if not 0 <= slot < self.store.n_slots:
            return S_INACTIVE
        self.sync_capacity()
        return self.setof[slot]

    # -- erasure and compaction ---------------------------------------------------

    def erase(self, const Py_ssize_t[::1] slots):
        """Overwrite with zeros everything this engine holds of inactive `slots`.

        Their labels, bounds, coefficients and gradients become 0; their
        entries in the packed margin rows become 0; the work buffers are
        zeroed too. (What the margin set leaves behind in the packed rows and
        the inverse bordered matrix when it shrinks is zeroed as it shrinks.)
        Nothing the engine reads changes: decisions and later updates are the
        same. Raises ValueError for a slot that is active.
        """
        cdef Py_ssize_t i, n = slots.shape[0]
        self.sync_capacity()
        for i in range(n):
            if not 0 <= slots[i] < self.capacity or self.setof[slots[i]] != S_INACTIVE:
                raise ValueError(f"slot {slots[i]} is active or outside the engine")
        with nogil:
            self._erase(&slots[0] if n > 0 else NULL, n)

    cdef void _erase(self, const Py_ssize_t* slots, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t i, j, p, s, m1 = self.n_margin + 1, rc = self.r_cap
        for i in range(n):
            s = slots[i]
            self.y[s] = 0.0
            self.C[s] = 0.0
            self.alpha[s] = 0.0
            self.g[s] = 0.0
            self.pos[s] = -1
            self.blocked[s] = -1
            if self.KS != NULL and s < self.ks_rows:
                memset(self.KS + s * self.ks_ld, 0, self.ks_ld * sizeof(double))
        # the rows and columns of Rinv and KS beyond the margin set were zeroed
        # when the set shrank (_scrub_beyond)
        if self.Rinv != NULL and self.n_margin == 0:
            self.Rinv[0] = 0.0
        for p in range(rc):
            self.vbuf[p] = 0.0
            self.beta[p] = 0.0
            self.wbuf[p] = 0.0
            self.wbuf2[p] = 0.0
        if self.scratch_dirty:
            # O(capacity): only after a function that wrote them (not after a
            # reserve drop that follows an erase)
            self._zero_work_vectors()

    cdef void _zero_work_vectors(self) noexcept nogil:
        # the path's work vectors h and u (capacity each), which may hold
        # values computed from rows that an erasure removes
        if self.capacity > 0:
            memset(&self.h[0], 0, self.capacity * sizeof(double))
            memset(&self.u[0], 0, self.capacity * sizeof(double))
        self.scratch_dirty = False

    cdef void _compact(self, const Py_ssize_t* keep, Py_ssize_t m, Py_ssize_t n_old) noexcept nogil:
        # renumber slot keep[i] as i (the store moved its rows the same way)
        cdef Py_ssize_t i, s, ks_new = 0
        for i in range(m):
            s = keep[i]
            self.y[i] = self.y[s]
            self.C[i] = self.C[s]
            self.alpha[i] = self.alpha[s]
            self.g[i] = self.g[s]
            self.setof[i] = self.setof[s]
            self.pos[i] = self.pos[s]
            self.blocked[i] = self.blocked[s]
            if s < self.ks_n:
                ks_new = i + 1
        for i in range(m, n_old):
            self.y[i] = 0.0
            self.C[i] = 0.0
            self.alpha[i] = 0.0
            self.g[i] = 0.0
            self.setof[i] = S_INACTIVE
            self.pos[i] = -1
            self.blocked[i] = -1
        for i in range(m):
            if self.setof[i] == S_MARGIN:
                self.margin[self.pos[i]] = <int>i
        # keep is increasing: a row moves down onto one already moved
        for i in range(ks_new):
            if keep[i] != i:
                memcpy(self.KS + i * self.ks_ld, self.KS + keep[i] * self.ks_ld,
                       self.ks_ld * sizeof(double))
        if self.ks_n > ks_new:
            memset(self.KS + ks_new * self.ks_ld, 0,
                   (self.ks_n - ks_new) * self.ks_ld * sizeof(double))
        self.ks_n = ks_new
        self._zero_work_vectors()

    # -- moving the bounds (regularisation-parameter path) ---------------------

    def move_bounds(self, const double[::1] new_C):
        """Move the box bounds of the active slots to `new_C` along an exact path.

        The regularisation-parameter perturbation of Diehl and Cauwenberghs
        (IJCNN 2003): the bounds move linearly, ``C(t) = C + t (new_C - C)``
        for t from 0 to 1. Error vectors keep alpha = C(t) (they are the
        driven set), margin vectors follow through the bordered inverse,
        reserve vectors stay at 0; an example changes set when a margin
        coefficient meets 0 or its moving bound, or an error (reserve)
        gradient rises (falls) to 0. The end state is the exact solution with
        the new bounds. Inactive slots take ``new_C`` as their bound at once.

        Parameters
        ----------
        new_C : ndarray of float64, shape (n_slots,)
            The new bounds; finite, and positive exactly where the old ones are.

        Raises
        ------
        ValueError
            `new_C` has the wrong shape, a non-finite or negative entry, or
            changes whether an active bound is zero.
        eco.exceptions.EngineError
            The path could not finish (its ``status`` says why).
        """
        cdef Py_ssize_t n = self.store.n_slots, j
        self.sync_capacity()
        if new_C.shape[0] != n:
            raise ValueError(f"new_C must have one entry per stored slot ({n}), got {new_C.shape[0]}")
        for j in range(n):
            if not isfinite(new_C[j]) or new_C[j] < 0.0:
                raise ValueError(f"new_C[{j}] = {new_C[j]!r} is not a finite non-negative bound")
            if self.setof[j] != S_INACTIVE and (new_C[j] > 0.0) != (self.C[j] > 0.0):
                raise ValueError(f"new_C[{j}] changes whether the bound of an active slot is zero")
        cdef int st
        # the error vectors' rows make the driven direction: compute them
        # several at a time rather than one by one inside the path
        self.store.ensure_rows(np.flatnonzero(self._set_arr[:n] == S_ERROR).astype(np.intp))
        with nogil:
            st = self._move_bounds(&new_C[0] if n > 0 else NULL)
        check(st)

    cdef void _drive_row(self, Py_ssize_t j, double* dC, double sign, double* s_drv,
                         double* row) noexcept nogil:
        # u += sign * y_j dC_j K_.j and s += sign * y_j dC_j: j joins (+1) or
        # leaves (-1) the driven set (the error vectors) of the bound path
        cdef double coef = sign * self.y[j] * dC[j]
        cdef blas_int bn = <blas_int>self.store.n_slots, one_i = 1
        self.scratch_dirty = True
        s_drv[0] += coef
        if coef != 0.0:
            daxpy(&bn, &coef, row, &one_i, &self.u[0], &one_i)

    cdef int _move_bounds(self, const double* new_C) noexcept nogil:
        cdef Py_ssize_t n = self.store.n_slots, j
        cdef double* dC
        cdef double dscale = 0.0
        cdef int st
        if n == 0:
            return ST_OK
        if self._ks_sync() != 0:
            return ST_NO_MEMORY
        self._sync_sigma()
        self.epoch += 1  # refusals of dependent examples last one operation
        dC = <double*>_xmalloc(n * sizeof(double))
        if dC == NULL:
            return ST_NO_MEMORY
        for j in range(n):
            if self.setof[j] == S_INACTIVE:
                dC[j] = 0.0
                self.C[j] = new_C[j]
            else:
                dC[j] = new_C[j] - self.C[j]
                if fabs(dC[j]) > dscale:
                    dscale = fabs(dC[j])
        st = ST_OK
        if dscale > 0.0:
            if self.n_margin > 0 and self.updates_since_check > 0:
                st = self._maybe_refactorise()
            if st == ST_OK:
                st = self._bound_path(dC, dscale)
        _zfree(dC, n * sizeof(double))
        if st != ST_OK:
            return st
        # land exactly on the new bounds (the path reaches them up to rounding)
        for j in range(n):
            if self.setof[j] == S_INACTIVE:
                continue
            self.C[j] = new_C[j]
            if self.setof[j] == S_ERROR:
                self.alpha[j] = new_C[j]
        self.cmax_known = False  # (the active bounds moved; _sync_hard rescans)
        return self._checked_finish()

    cdef int _bound_path(self, double* dC, double dscale) noexcept nogil:
        """The path of :meth:`move_bounds` for t from 0 to 1 (bounds moved along with it).

        Same step structure as ``_path``; the driven set is E, which changes
        along the way (its kernel direction ``u`` is updated by one axpy per
        migration into or out of E).
        """
        cdef Py_ssize_t n = self.store.n_slots
        cdef Py_ssize_t j, p, k, m, best_slot
        cdef double t_left = 1.0, s_drv = 0.0
        cdef double tau, gam, bb, rate, tol, tol_base, wsum, beta_b
        cdef double* row
        cdef int best_kind, st, from_set
        cdef bint moves
        cdef long steps = 0, bound = self._step_bound()
        cdef blas_int bn, ld, one_i = 1
        cdef double minus_one = -1.0, zero = 0.0
        self.scratch_dirty = True

        # u = sum_E y_j dC_j K_.j: the kernel-space direction of the driven set
        for j in range(n):
            self.u[j] = 0.0
        for j in range(n):
            if self.setof[j] == S_ERROR and dC[j] != 0.0:
                row = self.store.row(j)
                if row == NULL:
                    return ST_NO_MEMORY
                self._drive_row(j, dC, 1.0, &s_drv, row)
        tol_base = self.tol_event * dscale

        while True:
            if t_left <= 0.0:
                return ST_OK
            if steps == self.fail_at_step:
                return ST_INJECTED_FAULT
            if steps >= bound:
                return ST_STEP_LIMIT
            steps += 1
            self.n_steps += 1
            m = self.n_margin
            tol = tol_base

            # ---- direction ---------------------------------------------------
            if m > 0:
                moves = True
                # [beta_b; beta_S] = -A^-1 [y_E'dC_E ; Q_SE dC_E], A border-scaled by sigma
                self.vbuf[0] = self.sigma * s_drv
                for p in range(m):
                    k = self.margin[p]
                    self.vbuf[p + 1] = self.y[k] * self.u[k]
                bn = <blas_int>(m + 1)
                ld = <blas_int>self.r_cap
                dsymv(b"U", &bn, &minus_one, self.Rinv, &ld, self.vbuf, &one_i,
                      &zero, self.beta, &one_i)
                beta_b = self.sigma * self.beta[0]
            elif fabs(s_drv) <= tol:
                # S empty and the error vectors keep sum y alpha = 0 by themselves
                moves = True
                beta_b = 0.0
            else:
                # S empty: the bounds cannot move (sum y alpha would change);
                # move b within its interval until an example joins S
                moves = False
                beta_b = s_drv

            # ---- h = K_.S (y_S beta_S) --------------------------------------------
            if m > 0:
                wsum = 0.0
                for p in range(m):
                    self.wbuf[p] = self.y[self.margin[p]] * self.beta[p + 1]
                    wsum += fabs(self.wbuf[p])
                # a rate below the rounding noise of this sum is no event
                if 1e-10 * wsum * self.store.max_diag > tol:
                    tol = 1e-10 * wsum * self.store.max_diag
            self._row_product(NULL, n, self.wbuf, &self.h[0])

            # ---- smallest step to an event; h[j] becomes the rate of g_j ---------
            # candidates go through _consider, the path's own rule (the
            # smallest step wins; ties to the end of the drive, then the
            # smallest slot)
            self.pth_tau = INFINITY
            self.pth_kind = EV_NONE
            self.pth_slot = -1
            if moves:
                self.pth_tau = t_left
                self.pth_kind = EV_END
            for p in range(m):
                k = self.margin[p]
                bb = self.beta[p + 1]
                rate = bb - dC[k]  # alpha_k - C_k(t) changes at this rate
                if rate > tol:
                    self._consider((self.C[k] - self.alpha[k]) / rate, EV_MARGIN_TO_ERROR, k)
                if bb < -tol:
                    self._consider(self.alpha[k] / (-bb), EV_MARGIN_TO_RESERVE, k)
            for j in range(n):
                if self.setof[j] != S_RESERVE and self.setof[j] != S_ERROR:
                    continue
                gam = self.y[j] * (self.h[j] + (self.u[j] if moves else 0.0) + beta_b)
                self.h[j] = gam
                if self.C[j] <= 0.0 or self.blocked[j] == self.epoch:
                    continue
                if self.setof[j] == S_ERROR:
                    if gam > tol:
                        self._consider(-self.g[j] / gam, EV_TO_MARGIN, j)
                elif gam < -tol:
                    self._consider(self.g[j] / (-gam), EV_TO_MARGIN, j)
            tau = self.pth_tau
            best_kind = self.pth_kind
            best_slot = self.pth_slot
            if best_kind == EV_NONE or not isfinite(tau):
                return ST_NO_EVENT

            # ---- apply the step ----------------------------------------------------
            if tau > 0.0:
                for p in range(m):
                    k = self.margin[p]
                    self.alpha[k] += self.beta[p + 1] * tau
                self.b += beta_b * tau
                for j in range(n):
                    if self.setof[j] == S_RESERVE or self.setof[j] == S_ERROR:
                        self.g[j] += self.h[j] * tau
                if moves:
                    for j in range(n):
                        if self.setof[j] != S_INACTIVE and dC[j] != 0.0:
                            self.C[j] += dC[j] * tau
                            if self.setof[j] == S_ERROR:
                                self.alpha[j] = self.C[j]
                    t_left -= tau
                if not isfinite(self.b):
                    return ST_NON_FINITE

            # ---- migrate the example of the event ------------------------------------
            if best_kind == EV_END:
                return ST_OK
            self.n_migrations += 1
            if best_kind == EV_MARGIN_TO_RESERVE:
                self.alpha[best_slot] = 0.0
                self.g[best_slot] = 0.0
                self._remove_from_margin(best_slot, S_RESERVE)
            elif best_kind == EV_MARGIN_TO_ERROR:
                self.alpha[best_slot] = self.C[best_slot]
                self.g[best_slot] = 0.0
                self._remove_from_margin(best_slot, S_ERROR)
                row = self.store.row(best_slot)
                if row == NULL:
                    return ST_NO_MEMORY
                # an error vector follows its bound: it joins the driven set
                self._drive_row(best_slot, dC, 1.0, &s_drv, row)
            elif best_kind == EV_TO_MARGIN:
                from_set = self.setof[best_slot]
                self.g[best_slot] = 0.0
                row = self.store.row(best_slot)
                if row == NULL:
                    return ST_NO_MEMORY
                st = self._expand(best_slot, row)
                if st < 0:
                    return -st
                if st == 1:
                    # dependent on S: stays at its bound with g = 0 (valid KKT);
                    # not an event again until S changes
                    self.setof[best_slot] = <signed char>from_set
                    self.blocked[best_slot] = self.epoch
                elif from_set == S_ERROR:
                    self._drive_row(best_slot, dC, -1.0, &s_drv, row)
            st = self._maybe_refactorise()
            if st != 0:
                return st

    # -- read-only: what changed since a committed state -----------------------------

    def changed_slots(self, const double[::1] alpha0, const signed char[::1] sets0):
        """Slots whose coefficient or set code differs from a committed state, and new slots.

        One pass in C over the per-slot arrays, without copying them (the Ray
        backend's delta, ``eco._ray_backend.PrimaryState.changes``).

        Parameters
        ----------
        alpha0 : ndarray of float64
            Committed coefficients of the first ``len(alpha0)`` slots.
            Compared bit for bit: -0.0 differs from 0.0, as in the digest.
        sets0 : ndarray of int8, same length
            Their committed set codes.

        Returns
        -------
        slots : ndarray of intp
            Increasing: the slots below ``len(alpha0)`` that differ, then
            every slot stored since.
        alpha, sets : ndarray of float64, ndarray of int8
            Their coefficients and set codes now.
        """
        cdef Py_ssize_t n0 = alpha0.shape[0], n = self.store.n_slots, j
        if sets0.shape[0] != n0 or n0 > n:
            raise ValueError(f"changed_slots: {n0} coefficients, {sets0.shape[0]} set codes, "
                             f"{n} slots stored")
        self.sync_capacity()
        # bit patterns, not values: -0.0 == 0.0 would hide a change the digest sees.
        # Blocks of 64 slots are compared first (a branch-free reduction the
        # compiler vectorises); most are equal and skipped whole. The differing
        # blocks are then gathered from once, into arrays sized for all of their
        # slots, and the filled part is returned.
        cdef Py_ssize_t lo, hi, k, q, n_blocks = (n0 + 63) // 64, n_diff = 0
        cdef const double* a0 = &alpha0[0] if n0 else NULL
        cdef const signed char* s0 = &sets0[0] if n0 else NULL
        cdef double* a1 = &self.alpha[0] if n else NULL
        cdef signed char* s1 = &self.setof[0] if n else NULL
        cdef unsigned long long u, v, acc
        differ = np.empty(n_blocks, dtype=np.intp)
        cdef Py_ssize_t[::1] blocks = differ
        with nogil:
            for q in range(n_blocks):
                lo, hi, acc = 64 * q, min(64 * q + 64, n0), 0
                for j in range(lo, hi):
                    memcpy(&u, a0 + j, 8)
                    memcpy(&v, a1 + j, 8)
                    acc |= (u ^ v) | <unsigned char>(s0[j] ^ s1[j])
                if acc != 0:
                    blocks[n_diff] = q
                    n_diff += 1
        cdef Py_ssize_t bound = min(64 * n_diff, n0) + n - n0
        slots = np.empty(bound, dtype=np.intp)
        alpha = np.empty(bound)
        sets = np.empty(bound, dtype=np.int8)
        cdef Py_ssize_t[::1] out = slots
        cdef double[::1] a = alpha
        cdef signed char[::1] c = sets
        k = 0
        with nogil:
            for q in range(n_diff):
                lo, hi = 64 * blocks[q], min(64 * blocks[q] + 64, n0)
                for j in range(lo, hi):
                    memcpy(&u, a0 + j, 8)
                    memcpy(&v, a1 + j, 8)
                    if u != v or s0[j] != s1[j]:
                        out[k], a[k], c[k] = j, a1[j], s1[j]
                        k += 1
            for j in range(n0, n):
                out[k], a[k], c[k] = j, a1[j], s1[j]
                k += 1
        return slots[:k], alpha[:k], sets[:k]


def drop_reserve(list engines, const Py_ssize_t[::1] slots):
    """Remove `slots`, whose alpha is 0 in every engine, from all `engines`.

    Nothing moves but the bookkeeping (and b when it is not unique). Done in
    one compiled call on purpose: no Python code runs between the engines,
    so an interrupt cannot leave some heads updated and others not.

    Raises EngineError when an engine could not complete (after every engine
    has been updated: the call is not interrupted half-way).
    """
    cdef CPEngine e
    cdef Py_ssize_t i
    cdef int st, worst = ST_OK
    for e in engines:
        if e is None:
            raise TypeError("drop_reserve: engines must be CPEngine instances")
        e.check_store()
        _check_slots(slots, e.store.n_slots, "drop_reserve")
        e.sync_capacity()
        for i in range(slots.shape[0]):
            if e.setof[slots[i]] == S_INACTIVE or e.alpha[slots[i]] != 0.0:
                raise ValueError(f"slot {slots[i]} is not an active example with alpha = 0")
    for e in engines:
        st = e._unlearn(&slots[0], slots.shape[0]) if slots.shape[0] > 0 else ST_OK
        if st != ST_OK:
            worst = st
    check(worst)


def reserve_mask(list engines, const Py_ssize_t[::1] slots):
    """Per slot: alpha = 0 in every engine (bool array, one entry per slot)."""
    cdef CPEngine e
    cdef Py_ssize_t i
    out = np.ones(slots.shape[0], dtype=np.bool_)
    cdef unsigned char[::1] o = out.view(np.uint8)
    for e in engines:
        if e is None:
            raise TypeError("reserve_mask: engines must be CPEngine instances")
        for i in range(slots.shape[0]):
            if not 0 <= slots[i] < e.store.n_slots:
                raise IndexError(f"reserve_mask: slot {slots[i]} is outside the store")
        e.sync_capacity()
        for i in range(slots.shape[0]):
            if e.alpha[slots[i]] != 0.0:
                o[i] = 0
    return out


def all_reserve(list engines, const Py_ssize_t[::1] slots):
    """True when every slot has alpha = 0 in every engine (a reserve-only request)."""
    return bool(reserve_mask(engines, slots).all())


def erase_slots(KernelStore store, list engines, const Py_ssize_t[::1] slots, live=None):
    """Erase `slots` (inactive in every engine) from `store` and all `engines`.

    One compiled call with no Python code between its parts, so that an
    interrupt cannot leave some parts erased and others not. `live` marks the
    slots that still hold an example (see :meth:`KernelStore.erase`); None:
    the slots active in the first engine (every stored row that is not active
    is among `slots` or already erased), read without an O(n) array.
    """
    cdef CPEngine e
    cdef Py_ssize_t i, n = slots.shape[0]
    cdef CPEngine first = None
    if live is None:
        if not engines:
            raise ValueError("erase_slots: live is needed when no engine is given")
        first = engines[0]
    else:
        live_arr = np.ascontiguousarray(live, dtype=np.uint8)
        if live_arr.ndim != 1 or live_arr.shape[0] != store.n_slots:
            raise ValueError(f"live must have one entry per stored slot ({store.n_slots})")
    for i in range(n):
        if not 0 <= slots[i] < store.capacity:
            raise ValueError(f"slot {slots[i]} is outside the store")
    for e in engines:
        if e.store is not store:
            raise ValueError("an engine does not use this store")
        e.sync_capacity()
        for i in range(n):
            if e.setof[slots[i]] != S_INACTIVE:
                raise ValueError(f"slot {slots[i]} is still active")
    # the live slots: flags[i] != dead (first.setof covers n_slots, synced above)
    cdef const unsigned char[::1] lv
    cdef const signed char* flags = NULL
    cdef signed char dead = S_INACTIVE
    if store.n_slots > 0:
        if first is None:
            lv = live_arr
            flags = <const signed char*>&lv[0]
            dead = 0
        else:
            flags = &first.setof[0]
    with nogil:
        store._erase(&slots[0] if n > 0 else NULL, n)
        store._max_diag_scan(flags, store.n_slots, dead)
    for e in engines:
        with nogil:
            e._erase(&slots[0] if n > 0 else NULL, n)


def compact_slots(KernelStore store, list engines, const Py_ssize_t[::1] keep):
    """Renumber the slots `keep` (strictly increasing) as 0, 1, ... in `store` and all `engines`.

    Every other stored slot must be inactive in every engine; its rows are
    zeroed and freed. The order of the kept slots is unchanged, so every sum
    over slots adds the same terms in the same order. One compiled call, as
    :func:`erase_slots`.
    """
    cdef CPEngine e
    cdef Py_ssize_t i, j, m = keep.shape[0], n = store.n_slots
    for i in range(m):
        if not 0 <= keep[i] < n or (i > 0 and keep[i] <= keep[i - 1]):
            raise ValueError("keep must be strictly increasing slots of the store")
    for e in engines:
        if e.store is not store:
            raise ValueError("an engine does not use this store")
        e.sync_capacity()
        j = 0
        for i in range(n):
            if j < m and keep[j] == i:
                j += 1
            elif e.setof[i] != S_INACTIVE:
                raise ValueError(f"slot {i} is active but not kept")
    with nogil:
        store._compact(&keep[0] if m > 0 else NULL, m)
    for e in engines:
        with nogil:
            e._compact(&keep[0] if m > 0 else NULL, m, n)
