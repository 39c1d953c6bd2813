/* Matrix products for a few input rows (batch-1 decoding) on the CPU: int8 weight-only
   (int8_matvec) and bf16 (bf16_matvec, further down).

   y[m, o] = scales[o] * sum_k w[o, k] * x[m, k] + bias[o]

   w is int8 (N, K), row-major; x (M, K), scales (N), bias (N, optional) and y (M, N) are all
   float32 (dtype 0) or all bfloat16 (dtype 1). Accumulation is in float32. Decoding reads every
   weight once per token, so this is a memory stream: output rows are split between threads in
   blocks of four, and each block's four weight rows are read once, side by side, for all M
   inputs (which stay in the L1 cache), with software prefetches 32 rows ahead. With AVX-512, 16
   weights become floats per instruction pair (sign-extend, convert) and meet the input in one
   fused multiply-add; elsewhere the plain loop below is what the compiler vectorises.

   Compiled on first use by scratchgpt.model.cpu_kernels (cc -O3 -march=native -fopenmp). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define PREFETCH_ROWS 32

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even, as PyTorch does; NaN stays NaN. */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float load(const void *p, int64_t i, int bf16) {
    return bf16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* Dot products of up to four weight rows with one float32 input row. */
static void dots4(const int8_t *w, int64_t rows, int64_t K, const float *x, float *out) {
    int64_t k0 = 0;
#if defined(__AVX512F__)
    if (rows == 4) {
        const int8_t *w0 = w, *w1 = w + K, *w2 = w + 2 * K, *w3 = w + 3 * K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
#define ROW(a, p, o, v) a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32( \
                            _mm_loadu_si128((const __m128i *)((p) + k0 + (o))))), v, a)
        for (; k0 + 32 <= K; k0 += 32) {
            /* Ask for the rows PREFETCH_ROWS ahead now: the hardware prefetcher alone keeps
               too few of these short row streams in flight (measured 3-4x slower). Past the
               end of the matrix a prefetch is a no-op. */
            _mm_prefetch((const char *)(w0 + PREFETCH_ROWS * K + k0), _MM_HINT_T0);
            _mm_prefetch((const char *)(w1 + PREFETCH_ROWS * K + k0), _MM_HINT_T0);
            _mm_prefetch((const char *)(w2 + PREFETCH_ROWS * K + k0), _MM_HINT_T0);
            _mm_prefetch((const char *)(w3 + PREFETCH_ROWS * K + k0), _MM_HINT_T0);
            __m512 xv = _mm512_loadu_ps(x + k0), xw = _mm512_loadu_ps(x + k0 + 16);
            ROW(a0, w0, 0, xv); ROW(a1, w1, 0, xv); ROW(a2, w2, 0, xv); ROW(a3, w3, 0, xv);
            ROW(b0, w0, 16, xw); ROW(b1, w1, 16, xw); ROW(b2, w2, 16, xw); ROW(b3, w3, 16, xw);
        }
        for (; k0 + 16 <= K; k0 += 16) {
            __m512 xv = _mm512_loadu_ps(x + k0);
            ROW(a0, w0, 0, xv); ROW(a1, w1, 0, xv); ROW(a2, w2, 0, xv); ROW(a3, w3, 0, xv);
        }
#undef ROW
        a0 = _mm512_add_ps(a0, b0); a1 = _mm512_add_ps(a1, b1);
        a2 = _mm512_add_ps(a2, b2); a3 = _mm512_add_ps(a3, b3);
        out[0] = _mm512_reduce_add_ps(a0);
        out[1] = _mm512_reduce_add_ps(a1);
        out[2] = _mm512_reduce_add_ps(a2);
        out[3] = _mm512_reduce_add_ps(a3);
    } else
#endif
    {
        for (int64_t r = 0; r < rows; r++) out[r] = 0.0f;
    }
    for (int64_t r = 0; r < rows; r++) {  /* the tail (or everything without AVX-512) */
        const int8_t *wr = w + r * K;
        float s = 0.0f;
        for (int64_t k = k0; k < K; k++) s += (float)wr[k] * x[k];
        out[r] += s;
    }
}

/* Returns 0, or -1 when out of memory (nothing written). */
int int8_matvec(const void *x, const int8_t *w, const void *scales, const void *bias, void *y,
                int64_t M, int64_t N, int64_t K, int dtype, int nthreads) {
    const int bf16 = dtype == 1;
    float *xf = malloc((size_t)(M * K) * sizeof(float));
    if (xf == NULL) return -1;
    for (int64_t i = 0; i < M * K; i++) xf[i] = load(x, i, bf16);
    const int64_t blocks = (N + 3) / 4;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t o0 = 4 * b, rows = N - o0 < 4 ? N - o0 : 4;
        float acc[4];
        for (int64_t m = 0; m < M; m++) {
            dots4(w + o0 * K, rows, K, xf + m * K, acc);
            for (int64_t r = 0; r < rows; r++) {
                const int64_t o = o0 + r;
                float v = acc[r] * load(scales, o, bf16);
                if (bias != NULL) v += load(bias, o, bf16);
                if (bf16)
                    ((uint16_t *)y)[m * N + o] = f32_to_bf16(v);
                else
                    ((float *)y)[m * N + o] = v;
            }
        }
    }
    free(xf);
    return 0;
}

