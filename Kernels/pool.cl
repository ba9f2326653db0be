// Pooling over non-overlapping size x size windows of planes x H x W. Edge remainders are
// dropped, or with ceil_mode pooled over the entries they cover (an average divides by their
// count), as PyTorch's ceil_mode.
#define POOL_MAX 0
#define POOL_AVERAGE 1

__kernel void pool2d(__global const float* x, __global float* out,
                     const int planes, const int H, const int W,
                     const int size, const int kind, const int ceil_mode) {
    const int HO = ceil_mode ? (H + size - 1) / size : H / size;
    const int WO = ceil_mode ? (W + size - 1) / size : W / size;
    const int index = get_global_id(0);
    if (index >= planes * HO * WO) return;
    const int ox = index % WO;
    const int oy = (index / WO) % HO;
    const int plane = index / (WO * HO);
    __global const float* p = x + (size_t)plane * H * W;
    const int rows = min(size, H - oy * size), columns = min(size, W - ox * size);
    float acc = kind == POOL_MAX ? -INFINITY : 0.0f;
    for (int dy = 0; dy < rows; ++dy) {
        for (int dx = 0; dx < columns; ++dx) {
            const float v = p[(oy * size + dy) * W + ox * size + dx];
            // NaN propagates, as in PyTorch.
            if (kind == POOL_MAX) acc = (v > acc || isnan(v)) ? v : acc;
            else acc += v;
        }
    }
    out[index] = kind == POOL_MAX ? acc : acc / (float)(rows * columns);
}
