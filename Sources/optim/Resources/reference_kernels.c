/*
 * C reference kernels for `optim bench`: the same per-element arithmetic as the Swift update
 * rules, compiled by the benchmark with -O3 -march=native -fopenmp. They define the roofline:
 * how fast this machine moves the bytes an optimizer step must read and write.
 * One flat pass per step; OpenMP static scheduling over the elements.
 *
 * Every kernel has the signature of `KERNEL` below: the parameter, the gradient, up to three
 * state buffers (unused ones may be any pointer), the element count and the step's scalars `c`,
 * in the order each kernel documents. Which kernel an optimizer is timed against, and with which
 * scalars, is in its registry entry (`OptimizerInfo.benchmark`). A `GLOBAL_KERNEL` (Prodigy) also
 * takes `double *global`: state of the whole model that it reads and updates between its passes.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

void ref_set_threads(int threads) { omp_set_num_threads(threads); }

static inline float lerpf(float start, float end, float weight) {
    return fabsf(weight) < 0.5f ? start + weight * (end - start) : end - (end - start) * (1.0f - weight);
}

static inline float signf(float x) { return (float)((x > 0.0f) - (x < 0.0f)); }

#define KERNEL(name) void ref_##name(float *restrict p, const float *restrict g, float *restrict s0, \
                                    float *restrict s1, float *restrict s2, float *restrict s3, long n, \
                                    const float *restrict c)

/* c: neg_lr, momentum, 1 - dampening, weight_decay, nesterov (0/1). s0: momentum_buffer. */
KERNEL(sgd) {
    const float neg_lr = c[0], momentum = c[1], one_minus_dampening = c[2], weight_decay = c[3];
    const int nesterov = c[4] != 0.0f;
    (void)s1; (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i] + weight_decay * p[i];
        float b = s0[i] * momentum + one_minus_dampening * grad;
        s0[i] = b;
        grad = nesterov ? grad + momentum * b : b;
        p[i] = p[i] + neg_lr * grad;
    }
}

/* c: decay, 1 - beta1, beta2, 1 - beta2, sqrt(bias_correction2), eps, -lr/bias_correction1.
   s0: exp_avg, s1: exp_avg_sq. */
KERNEL(adam) {
    const float decay = c[0], one_minus_beta1 = c[1], beta2 = c[2], one_minus_beta2 = c[3];
    const float bias_correction2_sqrt = c[4], eps = c[5], neg_step_size = c[6];
    (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float param = p[i] * decay;
        float grad = g[i];
        float mi = lerpf(s0[i], grad, one_minus_beta1);
        float vi = s1[i] * beta2 + one_minus_beta2 * grad * grad;
        s0[i] = mi;
        s1[i] = vi;
        p[i] = param + neg_step_size * mi / (sqrtf(vi) / bias_correction2_sqrt + eps);
    }
}

/* c: decay, beta1, 1 - beta1, beta2, 1 - beta2, -lr. s0: exp_avg. */
KERNEL(lion) {
    const float decay = c[0], beta1 = c[1], one_minus_beta1 = c[2], beta2 = c[3], one_minus_beta2 = c[4], neg_lr = c[5];
    (void)s1; (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i], mi = s0[i];
        p[i] = p[i] * decay + neg_lr * signf(mi * beta1 + one_minus_beta1 * grad);
        s0[i] = mi * beta2 + one_minus_beta2 * grad;
    }
}

/* c: eps, clip, 1 - beta1, beta2, 1 - beta2, -lr. s0: exp_avg, s1: exp_avg_sq. */
KERNEL(adopt) {
    const float eps = c[0], clip = c[1], one_minus_beta1 = c[2], beta2 = c[3], one_minus_beta2 = c[4], neg_lr = c[5];
    (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i], vi = s1[i];
        float root = sqrtf(vi);
        float normed = grad / (root < eps ? eps : root);
        normed = normed < -clip ? -clip : (normed > clip ? clip : normed);
        float mi = lerpf(s0[i], normed, one_minus_beta1);
        s0[i] = mi;
        p[i] = p[i] + neg_lr * mi;
        s1[i] = vi * beta2 + one_minus_beta2 * grad * grad;
    }
}

