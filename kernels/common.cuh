// raptor kernels: shared device definitions.
//
// These sources are compiled at run time by NVRTC with no CUDA headers on the
// include path, so they use the project's own minimal 16-bit float types and
// inline PTX for conversions (sm_80 and newer). Every kernel computes in fp32
// and stores fp16 or bf16; statistics (LayerNorm mean and variance, pooling
// sums) are always fp32.
#pragma once

namespace raptor {

// half_t is IEEE binary16 storage; bf16_t is bfloat16 storage. Both are plain
// 16-bit words: arithmetic happens in fp32 after conversion.
struct __align__(2) half_t { unsigned short bits; };
struct __align__(2) bf16_t { unsigned short bits; };

// DType gives each storage type its conversions. pack2 rounds to nearest even.
template <typename T> struct DType;

template <> struct DType<half_t> {
  static __device__ __forceinline__ float lo(unsigned w) {
    float f; unsigned short h = (unsigned short)(w & 0xffffu);
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
  }
  static __device__ __forceinline__ float hi(unsigned w) {
    float f; unsigned short h = (unsigned short)(w >> 16);
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
  }
  // pack2 returns {lo, hi} as one 32-bit word, lo in the low 16 bits.
  static __device__ __forceinline__ unsigned pack2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
  }
  static __device__ __forceinline__ float to_float(half_t h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits)); return f;
  }
  static __device__ __forceinline__ half_t from_float(float f) {
    half_t h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f)); return h;
  }
};

template <> struct DType<bf16_t> {
  static __device__ __forceinline__ float lo(unsigned w) { return __uint_as_float(w << 16); }
  static __device__ __forceinline__ float hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }
  static __device__ __forceinline__ unsigned pack2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
  }
  static __device__ __forceinline__ float to_float(bf16_t h) {
    return __uint_as_float(((unsigned)h.bits) << 16);
  }
  static __device__ __forceinline__ bf16_t from_float(float f) {
    bf16_t h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h.bits) : "f"(f)); return h;
  }
};

// load8 reads 8 consecutive elements (16 bytes, which must be 16-byte aligned)
// and widens them to fp32.
template <typename T>
__device__ __forceinline__ void load8(const T* p, float (&v)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  v[0] = DType<T>::lo(u.x); v[1] = DType<T>::hi(u.x);
  v[2] = DType<T>::lo(u.y); v[3] = DType<T>::hi(u.y);
  v[4] = DType<T>::lo(u.z); v[5] = DType<T>::hi(u.z);
  v[6] = DType<T>::lo(u.w); v[7] = DType<T>::hi(u.w);
}

// store8 rounds 8 fp32 values and writes them as one 16-byte store.
template <typename T>
__device__ __forceinline__ void store8(T* p, const float (&v)[8]) {
  uint4 u;
  u.x = DType<T>::pack2(v[0], v[1]);
  u.y = DType<T>::pack2(v[2], v[3]);
  u.z = DType<T>::pack2(v[4], v[5]);
  u.w = DType<T>::pack2(v[6], v[7]);
  *reinterpret_cast<uint4*>(p) = u;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace raptor

// RAPTOR_FOR_DTYPES(X) expands X(suffix, type) once per 16-bit storage type:
// kernels are written once as templates and instantiated under extern "C"
// names ending in _f16 and _bf16.
#define RAPTOR_FOR_DTYPES(X) X(f16, raptor::half_t) X(bf16, raptor::bf16_t)
