/*
 * C reference kernels for `optim bench`: the same per-element arithmetic as the Swift update
 * rules, compiled by the benchmark with -O3 -march=native -fopenmp. They define the roofline:
 * how fast this machine moves the bytes an optimizer step must read and write.
 * One flat pass per step; OpenMP static scheduling over the elements.
 *
 * Every kernel has the signature of `KERNEL` below: the parameter, the gradient, up to three
 * state buffers (unused ones may be any pointer), the element count and the step's scalars `c`,
 * in the order each kernel documents. Which kernel an optimizer is timed against, and with which
 * scalars, is in its registry entry (`OptimizerInfo.benchmark`).
 */
#include <math.h>
#include <omp.h>

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