/* c: -clr, eps. s0: sum. */
KERNEL(adagrad) {
    const float neg_clr = c[0], eps = c[1];
    (void)s1; (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i];
        float sum = s0[i] + grad * grad;
        s0[i] = sum;
        p[i] = p[i] + neg_clr * grad / (sqrtf(sum) + eps);
    }
}

/* c: -lr, alpha, 1 - alpha, eps. s0: square_avg. */
KERNEL(rmsprop) {
    const float neg_lr = c[0], alpha = c[1], one_minus_alpha = c[2], eps = c[3];
    (void)s1; (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i];
        float v = s0[i] * alpha + one_minus_alpha * grad * grad;
        s0[i] = v;
        p[i] = p[i] + neg_lr * grad / (sqrtf(v) + eps);
    }
}

/* c: -lr/(1 - beta1^t), 1 - beta1, beta2, eps. s0: exp_avg, s1: exp_inf. */
KERNEL(adamax) {
    const float neg_step = c[0], one_minus_beta1 = c[1], beta2 = c[2], eps = c[3];
    (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i];
        float m = lerpf(s0[i], grad, one_minus_beta1);
        float decayed = s1[i] * beta2, magnitude = fabsf(grad) + eps;
        float u = decayed > magnitude ? decayed : magnitude;
        s0[i] = m;
        s1[i] = u;
        p[i] = p[i] + neg_step * m / u;
    }
}

/* c: 1 - beta1, beta2, 1 - beta2, bias_correction1, lr, sqrt(bias_correction2), rectification, eps.
   s0: exp_avg, s1: exp_avg_sq (the rectified branch, taken after the first few steps). */
KERNEL(radam) {
    const float one_minus_beta1 = c[0], beta2 = c[1], one_minus_beta2 = c[2], bias_correction1 = c[3], lr = c[4];
    const float bias_correction2_sqrt = c[5], rect = c[6], eps = c[7];
    (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i];
        float m = lerpf(s0[i], grad, one_minus_beta1);
        float v = s1[i] * beta2 + one_minus_beta2 * grad * grad;
        s0[i] = m;
        s1[i] = v;
        p[i] = p[i] - m / bias_correction1 * lr * (bias_correction2_sqrt / (sqrtf(v) + eps)) * rect;
    }
}

/* c: 1 - beta1, beta2, 1 - beta2, bias_correction2, eps, gradient factor, moment factor.
   s0: exp_avg, s1: exp_avg_sq. */
KERNEL(nadam) {
    const float one_minus_beta1 = c[0], beta2 = c[1], one_minus_beta2 = c[2], bias_correction2 = c[3], eps = c[4];
    const float gradient_factor = c[5], moment_factor = c[6];
    (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i];
        float m = lerpf(s0[i], grad, one_minus_beta1);
        float v = s1[i] * beta2 + one_minus_beta2 * grad * grad;
        s0[i] = m;
        s1[i] = v;
        float d = sqrtf(v / bias_correction2) + eps;
        float param = p[i] + gradient_factor * grad / d;
        p[i] = param + moment_factor * m / d;
    }
}

/* c: -lr, rho, 1 - rho, eps. s0: square_avg, s1: acc_delta. */
KERNEL(adadelta) {
    const float neg_lr = c[0], rho = c[1], one_minus_rho = c[2], eps = c[3];
    (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i];
        float v = s0[i] * rho + one_minus_rho * grad * grad;
        float u = s1[i];
        float delta = sqrtf(u + eps) / sqrtf(v + eps) * grad;
        s0[i] = v;
        s1[i] = u * rho + one_minus_rho * delta * delta;
        p[i] = p[i] + neg_lr * delta;
    }
}

