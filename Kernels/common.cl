// Shared definitions, prepended to every program by the kernel registry.
// Activation codes match Activation.code in Sources/SigProp/Device/Operations.swift.
#define ACT_IDENTITY 0
#define ACT_RELU 1
#define ACT_LEAKY_RELU 2
#define ACT_TANH 3

#ifndef LEAKY_SLOPE
#define LEAKY_SLOPE 0.01f // PyTorch's LeakyReLU default, as the reference
#endif

inline float activate(const float x, const int act) {
    switch (act) {
    case ACT_RELU: return x > 0.0f ? x : 0.0f;
    case ACT_LEAKY_RELU: return x > 0.0f ? x : LEAKY_SLOPE * x;
    case ACT_TANH: return tanh(x);
    default: return x;
    }
}

// act'(z) read off a = act(z): ReLU's derivative at 0 is 0, LeakyReLU's is the slope (PyTorch).
inline float activation_derivative(const float a, const int act) {
    switch (act) {
    case ACT_RELU: return a > 0.0f ? 1.0f : 0.0f;
    case ACT_LEAKY_RELU: return a > 0.0f ? 1.0f : LEAKY_SLOPE;
    case ACT_TANH: return 1.0f - a * a;
    default: return 1.0f;
    }
}

// ---- Register tiles (gemm.cl's gemm_outer and gemm_dot, conv.cl's direct kernels) ----
// Outer-product tiles: a work-item accumulates OUTER_M rows x OUTER_V vectors of VW floats in
// registers. The host prepends -D values from its per-device table (KernelParameters).
#ifndef VW
#define VW 8 // vector width (2, 4, 8 or 16)
#endif
#ifndef OUTER_M
#define OUTER_M 6 // rows per work-item
#endif
#ifndef OUTER_V
#define OUTER_V 2 // vectors of VW columns per work-item
#endif
#define OUTER_N (OUTER_V * VW) // columns per work-item

// Dot-product tiles: DOT_M x DOT_N sums per work-item, each kept in DOT_VW lanes along K.
#ifndef DOT_VW
#define DOT_VW 8 // vector width along K (2, 4, 8 or 16)
#endif
#ifndef DOT_M
#define DOT_M 4 // rows per work-item
#endif
#ifndef DOT_N
#define DOT_N 4 // columns per work-item
#endif

#define GEMM_CAT_(a, b) a##b
#define GEMM_CAT(a, b) GEMM_CAT_(a, b)
#define floatV GEMM_CAT(float, VW)
#define vloadV GEMM_CAT(vload, VW)
#define floatD GEMM_CAT(float, DOT_VW)
#define vloadD GEMM_CAT(vload, DOT_VW)

// The lanes of a dot-product tile's partial sum, added in a fixed order.
inline float hsum(const floatD v) {
#if DOT_VW == 16
    const float8 h8 = v.lo + v.hi;
    const float4 h4 = h8.lo + h8.hi;
#elif DOT_VW == 8
    const float4 h4 = v.lo + v.hi;
#elif DOT_VW == 4
    const float4 h4 = v;
#endif
#if DOT_VW == 2
    return v.x + v.y;
#else
    const float2 h2 = h4.lo + h4.hi;
    return h2.x + h2.y;
#endif
}

// Optimizer rules as PyTorch computes them, on values of any float type T (float or a vector):
// one rule shared by optimizer.cl's kernels and the fused weight update in gemm.cl. The state
// arguments are variables updated in place. Adam / AMSGrad: step_size = lr / (1 - beta1^t) and
// bc2_sqrt = sqrt(1 - beta2^t) come from the host (in double, as PyTorch's Python floats).
#define ADAM_UPDATE(T, p, m, v, v_max, g, amsgrad, step_size, beta1, beta2, eps,                  \
                    weight_decay, bc2_sqrt) do {                                                  \
    const T grad_ = (g) + (weight_decay) * (p);                                                   \
    (m) = (beta1) * (m) + (1.0f - (beta1)) * grad_;                                               \
    (v) = (beta2) * (v) + (1.0f - (beta2)) * grad_ * grad_;                                       \
    T second_ = (v);                                                                              \
    if (amsgrad) { second_ = fmax((v_max), (v)); (v_max) = second_; }                             \
    (p) -= (step_size) * (m) / (sqrt(second_) / (bc2_sqrt) + (eps));                              \
} while (0)

// SGD with optional momentum (the buffer starts as the first gradient), dampening, Nesterov.
#define SGD_UPDATE(T, p, buffer, g, has_momentum, lr, momentum, dampening, weight_decay,          \
                   nesterov, first_step) do {                                                     \
    T grad_ = (g) + (weight_decay) * (p);                                                         \
    if (has_momentum) {                                                                           \
        (buffer) = (first_step) ? grad_ : (momentum) * (buffer) + (1.0f - (dampening)) * grad_;   \
        grad_ = (nesterov) ? grad_ + (momentum) * (buffer) : (buffer);                            \
    }                                                                                             \
    (p) -= (lr) * grad_;                                                                          \
} while (0)

// ---- Sums in a work-group (the grouped reductions GPUs run: reduce.cl, norm.cl) ----
// GROUP_SUM_SIZE work-items (OpenCLBackend.groupSumSize) each hold a partial sum; a fixed tree
// in local memory adds them, so every run adds in the same order. Every work-item gets the
// total; the last barrier lets the caller reuse `partial` at once.
#define GROUP_SUM_SIZE 128

inline float group_sum(__local float* partial, const float value) {
    const int l = get_local_id(0);
    partial[l] = value;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int width = GROUP_SUM_SIZE / 2; width > 0; width >>= 1) {
        if (l < width) partial[l] += partial[l + width];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float total = partial[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}

// One work-item's sums over contiguous runs (the CPU drivers' reductions, a work-item per
// channel or group): eight partial sums in the lanes of a float8 plus one for each run's tail,
// totalled in a fixed order. A single running sum waits on every add's latency; eight
// independent ones let the adds overlap and vectorise (docs/performance.md).
typedef struct { float8 lanes; float tail; } RunSum;

inline RunSum run_sum_zero(void) {
    const RunSum s = {(float8)(0.0f), 0.0f};
    return s;
}

inline float run_sum_total(const RunSum s) {
    const float8 v = s.lanes;
    return (((v.s0 + v.s1) + (v.s2 + v.s3)) + ((v.s4 + v.s5) + (v.s6 + v.s7))) + s.tail;
}

// s + sum of (a[i] - shift) * (b ? b[i] - shift : 1) for i < n: plain sums (b null, shift 0),
// squared deviations (b = a, shift = the mean) and products (shift 0).
inline RunSum run_sum_add(RunSum s, __global const float* a, __global const float* b, const int n,
                          const float shift) {
    int i = 0;
    if (b) {
        for (; i + 8 <= n; i += 8)
            s.lanes += (vload8(0, a + i) - shift) * (vload8(0, b + i) - shift);
        for (; i < n; ++i) s.tail += (a[i] - shift) * (b[i] - shift);
    } else {
        for (; i + 8 <= n; i += 8) s.lanes += vload8(0, a + i) - shift;
        for (; i < n; ++i) s.tail += a[i] - shift;
    }
    return s;
}
