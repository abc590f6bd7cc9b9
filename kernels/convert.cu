// Conversions between fp32 and the 16-bit storage types (round to nearest
// even), and a counter-based uniform random fill used by tests and
// benchmarks (never zeros: see METHOD.md).
#include "common.cuh"

namespace raptor {

template <typename T>
__device__ __forceinline__ void from_f32(T* out, const float* in, long long n) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = DType<T>::from_float(in[i]);
}

template <typename T>
__device__ __forceinline__ void to_f32(float* out, const T* in, long long n) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = DType<T>::to_float(in[i]);
}

// splitmix64 finaliser: element i of a fill with seed s is a pure function of (s, i).
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__device__ __forceinline__ float uniform(unsigned long long seed, long long i, float lo, float hi) {
  const unsigned long long z = mix64(seed + 0x9e3779b97f4a7c15ull * (unsigned long long)(i + 1));
  const float u = (float)(z >> 40) * (1.0f / 16777216.0f);  // [0, 1), 24 bits
  return lo + (hi - lo) * u;
}

template <typename T>
__device__ __forceinline__ void fill_uniform(T* out, long long n, unsigned long long seed, float lo,
                                             float hi) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = DType<T>::from_float(uniform(seed, i, lo, hi));
}

}  // namespace raptor

#define RAPTOR_CONVERT(S, T)                                                                   \
  extern "C" __global__ void __launch_bounds__(256)                                            \
      f32_to_##S(T* out, const float* in, long long n) {                                       \
    raptor::from_f32<T>(out, in, n);                                                           \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(256)                                            \
      S##_to_f32(float* out, const T* in, long long n) {                                       \
    raptor::to_f32<T>(out, in, n);                                                             \
  }                                                                                            \
  extern "C" __global__ void __launch_bounds__(256)                                            \
      fill_uniform_##S(T* out, long long n, unsigned long long seed, float lo, float hi) {     \
    raptor::fill_uniform<T>(out, n, seed, lo, hi);                                             \
  }
RAPTOR_FOR_DTYPES(RAPTOR_CONVERT)

extern "C" __global__ void __launch_bounds__(256)
    fill_uniform_f32(float* out, long long n, unsigned long long seed, float lo, float hi) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = raptor::uniform(seed, i, lo, hi);
}