/* c: eta-, eta+, step size minimum, maximum. s0: prev, s1: step_size. */
KERNEL(rprop) {
    const float eta_minus = c[0], eta_plus = c[1], lo = c[2], hi = c[3];
    (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i], product = grad * s0[i];
        float factor = product > 0.0f ? eta_plus : (product < 0.0f ? eta_minus : 1.0f);
        float step = s1[i] * factor;
        step = step < lo ? lo : (step > hi ? hi : step);
        grad = factor == eta_minus ? 0.0f : grad;
        s1[i] = step;
        s0[i] = grad;
        p[i] = p[i] - signf(grad) * step;
    }
}

/* c: 1 - lambd*eta, -eta, mu. s0: ax (averaging on). */
KERNEL(asgd) {
    const float decay = c[0], neg_eta = c[1], mu = c[2];
    (void)s1; (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float param = p[i] * decay + neg_eta * g[i];
        p[i] = param;
        s0[i] = s0[i] + (param - s0[i]) * mu;
    }
}

/* c: 1 - beta1, 1 - beta2, eps, -lr*sqrt(bias_correction2)/bias_correction1. s0: exp_avg,
   s1: exp_avg_sq. Every element present (a dense gradient without zeros). */
KERNEL(sparse_adam) {
    const float one_minus_beta1 = c[0], one_minus_beta2 = c[1], eps = c[2], neg_step = c[3];
    (void)s2;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i], m = s0[i], v = s1[i];
        m = m + (grad - m) * one_minus_beta1;
        v = v + (grad * grad - v) * one_minus_beta2;
        s0[i] = m;
        s1[i] = v;
        p[i] = p[i] + m / (sqrtf(v) + eps) * neg_step;
    }
}

/* Lookahead's synchronisation. c: alpha, 1 - alpha. */
void ref_lookahead_sync(float *restrict p, float *restrict slow, long n, const float *restrict c) {
    const float alpha = c[0], one_minus_alpha = c[1];
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float fast = p[i] * alpha + one_minus_alpha * slow[i];
        p[i] = fast;
        slow[i] = fast;
    }
}

/* c: beta2, 1 - beta2, 1 - beta2^k, eps, weight_decay, ckp1, lr*(beta1*(1 - ckp1) - 1), -lr.
   s0: z, s1: exp_avg_sq; p holds y. */
KERNEL(schedule_free_adamw) {
    const float beta2 = c[0], one_minus_beta2 = c[1], bias_correction2 = c[2], eps = c[3], decay = c[4];
    const float ckp1 = c[5], y_step = c[6], neg_lr = c[7];
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i], y = p[i], z = s0[i];
        float v = s1[i] * beta2 + one_minus_beta2 * grad * grad;
        s1[i] = v;
        float u = grad / (sqrtf(v / bias_correction2) + eps);
        if (decay != 0.0f) u = u + decay * y;
        p[i] = lerpf(y, z, ckp1) + y_step * u;
        s0[i] = z + neg_lr * u;
    }
}

/* c: weight_decay, ckp1, lr*(momentum*(1 - ckp1) - 1), -lr. s0: z; p holds y. */
KERNEL(schedule_free_sgd) {
    const float decay = c[0], ckp1 = c[1], y_step = c[2], neg_lr = c[3];
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float y = p[i], z = s0[i];
        float u = g[i];
        if (decay != 0.0f) u = u + decay * y;
        p[i] = lerpf(y, z, ckp1) + y_step * u;
        s0[i] = z + neg_lr * u;
    }
}

/* c: b1, 1 - b1, b2, 1 - b2, b3, 1 - b3, 1 - b1^t, 1 - b2^t, 1 - b3^t, eps_root, eps, weight_decay,
   -lr. s0: m, s1: v, s2: n, s3: the previous gradient (steady state: t > 1). */
