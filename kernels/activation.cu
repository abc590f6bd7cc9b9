// Bias + GELU: out[r][c] = gelu(x[r][c] + bias[c]).
//
// Two GELUs: the exact one, 0.5 x (1 + erf(x / sqrt 2)) (BERT, RoBERTa,
// BigBird's "gelu"), and the tanh approximation,
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) ("gelu_new", and what the
// cuBLASLt GELU epilogues compute). cols must be a multiple of 8, buffers
// 16-byte aligned; out may alias x; bias may be null.
#include "common.cuh"

namespace raptor {

template <bool Tanh>
__device__ __forceinline__ float gelu(float x) {
  if (Tanh) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.f + tanhf(k * (x + 0.044715f * x * x * x)));
  }
  return 0.5f * x * (1.f + erff(x * 0.7071067811865476f));
}

template <typename T, bool Tanh>
__device__ __forceinline__ void bias_gelu(T* out, const T* x, const T* bias, long long n,
                                          int cols) {
  const long long nvec = n >> 3;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += stride) {
    float v[8];
    load8(x + i * 8, v);
    if (bias != nullptr) {
      const int c = (int)((i * 8) % cols);
      float b[8];
      load8(bias + c, b);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] += b[k];
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = gelu<Tanh>(v[k]);
    store8(out + i * 8, v);
  }
}

}  // namespace raptor

#define RAPTOR_GELU(S, T)                                                                      \
  extern "C" __global__ void __launch_bounds__(256)                                            \
      bias_gelu_erf_##S(T* out, const T* x, const T* bias, long long n, int cols) {            \
    raptor::bias_gelu<T, false>(out, x, bias, n, cols);                                        \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(256)                                            \
      bias_gelu_tanh_##S(T* out, const T* x, const T* bias, long long n, int cols) {           \
    raptor::bias_gelu<T, true>(out, x, bias, n, cols);                                         \
  }
RAPTOR_FOR_DTYPES(RAPTOR_GELU)
