// C[M,N] = act(alpha * op(A) op(B) + beta * C + bias), row-major, any M, N, K (K = 0 too).
// bias runs along C's columns (has_bias 1: a dense layer) or rows (2: a convolution's channels).
// Batched: dimension 2 of the launch picks product g of a batch, whose operands start at
// offset_x + g * stride_x elements of A, B and C (a convolution writes each image's product
// straight into its NCHW output this way).
// op(A) is M x K: A stored M x K, or K x M when trans_a. op(B) is K x N: B stored K x N, or
// N x K when trans_b. beta == 0 never reads C (so NaN in C does not leak into the result).
// No padding is asked of the caller: every load is in bounds.
//
// Four kernels, one argument list; the host picks by device kind and shape:
//   gemm_outer  register-blocked outer products, no local memory (CPU devices): NN, TN, TT
//   gemm_dot    register-blocked dot products along K, no local memory (CPU devices): NT
//   gemm_tiled  local-memory tiles with a register block per work-item (GPUs): any transpose
//   gemm_direct one element per work-item: small or thin products, any transpose
// gemm_tiled_partial + gemm_splitk_sum split K where C has too few tiles to fill a GPU.
// and, with the same tiles, the fused weight update (a dense layer's gradient product with the
// optimizer step as its epilogue): gemm_update_outer, gemm_update_tiled, gemm_update_direct.
// On PoCL local memory is ordinary memory and barriers split a kernel into loops over
// work-items, so the CPU kernels keep their tile in vector registers instead: a local-memory
// tile on PoCL only adds copies (docs/performance.md, kernels on a CPU).

// ---- Tunables (the host prepends -D values from its per-device table) ----
// (gemm_outer's VW, OUTER_M, OUTER_V and gemm_dot's DOT_VW, DOT_M, DOT_N: common.cl, shared
// with conv.cl's direct convolution kernels)
#ifndef TILE_M
#define TILE_M 64 // gemm_tiled: rows of C per work-group
#endif
#ifndef TILE_N
#define TILE_N 64 // gemm_tiled: columns of C per work-group
#endif
#ifndef TILE_K
#define TILE_K 16 // gemm_tiled: depth of one pair of local tiles
#endif
#ifndef WPT_M
#define WPT_M 4 // gemm_tiled: rows of C per work-item
#endif
#ifndef WPT_N
#define WPT_N 4 // gemm_tiled: columns of C per work-item
#endif

// ---- Derived ----
#define GROUP_M (TILE_M / WPT_M)    // gemm_tiled: work-group size in dimension 1
#define GROUP_N (TILE_N / WPT_N)    // gemm_tiled: work-group size in dimension 0
#define GROUP_SIZE (GROUP_M * GROUP_N)

// The arguments of every plain product kernel (the host sends one list to whichever it picks).
#define GEMM_ARGS const int M, const int N, const int K, const int trans_a, const int trans_b,     \
    const float alpha, const float beta,                                                          \
    __global const float* A, __global const float* B, __global float* C,                          \
    __global const float* bias, const int has_bias, const int act,                                \
    const int offset_a, const int stride_a, const int offset_b, const int stride_b,               \
    const int offset_c, const int stride_c
// Moves A, B and C to this work-item's product of the batch (launch dimension 2).
#define GEMM_SELECT_BATCH() do {                                                                  \
    const size_t g_ = get_global_id(2);                                                           \
    A += offset_a + g_ * stride_a;                                                                \
    B += offset_b + g_ * stride_b;                                                                \
    C += offset_c + g_ * stride_c;                                                                \
} while (0)

// The fused epilogue for one element of C.
#define BIAS_COLUMNS 1
#define BIAS_ROWS 2

inline void gemm_store(__global float* C, const size_t index, const float acc,
                       const float alpha, const float beta,
                       __global const float* bias, const int has_bias,
                       const int row, const int col, const int act) {
    float v = alpha * acc;
    if (beta != 0.0f) v += beta * C[index];
    if (has_bias) v += bias[has_bias == BIAS_ROWS ? row : col];
    C[index] = activate(v, act);
}

