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
 * The table look-ups of the 8-bit kernels. Swift's per-lane SIMD subscripts and its checked
 * float-to-integer conversion keep them scalar, and LLVM does not turn the plain loops into
 * gathers either (it has no byte gather), so each instruction set gets its own form, chosen by the
 * macros of the CPU the including module is compiled for (the kernel modules' `-target-cpu`
 * reaches the Clang importer): permutes on AVX-512, gathers on AVX2, the plain loops elsewhere. Pure data
 * movement: the same values on every path.
 */
#include <stdint.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
typedef int32_t optim_int16 __attribute__((ext_vector_type(16)));
typedef float optim_float8 __attribute__((ext_vector_type(8)));

/* table[codes[i]] for the 16 codes at `codes`. */
static inline __attribute__((always_inline)) optim_float16 optim_gather16(const float *table, const uint8_t *codes) {
#if defined(__AVX512F__)
    /* The 256 entries are 16 registers (L1-resident loads that the loop can keep): bits 0-4 of a
       code pick from a pair by vpermt2ps, bits 5-7 choose among the 8 pairs. Faster than a
       gather on the machines measured (BENCHMARKS.md). */
    __m512i index = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)codes));
    __m512 r0 = _mm512_permutex2var_ps(_mm512_loadu_ps(table), index, _mm512_loadu_ps(table + 16));
    __m512 r1 = _mm512_permutex2var_ps(_mm512_loadu_ps(table + 32), index, _mm512_loadu_ps(table + 48));
    __m512 r2 = _mm512_permutex2var_ps(_mm512_loadu_ps(table + 64), index, _mm512_loadu_ps(table + 80));
    __m512 r3 = _mm512_permutex2var_ps(_mm512_loadu_ps(table + 96), index, _mm512_loadu_ps(table + 112));
    __m512 r4 = _mm512_permutex2var_ps(_mm512_loadu_ps(table + 128), index, _mm512_loadu_ps(table + 144));
    __m512 r5 = _mm512_permutex2var_ps(_mm512_loadu_ps(table + 160), index, _mm512_loadu_ps(table + 176));
    __m512 r6 = _mm512_permutex2var_ps(_mm512_loadu_ps(table + 192), index, _mm512_loadu_ps(table + 208));
    __m512 r7 = _mm512_permutex2var_ps(_mm512_loadu_ps(table + 224), index, _mm512_loadu_ps(table + 240));
    __mmask16 b5 = _mm512_test_epi32_mask(index, _mm512_set1_epi32(32));
    __mmask16 b6 = _mm512_test_epi32_mask(index, _mm512_set1_epi32(64));
    __mmask16 b7 = _mm512_test_epi32_mask(index, _mm512_set1_epi32(128));
    r0 = _mm512_mask_blend_ps(b5, r0, r1);
    r2 = _mm512_mask_blend_ps(b5, r2, r3);
    r4 = _mm512_mask_blend_ps(b5, r4, r5);
    r6 = _mm512_mask_blend_ps(b5, r6, r7);
    r0 = _mm512_mask_blend_ps(b6, r0, r2);
    r4 = _mm512_mask_blend_ps(b6, r4, r6);
    return (optim_float16)_mm512_mask_blend_ps(b7, r0, r4);
#elif defined(__AVX2__)
    __m128i bytes = _mm_loadu_si128((const __m128i *)codes);
    __m256 low = _mm256_i32gather_ps(table, _mm256_cvtepu8_epi32(bytes), 4);
    __m256 high = _mm256_i32gather_ps(table, _mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8)), 4);
    optim_float8 l = (optim_float8)low, h = (optim_float8)high;
    return __builtin_shufflevector(l, h, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#else
    optim_float16 result;
    for (int i = 0; i < 16; i++) result[i] = table[codes[i]];
    return result;
#endif
}

/*
 * out[i] = table[(int)bins[i]] (truncation toward zero) for i < 16; every bin in [0, 65535]. The
 * vector forms read 4 bytes at each bin and keep the first, so `table` has 3 bytes beyond its
 * last bin (DynamicQuantizationMap allocates them).
 */