KERNEL(adan) {
    const float b1 = c[0], one_minus_b1 = c[1], b2 = c[2], one_minus_b2 = c[3], b3 = c[4], one_minus_b3 = c[5];
    const float bc1 = c[6], bc2 = c[7], bc3 = c[8], eps_root = c[9], eps = c[10], decay = c[11], neg_lr = c[12];
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i], x = p[i];
        float d = grad - s3[i];
        float m = one_minus_b1 * grad + b1 * s0[i];
        float v = one_minus_b2 * d + b2 * s1[i];
        float corrected = grad + one_minus_b2 * d;
        float second = one_minus_b3 * (corrected * corrected) + b3 * s2[i];
        s0[i] = m;
        s1[i] = v;
        s2[i] = second;
        s3[i] = grad;
        float u = (m / bc1 + one_minus_b2 * (v / bc2)) / (sqrtf(second / bc3 + eps_root) + eps);
        u = u + decay * x;
        p[i] = x + u * neg_lr;
    }
}

/* c: beta1, 1 - beta1, beta2, 1 - beta2, beta3_t, 1 - beta3_t, alpha_t, 1 - beta1^t,
   sqrt(1 - beta2^t), eps, decay (1 - lr*weight_decay; 1 for none), -lr.
   s0: m1, s1: m2, s2: nu. */
KERNEL(ademamix) {
    const float beta1 = c[0], one_minus_beta1 = c[1], beta2 = c[2], one_minus_beta2 = c[3];
    const float beta3 = c[4], one_minus_beta3 = c[5], alpha = c[6], correction1 = c[7];
    const float correction2 = c[8], eps = c[9], decay = c[10], neg_lr = c[11];
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i];
        float m1 = s0[i] * beta1 + one_minus_beta1 * grad;
        float m2 = s1[i] * beta3 + one_minus_beta3 * grad;
        float nu = s2[i] * beta2 + one_minus_beta2 * grad * grad;
        s0[i] = m1;
        s1[i] = m2;
        s2[i] = nu;
        float mixed = m1 / correction1 + alpha * m2;
        float adaptive = sqrtf(nu) / correction2 + eps;
        p[i] = p[i] * decay + neg_lr * (mixed / adaptive);
    }
}

/* LAMB, two passes over the tensor: the moments and the sums of squares of p and of the update
   u (recomputed, not stored), then u again and the step scaled by the trust ratio ||p||/||u||
   (1 when either is 0). c: beta1, 1 - beta1, beta2, 1 - beta2, 1 - beta1^t, 1 - beta2^t, eps,
   eps_root, weight_decay, -lr. s0: mu, s1: nu. */
KERNEL(lamb) {
    const float beta1 = c[0], one_minus_beta1 = c[1], beta2 = c[2], one_minus_beta2 = c[3];
    const float correction1 = c[4], correction2 = c[5], eps = c[6], eps_root = c[7];
    const float weight_decay = c[8], neg_lr = c[9];
    double pp = 0.0, uu = 0.0;
    (void)s2;
    #pragma omp parallel for simd schedule(static) reduction(+:pp, uu)
    for (long i = 0; i < n; i++) {
        float grad = g[i];
        float m = one_minus_beta1 * grad + beta1 * s0[i];
        float v = one_minus_beta2 * (grad * grad) + beta2 * s1[i];
        s0[i] = m;
        s1[i] = v;
        float u = (m / correction1) / (sqrtf(v / correction2 + eps_root) + eps) + weight_decay * p[i];
        pp += (double)p[i] * p[i];
        uu += (double)u * u;
    }
    const float p_norm = (float)sqrt(pp), u_norm = (float)sqrt(uu);
    const float ratio = (p_norm == 0.0f || u_norm == 0.0f) ? 1.0f : p_norm / u_norm;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float u = (s0[i] / correction1) / (sqrtf(s1[i] / correction2 + eps_root) + eps) + weight_decay * p[i];
        p[i] = p[i] + (u * ratio) * neg_lr;
    }
}

