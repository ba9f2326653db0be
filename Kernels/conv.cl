// Direct 2-D convolution, NCHW, cross-correlation as PyTorch, zero padding, any kernel size.

// out[n,o,oy,ox] = act(bias[o] + sum_{c,ky,kx} w[o,c,ky,kx] * x[n,c,oy*s+ky-p,ox*s+kx-p])
// One work-item per output element.
__kernel void conv2d_forward(__global const float* x, __global const float* w, __global const float* bias,
                             const int has_bias, __global float* out,
                             const int B, const int C, const int H, const int W,
                             const int O, const int KH, const int KW, const int stride, const int pad,
                             const int HO, const int WO, const int act) {
    const int index = get_global_id(0);
    if (index >= B * O * HO * WO) return;
    const int ox = index % WO;
    const int oy = (index / WO) % HO;
    const int o = (index / (WO * HO)) % O;
    const int n = index / (WO * HO * O);
    float acc = has_bias ? bias[o] : 0.0f;
    for (int c = 0; c < C; ++c) {
        __global const float* plane = x + ((size_t)n * C + c) * H * W;
        __global const float* kernel_ = w + ((size_t)o * C + c) * KH * KW;
        for (int ky = 0; ky < KH; ++ky) {
            const int y = oy * stride + ky - pad;
            if (y < 0 || y >= H) continue;
            for (int kx = 0; kx < KW; ++kx) {
                const int xx = ox * stride + kx - pad;
                if (xx < 0 || xx >= W) continue;
                acc = fma(kernel_[ky * KW + kx], plane[y * W + xx], acc);
            }
        }
    }
    out[index] = activate(acc, act);
}

// dw[o,c,ky,kx] = sum_{n,oy,ox} dz[n,o,oy,ox] * x[n,c,oy*s+ky-p,ox*s+kx-p] + beta * dw.
// One work-item per weight element.
__kernel void conv2d_weight_grad(__global const float* x, __global const float* dz, __global float* dw,
                                 const int B, const int C, const int H, const int W,
                                 const int O, const int KH, const int KW, const int stride, const int pad,
                                 const int HO, const int WO, const float beta) {
    const int index = get_global_id(0);
    if (index >= O * C * KH * KW) return;
    const int kx = index % KW;
    const int ky = (index / KW) % KH;
    const int c = (index / (KW * KH)) % C;
    const int o = index / (KW * KH * C);
    float acc = 0.0f;
    for (int n = 0; n < B; ++n) {
        __global const float* plane = x + ((size_t)n * C + c) * H * W;
        __global const float* grad = dz + ((size_t)n * O + o) * HO * WO;
        for (int oy = 0; oy < HO; ++oy) {
            const int y = oy * stride + ky - pad;
            if (y < 0 || y >= H) continue;
            for (int ox = 0; ox < WO; ++ox) {
                const int xx = ox * stride + kx - pad;
                if (xx < 0 || xx >= W) continue;
                acc = fma(grad[oy * WO + ox], plane[y * W + xx], acc);
            }
        }
    }
    dw[index] = acc + (beta != 0.0f ? beta * dw[index] : 0.0f);
}

// db[o] = sum_{n,p} dz[n,o,p] + beta * db[o]. One work-item per output channel.
__kernel void conv2d_bias_grad(__global const float* dz, __global float* db,
                               const int B, const int O, const int P, const float beta) {
    const int o = get_global_id(0);
    if (o >= O) return;
    float acc = 0.0f;
    for (int n = 0; n < B; ++n) {
        __global const float* grad = dz + ((size_t)n * O + o) * P;
        for (int p = 0; p < P; ++p) acc += grad[p];
    }
    db[o] = acc + (beta != 0.0f ? beta * db[o] : 0.0f);
}