static inline __attribute__((always_inline)) void optim_lookup16_at(const uint8_t *table, const optim_float16 *binsAt, uint8_t *out) {
    optim_float16 bins = *binsAt;
#if defined(__AVX512F__)
    __m512i index = _mm512_cvttps_epi32((__m512)bins);
    __m512i words = _mm512_i32gather_epi32(index, (const void *)table, 1);
    _mm_storeu_si128((__m128i *)out, _mm512_cvtepi32_epi8(words));
#elif defined(__AVX2__)
    optim_float8 l = __builtin_shufflevector(bins, bins, 0, 1, 2, 3, 4, 5, 6, 7);
    optim_float8 h = __builtin_shufflevector(bins, bins, 8, 9, 10, 11, 12, 13, 14, 15);
    __m256i mask = _mm256_set1_epi32(0xFF);
    __m256i low = _mm256_and_si256(_mm256_i32gather_epi32((const int *)table, _mm256_cvttps_epi32((__m256)l), 1), mask);
    __m256i high = _mm256_and_si256(_mm256_i32gather_epi32((const int *)table, _mm256_cvttps_epi32((__m256)h), 1), mask);
    /* 16-bit lanes low0-3 high0-3 low4-7 high4-7, put in order, then packed to bytes. */
    __m256i words = _mm256_permute4x64_epi64(_mm256_packus_epi32(low, high), 0xD8);
    _mm_storeu_si128((__m128i *)out, _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1)));
#else
    optim_int16 index = __builtin_convertvector(bins, optim_int16);
    for (int i = 0; i < 16; i++) out[i] = table[index[i]];
#endif
}

static inline __attribute__((always_inline)) void optim_lookup16(const uint8_t *table, optim_float16 bins, uint8_t *out) {
    optim_lookup16_at(table, &bins, out);
}

/*
 * The codes of 16 values at `values` (bitsandbytes' CPU quantizer, after the block's absmax):
 * v = x·inverse; NaN and values below −1 become −1, values above 1 become 1; the bin
 * ((v + 1)·0.5)·65535 + 0.5, rounded in float32 at each operation (no fused multiply-add),
 * truncated; its entry of `table` (optim_lookup16). The same bits on every path.
 */
/*
 * AVX-512: the code of each bin without touching the 64 KB table, by a branchless binary search
 * over `levels`, 18 rows of 16 int32 that DynamicQuantizationMap derives from the table. With
 * S[c] the first bin whose code is at least c (c = 1…255; 65536 when none), the code of a bin is
 * the largest c with S[c] ≤ bin, found as pos = 0, then for s = 128, 64, …, 1: pos += s when
 * S[pos + s] ≤ bin. At step s the candidates S[2s·k + s] are indexed by k = pos / 2s: rows 0-4
 * hold steps 128…8 (≤ 16 candidates, one vpermd), rows 5-6 step 4, rows 7-10 step 2, rows 11-18
 * step 1 (pairs by vpermt2d, chosen by the higher bits of k).
 */
#if defined(__AVX512F__)
static inline __attribute__((always_inline)) __m512i optim_code_search16(const int32_t *levels, __m512i bin) {
    __m512i pos = _mm512_setzero_si512();
    for (int level = 0; level < 5; level++) {
        int step = 128 >> level;
        __m512i k = _mm512_srli_epi32(pos, 8 - level);
        __m512i s = _mm512_permutexvar_epi32(k, _mm512_loadu_si512(levels + 16 * level));
        pos = _mm512_mask_add_epi32(pos, _mm512_cmple_epi32_mask(s, bin), pos, _mm512_set1_epi32(step));
    }
    {   /* step 4: k = pos / 8 < 32 */
        __m512i k = _mm512_srli_epi32(pos, 3);
        __m512i s = _mm512_permutex2var_epi32(_mm512_loadu_si512(levels + 80), k, _mm512_loadu_si512(levels + 96));
        pos = _mm512_mask_add_epi32(pos, _mm512_cmple_epi32_mask(s, bin), pos, _mm512_set1_epi32(4));
    }
    {   /* step 2: k = pos / 4 < 64 */
        __m512i k = _mm512_srli_epi32(pos, 2);
        __m512i a = _mm512_permutex2var_epi32(_mm512_loadu_si512(levels + 112), k, _mm512_loadu_si512(levels + 128));
        __m512i b = _mm512_permutex2var_epi32(_mm512_loadu_si512(levels + 144), k, _mm512_loadu_si512(levels + 160));
        __m512i s = _mm512_mask_blend_epi32(_mm512_test_epi32_mask(k, _mm512_set1_epi32(32)), a, b);
        pos = _mm512_mask_add_epi32(pos, _mm512_cmple_epi32_mask(s, bin), pos, _mm512_set1_epi32(2));
    }
    {   /* step 1: k = pos / 2 < 128 */
        __m512i k = _mm512_srli_epi32(pos, 1);
        __m512i a = _mm512_permutex2var_epi32(_mm512_loadu_si512(levels + 176), k, _mm512_loadu_si512(levels + 192));
        __m512i b = _mm512_permutex2var_epi32(_mm512_loadu_si512(levels + 208), k, _mm512_loadu_si512(levels + 224));
        __m512i c = _mm512_permutex2var_epi32(_mm512_loadu_si512(levels + 240), k, _mm512_loadu_si512(levels + 256));
        __m512i d = _mm512_permutex2var_epi32(_mm512_loadu_si512(levels + 272), k, _mm512_loadu_si512(levels + 288));
        __mmask16 b5 = _mm512_test_epi32_mask(k, _mm512_set1_epi32(32));
        a = _mm512_mask_blend_epi32(b5, a, b);
        c = _mm512_mask_blend_epi32(b5, c, d);
        __m512i s = _mm512_mask_blend_epi32(_mm512_test_epi32_mask(k, _mm512_set1_epi32(64)), a, c);
        pos = _mm512_mask_add_epi32(pos, _mm512_cmple_epi32_mask(s, bin), pos, _mm512_set1_epi32(1));
    }
    return pos;
}
#endif

