// L2 -> shared-memory bandwidth probe for the sparse-attention kernels
// (issue 6): the kernels' K/V tile copies with no arithmetic. Each CTA of a
// persistent grid streams (K, V) tile pairs of 64 rows x 128 bytes (D = 64,
// fp16) at the fused-QKV row stride through an NST-stage cp.async ring, the
// same ring discipline as attention_wg (wait NST-2, barrier, issue the next
// pair), over a region that fits in L2. Bytes moved over time is the copy
// ceiling of that access pattern at that occupancy and depth. Compiled by
// tests/gpu/attention/nvrtc.py; launched by bench/attention_bench.py.

__device__ __forceinline__ unsigned smem_u32(const void* p) {
  unsigned r;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
  return r;
}

template <int NST, int THREADS>
__device__ __forceinline__ void probe(const unsigned short* k, const unsigned short* v, long long row,
                                      long long head, int nblk, int heads, int iters) {
  extern __shared__ __align__(128) unsigned char sm[];
  const unsigned s0 = smem_u32(sm);
  const int tid = threadIdx.x;
  constexpr int CHUNKS = 64 * 8 * 2;  // 16-byte chunks of one (K, V) pair
  auto issue = [&](int i) {
    if (i < iters) {
      const int b = (int)(((long long)blockIdx.x * 7 + (long long)i * 13) % nblk);
      const int hh = (blockIdx.x + i * 5) % heads;
      const unsigned dst = s0 + (i % NST) * (CHUNKS * 16);
#pragma unroll
      for (int c = tid; c < CHUNKS; c += THREADS) {
        const int t = c >> 9, rr = (c >> 3) & 63, cc = c & 7;
        const unsigned short* src = (t ? v : k) + (long long)(b * 64 + rr) * row + hh * head + cc * 8;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + c * 16), "l"(src) : "memory");
      }
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };
  for (int i = 0; i < NST - 1; ++i) issue(i);
  for (int i = 0; i < iters; ++i) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(NST - 2) : "memory");
    __syncthreads();
    issue(i + NST - 1);
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

#define L2_PROBE(NST, THREADS)                                                                              \
  extern "C" __global__ void __launch_bounds__(THREADS) l2_probe_s##NST##_t##THREADS(                      \
      const unsigned short* k, const unsigned short* v, long long row, long long head, int nblk, int heads, \
      int iters) {                                                                                          \
    probe<NST, THREADS>(k, v, row, head, nblk, heads, iters);                                               \
  }
L2_PROBE(2, 128)
L2_PROBE(3, 128)
L2_PROBE(4, 128)
L2_PROBE(2, 256)
