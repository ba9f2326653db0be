// Optimizer steps as PyTorch computes them; one work-item per parameter entry.

// Adam / AMSGrad. step_size = lr / (1 - beta1^t) and bc2_sqrt = sqrt(1 - beta2^t) come from
// the host (in double, as PyTorch's Python floats).
__kernel void adam_step(__global float* p, __global const float* g, __global float* m, __global float* v,
                        __global float* v_max, const int amsgrad, const int n,
                        const float step_size, const float beta1, const float beta2, const float eps,
                        const float weight_decay, const float bc2_sqrt) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const float grad = g[i] + weight_decay * p[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * grad;
    const float vi = beta2 * v[i] + (1.0f - beta2) * grad * grad;
    m[i] = mi;
    v[i] = vi;
    float second = vi;
    if (amsgrad) { second = fmax(v_max[i], vi); v_max[i] = second; }
    p[i] -= step_size * mi / (sqrt(second) / bc2_sqrt + eps);
}

// SGD with optional momentum (buffer starts as the first gradient), dampening, Nesterov.
__kernel void sgd_step(__global float* p, __global const float* g, __global float* buffer, const int has_momentum,
                       const int n, const float lr, const float momentum, const float dampening,
                       const float weight_decay, const int nesterov, const int first_step) {
    const int i = get_global_id(0);
    if (i >= n) return;
    float grad = g[i] + weight_decay * p[i];
    if (has_momentum) {
        const float b = first_step ? grad : momentum * buffer[i] + (1.0f - dampening) * grad;
        buffer[i] = b;
        grad = nesterov ? grad + momentum * b : b;
    }
    p[i] -= lr * grad;
}