/* Rows of 16 int32 in `levels` (optim_code_search16). */
#define OPTIM_CODE_SEARCH_ROWS 19

static inline __attribute__((always_inline)) void optim_quantize16(const uint8_t *table, const int32_t *levels, const float *values, float inverse, uint8_t *out) {
#pragma clang fp contract(off)
    optim_float16 x;
    __builtin_memcpy(&x, values, sizeof x);
    optim_float16 v = x * inverse;
#if defined(__AVX512F__)
    /* maxps returns its second operand when either is NaN. */
    v = (optim_float16)_mm512_min_ps(_mm512_max_ps((__m512)v, _mm512_set1_ps(-1.0f)), _mm512_set1_ps(1.0f));
#else
    v = v >= -1.0f ? v : -1.0f;
    v = v > 1.0f ? 1.0f : v;
#endif
    optim_float16 half = (v + 1.0f) * 0.5f;
    optim_float16 bins = half * 65535.0f + 0.5f;
#if defined(__AVX512F__)
    __m512i codes = optim_code_search16(levels, _mm512_cvttps_epi32((__m512)bins));
    _mm_storeu_si128((__m128i *)out, _mm512_cvtepi32_epi8(codes));
#else
    (void)levels;
    optim_lookup16_at(table, &bins, out);
#endif
}

/*
 * torchao's 4-bit state (FourBitQuantization in Optim): 16 codes packed in 8 bytes, element 2k in
 * the high nibble of byte k and element 2k+1 in the low one, into a 16-entry table.
 * optim_int4_decode16 gives table[code] for each (AVX-512: one permute; AVX2: two permutes and a
 * blend per 8 lanes; elsewhere the plain loop): pure data movement, the same values on every
 * path. optim_int4_encode16 gives the codes of values[i] / scale as torchao's
 * quantize_4bit_with_qmap does: its branchless binary search finds the largest k with
 * x >= table[k] (0 when there is none, NaN included), which for an ascending table is the count of
 * k in 1...15 with x >= table[k] (AVX2 searches as torchao does, by permutes; the other paths
 * count by a scan of the table); then it rounds up when x - table[c] >= (table[c+1] - table[c]) * 0.5
 * (c + 1 capped at 15). Vector arithmetic without contraction: the same bits on every path.
 */
typedef uint8_t optim_byte8 __attribute__((ext_vector_type(8)));
typedef uint8_t optim_byte16 __attribute__((ext_vector_type(16)));

static inline __attribute__((always_inline)) optim_byte16 optim_int4_unpack16(const uint8_t *packed) {
    optim_byte8 bytes;
    __builtin_memcpy(&bytes, packed, sizeof bytes);
    optim_byte8 high = bytes >> 4, low = bytes & (uint8_t)15;
    return __builtin_shufflevector(high, low, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
}

#if defined(__AVX2__)
/* table[index] for 8 lanes of indices in 0...15, the table's two halves in registers: bit 3 of
   the index, moved to the sign bit, picks the second half. */
static inline __attribute__((always_inline)) __m256 optim_int4_lookup8(__m256 first, __m256 second, __m256i index) {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(first, index), _mm256_permutevar8x32_ps(second, index),
                            _mm256_castsi256_ps(_mm256_slli_epi32(index, 28)));
}
#endif

