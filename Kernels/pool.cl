// Pooling over non-overlapping size x size windows of planes x H x W; edge remainders dropped.
#define POOL_MAX 0
#define POOL_AVERAGE 1

__kernel void pool2d(__global const float* x, __global float* out,
                     const int planes, const int H, const int W,
                     const int size, const int kind) {
    const int HO = H / size, WO = W / size;
    const int index = get_global_id(0);
    if (index >= planes * HO * WO) return;
    const int ox = index % WO;
    const int oy = (index / WO) % HO;
    const int plane = index / (WO * HO);
    __global const float* p = x + (size_t)plane * H * W;
    float acc = kind == POOL_MAX ? -INFINITY : 0.0f;
    for (int dy = 0; dy < size; ++dy) {
        for (int dx = 0; dx < size; ++dx) {
            const float v = p[(oy * size + dy) * W + ox * size + dx];
            // NaN propagates, as in PyTorch.
            if (kind == POOL_MAX) acc = (v > acc || isnan(v)) ? v : acc;
            else acc += v;
        }
    }
    out[index] = kind == POOL_MAX ? acc : acc / (float)(size * size);
}
