// out[c] = alpha * sum_{o,i} x[o, c, i] + beta * out[c] over x viewed as [outer, channels, inner]:
// column sums of a matrix (inner 1) or per-channel sums of NCHW activations (inner H*W).
// One work-item per channel; with inner 1 consecutive work-items read consecutive addresses.
__kernel void channel_sums(__global const float* x, const int outer, const int channels, const int inner,
                           __global float* out, const float alpha, const float beta) {
    const int c = get_global_id(0);
    if (c >= channels) return;
    float sum = 0.0f;
    for (int o = 0; o < outer; ++o) {
        __global const float* p = x + ((size_t)o * channels + c) * inner;
        for (int i = 0; i < inner; ++i) sum += p[i];
    }
    out[c] = alpha * sum + (beta != 0.0f ? beta * out[c] : 0.0f);
}
