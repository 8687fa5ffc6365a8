/* TEAL's thresholded input times a transposed weight, reading only the rows of kept inputs:
 * out[b, :] = sum over j with |x[b, j]| > t of x[b, j] * w[j, :].
 *
 * One pass over the input finds the kept channels (the union over the batch rows) and packs
 * their values (zero where a batch row does not keep the channel); the gathered-column kernel
 * of ``gather_cols`` (included below) then streams the kept weight rows. Selection and product in
 * one call: on a small model the separate PyTorch selection operations (abs, compare, count,
 * nonzero, index_select) cost more per decode step than the rows they skip.
 * Above ``dense_above`` kept channels every row is streamed in order (one contiguous read).
 */
#include "../gather_cols/native.c"

/* ``x`` float32 (batch, ldx) of n channels; ``idx`` (n + 1) and ``xs`` (batch, n) are scratch;
 * ``out`` (batch, m) zeroed. Returns the number of kept channels, also written to idx[n]. */
int64_t dejavu_threshold_cols(int dtype, const float *x, int64_t ldx, int64_t batch, float t,
                              const void *w, int64_t n, int64_t ldw, int64_t m,
                              int64_t dense_above, int64_t *idx, float *xs, float *out,
                              int threads) {
    int64_t k = 0;
    for (int64_t j = 0; j < n; ++j) {
        int any = 0;
        for (int64_t b = 0; b < batch; ++b) {
            const float v = x[b * ldx + j];
            const int on = v > t || -v > t; /* |v| > t; NaN is dropped */
            xs[b * n + k] = on ? v : 0.0f;
            any |= on;
        }
        if (any) idx[k++] = j;
    }
    const int64_t read = k > dense_above ? n : k;
    if (k > dense_above) { /* every row, in order: x masked to its kept channels */
        for (int64_t j = 0; j < n; ++j) {
            idx[j] = j;
            for (int64_t b = 0; b < batch; ++b) {
                const float v = x[b * ldx + j];
                xs[b * n + j] = (v > t || -v > t) ? v : 0.0f;
            }
        }
    }
    if (read > 0) gather(dtype == 1, xs, n, w, ldw, m, idx, read, batch, out, threads);
    idx[n] = k;
    return k;
}
