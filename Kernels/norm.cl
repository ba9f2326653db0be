// Normalisation of the rows of a rows x D matrix: xhat = (x - mean) / sqrt(var + eps) with the
// biased variance (PyTorch's LayerNorm over the last dimension; InstanceNorm2d is the same on
// rows of H*W positions). One work-item per row; rstd keeps 1/sqrt(var + eps) for the gradient.

__kernel void normalize_rows(__global const float* x, __global float* xhat, __global float* rstd,
                             const int rows, const int D, const float eps) {
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const float* in = x + (size_t)r * D;
    __global float* out = xhat + (size_t)r * D;
    float mean = 0.0f;
    for (int j = 0; j < D; ++j) mean += in[j];
    mean /= (float)D;
    float var = 0.0f;
    for (int j = 0; j < D; ++j) { const float d = in[j] - mean; var += d * d; }
    const float s = 1.0f / sqrt(var / (float)D + eps);
    for (int j = 0; j < D; ++j) out[j] = (in[j] - mean) * s;
    rstd[r] = s;
}

// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), per row. dx may alias dxhat.
__kernel void normalize_rows_backward(__global const float* dxhat, __global const float* xhat, __global const float* rstd,
                                      __global float* dx, const int rows, const int D) {
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const float* g = dxhat + (size_t)r * D;
    __global const float* xh = xhat + (size_t)r * D;
    __global float* out = dx + (size_t)r * D;
    float mean_g = 0.0f, mean_gx = 0.0f;
    for (int j = 0; j < D; ++j) { mean_g += g[j]; mean_gx += g[j] * xh[j]; }
    mean_g /= (float)D;
    mean_gx /= (float)D;
    const float s = rstd[r];
    for (int j = 0; j < D; ++j) out[j] = s * (g[j] - mean_g - xh[j] * mean_gx);
}

// y[r, j] = x[r, j] * scale[j] + (has_shift ? shift[j] : 0): a norm's affine part, per column.
__kernel void scale_shift_columns(__global const float* x, __global const float* scale, __global const float* shift,
                                  const int has_shift, __global float* y, const int rows, const int D) {
    const int i = get_global_id(0);
    if (i >= rows * D) return;
    const int j = i % D;
    y[i] = x[i] * scale[j] + (has_shift ? shift[j] : 0.0f);
}
