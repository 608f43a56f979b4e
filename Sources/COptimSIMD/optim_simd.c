/*
 * What the CPU can run, and the hand-over to the kernel modules built for wider instruction sets.
 *
 * Each kernel module (OptimKernelsAVX2, OptimKernelsAVX512: the same Swift sources compiled with
 * a different -target-cpu) defines a C-callable `optim_install_kernels_<isa>` that registers its
 * compiled kernels with Optim. Optim sits below those modules, so it reaches them through weak
 * references: a module that is not linked (or not built, on another architecture) leaves its
 * reference null and that path simply does not exist.
 */
#include "optim_simd.h"

#if defined(__x86_64__) || defined(_M_X64)
extern void optim_install_kernels_avx2(void) __attribute__((weak));
extern void optim_install_kernels_avx512(void) __attribute__((weak));

int optim_cpu_supports(int isa) {
    __builtin_cpu_init();
    switch (isa) {
    case OPTIM_ISA_BASELINE:
        return 1;
    case OPTIM_ISA_AVX2:
        /* Everything -target-cpu x86-64-v3 lets the compiler use (not only AVX2 and FMA). */
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi")
            && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("movbe")
            && __builtin_cpu_supports("lzcnt") && __builtin_cpu_supports("popcnt");
    case OPTIM_ISA_AVX512:
        /* x86-64-v4: v3 plus AVX-512 F, BW, CD, DQ and VL. */
        return optim_cpu_supports(OPTIM_ISA_AVX2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    default:
        return 0;
    }
}

int optim_install_kernels(int isa) {
    switch (isa) {
    case OPTIM_ISA_AVX2:
        if (optim_install_kernels_avx2) { optim_install_kernels_avx2(); return 1; }
        return 0;
    case OPTIM_ISA_AVX512:
        if (optim_install_kernels_avx512) { optim_install_kernels_avx512(); return 1; }
        return 0;
    default:
        return 0;
    }
}

#include <immintrin.h>

int optim_cpu_has_avx512bf16(void) {
    __builtin_cpu_init();
    return optim_cpu_supports(OPTIM_ISA_AVX512) && __builtin_cpu_supports("avx512bf16");
}

/*
 * The bfloat16 GEMM's micro-kernel (MatMul's bfloat16-operand path): a 6 × 32 tile of C in twelve
 * zmm registers, plus the product of a packed 6-row panel of op(A) and a packed 32-column panel
 * of op(B), `pairs` pairs of k deep. Each 32-bit word of a panel holds the bfloat16 values of k =
 * 2q (low half) and 2q + 1 (high half). VDPBF16PS adds, per lane, the odd product then the even
 * one to the float32 accumulator, each addition rounded (products of bfloat16 values are exact
 * in float32), denormals flushed to zero.
 */
__attribute__((target("avx512f,avx512bf16")))
void optim_bf16_tile_6x32(long pairs, const uint32_t *a, const uint32_t *b, float *c, long ldc, int load) {
    __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (load) {
        c00 = _mm512_loadu_ps(c);           c01 = _mm512_loadu_ps(c + 16);
        c10 = _mm512_loadu_ps(c + ldc);     c11 = _mm512_loadu_ps(c + ldc + 16);
        c20 = _mm512_loadu_ps(c + 2 * ldc); c21 = _mm512_loadu_ps(c + 2 * ldc + 16);
        c30 = _mm512_loadu_ps(c + 3 * ldc); c31 = _mm512_loadu_ps(c + 3 * ldc + 16);
        c40 = _mm512_loadu_ps(c + 4 * ldc); c41 = _mm512_loadu_ps(c + 4 * ldc + 16);
        c50 = _mm512_loadu_ps(c + 5 * ldc); c51 = _mm512_loadu_ps(c + 5 * ldc + 16);
    } else {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm512_setzero_ps();
    }
    for (long q = 0; q < pairs; q++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)b);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(b + 16));
        __m512bh x;
        x = (__m512bh)_mm512_set1_epi32((int)a[0]); c00 = _mm512_dpbf16_ps(c00, x, b0); c01 = _mm512_dpbf16_ps(c01, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[1]); c10 = _mm512_dpbf16_ps(c10, x, b0); c11 = _mm512_dpbf16_ps(c11, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[2]); c20 = _mm512_dpbf16_ps(c20, x, b0); c21 = _mm512_dpbf16_ps(c21, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[3]); c30 = _mm512_dpbf16_ps(c30, x, b0); c31 = _mm512_dpbf16_ps(c31, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[4]); c40 = _mm512_dpbf16_ps(c40, x, b0); c41 = _mm512_dpbf16_ps(c41, x, b1);
        x = (__m512bh)_mm512_set1_epi32((int)a[5]); c50 = _mm512_dpbf16_ps(c50, x, b0); c51 = _mm512_dpbf16_ps(c51, x, b1);
        a += 6;
        b += 32;
    }
    _mm512_storeu_ps(c, c00);           _mm512_storeu_ps(c + 16, c01);
    _mm512_storeu_ps(c + ldc, c10);     _mm512_storeu_ps(c + ldc + 16, c11);
    _mm512_storeu_ps(c + 2 * ldc, c20); _mm512_storeu_ps(c + 2 * ldc + 16, c21);
    _mm512_storeu_ps(c + 3 * ldc, c30); _mm512_storeu_ps(c + 3 * ldc + 16, c31);
    _mm512_storeu_ps(c + 4 * ldc, c40); _mm512_storeu_ps(c + 4 * ldc + 16, c41);
    _mm512_storeu_ps(c + 5 * ldc, c50); _mm512_storeu_ps(c + 5 * ldc + 16, c51);
}
#else
/* Other architectures: the baseline build only (on arm64 it already uses NEON). */
int optim_cpu_supports(int isa) { return isa == OPTIM_ISA_BASELINE; }
int optim_install_kernels(int isa) { (void)isa; return 0; }
int optim_cpu_has_avx512bf16(void) { return 0; }
void optim_bf16_tile_6x32(long pairs, const uint32_t *a, const uint32_t *b, float *c, long ldc, int load) {
    (void)pairs; (void)a; (void)b; (void)c; (void)ldc; (void)load;
}
#endif
