// Element-wise operations over flat arrays of n floats; one work-item per element.

__kernel void fill(__global float* x, const int n, const float value) {
    const int i = get_global_id(0);
    if (i < n) x[i] = value;
}

__kernel void activation_forward(__global const float* x, __global float* y,
                                 const int n, const int act) {
    const int i = get_global_id(0);
    if (i < n) y[i] = activate(x[i], act);
}

// result = gradient * act'(z), with a = act(z) given; result may alias gradient.
__kernel void activation_backward(__global const float* a, __global const float* gradient,
                                  __global float* result, const int n, const int act) {
    const int i = get_global_id(0);
    if (i < n) result[i] = gradient[i] * activation_derivative(a[i], act);
}

// x[i] = deviation * N(0, 1), element i from the seed and i alone (Device.fillNormal): the
// SplitMix64 finaliser of seed + (i + 1) * golden ratio gives 64 bits, of which two 24-bit
// uniforms feed Box-Muller's cosine branch. CPUKernels.fillNormal draws the same bits.
__kernel void fill_normal(__global float* x, const int n, const int seed_lo, const int seed_hi,
                          const float deviation) {
    const int i = get_global_id(0);
    if (i >= n) return;
    ulong z = (((ulong)(uint)seed_hi << 32) | (ulong)(uint)seed_lo)
              + (ulong)(i + 1) * 0x9E3779B97F4A7C15UL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
    z ^= z >> 31;
    const float u1 = (float)((z >> 40) + 1) * 0x1p-24f;
    const float u2 = (float)((z >> 16) & 0xFFFFFFUL) * 0x1p-24f;
    x[i] = deviation * sqrt(-2.0f * log(u1)) * cos(6.283185307179586f * u2);
}

// y = alpha * x + beta * y; beta == 0 never reads y.
__kernel void axpby(const float alpha, __global const float* x,
                    const float beta, __global float* y, const int n) {
    const int i = get_global_id(0);
    if (i < n) y[i] = alpha * x[i] + (beta != 0.0f ? beta * y[i] : 0.0f);
}

// out = a * b element-wise; out may alias a or b.
__kernel void multiply(__global const float* a, __global const float* b, __global float* out,
                       const int n) {
    const int i = get_global_id(0);
    if (i < n) out[i] = a[i] * b[i];
}
