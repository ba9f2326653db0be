// C[M,N] = act(alpha * op(A) op(B) + beta * C + bias), row-major, any M, N, K.
// op(A) is M x K: A stored M x K, or K x M when trans_a. op(B) is K x N: B stored K x N, or
// N x K when trans_b. beta == 0 never reads C (so NaN in C does not leak into the result).

#ifndef TILE
#define TILE 16 // work-group is TILE x TILE work-items; each computes one element of C
#endif

inline float load_a(__global const float* A, const int M, const int K, const int trans_a, const int row, const int k) {
    if (row >= M || k >= K) return 0.0f;
    return trans_a ? A[(size_t)k * M + row] : A[(size_t)row * K + k];
}

inline float load_b(__global const float* B, const int K, const int N, const int trans_b, const int k, const int col) {
    if (k >= K || col >= N) return 0.0f;
    return trans_b ? B[(size_t)col * K + k] : B[(size_t)k * N + col];
}

__kernel __attribute__((reqd_work_group_size(TILE, TILE, 1)))
void gemm(const int M, const int N, const int K, const int trans_a, const int trans_b,
          const float alpha, const float beta,
          __global const float* A, __global const float* B, __global float* C,
          __global const float* bias, const int has_bias, const int act)
{
    const int lc = get_local_id(0); // column within the tile (fastest: coalesced C and B rows)
    const int lr = get_local_id(1);
    const int col = get_group_id(0) * TILE + lc;
    const int row = get_group_id(1) * TILE + lr;

    __local float a_tile[TILE][TILE + 1]; // +1 avoids bank conflicts on the transposed read
    __local float b_tile[TILE][TILE + 1];

    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        a_tile[lr][lc] = load_a(A, M, K, trans_a, get_group_id(1) * TILE + lr, k0 + lc);
        b_tile[lr][lc] = load_b(B, K, N, trans_b, k0 + lr, col);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = 0; k < TILE; ++k) acc = fma(a_tile[lr][k], b_tile[k][lc], acc);
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    if (row < M && col < N) {
        float v = alpha * acc;
        if (beta != 0.0f) v += beta * C[(size_t)row * N + col];
        if (has_bias) v += bias[col];
        C[(size_t)row * N + col] = activate(v, act);
    }
}