static inline __attribute__((always_inline)) optim_float16 optim_int4_decode16(const float *table, const uint8_t *packed) {
    optim_byte16 codes = optim_int4_unpack16(packed);
#if defined(__AVX512F__)
    __m128i bytes;
    __builtin_memcpy(&bytes, &codes, sizeof bytes);
    return (optim_float16)_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(bytes), _mm512_loadu_ps(table));
#elif defined(__AVX2__)
    __m128i bytes;
    __builtin_memcpy(&bytes, &codes, sizeof bytes);
    __m256 first = _mm256_loadu_ps(table), second = _mm256_loadu_ps(table + 8);
    __m256i i0 = _mm256_cvtepu8_epi32(bytes), i1 = _mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8));
    __m256 r0 = optim_int4_lookup8(first, second, i0), r1 = optim_int4_lookup8(first, second, i1);
    optim_float8 l = (optim_float8)r0, h = (optim_float8)r1;
    return __builtin_shufflevector(l, h, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#else
    optim_float16 result;
    for (int i = 0; i < 16; i++) result[i] = table[codes[i]];
    return result;
#endif
}

static inline __attribute__((always_inline)) void optim_int4_encode16(const float *table, const float *values, float scale, uint8_t *packed) {
#pragma clang fp contract(off)
    optim_float16 x;
    __builtin_memcpy(&x, values, sizeof x);
    optim_float16 y = x / scale;
    optim_int16 code;
    optim_float16 down, up;
#if defined(__AVX2__) && !defined(__AVX512F__)
    {
        /* The same count as the scan below, for an ascending table (both maps are): a branchless
           binary search by steps 8, 4, 2, 1, each probe a 16-entry look-up (two permutes and a
           blend), then the entries at the code and the next one (capped at 15). */
        const __m256 first = _mm256_loadu_ps(table), second = _mm256_loadu_ps(table + 8);
        const __m256i fifteen = _mm256_set1_epi32(15), one = _mm256_set1_epi32(1);
        __m256 half[2], downs[2], ups[2];
        __m256i codes[2];
        __builtin_memcpy(half, &y, sizeof half);
        for (int h = 0; h < 2; h++) {
            __m256i c = _mm256_setzero_si256();
            for (int step = 8; step >= 1; step >>= 1) {
                __m256i probe = _mm256_add_epi32(c, _mm256_set1_epi32(step));
                __m256 entry = optim_int4_lookup8(first, second, probe);
                __m256i reached = _mm256_castps_si256(_mm256_cmp_ps(half[h], entry, _CMP_GE_OQ));  /* false for NaN */
                c = _mm256_add_epi32(c, _mm256_and_si256(reached, _mm256_set1_epi32(step)));
            }
            codes[h] = c;
            downs[h] = optim_int4_lookup8(first, second, c);
            ups[h] = optim_int4_lookup8(first, second, _mm256_min_epi32(_mm256_add_epi32(c, one), fifteen));
        }
        __builtin_memcpy(&code, codes, sizeof code);
        __builtin_memcpy(&down, downs, sizeof down);
        __builtin_memcpy(&up, ups, sizeof up);
    }
#else
    code = 0;
    down = table[0];
    up = table[1];
    for (int k = 1; k < 16; k++) {
        optim_int16 reached = y >= table[k];  /* -1 where true */
        code -= reached;
        /* Selects by bit masks, written out: a function taking the 16-lane mask would be a
           512-bit argument, which Clang warns about where AVX-512 is off. */
        optim_int16 entry = (optim_int16)(optim_float16)table[k], next = (optim_int16)(optim_float16)table[k < 15 ? k + 1 : 15];
        down = (optim_float16)((entry & reached) | ((optim_int16)down & ~reached));
        up = (optim_float16)((next & reached) | ((optim_int16)up & ~reached));
    }
#endif
    optim_int16 roundUp = (y - down) >= (up - down) * 0.5f;
    optim_int16 capped = code < 15;
    code -= roundUp & capped;
    optim_byte16 bytes = __builtin_convertvector(code, optim_byte16);
    optim_byte8 even = __builtin_shufflevector(bytes, bytes, 0, 2, 4, 6, 8, 10, 12, 14);
    optim_byte8 odd = __builtin_shufflevector(bytes, bytes, 1, 3, 5, 7, 9, 11, 13, 15);
    optim_byte8 result = (optim_byte8)((even << 4) | odd);
    __builtin_memcpy(packed, &result, sizeof result);
}

