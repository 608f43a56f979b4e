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

#endif
