// Optimizer steps, one work-item per parameter entry. The rules are common.cl's macros, which
// the fused weight update (gemm.cl's gemm_update_*) applies too.

__kernel void adam_step(__global float* p, __global const float* g,
                        __global float* m, __global float* v, __global float* v_max,
                        const int amsgrad, const int n,
                        const float step_size, const float beta1, const float beta2,
                        const float eps, const float weight_decay, const float bc2_sqrt) {
    const int i = get_global_id(0);
    if (i >= n) return;
    float pi = p[i], mi = m[i], vi = v[i], vmax = amsgrad ? v_max[i] : 0.0f;
    ADAM_UPDATE(float, pi, mi, vi, vmax, g[i], amsgrad, step_size, beta1, beta2, eps,
                weight_decay, bc2_sqrt);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    if (amsgrad) v_max[i] = vmax;
}

__kernel void sgd_step(__global float* p, __global const float* g, __global float* buffer,
                       const int has_momentum, const int n,
                       const float lr, const float momentum, const float dampening,
                       const float weight_decay, const int nesterov, const int first_step) {
    const int i = get_global_id(0);
    if (i >= n) return;
    float pi = p[i], bi = has_momentum ? buffer[i] : 0.0f;
    SGD_UPDATE(float, pi, bi, g[i], has_momentum, lr, momentum, dampening, weight_decay,
               nesterov, first_step);
    p[i] = pi;
    if (has_momentum) buffer[i] = bi;
}
