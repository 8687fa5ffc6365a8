/* Gathered-row GEMV/GEMM on the CPU: out[b, i] = sum_k x[b, k] * w[idx[i], k].
 *
 * ``w`` is an nn.Linear-layout weight (one contiguous row per output), so each selected row is
 * one forward stream. Rows are taken ROWS at a time and their dot products with every batch
 * row run together over tiles of the input (TILE elements): ROWS memory streams in flight, the
 * input tile read from the L1 cache. Each dot product keeps LANES float32 partial sums (the
 * loop over the lanes is what the compiler vectorizes; no reassociation is needed) and adds
 * them up once at the end. Threads split the selected rows.
 *
 * Built and loaded at run time by ``dejavu_sparse.ops._compile`` (``native.py`` calls it).
 */
#include "../native_common.h"

/* 4 rows x 64 lanes (four 16-float vectors per row) x 4096-element tiles measured best of
 * 2-8 rows, 16-64 lanes (14336 x 4096, float32, one thread: 1.97x dense at half the rows) */
#ifndef ROWS
#define ROWS 4
#endif
#ifndef LANES
#define LANES 64
#endif
#ifndef TILE
#define TILE 4096
#endif
#define MAX_BATCH 16

/* out[b, i] for i in [i0, i1) (out is float32 (batch, ldo)); x float32 (batch, ldx), batch <=
 * MAX_BATCH. */
#define DEFINE_ROWS(NAME, T, LOAD)                                                              \
    static void NAME(const float *x, int64_t ldx, const T *w, int64_t ldw, int64_t kdim,       \
                     const int64_t *idx, int64_t i0, int64_t i1, int64_t batch, float *out,     \
                     int64_t ldo)                                                               \
    {                                                                                           \
        for (int64_t i = i0; i < i1; i += ROWS) {                                               \
            const int nr = i1 - i < ROWS ? (int)(i1 - i) : ROWS;                                \
            const T *r[ROWS];                                                                   \
            for (int q = 0; q < ROWS; ++q) r[q] = w + idx[i + (q < nr ? q : 0)] * ldw;          \
            float acc[MAX_BATCH][ROWS][LANES];                                                  \
            memset(acc, 0, sizeof(float) * (size_t)batch * ROWS * LANES);                       \
            const int64_t kv = kdim / LANES * LANES;                                            \
            for (int64_t t0 = 0; t0 < kv; t0 += TILE) {                                         \
                const int64_t t1 = t0 + TILE < kv ? t0 + TILE : kv;                             \
                for (int64_t b = 0; b < batch; ++b) {                                           \
                    const float *xb = x + b * ldx;                                              \
                    for (int64_t k = t0; k < t1; k += LANES) {                                  \
                        for (int q = 0; q < ROWS; ++q) {                                        \
                            const T *rq = r[q] + k;                                             \
                            float *a = acc[b][q];                                               \
                            for (int l = 0; l < LANES; ++l) a[l] += LOAD(rq, l) * xb[k + l];    \
                        }                                                                       \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
            for (int64_t b = 0; b < batch; ++b)                                                 \
                for (int q = 0; q < nr; ++q) {                                                  \
                    float s = 0.0f;                                                             \
                    for (int l = 0; l < LANES; ++l) s += acc[b][q][l];                          \
                    for (int64_t k = kv; k < kdim; ++k) s += LOAD(r[q], k) * x[b * ldx + k];    \
                    out[b * ldo + i + q] = s;                                                   \
                }                                                                               \
        }                                                                                       \
    }

DEFINE_ROWS(rows_f32, float, LOAD_F32)
DEFINE_ROWS(rows_bf16, uint16_t, LOAD_BF16)

typedef struct {
    int bf16;
    const float *x;
    int64_t ldx;
    const void *w;
    int64_t ldw, kdim;
    const int64_t *idx;
    int64_t i0, i1, batch;
    float *out;
    int64_t ldo;
} job_t;

static void *run(void *arg) {
    const job_t *a = (const job_t *)arg;
    if (a->bf16)
        rows_bf16(a->x, a->ldx, (const uint16_t *)a->w, a->ldw, a->kdim, a->idx, a->i0, a->i1,
                  a->batch, a->out, a->ldo);
    else
        rows_f32(a->x, a->ldx, (const float *)a->w, a->ldw, a->kdim, a->idx, a->i0, a->i1,
                 a->batch, a->out, a->ldo);
    return NULL;
}

/* Writes x @ w[idx].T into the float32 ``out`` (batch, k). ``dtype``: 0 float32, 1 bfloat16
 * weights. Returns 0; 1 (nothing computed) when an index lies outside [0, n); 2 when batch is
 * above MAX_BATCH. */
int dejavu_gather_rows(int dtype, const float *x, int64_t ldx, const void *w, int64_t n,
                       int64_t ldw, int64_t kdim, const int64_t *idx, int64_t k, int64_t batch,
                       float *out, int threads) {
    if (!indices_in_range(idx, k, n)) return 1;
    if (batch > MAX_BATCH) return 2;
    threads = clamp_threads(threads);
    int64_t per = ((k + threads - 1) / threads + ROWS - 1) / ROWS * ROWS;
    if (per < ROWS) per = ROWS;
    job_t jobs[MAX_THREADS];
    int parts = 0;
    for (int64_t i0 = 0; i0 < k && parts < threads; i0 += per, ++parts) {
        job_t j = {dtype == 1, x, ldx, w, ldw, kdim, idx, i0, i0 + per < k ? i0 + per : k,
                   batch, out, k};
        jobs[parts] = j;
    }
    run_parts(run, jobs, sizeof(job_t), parts);
    return 0;
}