// The epilogue for VW consecutive elements of a row of C; same results as gemm_store.
inline void gemm_store_v(__global float* C, const size_t index, const floatV acc,
                         const float alpha, const float beta,
                         __global const float* bias, const int has_bias,
                         const int row, const int col, const int act) {
    floatV v = alpha * acc;
    if (beta != 0.0f) v += beta * vloadV(0, C + index);
    if (has_bias == BIAS_ROWS) v += (floatV)(bias[row]);
    else if (has_bias) v += vloadV(0, bias + col);
    switch (act) {
    case ACT_RELU: v = select((floatV)(0.0f), v, v > (floatV)(0.0f)); break;
    case ACT_LEAKY_RELU: v = select(LEAKY_SLOPE * v, v, v > (floatV)(0.0f)); break;
    case ACT_TANH: v = tanh(v); break;
    default: break;
    }
    GEMM_CAT(vstore, VW)(v, 0, C + index);
}

// ---- The fused weight update's epilogue ----
// W <- step(W, G) for G = A1ᵀ B1 + A2ᵀ B2, the gradient of a dense layer's weight over its two
// streams (input and target rows); G lives in registers only. Rule codes match
// `UpdateRule.code` in Sources/SigProp/OpenCL/OpenCLBackend+Gemm.swift. Training uses it on
// GPUs only: on CPU drivers the epilogue inside the tiles is slower than optimizer.cl's
// streaming kernel after the product (docs/performance.md, the fused weight update).
#define RULE_ADAM 0
#define RULE_AMSGRAD 1
#define RULE_SGD 2
#define SGD_MOMENTUM 1   // flags
#define SGD_NESTEROV 2
#define SGD_FIRST_STEP 4

typedef struct {
    int update;      // 0: the plain product (gemm_store); 1: the optimizer step below
    int rule, flags;
    float rate;      // Adam: lr / (1 - beta1^t); SGD: lr
    float beta1;     // SGD: momentum
    float beta2;     // SGD: dampening
    float eps, weight_decay, bc2_sqrt;
    __global float* s1; // state: Adam m, SGD momentum buffer
    __global float* s2; // Adam v
    __global float* s3; // AMSGrad v_max
} Epilogue;

inline Epilogue plain_store(void) {
    const Epilogue e = {0, 0, 0, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0, 0, 0};
    return e;
}

inline Epilogue optimizer_step(const int rule, const int flags, const float rate,
                               const float beta1, const float beta2,
                               const float eps, const float weight_decay, const float bc2_sqrt,
                               __global float* s1, __global float* s2, __global float* s3) {
    const Epilogue e = {1, rule, flags, rate, beta1, beta2, eps, weight_decay, bc2_sqrt,
                        s1, s2, s3};
    return e;
}

// One entry W[i] (in C) stepped with gradient `grad`.
inline void update_entry(__global float* W, const size_t i, const float grad, const Epilogue e) {
    float w = W[i];
    if (e.rule == RULE_SGD) {
        const int momentum = e.flags & SGD_MOMENTUM;
        float b = momentum ? e.s1[i] : 0.0f;
        SGD_UPDATE(float, w, b, grad, momentum, e.rate, e.beta1, e.beta2, e.weight_decay,
                   e.flags & SGD_NESTEROV, e.flags & SGD_FIRST_STEP);
        if (momentum) e.s1[i] = b;
    } else {
        const int ams = e.rule == RULE_AMSGRAD;
        float m = e.s1[i], v = e.s2[i], v_max = ams ? e.s3[i] : 0.0f;
        ADAM_UPDATE(float, w, m, v, v_max, grad, ams, e.rate, e.beta1, e.beta2, e.eps,
                    e.weight_decay, e.bc2_sqrt);
        e.s1[i] = m;
        e.s2[i] = v;
        if (ams) e.s3[i] = v_max;
    }
    W[i] = w;
}

