// Packing helpers for variable-length batches (ARCHITECTURE.md decision 5).
//
// A packed batch is all sequences' rows back to back, [T, width], with
// cu_seqlens[0..batch] (cu_seqlens[0] = 0, cu_seqlens[batch] = T). A padded
// batch is [batch, S, width]. The row copies are dtype-agnostic: rows move as
// 16-byte vectors (row bytes a multiple of 16, buffers 16-byte aligned). One
// warp copies one row.
#include "common.cuh"

namespace raptor {

// seq_of returns the sequence b with cu[b] <= t < cu[b+1].
__device__ __forceinline__ int seq_of(const int* cu, int batch, int t) {
  int lo = 0, hi = batch - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

__device__ __forceinline__ void copy_row(uint4* dst, const uint4* src, int vecs, int lane) {
  for (int c = lane; c < vecs; c += 32) dst[c] = src[c];
}

__device__ __forceinline__ void zero_row(uint4* dst, int vecs, int lane) {
  const uint4 z = make_uint4(0u, 0u, 0u, 0u);
  for (int c = lane; c < vecs; c += 32) dst[c] = z;
}

}  // namespace raptor

// pack_rows: dst[t] = src[b * S + (t - cu[b])] for t in [0, total). Rows of a
// sequence longer than S are zero-filled (never read out of bounds).
extern "C" __global__ void __launch_bounds__(128)
    pack_rows(uint4* dst, const uint4* src, const int* cu_seqlens, int batch, int S, int total,
              int vecs) {
  const int lane = threadIdx.x & 31;
  const int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (t >= total) return;
  const int b = raptor::seq_of(cu_seqlens, batch, t);
  const int s = t - cu_seqlens[b];
  uint4* d = dst + (size_t)t * vecs;
  if (s < S) raptor::copy_row(d, src + ((size_t)b * S + s) * vecs, vecs, lane);
  else raptor::zero_row(d, vecs, lane);
}

// unpack_rows: dst[b][s] = src[cu[b] + s] for s < len(b), zeros for the
// padding rows s >= len(b). Grid covers batch * S rows.
extern "C" __global__ void __launch_bounds__(128)
    unpack_rows(uint4* dst, const uint4* src, const int* cu_seqlens, int batch, int S, int vecs) {
  const int lane = threadIdx.x & 31;
  const long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= (long long)batch * S) return;
  const int b = (int)(r / S);
  const int s = (int)(r % S);
  const int len = cu_seqlens[b + 1] - cu_seqlens[b];
  uint4* d = dst + (size_t)r * vecs;
  if (s < len) raptor::copy_row(d, src + ((size_t)cu_seqlens[b] + s) * vecs, vecs, lane);
  else raptor::zero_row(d, vecs, lane);
}

// gather_rows: dst[i] = src[idx[i]] for i in [0, n); an index outside
// [0, nsrc) gives a zero row. Used for CLS pooling and reordering.
extern "C" __global__ void __launch_bounds__(128)
    gather_rows(uint4* dst, const uint4* src, const int* idx, int n, int nsrc, int vecs) {
  const int lane = threadIdx.x & 31;
  const int i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (i >= n) return;
  const int j = idx[i];
  uint4* d = dst + (size_t)i * vecs;
  if (j >= 0 && j < nsrc) raptor::copy_row(d, src + (size_t)j * vecs, vecs, lane);
  else raptor::zero_row(d, vecs, lane);
}

namespace raptor {

// mean_pool: out[b][c] = mean over the rows of sequence b of src[.][c], in
// fp32 (0 for an empty sequence). Grid (batch, ceil(cols / blockDim.x)).
template <typename T>
__device__ __forceinline__ void mean_pool(float* out, const T* src, const int* cu, int cols) {
  const int b = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int start = cu[b], end = cu[b + 1];
  float acc = 0.f;
  for (int t = start; t < end; ++t) acc += DType<T>::to_float(src[(size_t)t * cols + c]);
  out[(size_t)b * cols + c] = end > start ? acc / (float)(end - start) : 0.f;
}

}  // namespace raptor

#define RAPTOR_POOL(S, T)                                                                      \
  extern "C" __global__ void __launch_bounds__(256)                                            \
      mean_pool_##S(float* out, const T* src, const int* cu_seqlens, int cols) {               \
    raptor::mean_pool<T>(out, src, cu_seqlens, cols);                                          \
  }
RAPTOR_FOR_DTYPES(RAPTOR_POOL)
