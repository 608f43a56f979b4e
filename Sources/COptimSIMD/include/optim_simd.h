#ifndef OPTIM_SIMD_H
#define OPTIM_SIMD_H

/*
 * Vector operations that Swift's standard library scalarises. `SIMD16<Float>.squareRoot()` is
 * lowered lane by lane, each lane with a branch to libm's `sqrtf` for errno; clang's element-wise
 * builtin lowers to one vector square root. Swift imports the ext_vector_type as SIMD16<Float>,
 * and the static inline function is inlined into the Swift kernels.
 */
typedef float optim_float16 __attribute__((ext_vector_type(16)));

static inline __attribute__((always_inline)) optim_float16 optim_sqrt16(optim_float16 x) {
    return __builtin_elementwise_sqrt(x);
}

/* A spin-wait hint (x86 `pause`, arm64 `yield`): for the thread pool's workers watching for work. */
static inline __attribute__((always_inline)) void optim_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/*
 * Run-time choice of the kernels (optim_simd.c): instruction sets by number, whether this CPU
 * (and its OS) can run one, and installing the kernel module built for one when it is linked.
 */
#define OPTIM_ISA_BASELINE 0
#define OPTIM_ISA_AVX2 1
#define OPTIM_ISA_AVX512 2

/* 1 when the CPU reports every feature the instruction set's kernel module is compiled for. */
int optim_cpu_supports(int isa);
/* Calls the kernel module's installer; 1 if it is linked into this program, else 0. */
int optim_install_kernels(int isa);

#endif