// VW consecutive entries; same results as update_entry.
inline void update_entry_v(__global float* W, const size_t i, const floatV grad, const Epilogue e) {
    floatV w = vloadV(0, W + i);
    if (e.rule == RULE_SGD) {
        const int momentum = e.flags & SGD_MOMENTUM;
        floatV b = momentum ? vloadV(0, e.s1 + i) : (floatV)(0.0f);
        SGD_UPDATE(floatV, w, b, grad, momentum, e.rate, e.beta1, e.beta2, e.weight_decay,
                   e.flags & SGD_NESTEROV, e.flags & SGD_FIRST_STEP);
        if (momentum) GEMM_CAT(vstore, VW)(b, 0, e.s1 + i);
    } else {
        const int ams = e.rule == RULE_AMSGRAD;
        floatV m = vloadV(0, e.s1 + i), v = vloadV(0, e.s2 + i),
               v_max = ams ? vloadV(0, e.s3 + i) : (floatV)(0.0f);
        ADAM_UPDATE(floatV, w, m, v, v_max, grad, ams, e.rate, e.beta1, e.beta2, e.eps,
                    e.weight_decay, e.bc2_sqrt);
        GEMM_CAT(vstore, VW)(m, 0, e.s1 + i);
        GEMM_CAT(vstore, VW)(v, 0, e.s2 + i);
        if (ams) GEMM_CAT(vstore, VW)(v_max, 0, e.s3 + i);
    }
    GEMM_CAT(vstore, VW)(w, 0, W + i);
}

// The update kernels' arguments, after the shape and the operand pairs.
#define UPDATE_ARGS __global float* W, __global float* S1, __global float* S2, __global float* S3, \
    const int rule, const int flags, const float rate,                                            \
    const float beta1, const float beta2, const float eps,                                        \
    const float weight_decay, const float bc2_sqrt
#define UPDATE_EPILOGUE                                                                           \
    optimizer_step(rule, flags, rate, beta1, beta2, eps, weight_decay, bc2_sqrt, S1, S2, S3)

// ---- gemm_outer ----
// Computes the P x Q product X Y with X(p, k) = trans_x ? X[k * P + p] : X[p * K + k] and
// Y(k, q) = Y[k * Q + q] (contiguous in q, so one vector load feeds OUTER_M FMAs). NN and TN
// are C = X Y directly; TT is Cᵀ = B A, stored transposed (trans_c). A tile that overhangs
// the product is shifted back inside it (to start at P - OUTER_M, or a vector at Q - VW) and
// stores only the elements no other tile owns, so edges need neither padding nor guards in
// the K loop. Requires P >= OUTER_M and Q >= VW; the host sends thinner products to
// gemm_direct.
// A second pair (X2, Y2) of depth K2 adds to the same sums (the fused update's target rows;
// K2 = 0 for a plain product), and the epilogue `e` stores C or steps the weight held in C.
// Y's rows lie y_stride floats apart (Q, or more in gemm_outer_padded's copy); Y2's Q.
inline void outer_tile(const int P, const int Q, const int K, const int trans_x, const int trans_c,
                       const float alpha, const float beta,
                       __global const float* X, __global const float* Y, const int y_stride,
                       __global float* C,
                       __global const float* bias, const int has_bias, const int act,
                       const int K2, __global const float* X2, __global const float* Y2,
                       const Epilogue e) {
    // Dimension 0 runs down the rows: consecutive work-items share one panel of Y (in cache).
    const int p0 = get_global_id(0) * OUTER_M;
    const int q0 = get_global_id(1) * OUTER_N;
    if (q0 >= Q || p0 >= P) return;
    const int ps = min(p0, P - OUTER_M); // first row computed
    int qs[OUTER_V];                     // first column of each vector computed
    #pragma unroll
    for (int v = 0; v < OUTER_V; ++v) qs[v] = min(q0 + v * VW, Q - VW);

    floatV acc[OUTER_M][OUTER_V];
    #pragma unroll
    for (int i = 0; i < OUTER_M; ++i)
        #pragma unroll
        for (int v = 0; v < OUTER_V; ++v) acc[i][v] = (floatV)(0.0f);

    for (int pair = 0; pair < 2; ++pair) {
        const int depth = pair ? K2 : K;
        __global const float* x = pair ? X2 : X;
        x += trans_x ? ps : (size_t)ps * depth;
        const size_t x_row = trans_x ? 1 : depth; // from one row of X(p, k) to the next
        const size_t x_step = trans_x ? P : 1;    // from one k to the next
        __global const float* y = pair ? Y2 : Y;
        const size_t y_row = pair ? Q : y_stride;
        for (int k = 0; k < depth; ++k) {
            floatV yv[OUTER_V];
            #pragma unroll
            for (int v = 0; v < OUTER_V; ++v) yv[v] = vloadV(0, y + qs[v]);
            #pragma unroll
            for (int i = 0; i < OUTER_M; ++i) {
                const floatV xv = (floatV)(x[i * x_row]);
                #pragma unroll
                for (int v = 0; v < OUTER_V; ++v) acc[i][v] = fma(xv, yv[v], acc[i][v]);
            }
            x += x_step;
            y += y_row;
        }
    }

    // The whole tile is its own.
    if (!trans_c && ps == p0 && qs[OUTER_V - 1] == q0 + (OUTER_V - 1) * VW) {
        #pragma unroll
        for (int i = 0; i < OUTER_M; ++i)
            #pragma unroll
            for (int v = 0; v < OUTER_V; ++v) {
                const size_t index = (size_t)(p0 + i) * Q + qs[v];
                if (e.update) update_entry_v(C, index, acc[i][v], e);
                else gemm_store_v(C, index, acc[i][v], alpha, beta, bias, has_bias,
                                  p0 + i, qs[v], act);
            }
        return;
    }
    #pragma unroll
    for (int i = 0; i < OUTER_M; ++i) {
        const int p = ps + i;
        #pragma unroll
        for (int v = 0; v < OUTER_V; ++v) {
            float lanes[VW];
            GEMM_CAT(vstore, VW)(acc[i][v], 0, lanes);
            #pragma unroll
            for (int l = 0; l < VW; ++l) {
                const int q = qs[v] + l;
                // Rows before p0 and lanes before q0 + v * VW belong to another tile or vector.
                if (p >= p0 && q >= q0 + v * VW) {
                    const size_t index = trans_c ? (size_t)q * P + p : (size_t)p * Q + q;
                    if (e.update) update_entry(C, index, lanes[l], e);
                    else gemm_store(C, index, lanes[l], alpha, beta, bias, has_bias,
                                    trans_c ? q : p, trans_c ? p : q, act);
                }
            }
        }
    }
}