/*
 * bfloat16 state (BFloat16State in Optim): widening is exact (the bits shifted up by 16);
 * narrowing rounds to nearest even as torch's float -> bfloat16 does (add 0x7FFF plus the lowest
 * kept bit, keep the top 16 bits), NaN -> 0x7FC0. Vector code for the including module's CPU,
 * the scalar loop for the rest.
 */
static inline __attribute__((always_inline)) uint16_t optim_bf16_round(float x) {
    uint32_t bits;
    __builtin_memcpy(&bits, &x, 4);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
    return (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

static inline __attribute__((always_inline)) void optim_bf16_widen(const uint16_t *source, float *target, long count) {
    long i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= count; i += 16) {
        __m512i wide = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(source + i))), 16);
        _mm512_storeu_si512((void *)(target + i), wide);
    }
#elif defined(__AVX2__)
    for (; i + 8 <= count; i += 8) {
        __m256i wide = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(source + i))), 16);
        _mm256_storeu_si256((__m256i *)(target + i), wide);
    }
#endif
    for (; i < count; i++) {
        uint32_t bits = (uint32_t)source[i] << 16;
        __builtin_memcpy(target + i, &bits, 4);
    }
}

static inline __attribute__((always_inline)) void optim_bf16_narrow(const float *source, uint16_t *target, long count) {
    long i = 0;
#if defined(__AVX512F__)
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7FFF), nan = _mm512_set1_epi32(0x7FC0);
    for (; i + 16 <= count; i += 16) {
        __m512 x = _mm512_loadu_ps(source + i);
        __m512i bits = _mm512_castps_si512(x);
        __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(bits, 16), one))), 16);
        rounded = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), rounded, nan);
        _mm256_storeu_si256((__m256i *)(target + i), _mm512_cvtepi32_epi16(rounded));
    }
#elif defined(__AVX2__)
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF), nan = _mm256_set1_epi32(0x7FC0);
    for (; i + 8 <= count; i += 8) {
        __m256 x = _mm256_loadu_ps(source + i);
        __m256i bits = _mm256_castps_si256(x);
        __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(bits, 16), one))), 16);
        rounded = _mm256_blendv_epi8(rounded, nan, _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
        /* packus works within 128-bit lanes: pack, then bring the two low quarters together. */
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0x08);
        _mm_storeu_si128((__m128i *)(target + i), _mm256_castsi256_si128(packed));
    }
#endif
    for (; i < count; i++) target[i] = optim_bf16_round(source[i]);
}

/*
 * bfloat16 parameters (BFloat16Parameters in Optim): float32 values rounded in place to the
 * bfloat16 they would be stored as. Nearest even is torch's float -> bfloat16 (as above). The
 * stochastic rounding is torchao's _fp32_to_bf16_sr (torchao 0.18, torchao/optim/quant_utils.py):
 * keep the top 16 bits and add one to them (away from zero) when a uniform 16-bit random number
 * r is below the 16 bits dropped, so the value rounds up with probability (dropped bits) / 2^16;
 * then torch's .bfloat16() of that float turns NaN into 0xFFFF. (torch's vectorised CPU conversion
 * gives every NaN as 0xFFFF, its scalar c10::BFloat16 as 0x7FC0; a tensor takes the vector path,
 * so parameters follow it, as the fixtures show. Nearest even the same way.) The random number of element i
 * is counter-based, r = fmix32(fmix32(i mod 2^32 ^ k0) ^ k1) >> 16, with fmix32 MurmurHash3's
 * finaliser and k0, k1 from the seed, the tensor and the step (BFloat16Parameters.key): the same
 * bits whatever the chunking or thread, and again after a resume.
 */
static inline __attribute__((always_inline)) uint32_t optim_fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

static inline __attribute__((always_inline)) uint32_t optim_bf16_sr_random(uint32_t index, uint32_t k0, uint32_t k1) {
    return optim_fmix32(optim_fmix32(index ^ k0) ^ k1) >> 16;
}