/* LARS, two passes over the tensor: the sums of squares of p and of u = g + weight_decay*p,
   then the step scaled by the trust ratio tc*||p||/(||u|| + eps) (1 when either norm is 0)
   through the momentum buffer. c: weight_decay, trust_coefficient, eps, momentum,
   nesterov (0/1), -lr. s0: trace. */
KERNEL(lars) {
    const float weight_decay = c[0], trust_coefficient = c[1], eps = c[2], momentum = c[3];
    const int nesterov = c[4] != 0.0f;
    const float neg_lr = c[5];
    double pp = 0.0, uu = 0.0;
    (void)s1; (void)s2;
    #pragma omp parallel for simd schedule(static) reduction(+:pp, uu)
    for (long i = 0; i < n; i++) {
        float u = g[i] + weight_decay * p[i];
        pp += (double)p[i] * p[i];
        uu += (double)u * u;
    }
    const float p_norm = (float)sqrt(pp), u_norm = (float)sqrt(uu);
    const float ratio = (p_norm == 0.0f || u_norm == 0.0f) ? 1.0f : trust_coefficient * p_norm / (u_norm + eps);
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float u = ((g[i] + weight_decay * p[i]) * ratio) * neg_lr;
        float b = u + momentum * s0[i];
        s0[i] = b;
        p[i] = p[i] + (nesterov ? u + momentum * b : b);
    }
}

/* MARS ("adamw", the MARS path: optimize_1d, no weight decay), two passes over the tensor: the
   norm of the corrected gradient c = (g - last_grad)*k + g, then c divided by it when above 1,
   the moments on c, last_grad = g and the step. c: k = gamma*beta1/(1 - beta1), 1 - beta1,
   beta2, 1 - beta2, 1 - beta1^t, sqrt(1 - beta2^t), eps, -lr. s0: exp_avg, s1: exp_avg_sq,
   s2: last_grad. */
KERNEL(mars) {
    const float k = c[0], one_minus_beta1 = c[1], beta2 = c[2], one_minus_beta2 = c[3];
    const float correction1 = c[4], correction2_root = c[5], eps = c[6], neg_lr = c[7];
    double cc = 0.0;
    (void)s3;
    #pragma omp parallel for simd schedule(static) reduction(+:cc)
    for (long i = 0; i < n; i++) {
        float x = (g[i] - s2[i]) * k + g[i];
        cc += (double)x * x;
    }
    const float norm = (float)sqrt(cc);
    const float divisor = norm > 1.0f ? norm : 1.0f;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i];
        float x = ((grad - s2[i]) * k + grad) / divisor;
        float m = lerpf(s0[i], x, one_minus_beta1);
        float v = s1[i] * beta2 + one_minus_beta2 * x * x;
        s0[i] = m;
        s1[i] = v;
        s2[i] = grad;
        float denom = (sqrtf(v + 1e-15f) + eps) / correction2_root * correction1;
        p[i] = p[i] + neg_lr * (m / denom);
    }
}

#define GLOBAL_KERNEL(name) void ref_##name(float *restrict p, const float *restrict g, float *restrict s0, \
                                           float *restrict s1, float *restrict s2, float *restrict s3, long n, \
                                           const float *restrict c, double *restrict global)

/* Prodigy's exact sums, as the Swift side keeps them (Optim's ExactSum and ExactChunkSum): a
   chunk of 32768 elements bins each term -- a product of two floats, or a float -- by its binary
   exponent into one int64 (its integer mantissa, signed), in 4 sets of 512 bins; at the end of
   the chunk the bins are added to a fixed-point number of 22 32-bit limbs from 2^-384, which
   holds every term exactly; the limbs are rounded to a double once. Non-finite terms are added
   in double on the side. */
enum { EXACT_LIMBS = 22, EXACT_MIN_EXPONENT = -384, PRODIGY_CHUNK = 32768, PRODIGY_BINS = 512, PRODIGY_SETS = 4 };

typedef struct {
    long long limbs[EXACT_LIMBS];
    double special;
} exact_sum;

