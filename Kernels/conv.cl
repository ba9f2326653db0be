// 2-D convolution pieces, NCHW, cross-correlation as PyTorch, zero padding, any kernel size:
// im2col + gemm (the product runs in gemm.cl), scatter/gather between NCHW and channel-major.
// (The bias gradient is reduce.cl's channel_sums.)

// im2col for images n0 .. n0+count-1: cols[(c*KH + ky)*KW + kx, (n - n0)*P + oy*WO + ox], zero
// outside the image. With it a convolution is one matrix product per chunk of images.
// Work-item (ox, oy, n*C + c) writes its KH*KW entries: no division per entry, and
// neighbouring work-items write neighbouring columns.
__kernel void im2col(__global const float* x, __global float* cols, const int n0, const int count,
                     const int C, const int H, const int W, const int KH, const int KW, const int stride, const int pad,
                     const int HO, const int WO) {
    const int ox = get_global_id(0), oy = get_global_id(1), nc = get_global_id(2);
    if (ox >= WO || oy >= HO || nc >= count * C) return;
    const int n = nc / C, c = nc % C;
    const size_t columns = (size_t)count * HO * WO;
    const size_t column = (size_t)n * HO * WO + oy * WO + ox;
    __global const float* plane = x + ((size_t)(n0 + n) * C + c) * H * W;
    __global float* out = cols + (size_t)c * KH * KW * columns + column;
    for (int ky = 0; ky < KH; ++ky) {
        const int y = oy * stride + ky - pad;
        for (int kx = 0; kx < KW; ++kx) {
            const int xx = ox * stride + kx - pad;
            out[(size_t)(ky * KW + kx) * columns] = (y >= 0 && y < H && xx >= 0 && xx < W) ? plane[y * W + xx] : 0.0f;
        }
    }
}

// out[n0 + n, o, p] = act(product[o, n*P + p] + bias[o]): a chunk's product back to NCHW.
// Work-item (p, o, n).
__kernel void channel_major_to_nchw(__global const float* product, __global const float* bias, const int has_bias,
                                    __global float* out, const int n0, const int count, const int O, const int P, const int act) {
    const int p = get_global_id(0), o = get_global_id(1), n = get_global_id(2);
    if (p >= P || o >= O || n >= count) return;
    const float v = product[(size_t)o * count * P + (size_t)n * P + p] + (has_bias ? bias[o] : 0.0f);
    out[(((size_t)(n0 + n)) * O + o) * P + p] = activate(v, act);
}

// gathered[o, n*P + p] = dz[n0 + n, o, p]: a chunk of NCHW gradients as an O x (count*P) matrix.
// Work-item (p, o, n).
__kernel void nchw_to_channel_major(__global const float* dz, __global float* gathered, const int n0, const int count,
                                    const int O, const int P) {
    const int p = get_global_id(0), o = get_global_id(1), n = get_global_id(2);
    if (p >= P || o >= O || n >= count) return;
    gathered[(size_t)o * count * P + (size_t)n * P + p] = dz[(((size_t)(n0 + n)) * O + o) * P + p];
}
