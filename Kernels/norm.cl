// Normalisation over groups of a tensor viewed as [outer, groups, inner]: group g holds the
// outer * inner elements (o, g, i) at (o * groups + g) * inner + i. With the biased variance:
//   layer norm of [B, D]:          outer 1, groups B,     inner D
//   instance norm of [B, C, P]:    outer 1, groups B * C, inner P
//   batch norm of [B, C, P]:       outer B, groups C,     inner P   (dense: P = 1)
// One work-item per group; rstd keeps 1/sqrt(var + eps) for the gradient.

#define GROUP_INDEX(o, g, i) (((size_t)(o) * groups + (g)) * inner + (i))

__kernel void normalize_groups(__global const float* x, __global float* xhat, __global float* rstd,
                               const int outer, const int groups, const int inner, const float eps) {
    const int g = get_global_id(0);
    if (g >= groups) return;
    const float n = (float)outer * (float)inner;
    float mean = 0.0f;
    for (int o = 0; o < outer; ++o)
        for (int i = 0; i < inner; ++i) mean += x[GROUP_INDEX(o, g, i)];
    mean /= n;
    float var = 0.0f;
    for (int o = 0; o < outer; ++o)
        for (int i = 0; i < inner; ++i) { const float d = x[GROUP_INDEX(o, g, i)] - mean; var += d * d; }
    const float s = 1.0f / sqrt(var / n + eps);
    for (int o = 0; o < outer; ++o)
        for (int i = 0; i < inner; ++i) xhat[GROUP_INDEX(o, g, i)] = (x[GROUP_INDEX(o, g, i)] - mean) * s;
    rstd[g] = s;
}

// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) over each group. dx may alias dxhat.
__kernel void normalize_groups_backward(__global const float* dxhat, __global const float* xhat, __global const float* rstd,
                                        __global float* dx, const int outer, const int groups, const int inner) {
    const int g = get_global_id(0);
    if (g >= groups) return;
    const float n = (float)outer * (float)inner;
    float mean_g = 0.0f, mean_gx = 0.0f;
    for (int o = 0; o < outer; ++o)
        for (int i = 0; i < inner; ++i) {
            const size_t k = GROUP_INDEX(o, g, i);
            mean_g += dxhat[k];
            mean_gx += dxhat[k] * xhat[k];
        }
    mean_g /= n;
    mean_gx /= n;
    const float s = rstd[g];
    for (int o = 0; o < outer; ++o)
        for (int i = 0; i < inner; ++i) {
            const size_t k = GROUP_INDEX(o, g, i);
            dx[k] = s * (dxhat[k] - mean_g - xhat[k] * mean_gx);
        }
}

// y = x * scale[c] + (has_shift ? shift[c] : 0) with c = (index / inner) % channels: a norm's
// affine part, per feature of [B, D] (channels D, inner 1) or per channel of [B, C, P].
__kernel void scale_shift_channels(__global const float* x, __global const float* scale, __global const float* shift,
                                   const int has_shift, __global float* y, const int n, const int channels, const int inner) {
    const int index = get_global_id(0);
    if (index >= n) return;
    const int c = (index / inner) % channels;
    y[index] = x[index] * scale[c] + (has_shift ? shift[c] : 0.0f);
}