__kernel void gemm_outer(GEMM_ARGS) {
    GEMM_SELECT_BATCH();
    // The flags pick strides and the store's layout; the K loop itself never tests them.
    const Epilogue store = plain_store();
    if (trans_b) // TT only
        outer_tile(N, M, K, 0, 1, alpha, beta, B, A, M, C, bias, has_bias, act, 0, B, A, store);
    else if (trans_a)
        outer_tile(M, N, K, 1, 0, alpha, beta, A, B, N, C, bias, has_bias, act, 0, A, B, store);
    else
        outer_tile(M, N, K, 0, 0, alpha, beta, A, B, N, C, bias, has_bias, act, 0, A, B, store);
}

// gemm_outer (NN, TN) reading B from a copy whose rows lie b_stride floats apart. Each
// work-item streams a panel of B (K rows of OUTER_N floats) that the next work-items read
// again from cache; where B's rows lie a large power of two apart (N = 1024: 4 KB) the panel
// falls into few cache sets and is evicted first (on PoCL 1024³ ran at half the speed of 1000³:
// docs/performance.md). The host pads such rows (gemm_pad_rows); B here is that copy.
__kernel void gemm_outer_padded(GEMM_ARGS, const int b_stride) {
    GEMM_SELECT_BATCH();
    const Epilogue store = plain_store();
    if (trans_a)
        outer_tile(M, N, K, 1, 0, alpha, beta, A, B, b_stride, C, bias, has_bias, act,
                   0, A, B, store);
    else
        outer_tile(M, N, K, 0, 0, alpha, beta, A, B, b_stride, C, bias, has_bias, act,
                   0, A, B, store);
}

// B (rows x columns) copied with its rows `stride` floats apart, for gemm_outer_padded.
__kernel void gemm_pad_rows(__global const float* B, __global float* padded,
                            const int columns, const int stride) {
    const int column = get_global_id(0), row = get_global_id(1);
    if (column < columns) padded[(size_t)row * stride + column] = B[(size_t)row * columns + column];
}

// W[M, N] stepped with G = A1ᵀ B1 + A2ᵀ B2 (A_s: K_s x M, B_s: K_s x N): gemm_outer's TN tile.
__kernel void gemm_update_outer(const int M, const int N, const int K1, const int K2,
                                __global const float* A1, __global const float* B1,
                                __global const float* A2, __global const float* B2, UPDATE_ARGS) {
    outer_tile(M, N, K1, 1, 0, 1.0f, 0.0f, A1, B1, N, W, W, 0, ACT_IDENTITY,
               K2, A2, B2, UPDATE_EPILOGUE);
}

