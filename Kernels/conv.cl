// 2-D convolution pieces, NCHW, cross-correlation as PyTorch, zero padding, any kernel size:
// im2col + gemm (the product runs in gemm.cl), and the gather from NCHW to channel-major for
// the weight gradient. (The bias gradient is reduce.cl's channel_sums.) On CPU drivers both
// passes at stride 1 run on zero-padded planes instead: conv_direct and conv_wgrad_direct.

// ---- conv_direct: the forward pass as register tiles over padded planes (CPU drivers) ----
// With each input plane zero-padded to WP = W + 2 pad columns and laid out flat, output
// (oy, ox) computed at flat position q = oy * WP + ox reads input q + ky * WP + kx for tap
// (ky, kx): for each tap, consecutive q read consecutive floats, so a tile of OUTER_N
// positions is OUTER_V vector loads, and the convolution is gemm_outer's outer products with
// B(k, q) a shifted view of the plane (an implicit GEMM). Positions with ox >= WO (the padded
// columns) are computed and dropped: WO / WP of the work is kept (28 / 30 for 28x28, pad 1).
// im2col + gemm writes and reads back 9x the input per 3x3 layer (docs/performance.md,
// kernels on a CPU). The weight gradient, conv_wgrad_direct, reads the same padded planes:
// dW(o, tap) is the dot product over flat positions q of dZ(o, q), laid out on the same grid
// with zeros at the dropped positions (pad_gradient), and the plane shifted by the tap.

// Padded planes of images n0 .. n0+count-1: xp[(n*C + c) * plane + r * WP + col] = x at
// (r - pad, col - pad), zero outside the image and in the rows past it up to `plane` (the
// slack that the last tiles read, into positions they drop). Work-item (col, r, n*C + c).
__kernel void pad_planes(__global const float* x, __global float* xp,
                         const int n0, const int C, const int H, const int W,
                         const int pad, const int WP, const int rows) {
    const int col = get_global_id(0), r = get_global_id(1), nc = get_global_id(2);
    if (col >= WP || r >= rows) return;
    const int y = r - pad, xx = col - pad;
    const bool inside = y >= 0 && y < H && xx >= 0 && xx < W;
    xp[((size_t)nc * rows + r) * WP + col] =
        inside ? x[(((size_t)n0 * C + nc) * H + y) * W + xx] : 0.0f;
}

