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