// ---- gemm_dot ----
// NT: C = A Bᵀ with A (M x K) and B (N x K) both contiguous in K, so each work-item keeps
// DOT_M x DOT_N vector partial sums along K and reduces them once at the end. Rows of A and
// B past the edge are clamped to the last one (computed, never stored).
__kernel void gemm_dot(GEMM_ARGS) {
    GEMM_SELECT_BATCH();
    // Dimension 0 runs down the rows: consecutive work-items share their rows of B (in cache).
    const int r0 = get_global_id(0) * DOT_M;
    const int c0 = get_global_id(1) * DOT_N;
    if (c0 >= N || r0 >= M) return;

    __global const float* a[DOT_M];
    #pragma unroll
    for (int i = 0; i < DOT_M; ++i) a[i] = A + (size_t)min(r0 + i, M - 1) * K;
    __global const float* b[DOT_N];
    #pragma unroll
    for (int j = 0; j < DOT_N; ++j) b[j] = B + (size_t)min(c0 + j, N - 1) * K;

    floatD acc[DOT_M][DOT_N];
    #pragma unroll
    for (int i = 0; i < DOT_M; ++i)
        #pragma unroll
        for (int j = 0; j < DOT_N; ++j) acc[i][j] = (floatD)(0.0f);

    int k = 0;
    for (; k + DOT_VW <= K; k += DOT_VW) {
        floatD av[DOT_M], bv[DOT_N];
        #pragma unroll
        for (int i = 0; i < DOT_M; ++i) av[i] = vloadD(0, a[i] + k);
        #pragma unroll
        for (int j = 0; j < DOT_N; ++j) bv[j] = vloadD(0, b[j] + k);
        #pragma unroll
        for (int i = 0; i < DOT_M; ++i)
            #pragma unroll
            for (int j = 0; j < DOT_N; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    float sum[DOT_M][DOT_N];
    #pragma unroll
    for (int i = 0; i < DOT_M; ++i)
        #pragma unroll
        for (int j = 0; j < DOT_N; ++j) sum[i][j] = hsum(acc[i][j]);
    for (; k < K; ++k)
        #pragma unroll
        for (int i = 0; i < DOT_M; ++i)
            #pragma unroll
            for (int j = 0; j < DOT_N; ++j) sum[i][j] = fma(a[i][k], b[j][k], sum[i][j]);

    #pragma unroll
    for (int i = 0; i < DOT_M; ++i)
        #pragma unroll
        for (int j = 0; j < DOT_N; ++j)
            if (r0 + i < M && c0 + j < N)
                gemm_store(C, (size_t)(r0 + i) * N + c0 + j, sum[i][j], alpha, beta,
                           bias, has_bias, r0 + i, c0 + j, act);
}

// ---- gemm_direct ----
// One element per work-item (dimension 0 runs along N), no local memory, no padding: for
// products too small or too thin for a tile, where launch cost and edge waste dominate.
// Operands are walked by stride, so the K loop has no branch on the transposes.
// Element (row, col) of op(A) op(B), plus that of op(A2) op(B2) (depth K2) for the fused update.
inline float direct_element(const int row, const int col, const int M, const int N, const int K,
                            const int trans_a, const int trans_b,
                            __global const float* A, __global const float* B,
                            const int K2, __global const float* A2, __global const float* B2) {
    // Four partial sums: one chain of dependent FMAs would wait out each one's latency.
    float acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f, acc3 = 0.0f;
    for (int pair = 0; pair < 2; ++pair) {
        const int depth = pair ? K2 : K;
        __global const float* x = pair ? A2 : A;
        __global const float* y = pair ? B2 : B;
        x += trans_a ? row : (size_t)row * depth;
        y += trans_b ? (size_t)col * depth : col;
        const size_t x_step = trans_a ? M : 1;
        const size_t y_step = trans_b ? 1 : N;
        int k = 0;
        for (; k + 4 <= depth; k += 4) {
            acc0 = fma(x[0], y[0], acc0);
            acc1 = fma(x[x_step], y[y_step], acc1);
            acc2 = fma(x[2 * x_step], y[2 * y_step], acc2);
            acc3 = fma(x[3 * x_step], y[3 * y_step], acc3);
            x += 4 * x_step;
            y += 4 * y_step;
        }
        for (; k < depth; ++k) {
            acc0 = fma(*x, *y, acc0);
            x += x_step;
            y += y_step;
        }
    }
    return (acc0 + acc1) + (acc2 + acc3);
}

__kernel void gemm_direct(GEMM_ARGS) {
    GEMM_SELECT_BATCH();
    const int col = get_global_id(0);
    const int row = get_global_id(1);
    if (row >= M || col >= N) return;
    const float sum = direct_element(row, col, M, N, K, trans_a, trans_b, A, B, 0, A, B);
    gemm_store(C, (size_t)row * N + col, sum, alpha, beta, bias, has_bias, row, col, act);
}

// gemm_update_outer's arguments; one entry of W per work-item.
__kernel void gemm_update_direct(const int M, const int N, const int K1, const int K2,
                                 __global const float* A1, __global const float* B1,
                                 __global const float* A2, __global const float* B2, UPDATE_ARGS) {
    const int col = get_global_id(0);
    const int row = get_global_id(1);
    if (row >= M || col >= N) return;
    const float grad = direct_element(row, col, M, N, K1, 1, 0, A1, B1, K2, A2, B2);
    update_entry(W, (size_t)row * N + col, grad, UPDATE_EPILOGUE);
}

// ---- gemm_tiled ----
// GPUs: a work-group of GROUP_N x GROUP_M work-items computes a TILE_M x TILE_N block of C,
// each work-item WPT_M x WPT_N elements strided by the group size (conflict-free local reads).
// op(A) and op(B) pass through local memory TILE_K deep, loaded with the transpose folded in
// and consecutive work-items on consecutive global addresses; out-of-range elements load as 0.
// The second pair (A2, B2, depth K2) and the epilogue as in outer_tile. Local tiles are
// declared by the kernels (OpenCL 1.2 allows __local variables at kernel scope only).
inline void tiled_tile(const int M, const int N, const int K, const int trans_a, const int trans_b,
                       const float alpha, const float beta,
                       __global const float* A, __global const float* B, __global float* C,
                       __global const float* bias, const int has_bias, const int act,
                       const int k_begin, const int k_end,
                       const int K2, __global const float* A2, __global const float* B2,
                       const Epilogue e,
                       __local float (*a_tile)[TILE_M + 1], __local float (*b_tile)[TILE_N + 1]) {
    const int ln = get_local_id(0);
    const int lm = get_local_id(1);
    const int lid = lm * GROUP_N + ln;
    const int m0 = get_group_id(1) * TILE_M;
    const int n0 = get_group_id(0) * TILE_N;

    float acc[WPT_M][WPT_N];
    #pragma unroll
    for (int i = 0; i < WPT_M; ++i)
        #pragma unroll
        for (int j = 0; j < WPT_N; ++j) acc[i][j] = 0.0f;

    for (int pair = 0; pair < 2; ++pair) {
        const int depth = pair ? K2 : K; // the stored operands' K extent
        const int k_first = pair ? 0 : k_begin, k_last = pair ? K2 : k_end;
        __global const float* a = pair ? A2 : A;
        __global const float* b = pair ? B2 : B;
        for (int k0 = k_first; k0 < k_last; k0 += TILE_K) {
            for (int x = lid; x < TILE_K * TILE_M; x += GROUP_SIZE) {
                // Consecutive x walk the stored matrix's contiguous dimension.
                const int m = trans_a ? x % TILE_M : x / TILE_K;
                const int k = trans_a ? x / TILE_M : x % TILE_K;
                const int gm = m0 + m, gk = k0 + k;
                a_tile[k][m] = (gm < M && gk < k_last)
                    ? (trans_a ? a[(size_t)gk * M + gm] : a[(size_t)gm * depth + gk]) : 0.0f;
            }
            for (int x = lid; x < TILE_K * TILE_N; x += GROUP_SIZE) {
                const int n = trans_b ? x / TILE_K : x % TILE_N;
                const int k = trans_b ? x % TILE_K : x / TILE_N;
                const int gn = n0 + n, gk = k0 + k;
                b_tile[k][n] = (gn < N && gk < k_last)
                    ? (trans_b ? b[(size_t)gn * depth + gk] : b[(size_t)gk * N + gn]) : 0.0f;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            for (int k = 0; k < TILE_K; ++k) {
                float bk[WPT_N];
                #pragma unroll
                for (int j = 0; j < WPT_N; ++j) bk[j] = b_tile[k][ln + j * GROUP_N];
                #pragma unroll
                for (int i = 0; i < WPT_M; ++i) {
                    const float ak = a_tile[k][lm + i * GROUP_M];
                    #pragma unroll
                    for (int j = 0; j < WPT_N; ++j) acc[i][j] = fma(ak, bk[j], acc[i][j]);
                }
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }

    #pragma unroll
    for (int i = 0; i < WPT_M; ++i) {
        const int row = m0 + lm + i * GROUP_M;
        #pragma unroll
        for (int j = 0; j < WPT_N; ++j) {
            const int col = n0 + ln + j * GROUP_N;
            if (row < M && col < N) {
                if (e.update) update_entry(C, (size_t)row * N + col, acc[i][j], e);
                else gemm_store(C, (size_t)row * N + col, acc[i][j], alpha, beta, bias, has_bias,
                                row, col, act);
            }
        }
    }
}

__kernel __attribute__((reqd_work_group_size(GROUP_N, GROUP_M, 1)))
void gemm_tiled(GEMM_ARGS) {
    GEMM_SELECT_BATCH();
    // a_tile[k][m], b_tile[k][n]: +1 spreads the column-wise stores over banks.
    __local float a_tile[TILE_K][TILE_M + 1];
    __local float b_tile[TILE_K][TILE_N + 1];
    tiled_tile(M, N, K, trans_a, trans_b, alpha, beta, A, B, C, bias, has_bias, act,
               0, K, 0, A, B, plain_store(), a_tile, b_tile);
}

// Split K, for a single product whose tiles of C are too few to fill a GPU: group z of launch
// dimension 2 sums op(A) op(B) over rows [z * slice, (z + 1) * slice) of K into partial z of P
// (S planes of M x N); gemm_splitk_sum then adds the planes in order (the same sum on every
// run) and applies the epilogue.
__kernel __attribute__((reqd_work_group_size(GROUP_N, GROUP_M, 1)))
void gemm_tiled_partial(const int M, const int N, const int K, const int trans_a, const int trans_b,
                        __global const float* A, __global const float* B,
                        __global float* P, const int slice) {
    __local float a_tile[TILE_K][TILE_M + 1];
    __local float b_tile[TILE_K][TILE_N + 1];
    const int z = get_group_id(2);
    const int k_begin = z * slice;
    tiled_tile(M, N, K, trans_a, trans_b, 1.0f, 0.0f, A, B, P + (size_t)z * M * N,
               P, 0, ACT_IDENTITY, k_begin, min(K, k_begin + slice),
               0, A, B, plain_store(), a_tile, b_tile);
}

__kernel void gemm_splitk_sum(const int M, const int N, const int splits,
                              __global const float* P, __global float* C,
                              const float alpha, const float beta,
                              __global const float* bias, const int has_bias, const int act) {
    const int col = get_global_id(0);
    const int row = get_global_id(1);
    if (row >= M || col >= N) return;
    const size_t index = (size_t)row * N + col, plane = (size_t)M * N;
    float sum = 0.0f;
    for (int z = 0; z < splits; ++z) sum += P[z * plane + index];
    gemm_store(C, index, sum, alpha, beta, bias, has_bias, row, col, act);
}

// gemm_update_outer's arguments, in gemm_tiled's groups.
__kernel __attribute__((reqd_work_group_size(GROUP_N, GROUP_M, 1)))
void gemm_update_tiled(const int M, const int N, const int K1, const int K2,
                       __global const float* A1, __global const float* B1,
                       __global const float* A2, __global const float* B2, UPDATE_ARGS) {
    __local float a_tile[TILE_K][TILE_M + 1];
    __local float b_tile[TILE_K][TILE_N + 1];
    tiled_tile(M, N, K1, 1, 0, 1.0f, 0.0f, A1, B1, W, W, 0, ACT_IDENTITY,
               0, K1, K2, A2, B2, UPDATE_EPILOGUE, a_tile, b_tile);
}
