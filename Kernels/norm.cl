// Normalisation over groups of a tensor viewed as [outer, groups, inner]: group g holds the
// outer * inner elements (o, g, i) at (o * groups + g) * inner + i. With the biased variance:
//   layer norm of [B, D]:          outer 1, groups B,     inner D
//   instance norm of [B, C, P]:    outer 1, groups B * C, inner P
//   batch norm of [B, C, P]:       outer B, groups C,     inner P   (dense: P = 1)
// rstd keeps 1/sqrt(var + eps) for the gradient. CPU drivers run one work-item per group;
// GPUs one work-group per group (the *_grouped kernels): a layer norm of [128, 1024] has 128
// groups, far too few work-items for a GPU one each.

#define GROUP_INDEX(o, g, i) (((size_t)(o) * groups + (g)) * inner + (i))

__kernel void normalize_groups(__global const float* x, __global float* xhat, __global float* rstd,
                               const int outer, const int groups, const int inner,
                               const float eps) {
    const int g = get_global_id(0);
    if (g >= groups) return;
    const float n = (float)outer * (float)inner;
    RunSum sum = run_sum_zero();
    for (int o = 0; o < outer; ++o)
        sum = run_sum_add(sum, x + GROUP_INDEX(o, g, 0), 0, inner, 0.0f);
    const float mean = run_sum_total(sum) / n;
    RunSum squares = run_sum_zero();
    for (int o = 0; o < outer; ++o) {
        __global const float* p = x + GROUP_INDEX(o, g, 0);
        squares = run_sum_add(squares, p, p, inner, mean);
    }
    const float s = 1.0f / sqrt(run_sum_total(squares) / n + eps);
    for (int o = 0; o < outer; ++o)
        for (int i = 0; i < inner; ++i)
            xhat[GROUP_INDEX(o, g, i)] = (x[GROUP_INDEX(o, g, i)] - mean) * s;
    rstd[g] = s;
}

// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) over each group. dx may alias
// dxhat.
__kernel void normalize_groups_backward(__global const float* dxhat, __global const float* xhat,
                                        __global const float* rstd, __global float* dx,
                                        const int outer, const int groups, const int inner) {
    const int g = get_global_id(0);
    if (g >= groups) return;
    const float n = (float)outer * (float)inner;
    RunSum sum_g = run_sum_zero(), sum_gx = run_sum_zero();
    for (int o = 0; o < outer; ++o) {
        const size_t k = GROUP_INDEX(o, g, 0);
        sum_g = run_sum_add(sum_g, dxhat + k, 0, inner, 0.0f);
        sum_gx = run_sum_add(sum_gx, dxhat + k, xhat + k, inner, 0.0f);
    }
    const float mean_g = run_sum_total(sum_g) / n;
    const float mean_gx = run_sum_total(sum_gx) / n;
    const float s = rstd[g];
    for (int o = 0; o < outer; ++o)
        for (int i = 0; i < inner; ++i) {
            const size_t k = GROUP_INDEX(o, g, i);
            dx[k] = s * (dxhat[k] - mean_g - xhat[k] * mean_gx);
        }
}

// y = x * scale[c] + (has_shift ? shift[c] : 0) over x viewed as [outer, channels, inner]: a
// norm's affine part, per feature of [B, D] (channels D, inner 1) or per channel of
// [B, C, P]. Work-item (i, row) of [inner, outer * channels] with c = row % channels, or, when
// inner is 1, (c, o) of [channels, outer]: the first dimension always runs over contiguous
// memory and no division happens per element (integer division does not vectorise on CPU
// drivers).
__kernel void scale_shift_channels(__global const float* x, __global const float* scale,
                                   __global const float* shift, const int has_shift,
                                   __global float* y,
                                   const int outer, const int channels, const int inner) {
    const int first = get_global_id(0), second = get_global_id(1);
    int c;
    size_t index;
    if (inner == 1) {
        if (first >= channels || second >= outer) return;
        c = first;
        index = (size_t)second * channels + first;
    } else {
        if (first >= inner || second >= outer * channels) return;
        c = second % channels;
        index = (size_t)second * inner + first;
    }
    y[index] = x[index] * scale[c] + (has_shift ? shift[c] : 0.0f);
}

// One work-group of GROUP_SUM_SIZE work-items per group: element j = o * inner + i of group g
// goes to work-item j % GROUP_SUM_SIZE (consecutive work-items on consecutive addresses).
#define GROUP_ELEMENT(j) GROUP_INDEX((j) / inner, g, (j) % inner)

__kernel __attribute__((reqd_work_group_size(GROUP_SUM_SIZE, 1, 1)))
void normalize_groups_grouped(__global const float* x, __global float* xhat, __global float* rstd,
                              const int outer, const int groups, const int inner, const float eps) {
    __local float partial[GROUP_SUM_SIZE];
    const int g = get_group_id(0);
    const int l = get_local_id(0);
    const int count = outer * inner;
    const float n = (float)outer * (float)inner;
    float sum = 0.0f;
    for (int j = l; j < count; j += GROUP_SUM_SIZE) sum += x[GROUP_ELEMENT(j)];
    const float mean = group_sum(partial, sum) / n;
    float var = 0.0f;
    for (int j = l; j < count; j += GROUP_SUM_SIZE) {
        const float d = x[GROUP_ELEMENT(j)] - mean;
        var += d * d;
    }
    const float s = 1.0f / sqrt(group_sum(partial, var) / n + eps);
    for (int j = l; j < count; j += GROUP_SUM_SIZE)
        xhat[GROUP_ELEMENT(j)] = (x[GROUP_ELEMENT(j)] - mean) * s;
    if (l == 0) rstd[g] = s;
}

__kernel __attribute__((reqd_work_group_size(GROUP_SUM_SIZE, 1, 1)))
void normalize_groups_backward_grouped(__global const float* dxhat, __global const float* xhat,
                                       __global const float* rstd, __global float* dx,
                                       const int outer, const int groups, const int inner) {
    __local float partial[GROUP_SUM_SIZE];
    const int g = get_group_id(0);
    const int l = get_local_id(0);
    const int count = outer * inner;
    const float n = (float)outer * (float)inner;
    float sum_g = 0.0f, sum_gx = 0.0f;
    for (int j = l; j < count; j += GROUP_SUM_SIZE) {
        const size_t k = GROUP_ELEMENT(j);
        sum_g += dxhat[k];
        sum_gx += dxhat[k] * xhat[k];
    }
    const float mean_g = group_sum(partial, sum_g) / n;
    const float mean_gx = group_sum(partial, sum_gx) / n;
    const float s = rstd[g];
    for (int j = l; j < count; j += GROUP_SUM_SIZE) {
        const size_t k = GROUP_ELEMENT(j);
        dx[k] = s * (dxhat[k] - mean_g - xhat[k] * mean_gx);
    }
}