// Outputs of image n0 + n: OUTER_M channels from o0 (shifted back to O - OUTER_M at the edge,
// storing only its own) x OUTER_N flat positions from q0. Dimension 0 runs down the channels,
// so consecutive work-items read the same input from cache. Requires O >= OUTER_M.
__kernel void conv_direct(__global const float* xp, __global const float* weight,
                          __global const float* bias, const int has_bias,
                          __global float* out, const int n0, const int C, const int O,
                          const int KH, const int KW, const int WP, const int plane,
                          const int HO, const int WO, const int act) {
    const int o0 = get_global_id(0) * OUTER_M, q0 = get_global_id(1) * OUTER_N,
              n = get_global_id(2);
    if (o0 >= O || q0 >= HO * WP) return;
    const int os = min(o0, O - OUTER_M); // first channel computed
    const int taps = KH * KW, patch = C * taps;

    floatV acc[OUTER_M][OUTER_V];
    #pragma unroll
    for (int i = 0; i < OUTER_M; ++i)
        #pragma unroll
        for (int v = 0; v < OUTER_V; ++v) acc[i][v] = (floatV)(0.0f);

    __global const float* w = weight + (size_t)os * patch;
    __global const float* x = xp + (size_t)n * C * plane + q0;
    for (int c = 0; c < C; ++c, x += plane) {
        for (int ky = 0; ky < KH; ++ky) {
            for (int kx = 0; kx < KW; ++kx, ++w) {
                __global const float* tap = x + ky * WP + kx;
                floatV xv[OUTER_V];
                #pragma unroll
                for (int v = 0; v < OUTER_V; ++v) xv[v] = vloadV(0, tap + v * VW);
                #pragma unroll
                for (int i = 0; i < OUTER_M; ++i) {
                    const floatV wv = (floatV)(w[i * patch]);
                    #pragma unroll
                    for (int v = 0; v < OUTER_V; ++v) acc[i][v] = fma(wv, xv[v], acc[i][v]);
                }
            }
        }
    }

    const int positions = HO * WO;
    #pragma unroll
    for (int i = 0; i < OUTER_M; ++i) {
        const int o = os + i;
        if (o < o0) continue; // another tile's channel
        const float b = has_bias ? bias[o] : 0.0f;
        __global float* plane_out = out + ((size_t)(n0 + n) * O + o) * positions;
        int oy = q0 / WP, ox = q0 - oy * WP;
        #pragma unroll
        for (int v = 0; v < OUTER_V; ++v) {
            float lanes[VW];
            GEMM_CAT(vstore, VW)(acc[i][v], 0, lanes);
            if (ox + VW <= WO && oy < HO) { // the vector lies within one output row
                __global float* row = plane_out + oy * WO + ox;
                for (int l = 0; l < VW; ++l) row[l] = activate(lanes[l] + b, act);
                ox += VW; // < WP: the row goes on past WO
                continue;
            }
            for (int l = 0; l < VW; ++l) {
                if (ox < WO && oy < HO) plane_out[oy * WO + ox] = activate(lanes[l] + b, act);
                if (++ox == WP) { ox = 0; ++oy; }
            }
        }
    }
}

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
                     const int C, const int H, const int W, const int KH, const int KW,
                     const int stride, const int pad,
                     const int HO, const int WO) {
    const int oy = get_global_id(0), row = get_global_id(1), n = get_global_id(2);
    if (oy >= HO || row >= C * KH * KW || n >= count) return;
    const int kx = row % KW, ky = (row / KW) % KH, c = row / (KW * KH);
    __global float* out =
        cols + (size_t)row * row_stride + (size_t)n * image_stride + (size_t)oy * WO;
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
__kernel void nchw_to_channel_major(__global const float* dz, __global float* gathered,
                                    const int n0, const int count, const int O, const int P) {
    const int p = get_global_id(0), o = get_global_id(1), n = get_global_id(2);
    if (p >= P || o >= O || n >= count) return;
    gathered[(size_t)o * count * P + (size_t)n * P + p] = dz[(((size_t)(n0 + n)) * O + o) * P + p];
}

// dZ of images n0 .. n0+count-1 on conv_direct's grid: dzp[(n*O + o) * grid + q] = dZ at
// (q / WP, q % WP), zero where that column is past WO and for q >= HO * WP (up to `grid`, a
// whole number of DOT_VW vectors). Work-item (col, row, n*O + o) for q = row * WP + col.
__kernel void pad_gradient(__global const float* dz, __global float* dzp,
                           const int n0, const int O, const int HO, const int WO,
                           const int WP, const int grid) {
    const int col = get_global_id(0), row = get_global_id(1), no = get_global_id(2);
    const int q = row * WP + col;
    if (col >= WP || q >= grid) return;
    const bool inside = row < HO && col < WO;
    dzp[(size_t)no * grid + q] = inside ? dz[(((size_t)n0 * O + no) * HO + row) * WO + col] : 0.0f;
}

// dW[o, t] = sum over images n and grid positions q of dzp(n, o, q) * xp(n, c, q + ky * WP + kx)
// for tap t = (c * KH + ky) * KW + kx, plus beta * dW (beta 0 never reads dW): gemm_dot's tile
// of DOT_M channels x DOT_N taps, lanes along q. Channels and taps past the edge are clamped
// to the last one (computed, never stored). The dropped positions add x * 0 (NaN where that x
// is Inf or NaN: such an input makes the loss NaN anyway). Dimension 0 runs
// along the taps, so consecutive work-items share their channels' dZ (in cache) and read the
// planes, 2-3x smaller than a chunk's dZ at the training shapes, once per tile of channels.
__kernel void conv_wgrad_direct(__global const float* xp, __global const float* dzp,
                                __global float* dw, const float beta,
                                const int count, const int C, const int O,
                                const int KH, const int KW,
                                const int WP, const int plane, const int grid) {
    const int t0 = get_global_id(0) * DOT_N, o0 = get_global_id(1) * DOT_M;
    const int taps = KH * KW, patch = C * taps;
    if (o0 >= O || t0 >= patch) return;

    size_t a[DOT_M], b[DOT_N]; // offsets in image 0: a channel's gradient, a tap's shifted plane
    #pragma unroll
    for (int i = 0; i < DOT_M; ++i) a[i] = (size_t)min(o0 + i, O - 1) * grid;
    #pragma unroll
    for (int j = 0; j < DOT_N; ++j) {
        const int t = min(t0 + j, patch - 1), c = t / taps, ky = (t % taps) / KW, kx = t % KW;
        b[j] = (size_t)c * plane + ky * WP + kx;
    }

    floatD acc[DOT_M][DOT_N];
    #pragma unroll
    for (int i = 0; i < DOT_M; ++i)
        #pragma unroll
        for (int j = 0; j < DOT_N; ++j) acc[i][j] = (floatD)(0.0f);

    for (int n = 0; n < count; ++n) {
        __global const float* g = dzp + (size_t)n * O * grid;
        __global const float* x = xp + (size_t)n * C * plane;
        for (int q = 0; q < grid; q += DOT_VW) {
            floatD av[DOT_M], bv[DOT_N];
            #pragma unroll
            for (int i = 0; i < DOT_M; ++i) av[i] = vloadD(0, g + a[i] + q);
            #pragma unroll
            for (int j = 0; j < DOT_N; ++j) bv[j] = vloadD(0, x + b[j] + q);
            #pragma unroll
            for (int i = 0; i < DOT_M; ++i)
                #pragma unroll
                for (int j = 0; j < DOT_N; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
    }

    #pragma unroll
    for (int i = 0; i < DOT_M; ++i)
        #pragma unroll
        for (int j = 0; j < DOT_N; ++j)
            if (o0 + i < O && t0 + j < patch) {
                __global float* out = dw + (size_t)(o0 + i) * patch + t0 + j;
                const float sum = hsum(acc[i][j]);
                *out = beta != 0.0f ? sum + beta * *out : sum;
            }
}