/* bf16 weights, bf16 inputs and outputs: y[m, o] = sum_k w[o, k] * x[m, k] + bias[o], with
   AVX-512 BF16 dot products (32 weights per instruction, float32 accumulation), the same row
   blocks and prefetching as above. Only built where the compiler targets AVX-512 BF16
   (has_bf16_matvec() says so); elsewhere PyTorch's kernels run. */
int has_bf16_matvec(void) {
#if defined(__AVX512BF16__)
    return 1;
#else
    return 0;
#endif
}

#if defined(__AVX512BF16__)
static void bf16_dots4(const uint16_t *w, int64_t rows, int64_t K, const uint16_t *x,
                       float *out) {
    int64_t k0 = 0;
    if (rows == 4) {
        const uint16_t *w0 = w, *w1 = w + K, *w2 = w + 2 * K, *w3 = w + 3 * K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
#define DOT(a, p, o, v) a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512((p) + k0 + (o)), v)
        for (; k0 + 64 <= K; k0 += 64) {
            _mm_prefetch((const char *)(w0 + PREFETCH_ROWS * K + k0), _MM_HINT_T0);
            _mm_prefetch((const char *)(w1 + PREFETCH_ROWS * K + k0), _MM_HINT_T0);
            _mm_prefetch((const char *)(w2 + PREFETCH_ROWS * K + k0), _MM_HINT_T0);
            _mm_prefetch((const char *)(w3 + PREFETCH_ROWS * K + k0), _MM_HINT_T0);
            _mm_prefetch((const char *)(w0 + PREFETCH_ROWS * K + k0 + 32), _MM_HINT_T0);
            _mm_prefetch((const char *)(w1 + PREFETCH_ROWS * K + k0 + 32), _MM_HINT_T0);
            _mm_prefetch((const char *)(w2 + PREFETCH_ROWS * K + k0 + 32), _MM_HINT_T0);
            _mm_prefetch((const char *)(w3 + PREFETCH_ROWS * K + k0 + 32), _MM_HINT_T0);
            __m512bh xv = (__m512bh)_mm512_loadu_si512(x + k0);
            __m512bh xw = (__m512bh)_mm512_loadu_si512(x + k0 + 32);
            DOT(a0, w0, 0, xv); DOT(a1, w1, 0, xv); DOT(a2, w2, 0, xv); DOT(a3, w3, 0, xv);
            DOT(b0, w0, 32, xw); DOT(b1, w1, 32, xw); DOT(b2, w2, 32, xw); DOT(b3, w3, 32, xw);
        }
        for (; k0 + 32 <= K; k0 += 32) {
            __m512bh xv = (__m512bh)_mm512_loadu_si512(x + k0);
            DOT(a0, w0, 0, xv); DOT(a1, w1, 0, xv); DOT(a2, w2, 0, xv); DOT(a3, w3, 0, xv);
        }
#undef DOT
        out[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
        out[1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
        out[2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
        out[3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
    } else {
        for (int64_t r = 0; r < rows; r++) out[r] = 0.0f;
    }
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *wr = w + r * K;
        float s = 0.0f;
        for (int64_t k = k0; k < K; k++) s += bf16_to_f32(wr[k]) * bf16_to_f32(x[k]);
        out[r] += s;
    }
}
#endif

int bf16_matvec(const uint16_t *x, const uint16_t *w, const uint16_t *bias, uint16_t *y,
                int64_t M, int64_t N, int64_t K, int nthreads) {
#if defined(__AVX512BF16__)
    const int64_t blocks = (N + 3) / 4;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t o0 = 4 * b, rows = N - o0 < 4 ? N - o0 : 4;
        float acc[4];
        for (int64_t m = 0; m < M; m++) {
            bf16_dots4(w + o0 * K, rows, K, x + m * K, acc);
            for (int64_t r = 0; r < rows; r++) {
                const int64_t o = o0 + r;
                float v = acc[r];
                if (bias != NULL) v += bf16_to_f32(bias[o]);
                y[m * N + o] = f32_to_bf16(v);
            }
        }
    }
    return 0;
#else
    (void)x; (void)w; (void)bias; (void)y; (void)M; (void)N; (void)K; (void)nthreads;
    return -2;
#endif
}
