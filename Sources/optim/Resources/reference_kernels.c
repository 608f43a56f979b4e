/*
 * C reference kernels for `optim bench`: the same per-element arithmetic as the Swift update
 * rules, compiled by the benchmark with -O3 -march=native -fopenmp. They define the roofline:
 * how fast this machine moves the bytes an optimizer step must read and write.
 * One flat pass per step; OpenMP static scheduling over the elements.
 */
#include <math.h>
#include <omp.h>

void ref_set_threads(int threads) { omp_set_num_threads(threads); }

static inline float lerpf(float start, float end, float weight) {
    return fabsf(weight) < 0.5f ? start + weight * (end - start) : end - (end - start) * (1.0f - weight);
}

static inline float signf(float x) { return (float)((x > 0.0f) - (x < 0.0f)); }

void ref_sgd(float *restrict p, const float *restrict g, float *restrict buf, long n,
             float neg_lr, float momentum, float one_minus_dampening, float weight_decay, int nesterov) {
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i] + weight_decay * p[i];
        float b = buf[i] * momentum + one_minus_dampening * grad;
        buf[i] = b;
        grad = nesterov ? grad + momentum * b : b;
        p[i] = p[i] + neg_lr * grad;
    }
}

void ref_adam(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, long n,
              float decay, float one_minus_beta1, float beta2, float one_minus_beta2,
              float bias_correction2_sqrt, float eps, float neg_step_size) {
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float param = p[i] * decay;
        float grad = g[i];
        float mi = lerpf(m[i], grad, one_minus_beta1);
        float vi = v[i] * beta2 + one_minus_beta2 * grad * grad;
        m[i] = mi;
        v[i] = vi;
        p[i] = param + neg_step_size * mi / (sqrtf(vi) / bias_correction2_sqrt + eps);
    }
}

void ref_lion(float *restrict p, const float *restrict g, float *restrict m, long n,
              float decay, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2, float neg_lr) {
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i], mi = m[i];
        p[i] = p[i] * decay + neg_lr * signf(mi * beta1 + one_minus_beta1 * grad);
        m[i] = mi * beta2 + one_minus_beta2 * grad;
    }
}

void ref_adopt(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, long n,
               float eps, float clip, float one_minus_beta1, float beta2, float one_minus_beta2, float neg_lr) {
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float grad = g[i], vi = v[i];
        float root = sqrtf(vi);
        float normed = grad / (root < eps ? eps : root);
        normed = normed < -clip ? -clip : (normed > clip ? clip : normed);
        float mi = lerpf(m[i], normed, one_minus_beta1);
        m[i] = mi;
        p[i] = p[i] + neg_lr * mi;
        v[i] = vi * beta2 + one_minus_beta2 * grad * grad;
    }
}

void ref_lookahead_sync(float *restrict p, float *restrict slow, long n, float alpha, float one_minus_alpha) {
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float fast = p[i] * alpha + one_minus_alpha * slow[i];
        p[i] = fast;
        slow[i] = fast;
    }
}
