// Encoder output kernels (issue 7): the last step of pooled outputs.
//
//   finish_rows_{f16,bf16,f32}(out, src, idx, cols, tanh, normalize)
//       out[r] (fp32) = f(src[idx ? idx[r] : r]) with f = tanh element-wise
//       when tanh != 0, then, when normalize != 0, the row divided by
//       max(||row||_2, 1e-12) (fp32 sum of squares). One CTA of 256 threads
//       per row; grid = rows. CLS pooling is idx = cu_seqlens (the first
//       token of each sequence); the pooler's tanh and the L2 normalisation
//       of every pooling run here too.
#include "common.cuh"

namespace raptor {

__device__ __forceinline__ float ld(const half_t* p) { return DType<half_t>::to_float(*p); }
__device__ __forceinline__ float ld(const bf16_t* p) { return DType<bf16_t>::to_float(*p); }
__device__ __forceinline__ float ld(const float* p) { return *p; }

template <typename T>
__device__ __forceinline__ void finish_rows(float* out, const T* src, const int* idx, int cols, int tanh_,
                                            int normalize) {
  __shared__ float red[32];
  const int r = blockIdx.x;
  const long long sr = idx ? (long long)idx[r] : (long long)r;
  const T* s = src + sr * cols;
  float* o = out + (long long)r * cols;
  float ss = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = ld(s + c);
    if (tanh_) v = tanhf(v);
    o[c] = v;
    ss += v * v;
  }
  if (!normalize) return;
  for (int m = 16; m > 0; m >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, m);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = ss;
  __syncthreads();
  if (warp == 0) {
    float t = lane < (int)(blockDim.x >> 5) ? red[lane] : 0.f;
    for (int m = 16; m > 0; m >>= 1) t += __shfl_xor_sync(0xffffffffu, t, m);
    if (lane == 0) red[0] = t;
  }
  __syncthreads();
  const float inv = 1.f / fmaxf(sqrtf(red[0]), 1e-12f);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) o[c] *= inv;
}

}  // namespace raptor

#define RAPTOR_FINISH(S, T)                                                                   \
  extern "C" __global__ void __launch_bounds__(256) finish_rows_##S(                          \
      float* out, const T* src, const int* idx, int cols, int tanh_, int normalize) {         \
    raptor::finish_rows<T>(out, src, idx, cols, tanh_, normalize);                            \
  }
RAPTOR_FOR_DTYPES(RAPTOR_FINISH)
RAPTOR_FINISH(f32, float)