static void exact_add_integer(exact_sum *sum, long long value, int exponent) {
    if (value == 0) return;
    const int position = exponent - EXACT_MIN_EXPONENT, index = position >> 5;
    const unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    const unsigned __int128 shifted = (unsigned __int128)magnitude << (position & 31);
    const long long low = (long long)(shifted & 0xFFFFFFFFu), middle = (long long)((shifted >> 32) & 0xFFFFFFFFu);
    const long long high = (long long)(shifted >> 64);
    if (value < 0) {
        sum->limbs[index] -= low; sum->limbs[index + 1] -= middle; sum->limbs[index + 2] -= high;
    } else {
        sum->limbs[index] += low; sum->limbs[index + 1] += middle; sum->limbs[index + 2] += high;
    }
}

static void exact_normalize(exact_sum *sum) {
    for (int i = 0; i < EXACT_LIMBS - 1; i++) {
        const long long carry = sum->limbs[i] >> 32;
        sum->limbs[i] -= carry * 4294967296LL;
        sum->limbs[i + 1] += carry;
    }
}

static void exact_add(exact_sum *sum, const exact_sum *other) {
    for (int i = 0; i < EXACT_LIMBS; i++) sum->limbs[i] += other->limbs[i];
    sum->special += other->special;
    exact_normalize(sum);
}

static double exact_value(exact_sum sum) {
    exact_normalize(&sum);
    const int negative = sum.limbs[EXACT_LIMBS - 1] < 0;
    if (negative) {
        for (int i = 0; i < EXACT_LIMBS; i++) sum.limbs[i] = -sum.limbs[i];
        exact_normalize(&sum);
    }
    double result = 0.0;
    for (int i = 0; i < EXACT_LIMBS; i++)
        if (sum.limbs[i] != 0) result += (double)sum.limbs[i] * ldexp(1.0, EXACT_MIN_EXPONENT + 32 * i);
    if (negative) result = -result;
    return sum.special == 0.0 ? result : result + sum.special;
}

/* A float's integer mantissa (with the implicit bit) and biased exponent (1 for subnormals). */
static inline long long float_parts(float x, int *exponent) {
    unsigned bits;
    memcpy(&bits, &x, sizeof bits);
    const int e = (int)((bits >> 23) & 0xFF);
    const long long fraction = (long long)(bits & 0x7FFFFF);
    *exponent = e == 0 ? 1 : e;
    return e == 0 ? fraction : fraction | 0x800000;
}

