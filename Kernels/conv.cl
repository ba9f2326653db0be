// 2-D convolution pieces, NCHW, cross-correlation as PyTorch, zero padding, any kernel size:
// im2col + gemm (the product runs in gemm.cl), and the gather from NCHW to channel-major for
// the weight gradient. (The bias gradient is reduce.cl's channel_sums.)

// im2col for images n0 .. n0+count-1: entry (row, p) of image n's patch matrix, row =
// (c*KH + ky)*KW + kx and p = oy*WO + ox, at cols[row * row_stride + n * image_stride + p],
// zero outside the image. The forward pass lays each image's matrix out on its own
// (row_stride P, image_stride patch*P: a batch of products writes NCHW directly); the weight
// gradient side by side (row_stride count*P, image_stride P: one product over the chunk).
// Work-item (oy, row, n) writes one output row: WO consecutive entries from one input row
// (consecutive too at stride 1), so each work-item streams memory in order and the loop
// vectorises; one work-item per entry spent its time on index arithmetic instead.
__kernel void im2col(__global const float* x, __global float* cols, const int n0, const int count,
                     const int row_stride, const int image_stride,
                     const int C, const int H, const int W, const int KH, const int KW, const int stride, const int pad,
                     const int HO, const int WO) {
    const int oy = get_global_id(0), row = get_global_id(1), n = get_global_id(2);
    if (oy >= HO || row >= C * KH * KW || n >= count) return;
    const int kx = row % KW, ky = (row / KW) % KH, c = row / (KW * KH);
    __global float* out = cols + (size_t)row * row_stride + (size_t)n * image_stride + (size_t)oy * WO;
    const int y = oy * stride + ky - pad;
    if (y < 0 || y >= H) {
        for (int ox = 0; ox < WO; ++ox) out[ox] = 0.0f;
        return;
    }
    __global const float* line = x + (((size_t)(n0 + n) * C + c) * H + y) * W;
    // Output columns whose input column kx - pad + ox*stride lies inside 0..W-1.
    const int first = max(0, (pad - kx + stride - 1) / stride);
    const int last = min(WO, (W - 1 - kx + pad) / stride + 1);
    for (int ox = 0; ox < first; ++ox) out[ox] = 0.0f;
    for (int ox = first; ox < last; ++ox) out[ox] = line[ox * stride + kx - pad];
    for (int ox = max(first, last); ox < WO; ++ox) out[ox] = 0.0f;
}

// gathered[o, n*P + p] = dz[n0 + n, o, p]: a chunk of NCHW gradients as an O x (count*P) matrix.
// Work-item (p, o, n).
__kernel void nchw_to_channel_major(__global const float* dz, __global float* gathered, const int n0, const int count,
                                    const int O, const int P) {
    const int p = get_global_id(0), o = get_global_id(1), n = get_global_id(2);
    if (p >= P || o >= O || n >= count) return;
    gathered[(size_t)o * count * P + (size_t)n * P + p] = dz[(((size_t)(n0 + n)) * O + o) * P + p];
}
