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
#else
/* Other architectures: the baseline build only (on arm64 it already uses NEON). */
int optim_cpu_supports(int isa) { return isa == OPTIM_ISA_BASELINE; }
int optim_install_kernels(int isa) { (void)isa; return 0; }
#endif
