// LayerNorm kernels: embedding gather + LayerNorm, and fused (residual add +
// bias +) LayerNorm.
//
// One warp normalises one row; the row stays in registers between the
// statistics pass and the output pass, so out may alias any input row. Each
// lane holds V vectors of 8 elements, so a row has at most 256*V columns;
// cols must be a multiple of 8 and every row 16-byte aligned. Mean and
// variance are fp32, the variance two-pass (sum of squared deviations from the
// mean), biased, as torch.nn.LayerNorm computes it.
#include "common.cuh"

namespace raptor {

// normalize_store writes gamma * (v - mean) * rstd + beta for one row.
template <typename T, int V>
__device__ __forceinline__ void normalize_store(T* out, float (&v)[V][8], const T* gamma,
                                                const T* beta, int cols, float eps, int lane) {
  const int nvec = cols >> 3;
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < V; ++j) {
#pragma unroll
    for (int k = 0; k < 8; ++k) sum += v[j][k];
  }
  const float mean = warp_sum(sum) / (float)cols;
  float sq = 0.f;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    if (j * 32 + lane < nvec) {
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float d = v[j][k] - mean;
        sq += d * d;
      }
    }
  }
  const float rstd = rsqrtf(warp_sum(sq) / (float)cols + eps);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int c = j * 32 + lane;
    if (c < nvec) {
      float g[8], b[8], y[8];
      load8(gamma + c * 8, g);
      load8(beta + c * 8, b);
#pragma unroll
      for (int k = 0; k < 8; ++k) y[k] = (v[j][k] - mean) * rstd * g[k] + b[k];
      store8(out + c * 8, y);
    }
  }
}

// add_ln: out[r] = LayerNorm(x[r] + residual[r] + bias) * gamma + beta.
// residual and bias may be null. out may alias x or residual.
template <typename T, int V>
__device__ __forceinline__ void add_ln(T* out, const T* x, const T* residual, const T* bias,
                                       const T* gamma, const T* beta, int rows, int cols,
                                       float eps) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int nvec = cols >> 3;
  const size_t base = (size_t)row * (size_t)cols;
  float v[V][8];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int c = j * 32 + lane;
    if (c < nvec) {
      load8(x + base + c * 8, v[j]);
      if (residual != nullptr) {
        float r[8];
        load8(residual + base + c * 8, r);
#pragma unroll
        for (int k = 0; k < 8; ++k) v[j][k] += r[k];
      }
      if (bias != nullptr) {
        float b[8];
        load8(bias + c * 8, b);
#pragma unroll
        for (int k = 0; k < 8; ++k) v[j][k] += b[k];
      }
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) v[j][k] = 0.f;
    }
  }
  normalize_store<T, V>(out + base, v, gamma, beta, cols, eps, lane);
}

// embed_ln: out[r] = LayerNorm(word[ids[r]] + pos[pos_ids[r]] + type[type_ids[r]]).
// pos_ids null: no position embedding. type null: no token-type embedding;
// type_ids null with type set: token type 0. An id outside its table sets a
// bit in *err (1 word, 2 position, 4 type; err may be null) and its row is
// written as zeros, so a bad id never reads out of bounds.
template <typename T, int V>
__device__ __forceinline__ void embed_ln(T* out, const int* ids, const int* pos_ids,
                                         const int* type_ids, const T* word, const T* pos,
                                         const T* type, const T* gamma, const T* beta, int rows,
                                         int cols, int vocab, int npos, int ntype, float eps,
                                         int* err) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int nvec = cols >> 3;
  const size_t base = (size_t)row * (size_t)cols;
  const int id = ids[row];
  const int pid = pos_ids != nullptr ? pos_ids[row] : 0;
  const int tid = type_ids != nullptr ? type_ids[row] : 0;
  int bad = 0;
  if (id < 0 || id >= vocab) bad |= 1;
  if (pos_ids != nullptr && (pid < 0 || pid >= npos)) bad |= 2;
  if (type != nullptr && (tid < 0 || tid >= ntype)) bad |= 4;
  if (bad != 0) {
    if (lane == 0 && err != nullptr) atomicOr(err, bad);
    const float z[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int c = lane; c < nvec; c += 32) store8(out + base + c * 8, z);
    return;
  }
  const T* wrow = word + (size_t)id * (size_t)cols;
  const T* prow = pos_ids != nullptr ? pos + (size_t)pid * (size_t)cols : nullptr;
  const T* trow = type != nullptr ? type + (size_t)tid * (size_t)cols : nullptr;
  float v[V][8];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int c = j * 32 + lane;
    if (c < nvec) {
      load8(wrow + c * 8, v[j]);
      if (prow != nullptr) {
        float p[8];
        load8(prow + c * 8, p);
#pragma unroll
        for (int k = 0; k < 8; ++k) v[j][k] += p[k];
      }
      if (trow != nullptr) {
        float t[8];
        load8(trow + c * 8, t);
#pragma unroll
        for (int k = 0; k < 8; ++k) v[j][k] += t[k];
      }
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) v[j][k] = 0.f;
    }
  }
  normalize_store<T, V>(out + base, v, gamma, beta, cols, eps, lane);
}

}  // namespace raptor

// Instantiations: add_ln_<dtype>_v<V> and embed_ln_<dtype>_v<V>, V in
// {1,2,3,4,6,8,12,16} (rows of up to 256*V columns). Blocks of 128 threads,
// 4 rows per block.
#define RAPTOR_LN(S, T, V)                                                                     \
  extern "C" __global__ void __launch_bounds__(128)                                            \
      add_ln_##S##_v##V(T* out, const T* x, const T* residual, const T* bias, const T* gamma, \
                        const T* beta, int rows, int cols, float eps) {                        \
    raptor::add_ln<T, V>(out, x, residual, bias, gamma, beta, rows, cols, eps);                \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(128) embed_ln_##S##_v##V(                       \
      T* out, const int* ids, const int* pos_ids, const int* type_ids, const T* word,          \
      const T* pos, const T* type, const T* gamma, const T* beta, int rows, int cols,          \
      int vocab, int npos, int ntype, float eps, int* err) {                                   \
    raptor::embed_ln<T, V>(out, ids, pos_ids, type_ids, word, pos, type, gamma, beta, rows,    \
                           cols, vocab, npos, ntype, eps, err);                                \
  }
#define RAPTOR_LN_ALL(S, T)                                                                    \
  RAPTOR_LN(S, T, 1) RAPTOR_LN(S, T, 2) RAPTOR_LN(S, T, 3) RAPTOR_LN(S, T, 4)                  \
  RAPTOR_LN(S, T, 6) RAPTOR_LN(S, T, 8) RAPTOR_LN(S, T, 12) RAPTOR_LN(S, T, 16)
RAPTOR_FOR_DTYPES(RAPTOR_LN_ALL)
