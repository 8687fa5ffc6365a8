/* What the CPU ``native`` kernels share: bfloat16 loads, the index check and the fork/join of
 * a call's parts over POSIX threads. Included by ``<op>/native.c``. */
#ifndef DEJAVU_NATIVE_COMMON_H
#define DEJAVU_NATIVE_COMMON_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAX_THREADS 64

static inline float bf16_to_f32(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#define LOAD_F32(p, i) ((p)[i])
#define LOAD_BF16(p, i) bf16_to_f32((p)[i])

/* 1 when every one of the k indices lies in [0, n), else 0. */
static int indices_in_range(const int64_t *idx, int64_t k, int64_t n) {
    for (int64_t j = 0; j < k; ++j)
        if (idx[j] < 0 || idx[j] >= n) return 0;
    return 1;
}

/* ``threads`` clamped to [1, MAX_THREADS]. */
static int clamp_threads(int threads) {
    return threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
}

/* Runs ``fn`` on each of ``parts`` (<= MAX_THREADS) jobs of ``size`` bytes at ``jobs``: job 0 on
 * the caller, the others on new threads; a job whose thread cannot start runs on the caller. */
static void run_parts(void *(*fn)(void *), void *jobs, size_t size, int parts) {
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS];
    char *base = (char *)jobs;
    for (int p = 1; p < parts; ++p)
        started[p] = pthread_create(&tids[p], NULL, fn, base + p * size) == 0;
    if (parts > 0) fn(base);
    for (int p = 1; p < parts; ++p) {
        if (started[p])
            pthread_join(tids[p], NULL);
        else
            fn(base + p * size);
    }
}

#endif