static inline __attribute__((always_inline)) uint32_t optim_bf16_sr_bits(uint32_t bits, uint32_t random) {
    uint32_t rounded = (bits & 0xFFFF0000u) + (random < (bits & 0xFFFFu) ? 0x10000u : 0u);
    return (rounded & 0x7FFFFFFFu) > 0x7F800000u ? 0xFFFF0000u : rounded;
}

static inline __attribute__((always_inline)) void optim_bf16_round_values_nearest(float *values, long count) {
    for (long i = 0; i < count; i++) {
        uint32_t bits;
        __builtin_memcpy(&bits, values + i, 4);
        uint32_t rounded = (bits & 0x7FFFFFFFu) > 0x7F800000u ? 0xFFFF0000u : ((bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u);
        __builtin_memcpy(values + i, &rounded, 4);
    }
}

/* Elements first ..< first + count of a tensor, at values (its element `first`). */
static inline __attribute__((always_inline)) void optim_bf16_round_values_stochastic(float *values, long count, long first,
                                                                                    uint32_t k0, uint32_t k1) {
    uint32_t index = (uint32_t)first;
    long i = 0;
#if defined(__AVX512F__)
    {
        const __m512i m1 = _mm512_set1_epi32((int)0x85EBCA6Bu), m2 = _mm512_set1_epi32((int)0xC2B2AE35u);
        const __m512i key0 = _mm512_set1_epi32((int)k0), key1 = _mm512_set1_epi32((int)k1);
        const __m512i low = _mm512_set1_epi32(0xFFFF), high = _mm512_set1_epi32((int)0xFFFF0000u), one = _mm512_set1_epi32(0x10000);
        const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF), infinity = _mm512_set1_epi32(0x7F800000), nan = _mm512_set1_epi32((int)0xFFFF0000u);
        __m512i lanes = _mm512_add_epi32(_mm512_set1_epi32((int)index), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        const __m512i step = _mm512_set1_epi32(16);
        for (; i + 16 <= count; i += 16) {
            __m512i h = _mm512_xor_si512(lanes, key0);
            h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16)); h = _mm512_mullo_epi32(h, m1);
            h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 13)); h = _mm512_mullo_epi32(h, m2);
            h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
            h = _mm512_xor_si512(h, key1);
            h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16)); h = _mm512_mullo_epi32(h, m1);
            h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 13)); h = _mm512_mullo_epi32(h, m2);
            h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
            __m512i random = _mm512_srli_epi32(h, 16);
            __m512i bits = _mm512_loadu_si512((const void *)(values + i));
            __mmask16 up = _mm512_cmplt_epu32_mask(random, _mm512_and_si512(bits, low));
            __m512i rounded = _mm512_mask_add_epi32(_mm512_and_si512(bits, high), up, _mm512_and_si512(bits, high), one);
            __mmask16 isnan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(rounded, magnitude), infinity);
            _mm512_storeu_si512((void *)(values + i), _mm512_mask_blend_epi32(isnan, rounded, nan));
            lanes = _mm512_add_epi32(lanes, step);
        }
        index += (uint32_t)i;
    }
#elif defined(__AVX2__)
    {
        const __m256i m1 = _mm256_set1_epi32((int)0x85EBCA6Bu), m2 = _mm256_set1_epi32((int)0xC2B2AE35u);
        const __m256i key0 = _mm256_set1_epi32((int)k0), key1 = _mm256_set1_epi32((int)k1);
        const __m256i low = _mm256_set1_epi32(0xFFFF), high = _mm256_set1_epi32((int)0xFFFF0000u), one = _mm256_set1_epi32(0x10000);
        const __m256i magnitude = _mm256_set1_epi32(0x7FFFFFFF), infinity = _mm256_set1_epi32(0x7F800000), nan = _mm256_set1_epi32((int)0xFFFF0000u);
        __m256i lanes = _mm256_add_epi32(_mm256_set1_epi32((int)index), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const __m256i step = _mm256_set1_epi32(8);
        for (; i + 8 <= count; i += 8) {
            __m256i h = _mm256_xor_si256(lanes, key0);
            h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16)); h = _mm256_mullo_epi32(h, m1);
            h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 13)); h = _mm256_mullo_epi32(h, m2);
            h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
            h = _mm256_xor_si256(h, key1);
            h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16)); h = _mm256_mullo_epi32(h, m1);
            h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 13)); h = _mm256_mullo_epi32(h, m2);
            h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
            __m256i random = _mm256_srli_epi32(h, 16);  /* < 2^16: a signed compare is exact */
            __m256i bits = _mm256_loadu_si256((const __m256i *)(values + i));
            __m256i up = _mm256_cmpgt_epi32(_mm256_and_si256(bits, low), random);
            __m256i rounded = _mm256_add_epi32(_mm256_and_si256(bits, high), _mm256_and_si256(up, one));
            /* NaN: magnitude above 0x7F800000 (as signed: magnitudes are non-negative). */
            __m256i isnan = _mm256_cmpgt_epi32(_mm256_and_si256(rounded, magnitude), infinity);
            _mm256_storeu_si256((__m256i *)(values + i), _mm256_blendv_epi8(rounded, nan, isnan));
            lanes = _mm256_add_epi32(lanes, step);
        }
        index += (uint32_t)i;
    }
