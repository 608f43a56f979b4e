/*
 * How fast can an 8-bit blockwise Lion step (bitsandbytes' Lion8bit on CPU: blocks of 256, one
 * float32 absmax each, the state decoded through a 256-entry table and re-encoded through the
 * 65,536-bin table of its CPU quantizer) run on this CPU, written directly in C with AVX2
 * intrinsics, independently of the Swift kernels? And what do its two table look-ups cost?
 *
 * A timing experiment, not a reference: the tables are stand-ins of the right sizes (the timing
 * does not depend on their contents), and the arithmetic is the order of operations of
 * `QuantizedLionKernel` (float32 p, g; 8-bit exp_avg). Four variants of the 8-bit step, each
 * alternating with the float32 Lion step of `reference_kernels.c` (OpenMP, static schedule):
 *   full      both look-ups as AVX2 gathers (what the Swift AVX2 path does)
 *   no-decode the decode gather replaced by a conversion (wrong values, same data flow)
 *   no-encode the encode gather replaced by a truncation (wrong codes, same data flow)
 *   neither   both replaced: the arithmetic, the block's absmax and the 14 bytes a parameter
 *
 *   cc -O3 -march=native -fopenmp tools/bench/int8_lion_roofline.c -o /tmp/int8_lion_roofline
 *   OMP_NUM_THREADS=2 /tmp/int8_lion_roofline [params=67108864] [steps=10]
 *   OMP_NUM_THREADS=1 /tmp/int8_lion_roofline 65536 2000     # L2-resident: compute cost alone
 * Prints, per variant, the medians (ns a parameter) and float32 step ÷ 8-bit step.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { FULL, NO_DECODE, NO_ENCODE, NEITHER };
static const char *names[] = {"full", "no-decode", "no-encode", "neither"};
static float entries[256];
static uint8_t *table;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static int compare(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

static void lion32(float *p, const float *g, float *m, long n) {
    const float b1 = 0.9f, omb1 = 0.1f, b2 = 0.99f, omb2 = 0.01f, nlr = -1e-4f;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float c = m[i] * b1 + g[i] * omb1, s = (float)((c > 0) - (c < 0));
        p[i] = p[i] + nlr * s;
        m[i] = m[i] * b2 + omb2 * g[i];
    }
}

static inline __attribute__((always_inline)) void lion8(int variant, float *p, const float *g, uint8_t *codes, float *absmax, long n) {
    const long blocks = n / 256;
    #pragma omp parallel
    {
        float scratch[256] __attribute__((aligned(64)));
        const __m256 b1 = _mm256_set1_ps(0.9f), omb1 = _mm256_set1_ps(0.1f), b2 = _mm256_set1_ps(0.99f), omb2 = _mm256_set1_ps(0.01f);
        const __m256 nlr = _mm256_set1_ps(-1e-4f), one = _mm256_set1_ps(1.0f), minus = _mm256_set1_ps(-1.0f), half = _mm256_set1_ps(0.5f);
        const __m256 bins = _mm256_set1_ps(65535.0f), zero = _mm256_setzero_ps();
        const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        const __m256i low = _mm256_set1_epi32(0xff);
        #pragma omp for schedule(static)
        for (long b = 0; b < blocks; b++) {
            const long s = b * 256;
            const __m256 scale = _mm256_set1_ps(absmax[b]);
            __m256 largest = zero;
            for (int j = 0; j < 256; j += 8) {
                __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + s + j)));
                __m256 decoded = variant == NO_DECODE || variant == NEITHER ? _mm256_cvtepi32_ps(index) : _mm256_i32gather_ps(entries, index, 4);
                __m256 m = _mm256_mul_ps(decoded, scale), gg = _mm256_loadu_ps(g + s + j), pp = _mm256_loadu_ps(p + s + j);
                __m256 c = _mm256_add_ps(_mm256_mul_ps(m, b1), _mm256_mul_ps(gg, omb1));
                __m256 sign = _mm256_sub_ps(_mm256_and_ps(_mm256_cmp_ps(c, zero, _CMP_GT_OQ), one), _mm256_and_ps(_mm256_cmp_ps(c, zero, _CMP_LT_OQ), one));
                _mm256_storeu_ps(p + s + j, _mm256_add_ps(pp, _mm256_mul_ps(nlr, sign)));
                m = _mm256_fmadd_ps(gg, omb2, _mm256_mul_ps(m, b2));
                _mm256_store_ps(scratch + j, m);
                largest = _mm256_max_ps(largest, _mm256_and_ps(m, magnitude));
            }
            __m128 r = _mm_max_ps(_mm256_castps256_ps128(largest), _mm256_extractf128_ps(largest, 1));
            r = _mm_max_ps(r, _mm_movehl_ps(r, r));
            r = _mm_max_ss(r, _mm_shuffle_ps(r, r, 1));
            const float block_max = _mm_cvtss_f32(r);
            absmax[b] = block_max;
            const __m256 inverse = _mm256_set1_ps(1.0f / block_max);
            for (int j = 0; j < 256; j += 16) {
                __m256 v0 = _mm256_mul_ps(_mm256_load_ps(scratch + j), inverse), v1 = _mm256_mul_ps(_mm256_load_ps(scratch + j + 8), inverse);
                v0 = _mm256_min_ps(_mm256_max_ps(v0, minus), one);
                v1 = _mm256_min_ps(_mm256_max_ps(v1, minus), one);
                v0 = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_add_ps(v0, one), half), bins), half);
                v1 = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_add_ps(v1, one), half), bins), half);
                __m256i c0 = _mm256_cvttps_epi32(v0), c1 = _mm256_cvttps_epi32(v1);
                if (variant == FULL || variant == NO_DECODE) {
                    c0 = _mm256_i32gather_epi32((const int *)table, c0, 1);
                    c1 = _mm256_i32gather_epi32((const int *)table, c1, 1);
                }
                c0 = _mm256_and_si256(c0, low);
                c1 = _mm256_and_si256(c1, low);
                __m256i words = _mm256_permute4x64_epi64(_mm256_packus_epi32(c0, c1), 0xD8);
                _mm_storeu_si128((__m128i *)(codes + s + j), _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1)));
            }
        }
    }
}

int main(int argc, char **argv) {
    const long n = argc > 1 ? atol(argv[1]) : 67108864;
    const int steps = argc > 2 ? atoi(argv[2]) : 10;
    for (int i = 0; i < 256; i++) entries[i] = -1.0f + 2.0f * i / 255.0f;
    table = aligned_alloc(64, 65536 + 64);
    for (long i = 0; i < 65536 + 64; i++) table[i] = (uint8_t)(i >= 65536 ? 255 : i >> 8);
    float *p = aligned_alloc(64, n * 4), *g = aligned_alloc(64, n * 4), *m = aligned_alloc(64, n * 4);
    float *absmax = aligned_alloc(64, (n / 256 + 16) * 4);
    uint8_t *codes = aligned_alloc(64, n + 64);
    double *t32 = malloc(sizeof(double) * steps), *t8 = malloc(sizeof(double) * steps);
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        p[i] = (i % 1000) * 1e-3f; g[i] = ((i * 7919) % 2001 - 1000) * 1e-3f; m[i] = 0; codes[i] = (uint8_t)(i * 31);
    }
    for (long b = 0; b < n / 256; b++) absmax[b] = 0.01f;
    printf("%ld parameters, %d threads, medians of %d alternating steps\n", n, omp_get_max_threads(), steps);
    for (int variant = FULL; variant <= NEITHER; variant++) {
        lion32(p, g, m, n);
        lion8(variant, p, g, codes, absmax, n);
        for (int s = 0; s < steps; s++) {
            double t = now();
            lion32(p, g, m, n);
            t32[s] = now() - t;
            t = now();
            switch (variant) {
            case FULL: lion8(FULL, p, g, codes, absmax, n); break;
            case NO_DECODE: lion8(NO_DECODE, p, g, codes, absmax, n); break;
            case NO_ENCODE: lion8(NO_ENCODE, p, g, codes, absmax, n); break;
            default: lion8(NEITHER, p, g, codes, absmax, n); break;
            }
            t8[s] = now() - t;
        }
        qsort(t32, steps, sizeof(double), compare);
        qsort(t8, steps, sizeof(double), compare);
        printf("%-10s float32 %.3f ns/param  8-bit %.3f ns/param  float32 / 8-bit %.3f\n", names[variant],
               t32[steps / 2] * 1e9 / n, t8[steps / 2] * 1e9 / n, t32[steps / 2] / t8[steps / 2]);
    }
    return 0;
}
