/* Gathered-column GEMV/GEMM on the CPU: out[b, m] = sum_j x[b, j] * w[idx[j], m].
 *
 * ``w`` is a weight stored transposed (one contiguous row per input channel), so the selected
 * rows are read where they lie, each as one forward stream. Rows are taken GROUP at a time: the
 * inner loop adds GROUP scaled rows into a tile of the float32 output, so GROUP memory streams
 * are in flight (a row-at-a-time scaled add, like ``embedding_bag``, keeps one, and reaches
 * about 72% of the dense product's bandwidth on the CPU) and the output tile is loaded and
 * stored once per GROUP rows. The output is tiled by TILE_BYTES of each row (64 KiB: the GROUP
 * row pieces stay in the L2 cache while every batch row uses them; 4 KiB tiles, sized for L1,
 * measured 10% slower at batch 1, whole rows the same as 64 KiB). The inner loop is plain C
 * that the compiler vectorizes (-O3 -march=native). Threads split the output columns.
 *
 * Built and loaded at run time by ``dejavu_sparse.ops._compile`` (``native.py`` calls it).
 */
#include "../native_common.h"

#define GROUP 8
#ifndef TILE_BYTES
#define TILE_BYTES 65536
#endif

/* out[b, m] += sum_j x[b, j] * w[idx[j], m] for m in [m0, m1); x is float32 (batch, ldx). */
#define DEFINE_COLS(NAME, T, LOAD)                                                              \
    static void NAME(const float *x, int64_t ldx, const T *w, int64_t ldw, const int64_t *idx, \
                     int64_t k, int64_t batch, float *out, int64_t ldo, int64_t m0, int64_t m1) \
    {                                                                                           \
        const int64_t tile = TILE_BYTES / (int64_t)sizeof(T);                                   \
        for (int64_t t0 = m0; t0 < m1; t0 += tile) {                                            \
            const int64_t t1 = t0 + tile < m1 ? t0 + tile : m1;                                 \
            int64_t j = 0;                                                                      \
            for (; j + GROUP <= k; j += GROUP) {                                                \
                const T *r0 = w + idx[j] * ldw, *r1 = w + idx[j + 1] * ldw;                     \
                const T *r2 = w + idx[j + 2] * ldw, *r3 = w + idx[j + 3] * ldw;                 \
                const T *r4 = w + idx[j + 4] * ldw, *r5 = w + idx[j + 5] * ldw;                 \
                const T *r6 = w + idx[j + 6] * ldw, *r7 = w + idx[j + 7] * ldw;                 \
                for (int64_t b = 0; b < batch; ++b) {                                           \
                    const float *xb = x + b * ldx + j;                                          \
                    const float a0 = xb[0], a1 = xb[1], a2 = xb[2], a3 = xb[3];                 \
                    const float a4 = xb[4], a5 = xb[5], a6 = xb[6], a7 = xb[7];                 \
                    float *restrict o = out + b * ldo;                                          \
                    for (int64_t m = t0; m < t1; ++m)                                           \
                        o[m] += a0 * LOAD(r0, m) + a1 * LOAD(r1, m) + a2 * LOAD(r2, m)          \
                              + a3 * LOAD(r3, m) + a4 * LOAD(r4, m) + a5 * LOAD(r5, m)          \
                              + a6 * LOAD(r6, m) + a7 * LOAD(r7, m);                            \
                }                                                                               \
            }                                                                                   \
            for (; j < k; ++j) {                                                                \
                const T *r0 = w + idx[j] * ldw;                                                 \
                for (int64_t b = 0; b < batch; ++b) {                                           \
                    const float a0 = x[b * ldx + j];                                            \
                    float *restrict o = out + b * ldo;                                          \
                    for (int64_t m = t0; m < t1; ++m) o[m] += a0 * LOAD(r0, m);                 \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }

DEFINE_COLS(cols_f32, float, LOAD_F32)
DEFINE_COLS(cols_bf16, uint16_t, LOAD_BF16)

typedef struct {
    int bf16;
    const float *x;
    int64_t ldx;
    const void *w;
    int64_t ldw;
    const int64_t *idx;
    int64_t k, batch;
    float *out;
    int64_t ldo, m0, m1;
} job_t;

static void *run(void *arg) {
    const job_t *a = (const job_t *)arg;
    if (a->bf16)
        cols_bf16(a->x, a->ldx, (const uint16_t *)a->w, a->ldw, a->idx, a->k, a->batch, a->out,
                  a->ldo, a->m0, a->m1);
    else
        cols_f32(a->x, a->ldx, (const float *)a->w, a->ldw, a->idx, a->k, a->batch, a->out,
                 a->ldo, a->m0, a->m1);
    return NULL;
}

/* Adds x @ w[idx] into the zeroed float32 ``out`` (batch, m) with ``threads`` threads splitting
 * the output columns. ``bf16``: the weights are bfloat16, else float32. */
static void gather(int bf16, const float *x, int64_t ldx, const void *w, int64_t ldw, int64_t m,
                   const int64_t *idx, int64_t k, int64_t batch, float *out, int threads) {
    threads = clamp_threads(threads);
    /* split the output columns in multiples of 16 (one 64-byte cache line of float32) */
    int64_t per = ((m + threads - 1) / threads + 15) / 16 * 16;
    if (per < 16) per = 16;
    job_t jobs[MAX_THREADS];
    int parts = 0;
    for (int64_t m0 = 0; m0 < m && parts < threads; m0 += per, ++parts) {
        job_t j = {bf16, x, ldx, w, ldw, idx, k, batch, out, m, m0, m0 + per < m ? m0 + per : m};
        jobs[parts] = j;
    }
    run_parts(run, jobs, sizeof(job_t), parts);
}

/* Adds x @ w[idx] into the zeroed float32 ``out`` (batch, m). ``dtype``: 0 float32, 1 bfloat16
 * weights. Returns 0, or 1 (nothing computed) when an index lies outside [0, n). */
int dejavu_gather_cols(int dtype, const float *x, int64_t ldx, const void *w, int64_t n,
                       int64_t ldw, int64_t m, const int64_t *idx, int64_t k, int64_t batch,
                       float *out, int threads) {
    if (!indices_in_range(idx, k, n)) return 1;
    gather(dtype == 1, x, ldx, w, ldw, m, idx, k, batch, out, threads);
    return 0;
}