#endif
    for (; i < count; i++, index++) {
        uint32_t bits;
        __builtin_memcpy(&bits, values + i, 4);
        uint32_t rounded = optim_bf16_sr_bits(bits, optim_bf16_sr_random(index, k0, k1));
        __builtin_memcpy(values + i, &rounded, 4);
    }
}

/*
 * bfloat16 parameters with float32 master weights (BFloat16Parameters.joinMaster / splitMaster).
 * The float32 master m is held exactly as two 16-bit halves: the parameter p, m rounded to the
 * nearest bfloat16 with ties away from zero (the top 16 bits of bits(m) + 0x8000), and the
 * remainder r = bits(m) - bits(p), a signed 16-bit integer in [-2^15, 2^15). Joining gives
 * bits(m) = bits(p) + r back, bit for bit, across binades and signed zeros. A NaN master is held
 * as p = 0xFFFF0000 (torch's NaN of a tensor), r = 0. Plain loops: each kernel module
 * vectorises them for its CPU.
 */
static inline __attribute__((always_inline)) void optim_bf16_master_join(float *values, const int16_t *remainder, long count) {
    for (long i = 0; i < count; i++) {
        uint32_t bits;
        __builtin_memcpy(&bits, values + i, 4);
        bits += (uint32_t)(int32_t)remainder[i];
        __builtin_memcpy(values + i, &bits, 4);
    }
}

static inline __attribute__((always_inline)) void optim_bf16_master_split(float *values, int16_t *remainder, long count) {
    for (long i = 0; i < count; i++) {
        uint32_t bits;
        __builtin_memcpy(&bits, values + i, 4);
        uint32_t high = (bits + 0x8000u) & 0xFFFF0000u;
        int nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
        uint32_t parameter = nan ? 0xFFFF0000u : high;
        remainder[i] = nan ? (int16_t)0 : (int16_t)(int32_t)(bits - high);
        __builtin_memcpy(values + i, &parameter, 4);
    }
}

/*
 * bfloat16 parameters with Kahan-compensated updates (BFloat16Parameters.roundCompensated): the
 * step's float32 result x and the compensation c (a bfloat16, what earlier roundings lost) sum
 * to s = x + c; the parameter becomes s rounded to nearest even (NaN -> 0xFFFF0000) and c the
 * bfloat16 nearest to s - parameter, or 0 where that is not finite.
 */
static inline __attribute__((always_inline)) void optim_bf16_round_compensated(float *values, uint16_t *compensation, long count) {
    for (long i = 0; i < count; i++) {
        uint32_t cbits = (uint32_t)compensation[i] << 16, sbits, pbits, ebits;
        float c, s, p, e;
        __builtin_memcpy(&c, &cbits, 4);
        s = values[i] + c;
        __builtin_memcpy(&sbits, &s, 4);
        pbits = (sbits & 0x7FFFFFFFu) > 0x7F800000u ? 0xFFFF0000u : ((sbits + 0x7FFFu + ((sbits >> 16) & 1u)) & 0xFFFF0000u);
        __builtin_memcpy(&p, &pbits, 4);
        e = s - p;
        __builtin_memcpy(&ebits, &e, 4);
        uint16_t rounded = (uint16_t)((ebits + 0x7FFFu + ((ebits >> 16) & 1u)) >> 16);
        compensation[i] = (ebits & 0x7FFFFFFFu) >= 0x7F800000u ? (uint16_t)0 : rounded;
        values[i] = p;
    }
}

/* The largest lane of 16 values that hold no NaN. */
static inline __attribute__((always_inline)) float optim_reduce_max16(optim_float16 x) {
    return __builtin_reduce_max(x);
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
