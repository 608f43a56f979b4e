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
 * A hint to bring the cache line at `address` in (x86 `prefetcht0`, arm64 `prfm pldl1keep`): the
 * multi-tensor loop asks for the start of the next tensor's streams while it updates the current
 * one, so that each small tensor does not begin with a cache miss per stream. Never faults.
 */
static inline __attribute__((always_inline)) void optim_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 3);
}

/*
 * a*b + c rounded once, lane by lane: one vfmadd where the target has FMA, libm's exact fmaf per
 * lane where it has not (the baseline x86-64 build), so every path gives the same bits. Only the
 * 8-bit kernels use it, where the reference (torch's add_(alpha) and addcmul_ on CPU) fuses.
 */
static inline __attribute__((always_inline)) optim_float16 optim_fma16(optim_float16 a, optim_float16 b, optim_float16 c) {
    return __builtin_elementwise_fma(a, b, c);
}

/*
 * The table look-ups of the 8-bit kernels, written as plain loops that LLVM turns into gathers
 * (vpgatherdd/vgatherdps on AVX2 and AVX-512) where the target has them; Swift's per-lane SIMD
 * subscripts and its checked float-to-integer conversion keep them scalar. Pure data movement:
 * the same values on every path.
 */
#include <stdint.h>
typedef int32_t optim_int16 __attribute__((ext_vector_type(16)));

/* table[codes[i]] for the 16 codes at `codes`. */
static inline __attribute__((always_inline)) optim_float16 optim_gather16(const float *table, const uint8_t *codes) {
    optim_float16 result;
    for (int i = 0; i < 16; i++) result[i] = table[codes[i]];
    return result;
}

/* out[i] = table[(int)bins[i]] (truncation toward zero) for i < 16; every bin in [0, 65535]. */
static inline __attribute__((always_inline)) void optim_lookup16(const uint8_t *table, optim_float16 bins, uint8_t *out) {
    optim_int16 index = __builtin_convertvector(bins, optim_int16);
    for (int i = 0; i < 16; i++) out[i] = table[index[i]];
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

/*
 * The bfloat16-operand GEMM's micro-kernel (optim_simd.c), for CPUs with AVX512-BF16
 * (optim_cpu_has_avx512bf16): C[6 x 32] (+)= packed A panel (pairs x 6 words) * packed B panel
 * (pairs x 32 words), each word two bfloat16 values (k even: low half; k odd: high half).
 */
int optim_cpu_has_avx512bf16(void);
void optim_bf16_tile_6x32(long pairs, const uint32_t *a, const uint32_t *b, float *c, long ldc, int load);

#endif