static inline unsigned float_bits(float x) {
    unsigned bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

static inline void bin_product(long long *restrict bins, float a, float b, double *special) {
    int ea, eb;
    const long long ma = float_parts(a, &ea), mb = float_parts(b, &eb);
    if (ea == 255 || eb == 255) { *special += (double)a * (double)b; return; }
    const long long sign = -(long long)((float_bits(a) ^ float_bits(b)) >> 31);
    bins[ea + eb] += ((ma * mb) ^ sign) - sign;
}

static inline void bin_value(long long *restrict bins, float a, double *special) {
    int e;
    const long long m = float_parts(a, &e);
    if (e == 255) { *special += (double)a; return; }
    const long long sign = -(long long)(float_bits(a) >> 31);
    bins[e] += (m ^ sign) - sign;
}

static void fold_bins(const long long *bins, int bias, double special, exact_sum *sum) {
    for (int i = 0; i < PRODIGY_BINS * PRODIGY_SETS; i++)
        if (bins[i] != 0) exact_add_integer(sum, bins[i], i % PRODIGY_BINS - bias);
    sum->special += special;
    exact_normalize(sum);
}

/* Prodigy (prodigyopt 1.1.2; decouple, no bias correction, slice_p 1, one group), one step: pass 1
   over chunks of 32768 -- the exact sums of g*(p0 - p) and of |s| (s updated), then s, exp_avg and
   exp_avg_sq a vector at a time; the global update of d between the passes (as prodigyopt does
   it: d_numerator, d_hat, d_max, growth); pass 2 -- decoupled decay and the Adam step with the
   old dlr and the new d. c: beta1, beta2, beta3, lr, d0, d_coef, growth_rate, eps, weight_decay.
   s0: exp_avg, s1: exp_avg_sq, s2: s, s3: p0. global: d, d_max, d_numerator, k (updated). */
GLOBAL_KERNEL(prodigy) {
    const double beta1 = c[0], beta2 = c[1], beta3 = c[2], lr = c[3], d0 = c[4], d_coef = c[5];
    const double growth_rate = c[6], eps = c[7], weight_decay = c[8];
    const double d = global[0], d_max = global[1];
    const double dlr = d * lr;
    const float b1 = (float)beta1, b2 = (float)beta2, b3 = (float)beta3;
    const float moment_scale = (float)(d * (1 - beta1)), square_scale = (float)(d * d * (1 - beta2));
    const float slice_scale = (float)(d / d0 * dlr);
    const long chunks = (n + PRODIGY_CHUNK - 1) / PRODIGY_CHUNK;
    exact_sum dot_total = {{0}, 0.0}, absolute_total = {{0}, 0.0};
    #pragma omp parallel
    {
        long long *dot_bins = malloc(2 * PRODIGY_SETS * PRODIGY_BINS * sizeof(long long));
        long long *absolute_bins = dot_bins + PRODIGY_SETS * PRODIGY_BINS;
        exact_sum dot = {{0}, 0.0}, absolute = {{0}, 0.0};
        #pragma omp for schedule(static)
        for (long chunk = 0; chunk < chunks; chunk++) {
            const long lower = chunk * PRODIGY_CHUNK, upper = lower + PRODIGY_CHUNK < n ? lower + PRODIGY_CHUNK : n;
            memset(dot_bins, 0, 2 * PRODIGY_SETS * PRODIGY_BINS * sizeof(long long));
            double dot_special = 0.0, absolute_special = 0.0;
            for (long i = lower; i < upper; i++) {
                const float grad = g[i];
                bin_product(dot_bins + (i & 3) * PRODIGY_BINS, grad, s3[i] - p[i], &dot_special);
                bin_value(absolute_bins + (i & 3) * PRODIGY_BINS, fabsf(s2[i] * b3 + grad * slice_scale), &absolute_special);
            }
            #pragma omp simd
            for (long i = lower; i < upper; i++) {
                const float grad = g[i];
                s2[i] = s2[i] * b3 + grad * slice_scale;
                s0[i] = s0[i] * b1 + grad * moment_scale;
                s1[i] = s1[i] * b2 + square_scale * grad * grad;
            }
            fold_bins(dot_bins, 300, dot_special, &dot);
            fold_bins(absolute_bins, 150, absolute_special, &absolute);
        }
        #pragma omp critical
        {
            exact_add(&dot_total, &dot);
            exact_add(&absolute_total, &absolute);
        }
        free(dot_bins);
    }
    const double denominator = exact_value(absolute_total);
    if (denominator == 0.0) return;  /* prodigyopt stops here: nothing moves */
    const double numerator = global[2] * beta3 + d / d0 * dlr * exact_value(dot_total);
    const double estimate = d_coef * numerator / denominator;
    double new_d = d, new_max = d_max;
    if (lr > 0) {
        if (new_d == d0 && estimate > new_d) new_d = estimate;
        if (estimate > new_max) new_max = estimate;
        const double grown = new_d * growth_rate;
        new_d = grown < new_max ? grown : new_max;
    }
    global[0] = new_d;
    global[1] = new_max;
    global[2] = numerator;
    global[3] += 1;
    const float decay = (float)(-weight_decay * dlr), neg_step = (float)(-dlr), denominator_add = (float)(new_d * eps);
    const int decays = weight_decay != 0.0;
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float after = p[i];
        if (decays) after = after + decay * after;
        p[i] = after + neg_step * s0[i] / (sqrtf(s1[i]) + denominator_add);
    }
}
