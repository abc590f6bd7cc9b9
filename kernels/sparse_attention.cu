// Fused BigBird block-sparse attention over a packed variable-length batch
// (ARCHITECTURE.md, "The attention plan"; issue 6).
//
// Two launches per attention call, on one stream, no host work beyond the
// parameter block (cu_seqlens and the request seeds are already on the device):
//
//   sparse_attention_schedule      one CTA of 1024 threads: builds the cost-
//                                  sorted segment list from cu_seqlens
//                                  (sparse_attention.cuh, "Schedule")
//   sparse_attention_d{32,64,128}_{f16,bf16}
//                                  persistent grid (SMs x CTAs per SM), 128
//                                  threads; each CTA pulls work items from one
//                                  atomic ticket counter until none is left
//
// A work item is one 64-row query block of one head over a list of 64-key
// blocks. Its CTA:
//   - loads Q (64 x D) and the first K/V block with cp.async (rows past the
//     sequence zero-filled), computes the item's key-block list from the plan
//     generator meanwhile (middle rows; global and dense rows take a range);
//   - streams K/V blocks through an NST-stage cp.async ring;
//   - per block, each warp (16 query rows) computes S = Q K^T with
//     mma.sync m16n8k16 (fp32 accumulate; Q fragments held in registers, K
//     fragments by ldmatrix), masks keys past the sequence end, updates the
//     online softmax (FlashAttention-2: running max and sum in the log2
//     domain, O rescaled), and accumulates O += P V (P converted in registers
//     to the A operand, V by ldmatrix.trans);
//   - writes O (normalised, 16-byte stores through shared memory), or, for a
//     chunk of a split global row, fp32 partials; the CTA that completes the
//     row's last chunk combines the partials and writes O.
//
// Shared memory rows are padded by 16 bytes (pitch D+8 elements), which makes
// every ldmatrix phase conflict-free for D = 32, 64 and 128.
//
// Two implementations of the attention kernel share the schedule, the plan
// and the epilogue:
//   sparse_attention_d{32,64,128}[_s3|_b3]_{f16,bf16}  mma.sync (sm_80 and up);
//       dynamic shared memory (1 + 2*NST) * 64 * (D+8) * 2 bytes, NST = 2
//       (3 for _s3; _b3 is D=64 with a 3-CTA/SM register budget)
//   sparse_attention_d{64,128}[_wg|_wg3]_{f16,bf16}    wgmma (sm_90a only; traps
//       elsewhere); dynamic shared memory (1 + 2*NST) * 64 * D * 2 + 1024 bytes
// Use the _wg kernel on sm_90a for D = 64 and 128 (1.4 to 1.5x the mma.sync
// kernel on an H100, bench/RESULTS.md) and the plain mma.sync kernel
// otherwise. Launch: sparse_attention_schedule <<<1, 1024>>> (p), for the _wg
// kernels optionally sparse_attention_items (the item records of a forward's
// layers, see there), then the attention kernel <<<SMs x resident CTAs per SM,
// 128, smem>>> (p) on the same stream, after raising the kernel's dynamic
// shared-memory limit to smem; the same AttnParams for all. p.ws holds
// ws_ints(nseq, H) ints (ws_items_offset + kRecInts * items_bound(T, nseq, H,
// C) * record sets with records) and p.partial partial_slots_bound(T, nseq, H,
// C) * partial_slot_floats(D) floats; the schedule kernel initialises both (no
// memset). Default C (split_blocks) 64, sort_by_cost 3
// (internal/cuda/attention.go says why).
#include "common.cuh"
#include "sparse_attention.cuh"
#include "sparse_attention_sm90.cuh"

namespace raptor {
namespace sparse {

__device__ __forceinline__ unsigned smem_u32(const void* p) {
  unsigned r;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
  return r;
}

// cp_async16 copies 16 bytes global -> shared, or writes 16 zero bytes when
// full is false (src is then not read).
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool full) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(full ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2,
                                        unsigned& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2,
                                          unsigned& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// Mma<T>::run is d += a * b for one m16n8k16 tile (row-major A, column-major
// B, fp32 accumulators).
template <typename T> struct Mma;
template <> struct Mma<half_t> {
  static __device__ __forceinline__ void run(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                             unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <> struct Mma<bf16_t> {
  static __device__ __forceinline__ void run(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                             unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// L2-coherent loads (bypass L1) for partials written by other CTAs.
__device__ __forceinline__ float ldcg(const float* p) {
  float v;
  asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ float4 ldcg4(const float* p) {
  float4 v;
  asm volatile("ld.global.cg.v4.f32 {%0,%1,%2,%3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "l"(p)
               : "memory");
  return v;
}

// load_tile issues cp.async for a 64 x D tile (rows >= valid zero-filled; a
// zero-filled chunk reads nothing, its source is row 0, which always exists).
template <int D>
__device__ __forceinline__ void load_tile(unsigned short* s, const unsigned short* g,
                                          long long row_stride, int valid, int tid) {
  constexpr int LD = D + 8, CH = D / 8, RS = kThreads / CH, IT = kBlock * CH / kThreads;
  static_assert(kBlock * CH % kThreads == 0, "tile copy");
  const int r0 = tid / CH, c = tid % CH;
  const unsigned sb = smem_u32(s + r0 * LD + c * 8);
  const unsigned short* g0 = g + c * 8;
  const unsigned short* gr = g0 + r0 * row_stride;
  const long long step = RS * row_stride;
#pragma unroll
  for (int it = 0; it < IT; ++it) {
    const bool ok = r0 + it * RS < valid;
    cp_async16(sb + it * RS * LD * 2, ok ? gr + it * step : g0, ok);
  }
}

// combine merges the nchunks partials of one split query block (slots
// contiguous from base) and writes its valid rows to out (row 0 of the block).
template <typename T, int D>
__device__ __forceinline__ void combine(const float* base, int nchunks, T* out, long long o_row,
                                        int qvalid, int tid) {
  constexpr long long SL = partial_slot_floats(D);
  constexpr int HALF = D / 2;
  const int row = tid >> 1, c0 = (tid & 1) * HALF;
  float M = neg_inf();
  for (int c = 0; c < nchunks; ++c) M = fmaxf(M, ldcg(base + c * SL + 64 * D + row));
  float acc[HALF];
#pragma unroll
  for (int q = 0; q < HALF; ++q) acc[q] = 0.f;
  float L = 0.f;
  for (int c = 0; c < nchunks; ++c) {
    const float* pc = base + c * SL;
    const float w = ex2(ldcg(pc + 64 * D + row) - M);
    L += w * ldcg(pc + 64 * D + 64 + row);
#pragma unroll
    for (int q = 0; q < HALF / 4; ++q) {
      const float4 v = ldcg4(pc + row * D + c0 + 4 * q);
      acc[4 * q + 0] += w * v.x;
      acc[4 * q + 1] += w * v.y;
      acc[4 * q + 2] += w * v.z;
      acc[4 * q + 3] += w * v.w;
    }
  }
  if (row < qvalid) {
    const float inv = 1.f / L;
#pragma unroll
    for (int q = 0; q < HALF / 8; ++q) {
      float v[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = acc[8 * q + k] * inv;
      store8(out + row * o_row + c0 + 8 * q, v);
    }
  }
}

// decode_seg fills s_item (kItemInts ints: {seq (-1: no work left), head,
// qblock, kv_begin, kv_len, list, row, chunk, nchunks, tok0, n, request seed
// low, high}) for ticket tk of segment sg, whose seginfo record is inf.
__device__ __forceinline__ void decode_seg(const AttnParams& p, int tk, int4 sg, int4 inf, int* s_item) {
  const int local = tk - sg.w;
  const int h = local / sg.z, e = local - h * sg.z;
  const int n = inf.y, nb = num_blocks(n);
  const Item it = decode_item(sg.y, e, sg.x, h, nb, is_sparse(n, p.sparse, p.random_blocks), p.split_blocks);
  s_item[0] = sg.x;
  s_item[1] = h;
  s_item[2] = it.qblock;
  s_item[3] = it.kv_begin;
  s_item[4] = it.kv_len;
  s_item[5] = it.list;
  s_item[6] = it.row;
  s_item[7] = it.chunk;
  s_item[8] = it.nchunks;
  s_item[9] = inf.x;
  s_item[10] = n;
  s_item[11] = inf.z;
  s_item[12] = inf.w;
}

// decode_ticket decodes ticket tk of the work list into s_item (one thread;
// see decode_seg). hint is the segment of the previous ticket (tickets only
// grow).
__device__ __forceinline__ void decode_ticket(const AttnParams& p, int tk, int& hint, int* s_item) {
  const int* ws = p.ws;
  const int4* segs = reinterpret_cast<const int4*>(ws + ws_segments_offset());
  const int total = ws[1];
  if (tk >= total) {
    s_item[0] = -1;
    return;
  }
  const int nseg = ws[2];
  int lo = hint, hi = nseg - 1;
  for (int steps = 0; steps < 4 && lo < hi && segs[lo + 1].w <= tk; ++steps) ++lo;
  if (lo < hi && segs[lo + 1].w <= tk) {
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (segs[mid].w <= tk) lo = mid;
      else hi = mid - 1;
    }
  }
  hint = lo;
  const int4* info = reinterpret_cast<const int4*>(ws + ws_seginfo_offset(p.nseq, p.num_heads));
  decode_seg(p, tk, segs[lo], info[lo], s_item);
}

// fetch_item takes the next ticket and decodes it (one thread).
__device__ __forceinline__ void fetch_item(const AttnParams& p, int& hint, int* s_item) {
  decode_ticket(p, atomicAdd(p.ws, 1), hint, s_item);
}

// finish_call runs once per CTA when it leaves (thread 0, which took every
// ticket of its CTA): the last CTA of the call to leave resets the ticket
// counter, so the workspace holds a ready schedule for the next call with the
// same cu_seqlens on the stream (the engine schedules once per batch and
// reuses the schedule in every layer; the split-row semaphores reset
// themselves in the combine). The fence orders this CTA's last ticket before
// its count.
__device__ __forceinline__ void finish_call(const AttnParams& p) {
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(p.ws + 3, 1) == (int)gridDim.x - 1) {
      __threadfence();  // every other CTA's last ticket is ordered before the reset
      p.ws[0] = 0;
      p.ws[3] = 0;
    }
  }
}

template <typename T, int D, int NST>
__device__ __forceinline__ void attention(const AttnParams& p) {
  static_assert(D == 32 || D == 64 || D == 128, "head dim");
  static_assert(NST >= 2, "stages");
  constexpr int LD = D + 8;          // smem pitch, elements
  constexpr int TILE = kBlock * LD;  // elements per 64-row tile
  constexpr int CH = D / 8;          // 16-byte chunks per row
  constexpr int KT = D / 16;         // k-steps of Q K^T
  constexpr int NT = D / 8;          // n-tiles of O
  extern __shared__ __align__(16) unsigned short smem[];
  unsigned short* sQ = smem;
  unsigned short* sK = smem + TILE;
  unsigned short* sV = sK + NST * TILE;
  __shared__ int s_list[2 * kMaxList];
  __shared__ int s_item[kItemInts];
  __shared__ int s_last;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int H = p.num_heads, r = p.random_blocks;
  int* ws = p.ws;
  const int* part_base = ws + ws_part_base_offset(p.nseq);
  int* sem = ws + ws_sem_offset(p.nseq);
  const float sl2 = p.scale * 1.4426950408889634f;
  const unsigned short* Qg = static_cast<const unsigned short*>(p.q);
  const unsigned short* Kg = static_cast<const unsigned short*>(p.k);
  const unsigned short* Vg = static_cast<const unsigned short*>(p.v);
  T* Og = static_cast<T*>(p.o);
  int hint = 0;  // thread 0: segment of the previous ticket (tickets only grow)

  for (;;) {
    if (tid == 0) fetch_item(p, hint, s_item);
    __syncthreads();
    const int s = s_item[0];
    if (s < 0) break;
    int h = s_item[1], qb = s_item[2], tok0 = s_item[9];
    const int kv_begin = s_item[3], use_list = s_item[5], n = s_item[10];
    const int nb = num_blocks(n);
    int qvalid = imin(kBlock, n - qb * kBlock);
    const unsigned short* kbase = Kg + (long long)tok0 * p.k_row + (long long)h * p.k_head;
    const unsigned short* vbase = Vg + (long long)tok0 * p.v_row + (long long)h * p.v_head;
    auto load_kv = [&](int kb, int stage) {
      const int valid = imin(kBlock, n - kb * kBlock);
      load_tile<D>(sK + stage * TILE, kbase + (long long)kb * kBlock * p.k_row, p.k_row, valid, tid);
      load_tile<D>(sV + stage * TILE, vbase + (long long)kb * kBlock * p.v_row, p.v_row, valid, tid);
    };
    load_tile<D>(sQ, Qg + (long long)(tok0 + qb * kBlock) * p.q_row + (long long)h * p.q_head, p.q_row,
                 qvalid, tid);
    load_kv(use_list ? 0 : kv_begin, 0);  // a list always starts with block 0
    cp_async_commit();
    if (tid == 0 && use_list) {
      const u64 rs = p.req_seeds ? p.req_seeds[s] : 0ull;
      s_item[4] = middle_list(s_list, s_list + kMaxList, p.seed, rs, p.layer, h, qb, nb, r);
    }
    __syncthreads();
    const int L = s_item[4];
    auto block_at = [&](int j) { return use_list ? s_list[j] : kv_begin + j; };
#pragma unroll
    for (int st = 1; st < NST - 1; ++st) {
      if (st < L) load_kv(block_at(st), st);
      cp_async_commit();
    }

    unsigned qf[KT][4];
    float oacc[NT][4];
#pragma unroll
    for (int i = 0; i < NT; ++i) oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.f;
    float m0 = neg_inf(), m1 = neg_inf(), l0 = 0.f, l1 = 0.f;

    for (int j = 0; j < L; ++j) {
      cp_async_wait<NST - 2>();
      __syncthreads();
      if (j == 0) {
#pragma unroll
        for (int kk = 0; kk < KT; ++kk)
          ldsm_x4(smem_u32(sQ + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8),
                  qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3]);
      }
      {
        const int jn = j + NST - 1;
        if (jn < L) load_kv(block_at(jn), jn % NST);
        cp_async_commit();
      }
      const int kb = block_at(j);
      const unsigned short* ks = sK + (j % NST) * TILE;
      const unsigned short* vs = sV + (j % NST) * TILE;

      // S = Q K^T for this warp's 16 rows x 64 keys
      float sc[8][4];
#pragma unroll
      for (int i = 0; i < 8; ++i) sc[i][0] = sc[i][1] = sc[i][2] = sc[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KT; ++kk) {
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          unsigned b0, b1, b2, b3;
          ldsm_x4(smem_u32(ks + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * LD + kk * 16 +
                           ((lane >> 3) & 1) * 8),
                  b0, b1, b2, b3);
          Mma<T>::run(sc[2 * np], qf[kk], b0, b1);
          Mma<T>::run(sc[2 * np + 1], qf[kk], b2, b3);
        }
      }
      // scale to the log2 domain; mask keys past the sequence end
      const int kvalid = n - kb * kBlock;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          float v = sc[i][c] * sl2;
          if (kvalid < kBlock && i * 8 + 2 * t4 + (c & 1) >= kvalid) v = neg_inf();
          sc[i][c] = v;
        }
      }
      // online softmax (rows g and g+8 of the warp's tile)
      float mx0 = m0, mx1 = m1;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        mx0 = fmaxf(mx0, fmaxf(sc[i][0], sc[i][1]));
        mx1 = fmaxf(mx1, fmaxf(sc[i][2], sc[i][3]));
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      const float a0 = ex2(m0 - mx0), a1 = ex2(m1 - mx1);
      m0 = mx0;
      m1 = mx1;
      float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        sc[i][0] = ex2(sc[i][0] - m0);
        sc[i][1] = ex2(sc[i][1] - m0);
        sc[i][2] = ex2(sc[i][2] - m1);
        sc[i][3] = ex2(sc[i][3] - m1);
        rs0 += sc[i][0] + sc[i][1];
        rs1 += sc[i][2] + sc[i][3];
      }
      l0 = l0 * a0 + rs0;
      l1 = l1 * a1 + rs1;
#pragma unroll
      for (int i = 0; i < NT; ++i) {
        oacc[i][0] *= a0;
        oacc[i][1] *= a0;
        oacc[i][2] *= a1;
        oacc[i][3] *= a1;
      }
      // O += P V
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        unsigned a[4];
        a[0] = DType<T>::pack2(sc[2 * kk][0], sc[2 * kk][1]);
        a[1] = DType<T>::pack2(sc[2 * kk][2], sc[2 * kk][3]);
        a[2] = DType<T>::pack2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
        a[3] = DType<T>::pack2(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          unsigned b0, b1, b2, b3;
          ldsm_x4_t(smem_u32(vs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + dp * 16 +
                             (lane >> 4) * 8),
                    b0, b1, b2, b3);
          Mma<T>::run(oacc[2 * dp], a, b0, b1);
          Mma<T>::run(oacc[2 * dp + 1], a, b2, b3);
        }
      }
    }

    // the epilogue re-reads the item from shared memory (shorter live ranges)
    h = s_item[1];
    qb = s_item[2];
    tok0 = s_item[9];
    qvalid = imin(kBlock, s_item[10] - qb * kBlock);
    const int row = s_item[6], chunk = s_item[7], nchunks = s_item[8];
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const int r0 = warp * 16 + g, r1 = r0 + 8;
    if (nchunks == 1) {
      // normalise, stage this warp's 16 rows in its own rows of sQ, store 16 B.
      // The warp's lanes last read these rows through ldmatrix; converge them
      // before overwriting (independent thread scheduling gives no order).
      const float i0 = 1.f / l0, i1 = 1.f / l1;
      __syncwarp();
#pragma unroll
      for (int i = 0; i < NT; ++i) {
        *reinterpret_cast<unsigned*>(sQ + r0 * LD + i * 8 + 2 * t4) =
            DType<T>::pack2(oacc[i][0] * i0, oacc[i][1] * i0);
        *reinterpret_cast<unsigned*>(sQ + r1 * LD + i * 8 + 2 * t4) =
            DType<T>::pack2(oacc[i][2] * i1, oacc[i][3] * i1);
      }
      __syncwarp();
      T* ob = Og + (long long)(tok0 + qb * kBlock) * p.o_row + (long long)h * p.o_head;
#pragma unroll
      for (int idx = lane; idx < 16 * CH; idx += 32) {
        const int rr = warp * 16 + idx / CH, c = idx % CH;
        if (rr < qvalid)
          *reinterpret_cast<uint4*>(ob + rr * p.o_row + c * 8) =
              *reinterpret_cast<const uint4*>(sQ + rr * LD + c * 8);
      }
    } else {
      const long long slot0 = (long long)part_base[s] + (long long)(h * 2 + row) * nchunks;
      float* pf = p.partial + (slot0 + chunk) * partial_slot_floats(D);
#pragma unroll
      for (int i = 0; i < NT; ++i) {
        *reinterpret_cast<float2*>(pf + r0 * D + i * 8 + 2 * t4) = make_float2(oacc[i][0], oacc[i][1]);
        *reinterpret_cast<float2*>(pf + r1 * D + i * 8 + 2 * t4) = make_float2(oacc[i][2], oacc[i][3]);
      }
      if (t4 == 0) {
        pf[64 * D + r0] = m0;
        pf[64 * D + r1] = m1;
        pf[64 * D + 64 + r0] = l0;
        pf[64 * D + 64 + r1] = l1;
      }
      __threadfence();
      __syncthreads();
      int* sm = sem + (s * H + h) * 2 + row;
      if (tid == 0) s_last = atomicAdd(sm, 1) == nchunks - 1;
      __syncthreads();
      if (s_last) {
        __threadfence();
        combine<T, D>(p.partial + slot0 * partial_slot_floats(D), nchunks,
                      Og + (long long)(tok0 + qb * kBlock) * p.o_row + (long long)h * p.o_head, p.o_row,
                      qvalid, tid);
        if (tid == 0) *sm = 0;
      }
    }
    __syncthreads();  // sQ, s_list and s_item are reused by the next item
  }
  finish_call(p);
}

// warp_put_record: lane l's record int v (of ticket tk; total tickets) into s_item / sl.
__device__ __forceinline__ void warp_put_record(int v, int tk, int total, int* s_item, int* sl, int lane) {
  if (tk >= total) {
    if (lane == 0) s_item[0] = -1;
  } else if (lane < kRecItemInts) {
    s_item[lane] = v;
  } else if (lane < kRecItemInts + kMaxList) {
    sl[lane - kRecItemInts] = v;
  }
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// ------------------------------------------------------------------ sm_90a
//
// attention_wg is attention() with both matrix products on wgmma (the CTA's
// four warps are one warpgroup computing the 64-row tile): S = Q K^T with Q
// and K read by the tensor cores from shared memory, O += P V with P from
// registers and V from shared memory (transposed operand). Tiles use the
// 128-byte-swizzled layout wgmma reads: 64-column sub-tiles of 64 rows x 128 B
// (8 KiB, 1024-byte aligned), 16-byte chunk c of row r at r*128 + ((c ^ r%8) << 4).
// cp.async (generic proxy) fills them; each thread fences the async proxy
// before the barrier that publishes a tile to wgmma.

__device__ __forceinline__ unsigned sw_offset(int r, int col) {  // col a multiple of 8
  return (unsigned)((col >> 6) * 8192 + r * 128 + ((((col >> 3) & 7) ^ (r & 7)) << 4));
}

__device__ __forceinline__ unsigned long long wg_desc(unsigned addr, unsigned lbo, unsigned sbo) {
  return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)((lbo & 0x3FFFF) >> 4) << 16) |
         ((unsigned long long)((sbo & 0x3FFFF) >> 4) << 32) | (1ull << 62);  // 128-byte swizzle
}

__device__ __forceinline__ void st_shared_u32(unsigned addr, unsigned v) {
  asm volatile("st.shared.b32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ uint4 ld_shared_v4(unsigned addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}

template <int D>
__device__ __forceinline__ void load_tile_sw(unsigned sbase, const unsigned short* g, long long row_stride,
                                             int valid, int tid) {
  constexpr int CH = D / 8, RS = kThreads / CH, IT = kBlock * CH / kThreads;
  static_assert(RS % 8 == 0, "rows of one thread share r % 8");
  const int r0 = tid / CH, c = tid % CH;
  const unsigned sb = sbase + sw_offset(r0, c * 8);
  const unsigned short* g0 = g + c * 8;
  const unsigned short* gr = g0 + r0 * row_stride;
  const long long step = RS * row_stride;
#pragma unroll
  for (int it = 0; it < IT; ++it) {
    const bool ok = r0 + it * RS < valid;
    cp_async16(sb + it * RS * 128, ok ? gr + it * step : g0, ok);
  }
}

// wg_block is one key block of one warpgroup's 64-row tile: S = Q K^T, the
// online softmax (masking keys at or past kvalid), O += P V. sQ, ks and vs are
// 128-byte-swizzled tiles published to the async proxy; o, m, l the running
// state (rows 16w+g and 16w+g+8 of warp w of the warpgroup).
// The row maxima are reduced as a tree (depth 5 with the running max, against 9
// for a running chain; max is exact, so the outputs are the same bits):
// measured as variant wgm, NOTES-attention.md, thirty-fourth run.
template <typename T, int D>
__device__ __forceinline__ void wg_block(unsigned sQ, unsigned ks, unsigned vs, int kvalid, float sl2, int t4,
                                         float (&o)[D / 2], float& m0, float& m1, float& l0, float& l1) {
  constexpr int NT = D / 8;
  // S = Q K^T (64 x 64) on the warpgroup
  float sc[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) sc[i] = 0.f;
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const unsigned off = (kk >> 2) * 8192 + (kk & 3) * 32;
    Wg<T>::ss_m64n64(sc, wg_desc(sQ + off, 16, 1024), wg_desc(ks + off, 16, 1024), kk > 0);
  }
  wg_commit();
  wg_wait0();
#pragma unroll
  for (int i = 0; i < 32; ++i) reg_fence(sc[i]);

  // mask keys past the sequence end (only the sequence's last block);
  // the running max stays in raw score units, exponents are one FFMA each
  if (kvalid < kBlock) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
#pragma unroll
      for (int c = 0; c < 4; ++c)
        if (i * 8 + 2 * t4 + (c & 1) >= kvalid) sc[4 * i + c] = neg_inf();
    }
  }
  float mx0, mx1;
  {
    float a[8], b[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      a[i] = fmaxf(sc[4 * i], sc[4 * i + 1]);
      b[i] = fmaxf(sc[4 * i + 2], sc[4 * i + 3]);
    }
#pragma unroll
    for (int w = 4; w >= 1; w >>= 1) {
#pragma unroll
      for (int i = 0; i < w; ++i) {
        a[i] = fmaxf(a[i], a[i + w]);
        b[i] = fmaxf(b[i], b[i + w]);
      }
    }
    mx0 = fmaxf(m0, a[0]);
    mx1 = fmaxf(m1, b[0]);
  }
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
  const float a0 = ex2((m0 - mx0) * sl2), a1 = ex2((m1 - mx1) * sl2);
  m0 = mx0;
  m1 = mx1;
  const float ms0 = m0 * sl2, ms1 = m1 * sl2;
  float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    sc[4 * i] = ex2(fmaf(sc[4 * i], sl2, -ms0));
    sc[4 * i + 1] = ex2(fmaf(sc[4 * i + 1], sl2, -ms0));
    sc[4 * i + 2] = ex2(fmaf(sc[4 * i + 2], sl2, -ms1));
    sc[4 * i + 3] = ex2(fmaf(sc[4 * i + 3], sl2, -ms1));
    rs0 += sc[4 * i] + sc[4 * i + 1];
    rs1 += sc[4 * i + 2] + sc[4 * i + 3];
  }
  l0 = l0 * a0 + rs0;
  l1 = l1 * a1 + rs1;
#pragma unroll
  for (int i = 0; i < NT; ++i) {
    o[4 * i] *= a0;
    o[4 * i + 1] *= a0;
    o[4 * i + 2] *= a1;
    o[4 * i + 3] *= a1;
  }
  unsigned pa[4][4];
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    pa[kk][0] = DType<T>::pack2(sc[8 * kk], sc[8 * kk + 1]);
    pa[kk][1] = DType<T>::pack2(sc[8 * kk + 2], sc[8 * kk + 3]);
    pa[kk][2] = DType<T>::pack2(sc[8 * kk + 4], sc[8 * kk + 5]);
    pa[kk][3] = DType<T>::pack2(sc[8 * kk + 6], sc[8 * kk + 7]);
  }
  // O += P V on the warpgroup: V rows are keys (K), columns dims (N), MN-major
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const unsigned long long dv = wg_desc(vs + kk * 2048, 8192, 1024);
    if constexpr (D == 64) Wg<T>::rs_m64n64_tb(o, pa[kk], dv);
    else Wg<T>::rs_m64n128_tb(o, pa[kk], dv);
  }
  wg_commit();
  wg_wait0();
#pragma unroll
  for (int i = 0; i < D / 2; ++i) reg_fence(o[i]);
}

// attention_wg's per-item and load-issue overheads are cut (NOTES-attention.md,
// 2026-11-25 seventh run): each thread's K/V source pointers and shared
// destinations are computed once per item (a block's loads add
// kb * 64 * row_stride); the next item's ticket is taken during the current
// item's second-to-last block and decoded, and its key-block list built, by a
// whole warp (warp 0) after the last block, so one barrier per item remains;
// the next item's Q and first K/V loads are issued before the current item's
// epilogue (staged through the free K stage NST-1), which hides their latency.

__device__ __forceinline__ void cp_async16_full(unsigned dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void st_global_v4(void* p, uint4 v) {
  asm volatile("st.global.v4.b32 [%0], {%1,%2,%3,%4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}


// warp_next_item: the 32 lanes of one warp decode ticket tk (lane 0) into
// s_item and build a list item's key blocks into sl (kMaxList ints), equal to
// middle_list element for element: lane j < r draws R's step j, Floyd's
// collisions resolve in r shuffle steps, and every element's position in the
// merged list {0} + window + R + {nb-1} is computed from ranks.
__device__ __forceinline__ void warp_build_list(const AttnParams& p, int* s_item, int* sl, int lane);
__device__ __forceinline__ void warp_next_item(const AttnParams& p, int tk, int& hint, int* s_item, int* sl,
                                               int lane) {
  if (lane == 0) decode_ticket(p, tk, hint, s_item);
  __syncwarp();
  warp_build_list(p, s_item, sl, lane);
}

// warp_build_list: the 32 lanes of one warp build the key-block list of the
// decoded item s_item (nothing for a dense item or the end marker).
__device__ __forceinline__ void warp_build_list(const AttnParams& p, int* s_item, int* sl, int lane) {
  if (s_item[0] < 0 || !s_item[5]) return;
  const int h = s_item[1], i = s_item[2], nb = num_blocks(s_item[10]);
  const int r = p.random_blocks;
  const u64 rs = ((u64)(unsigned)s_item[12] << 32) | (unsigned)s_item[11];
  const u64 k = key(p.seed, rs, p.layer, h, i);
  const int lo = imax(1, i - 1), hi = imin(nb - 2, i + 1);
  const int width = hi - lo + 1;
  const int m = (nb - 2) - width;
  int x = 0;
  if (lane < r) x = (int)(((u64)draw(k, lane) * (u64)(m - r + lane + 1)) >> 32);
  int v = x;
  bool coll = false;
  for (int st = 0; st < r; ++st) {
    if (lane == st) v = coll ? m - r + st : x;
    const int os = __shfl_sync(0xffffffffu, v, st);
    if (lane > st && x == os) coll = true;
  }
  int b = 1 + v;
  if (b >= lo) b += width;
  const int w = lo + lane;  // window element of this lane (lane < width)
  int rank = 0, rb = 0;
  for (int j = 0; j < r; ++j) {
    const int bj = __shfl_sync(0xffffffffu, b, j);
    rank += bj < b;
    rb += bj < w;
  }
  if (lane < r) sl[1 + rank + (b > hi ? width : 0)] = b;
  if (lane < width) sl[1 + lane + rb] = w;
  if (lane == 0) {
    sl[0] = 0;
    sl[1 + width + r] = nb - 1;
    s_item[4] = 2 + width + r;
  }
}

// wg_epilogue writes the finished tile (query block it[2] of head it[1] of
// sequence it[0]; it: the item's s_item): normalised O through stage, a free
// 128-byte-swizzled 64 x D tile, with 16-byte global stores, or, for chunk
// it[7] of a split global row it[6], fp32 partials, and the CTA that completes
// the row's last chunk combines them. s_last: a shared flag. NAMED 0: the
// tile's 128 threads are the CTA (__syncthreads); 1: they sync on named
// barrier barid (the ws kernel's consumer warpgroups).
template <int NAMED>
__device__ __forceinline__ void tile_sync(int barid) {
  if constexpr (NAMED) asm volatile("bar.sync %0, 128;" ::"r"(barid) : "memory");
  else __syncthreads();
}
template <typename T, int D, int NAMED = 0>
__device__ __forceinline__ void wg_epilogue(const AttnParams& p, unsigned stage, float (&o)[D / 2], float m0,
                                             float m1, float l0, float l1, float sl2, const int* it, int wtid,
                                             int* s_last, int barid = 0) {
  constexpr int CH = D / 8;
  constexpr int NT = D / 8;
  const int s = it[0], h = it[1], qb = it[2], row = it[6], chunk = it[7], nchunks = it[8], tok0 = it[9],
            n = it[10];
  const int warp = wtid >> 5, lane = wtid & 31, g = lane >> 2, t4 = lane & 3;
  const int H = p.num_heads;
  T* Og = static_cast<T*>(p.o);
  const int qvalid = imin(kBlock, n - qb * kBlock);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const int r0 = warp * 16 + g, r1 = r0 + 8;
  if (nchunks == 1) {
    const float i0 = 1.f / l0, i1 = 1.f / l1;
#pragma unroll
    for (int i = 0; i < NT; ++i) {
      st_shared_u32(stage + sw_offset(r0, i * 8) + 4 * t4, DType<T>::pack2(o[4 * i] * i0, o[4 * i + 1] * i0));
      st_shared_u32(stage + sw_offset(r1, i * 8) + 4 * t4, DType<T>::pack2(o[4 * i + 2] * i1, o[4 * i + 3] * i1));
    }
    __syncwarp();
    T* ob = Og + (long long)(tok0 + qb * kBlock) * p.o_row + (long long)h * p.o_head;
#pragma unroll
    for (int idx = lane; idx < 16 * CH; idx += 32) {
      const int rr = warp * 16 + idx / CH, c = idx % CH;
      if (rr < qvalid) st_global_v4(ob + rr * p.o_row + c * 8, ld_shared_v4(stage + sw_offset(rr, c * 8)));
    }
  } else {
    const int* part_base = p.ws + ws_part_base_offset(p.nseq);
    int* sem = p.ws + ws_sem_offset(p.nseq);
    const long long slot0 = (long long)part_base[s] + (long long)(h * 2 + row) * nchunks;
    float* pf = p.partial + (slot0 + chunk) * partial_slot_floats(D);
#pragma unroll
    for (int i = 0; i < NT; ++i) {
      *reinterpret_cast<float2*>(pf + r0 * D + i * 8 + 2 * t4) = make_float2(o[4 * i], o[4 * i + 1]);
      *reinterpret_cast<float2*>(pf + r1 * D + i * 8 + 2 * t4) = make_float2(o[4 * i + 2], o[4 * i + 3]);
    }
    if (t4 == 0) {
      pf[64 * D + r0] = m0 * sl2;  // partials keep the max in the log2 domain
      pf[64 * D + r1] = m1 * sl2;
      pf[64 * D + 64 + r0] = l0;
      pf[64 * D + 64 + r1] = l1;
    }
    __threadfence();
    tile_sync<NAMED>(barid);
    int* sm = sem + (s * H + h) * 2 + row;
    if (wtid == 0) *s_last = atomicAdd(sm, 1) == nchunks - 1;
    tile_sync<NAMED>(barid);
    if (*s_last) {
      __threadfence();
      combine<T, D>(p.partial + slot0 * partial_slot_floats(D), nchunks,
                    Og + (long long)(tok0 + qb * kBlock) * p.o_row + (long long)h * p.o_head, p.o_row,
                    qvalid, wtid);
      if (wtid == 0) *sm = 0;
    }
  }
}

// The next ticket's decode is prefetched (measured as variant wgf,
// NOTES-attention.md, twenty-first run: -1.3% on 8x4096, -0.9% on the long
// tail, even elsewhere): during an item's last block warp 0 loads the 32
// segment records from the previous ticket's segment on and their seginfo, so
// that the decode after the block reads nothing from memory when the ticket's
// segment is among them (a ballot finds it).
//
// TR = 1 (variant wgtr, harness only: a measurement) is the kernel plus a trace in
// the module's g_sa_trace (see its declaration): when each CTA starts and
// leaves, and when each work item's block steps end.
#if defined(RAPTOR_SA_WS)
// g_sa_trace: [0, kTraceCtas) per CTA {start, end, smid | items << 16, steps};
// then per ticket {begin (the item published), first block landed, end of its
// block steps, CTA | L << 16, the next item decoded (with records: before its
// record's copy), its list built (after the copy), -, -} (globaltimer, ns).
constexpr int kTraceCtas = 4096, kTraceTickets = 1 << 17;
__device__ unsigned long long g_sa_trace[kTraceCtas * 4 + kTraceTickets * 8];
__device__ __forceinline__ void trace_item(int tk, int k, unsigned long long v) {
  if (tk < kTraceTickets) g_sa_trace[kTraceCtas * 4 + 8 * tk + k] = v;
}
#endif
__device__ __forceinline__ unsigned long long globaltimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
//
// IR = 1 (the engine's wgmma kernels) reads each item from its record, which
// sparse_attention_items wrote with the schedule (its decode and its key-block
// list for this layer, ws_items_offset), when the workspace holds records valid
// for this call (ws[4..7]), and otherwise decodes and lists as IR = 0: warp 0
// loads the next item's record during the last block (the ticket is taken a
// block earlier) and at the boundary only copies it to shared memory
// (measured as variant wgrec, NOTES-attention.md, forty-second run).
template <typename T, int D, int NST, int TR = 0, int IR = 0>
__device__ __forceinline__ void attention_wg(const AttnParams& p) {
  static_assert(D == 64 || D == 128, "head dim");
  constexpr int TB = kBlock * D * 2;  // bytes per 64-row tile
  constexpr int CH = D / 8, RS = kThreads / CH, IT = kBlock * CH / kThreads;
  static_assert(RS % 8 == 0, "rows of one thread share r % 8");
  extern __shared__ __align__(16) unsigned char smem_wg[];
  const unsigned sQ = (smem_u32(smem_wg) + 1023u) & ~1023u;
  const unsigned sK = sQ + TB;
  const unsigned sV = sK + NST * TB;
  __shared__ int s_list[2][kMaxList];
  __shared__ int s_item[2][kItemInts];
  __shared__ int s_last;

  const int tid = threadIdx.x, t4 = tid & 3, lane = tid & 31;
  const float sl2 = p.scale * 1.4426950408889634f;
  const unsigned short* Qg = static_cast<const unsigned short*>(p.q);
  const char* Kg = static_cast<const char*>(p.k);
  const char* Vg = static_cast<const char*>(p.v);
  // this thread's chunk of every tile: rows r0 + it*RS, 16 bytes at column c8
  const int r0 = tid / CH, c8 = (tid % CH) * 8;
  const unsigned sKt = sK + sw_offset(r0, c8), sVt = sV + sw_offset(r0, c8);
  const long long kstep = (long long)RS * p.k_row * 2, vstep = (long long)RS * p.v_row * 2;
  const long long kblk = (long long)kBlock * p.k_row * 2, vblk = (long long)kBlock * p.v_row * 2;
  int hint = 0;
  int tkn = 0;  // thread 0: the next ticket
  const int4* segs_g = reinterpret_cast<const int4*>(p.ws + ws_segments_offset());
  const int4* info_g = reinterpret_cast<const int4*>(p.ws + ws_seginfo_offset(p.nseq, p.num_heads));
  const int g_total = p.ws[1], g_nseg = p.ws[2];
  int pf_base = -1;
  int4 pf_sg = make_int4(0, 0, 0, 0), pf_inf = make_int4(0, 0, 0, 0);
  // item records: used when sparse_attention_items built them for this schedule, this layer, engine seed and r
  bool use_rec = false;
  const int* recs = p.ws;
  if constexpr (IR != 0) {
    const int4 h = *reinterpret_cast<const int4*>(p.ws + 4);
    use_rec = p.layer >= 0 && p.layer < h.x && h.y == (int)(unsigned)p.seed &&
              h.z == (int)(unsigned)(p.seed >> 32) && h.w == p.random_blocks;
    recs = p.ws + ws_items_offset(p.nseq, p.num_heads) + (long long)(p.sparse ? p.layer : 0) * g_total * kRecInts;
  }
  int pf_rec = 0;
  bool pf_have = false;

  unsigned long long tr_start = 0;
  int tr_tk = 0, tr_items = 0, tr_steps = 0, tr_cur = 0;  // TR: thread 0's tickets and counts
  if constexpr (TR != 0) tr_start = globaltimer();
  if (tid < 32) {
    int tk = 0;
    if (lane == 0) tk = atomicAdd(p.ws, 1);
    tk = __shfl_sync(0xffffffffu, tk, 0);
    if constexpr (TR != 0) tr_tk = tk;
    if (IR != 0 && use_rec)
      warp_put_record(tk < g_total ? recs[(long long)tk * kRecInts + lane] : 0, tk, g_total, s_item[0], s_list[0],
                      lane);
    else
      warp_next_item(p, tk, hint, s_item[0], s_list[0], lane);
  }
  __syncthreads();

  float o[D / 2];
  float m0 = 0.f, m1 = 0.f, l0 = 0.f, l1 = 0.f;
  int buf = 0, prev = -1;
  for (;;) {
    const int* it = s_item[buf];
    const int s = it[0];
#if defined(RAPTOR_SA_WS)
    if constexpr (TR != 0)
      if (tid == 0 && s >= 0) trace_item(tr_tk, 0, globaltimer());
#endif
    int L = 0, kv_begin = 0, use_list = 0, n = 0;
    const char* kp = Kg;
    const char* vp = Vg;
    const int* lst = s_list[buf];
    if (s >= 0) {
      const int h = it[1], qb = it[2], tok0 = it[9];
      kv_begin = it[3];
      L = it[4];
      use_list = it[5];
      n = it[10];
      kp = Kg + ((long long)(tok0 + r0) * p.k_row + (long long)h * p.k_head + c8) * 2;
      vp = Vg + ((long long)(tok0 + r0) * p.v_row + (long long)h * p.v_head + c8) * 2;
      load_tile_sw<D>(sQ, Qg + (long long)(tok0 + qb * kBlock) * p.q_row + (long long)h * p.q_head, p.q_row,
                      imin(kBlock, n - qb * kBlock), tid);
    }
    auto block_at = [&](int j) { return use_list ? lst[j] : kv_begin + j; };
    auto load_kv = [&](int kb, int stage) {
      const char* gk = kp + kb * kblk;
      const char* gv = vp + kb * vblk;
      const unsigned dk = sKt + stage * TB, dv = sVt + stage * TB;
      const int valid = n - kb * kBlock;
      if (valid >= kBlock) {
#pragma unroll
        for (int i = 0; i < IT; ++i) cp_async16_full(dk + i * RS * 128, gk + i * kstep);
#pragma unroll
        for (int i = 0; i < IT; ++i) cp_async16_full(dv + i * RS * 128, gv + i * vstep);
      } else {  // the sequence's last block: rows >= valid zero-filled, their source row 0
        const char* k0 = kp - (long long)r0 * p.k_row * 2;
        const char* v0 = vp - (long long)r0 * p.v_row * 2;
#pragma unroll
        for (int i = 0; i < IT; ++i) {
          const bool ok = r0 + i * RS < valid;
          cp_async16(dk + i * RS * 128, ok ? gk + i * kstep : k0, ok);
          cp_async16(dv + i * RS * 128, ok ? gv + i * vstep : v0, ok);
        }
      }
    };
    if (s >= 0) {
      load_kv(block_at(0), 0);
      cp_async_commit();
#pragma unroll
      for (int st = 1; st < NST - 1; ++st) {
        if (st < L) load_kv(block_at(st), st);
        cp_async_commit();
      }
    }
    // the previous item's epilogue, under this item's first loads
    if (prev >= 0)
      wg_epilogue<T, D>(p, sK + (NST - 1) * TB, o, m0, m1, l0, l1, sl2, s_item[prev], tid, &s_last);
    if (s < 0) break;

#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    m0 = neg_inf();
    m1 = neg_inf();
    l0 = 0.f;
    l1 = 0.f;
    const int jt = imax(L - 2, 0);
    for (int j = 0; j < L; ++j) {
      cp_async_wait<NST - 2>();
      fence_proxy_async();
      __syncthreads();
#if defined(RAPTOR_SA_WS)
      if constexpr (TR != 0)
        if (j == 0 && tid == 0) trace_item(tr_tk, 1, globaltimer());
#endif
      if (j == jt && tid == 0) tkn = atomicAdd(p.ws, 1);
      {
        const int jn = j + NST - 1;
        if (jn < L) load_kv(block_at(jn), jn % NST);
        cp_async_commit();
      }
      if (IR != 0 && use_rec) {
        if (j == L - 1 && L >= 2 && tid < 32) {  // the next item's record; the ticket was taken a block ago
          const int tkp = __shfl_sync(0xffffffffu, tkn, 0);
          pf_rec = tkp < g_total ? recs[(long long)tkp * kRecInts + lane] : 0;
          pf_have = true;
        }
      } else if (j == L - 1 && L >= 2 && tid < 32) {  // prefetch; the ticket was taken a block ago
        pf_base = __shfl_sync(0xffffffffu, hint, 0);
        const int i = pf_base + lane;
        if (i < g_nseg) {
          pf_sg = segs_g[i];
          pf_inf = info_g[i];
        }
      }
      wg_block<T, D>(sQ, sK + (j % NST) * TB, sV + (j % NST) * TB, n - block_at(j) * kBlock, sl2, t4, o, m0, m1,
                     l0, l1);
    }
#if defined(RAPTOR_SA_WS)
    if constexpr (TR != 0) {
      if (tid == 0) {
        trace_item(tr_tk, 2, globaltimer());
        trace_item(tr_tk, 3, blockIdx.x | ((unsigned long long)L << 16));
        tr_cur = tr_tk;
        tr_tk = tkn;
        ++tr_items;
        tr_steps += L;
      }
    }
#endif
    if (IR != 0 && use_rec) {
      if (tid < 32) {
        const int tk = __shfl_sync(0xffffffffu, tkn, 0);
        const int v = pf_have ? pf_rec : (tk < g_total ? recs[(long long)tk * kRecInts + lane] : 0);
        pf_have = false;
#if defined(RAPTOR_SA_WS)
        if constexpr (TR != 0)
          if (lane == 0) trace_item(tr_cur, 4, globaltimer());
#endif
        warp_put_record(v, tk, g_total, s_item[buf ^ 1], s_list[buf ^ 1], lane);
#if defined(RAPTOR_SA_WS)
        if constexpr (TR != 0)
          if (lane == 0) trace_item(tr_cur, 5, globaltimer());
#endif
      }
    } else if (tid < 32) {
      const int tk = __shfl_sync(0xffffffffu, tkn, 0);
      bool got = false;
      if (pf_base >= 0) {
        if (tk >= g_total) {
          if (lane == 0) s_item[buf ^ 1][0] = -1;
          got = true;
        } else {
          // lane l holds segment pf_base + l; it holds tk if its first ticket <= tk < the next one's
          const int i = pf_base + lane;
          const int nx = __shfl_down_sync(0xffffffffu, pf_sg.w, 1);
          const bool last = i + 1 >= g_nseg;
          const bool in = i < g_nseg && pf_sg.w <= tk && (last || (lane < 31 && tk < nx));
          const unsigned bal = __ballot_sync(0xffffffffu, in);
          if (bal) {
            const int src = __ffs(bal) - 1;
            if (lane == src) decode_seg(p, tk, pf_sg, pf_inf, s_item[buf ^ 1]);
            hint = pf_base + src;
            got = true;
          }
        }
        pf_base = -1;
      }
#if defined(RAPTOR_SA_WS)
      if constexpr (TR != 0) {  // warp_next_item's parts, stamped
        if (!got && lane == 0) decode_ticket(p, tk, hint, s_item[buf ^ 1]);
        __syncwarp();
        if (lane == 0) trace_item(tr_cur, 4, globaltimer());
        warp_build_list(p, s_item[buf ^ 1], s_list[buf ^ 1], lane);
        __syncwarp();
        if (lane == 0) trace_item(tr_cur, 5, globaltimer());
      } else
#endif
      if (got) {
        __syncwarp();
        warp_build_list(p, s_item[buf ^ 1], s_list[buf ^ 1], lane);
      } else {
        warp_next_item(p, tk, hint, s_item[buf ^ 1], s_list[buf ^ 1], lane);
      }
    }
    __syncthreads();  // publishes the next item; every wgmma of this item is done
    prev = buf;
    buf ^= 1;
  }
#if defined(RAPTOR_SA_WS)
  if constexpr (TR != 0) {
    if (tid == 0 && blockIdx.x < kTraceCtas) {
      unsigned smid;
      asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
      unsigned long long* c = g_sa_trace + 4 * blockIdx.x;
      c[0] = tr_start;
      c[1] = globaltimer();
      c[2] = smid | ((unsigned long long)tr_items << 16);
      c[3] = tr_steps;
    }
  }
#endif
  finish_call(p);
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// block_exclusive_scan over all threads of the CTA (blockDim.x a multiple of
// 32, at most 1024); sh holds 33 ints. Every thread must call it.
__device__ __forceinline__ int block_exclusive_scan(int v, int& total, int* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  int x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) sh[warp] = x;
  __syncthreads();
  if (warp == 0) {
    const int wsum = lane < nw ? sh[lane] : 0;
    int inc = wsum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, inc, o);
      if (lane >= o) inc += y;
    }
    sh[lane] = inc - wsum;
    if (lane == 31) sh[32] = inc;
  }
  __syncthreads();
  const int res = sh[warp] + x - v;
  total = sh[32];
  __syncthreads();
  return res;
}

}  // namespace sparse
}  // namespace raptor

#include "sparse_attention_ws.cuh"

using raptor::sparse::AttnParams;

// sparse_attention_schedule builds the work list of one attention call from
// cu_seqlens (see sparse_attention.cuh). Launch: 1 CTA of kScheduleThreads.
extern "C" __global__ void __launch_bounds__(raptor::sparse::kScheduleThreads)
    sparse_attention_schedule(const AttnParams p) {
  using namespace raptor::sparse;
  __shared__ int hist[kBuckets], cur[kBuckets], sh[33];
  __shared__ int carry, s_nseg, s_cut, s_sparse;
  const int tid = threadIdx.x;
  const int nseq = p.nseq, H = p.num_heads, r = p.random_blocks, C = p.split_blocks;
  // a dense model's items cost their sequence's block count: by sequence is cost order there
  const int order = p.sort_by_cost >= 2 && !p.sparse ? 1 : p.sort_by_cost;
  int* ws = p.ws;
  int4* segs = reinterpret_cast<int4*>(ws + ws_segments_offset());
  int* part_base = ws + ws_part_base_offset(nseq);
  int* sem = ws + ws_sem_offset(nseq);
  const int* cu = p.cu_seqlens;
  if (tid < kBuckets) {
    hist[tid] = 0;
    cur[tid] = 0;
  }
  if (tid == 0) {
    carry = 0;
    s_sparse = 0;
  }
  __syncthreads();
  // pass 1: segment histogram by cost bucket; partial-slot bases
  for (int base = 0; base < nseq; base += blockDim.x) {
    const int s = base + tid;
    int parts = 0;
    if (s < nseq) {
      const int n = cu[s + 1] - cu[s], nb = num_blocks(n);
      const bool sp = is_sparse(n, p.sparse, r);
      if (sp) s_sparse = 1;  // a sparse sequence: global-row chunks exist
      if (order >= 2) {  // by sequence: one run of segments per sequence, longest first
        int ns = 0;
        for (int kind = 0; kind < kKinds; ++kind) {
          int cnt, cost;
          seg_info(kind, nb, sp, r, C, cnt, cost);
          ns += cnt > 0;
        }
        atomicAdd(&hist[length_bucket(nb)], ns);
      } else {
        for (int kind = 0; kind < kKinds; ++kind) {
          int cnt, cost;
          seg_info(kind, nb, sp, r, C, cnt, cost);
          if (cnt > 0) atomicAdd(&hist[order ? cost_bucket(cost) : 0], 1);
        }
      }
      const int nc = chunks_of(nb, sp, C);
      if (nc > 1) parts = 2 * H * nc;
    }
    int tot;
    const int ex = block_exclusive_scan(parts, tot, sh);
    if (s < nseq) part_base[s] = carry + ex;
    __syncthreads();
    if (tid == 0) carry += tot;
    __syncthreads();
  }
  // bucket bases, most expensive first
  if (tid == 0) {
    int run = 0;
    for (int b = kBuckets - 1; b >= 0; --b) {
      const int c = hist[b];
      hist[b] = run;
      run += c;
    }
    s_nseg = run;
    carry = 0;
  }
  __syncthreads();
  // pass 2: place segments
  for (int s = tid; s < nseq; s += blockDim.x) {
    const int n = cu[s + 1] - cu[s], nb = num_blocks(n);
    const bool sp = is_sparse(n, p.sparse, r);
    if (order >= 2) {
      // the sequence's segments, most expensive first, at consecutive places
      int kinds[kKinds], costs[kKinds], cnts[kKinds], ns = 0;
      for (int kind = 0; kind < kKinds; ++kind) {
        int cnt, cost;
        seg_info(kind, nb, sp, r, C, cnt, cost);
        if (cnt > 0) {
          int j = ns++;
          for (; j > 0 && costs[j - 1] < cost; --j) {
            kinds[j] = kinds[j - 1];
            costs[j] = costs[j - 1];
            cnts[j] = cnts[j - 1];
          }
          kinds[j] = kind;
          costs[j] = cost;
          cnts[j] = cnt;
        }
      }
      const int b = length_bucket(nb);
      const int at = hist[b] + atomicAdd(&cur[b], ns);
      for (int j = 0; j < ns; ++j) segs[at + j] = make_int4(s, kinds[j], cnts[j], 0);
      continue;
    }
    for (int kind = 0; kind < kKinds; ++kind) {
      int cnt, cost;
      seg_info(kind, nb, sp, r, C, cnt, cost);
      if (cnt > 0) {
        const int b = order ? cost_bucket(cost) : 0;
        segs[hist[b] + atomicAdd(&cur[b], 1)] = make_int4(s, kind, cnt, 0);
      }
    }
  }
  __syncthreads();
  const int nseg = s_nseg;
  // sort_by_cost 3: mode 2's order, except that the global-row chunks that
  // would start within the last lead = (SMs x 4) x C block steps of the work
  // move to where that lead begins (stable), so that about C steps of other
  // work per CTA remain behind every chunk (no straggler at the end). Each
  // thread holds kRel consecutive segments (more segments: mode 2's order).
  // Without a sparse sequence there is no chunk to move.
  constexpr int kRel = 8;
  if (order == 3 && s_sparse && nseg <= kRel * (int)blockDim.x) {
    __syncthreads();  // pass 2's segments are written
    int4 mine[kRel];
    int wk[kRel];
    const int i0 = tid * kRel;
    int wsum = 0;
#pragma unroll
    for (int j = 0; j < kRel; ++j) {
      wk[j] = 0;
      if (i0 + j < nseg) {
        mine[j] = segs[i0 + j];
        const int n = cu[mine[j].x + 1] - cu[mine[j].x];
        int cnt, cost;
        seg_info(mine[j].y, num_blocks(n), is_sparse(n, p.sparse, r), r, C, cnt, cost);
        wk[j] = mine[j].z * H * cost;
      }
      wsum += wk[j];
    }
    if (tid == 0) s_cut = 0;
    int W;
    const int wex = block_exclusive_scan(wsum, W, sh);  // ends with a barrier
    unsigned nsm;
    asm("mov.u32 %0, %%nsmid;" : "=r"(nsm));
    const long long lead = (long long)nsm * 4 * imin(C, 1 << 16);
    const int cut = (int)((long long)W - lead < -1 ? -1 : (long long)W - lead);
    int run = wex, before = 0, msum = 0;
#pragma unroll
    for (int j = 0; j < kRel; ++j) {
      run += wk[j];
      before += i0 + j < nseg && run <= cut;
    }
    atomicAdd(&s_cut, before);
    __syncthreads();
    const int P = s_cut;  // segments that end at or before the cut
    bool mv[kRel];
#pragma unroll
    for (int j = 0; j < kRel; ++j) {
      mv[j] = i0 + j < nseg && i0 + j >= P && (mine[j].y == 3 || mine[j].y == 4);
      msum += mv[j];
    }
    int nmv;
    int m = block_exclusive_scan(msum, nmv, sh);  // every read of segs is before this barrier
#pragma unroll
    for (int j = 0; j < kRel; ++j) {
      const int i = i0 + j;
      if (i >= nseg) continue;
      const int pos = i < P ? i : mv[j] ? P + m : P + nmv + (i - P - m);
      m += mv[j];
      segs[pos] = mine[j];
    }
  }
  __syncthreads();
  // pass 3: first ticket of each segment
  int4* info = reinterpret_cast<int4*>(ws + ws_seginfo_offset(nseq, H));
  for (int base = 0; base < nseg; base += blockDim.x) {
    const int i = base + tid;
    const int c = i < nseg ? segs[i].z * H : 0;
    int tot;
    const int ex = block_exclusive_scan(c, tot, sh);
    if (i < nseg) {
      segs[i].w = carry + ex;
      const int s = segs[i].x;
      const u64 rs = p.req_seeds ? p.req_seeds[s] : 0ull;
      info[i] = make_int4(cu[s], cu[s + 1] - cu[s], (int)(unsigned)rs, (int)(unsigned)(rs >> 32));
    }
    __syncthreads();
    if (tid == 0) carry += tot;
    __syncthreads();
  }
  for (int i = tid; i < 2 * H * nseq; i += blockDim.x) sem[i] = 0;
  if (tid == 0) {
    ws[0] = 0;
    ws[1] = carry;
    ws[2] = nseg;
    ws[3] = 0;
    ws[4] = 0;  // no item records for this schedule yet (sparse_attention_items)
  }
}

// sparse_attention_d{D}[_s{NST}]_{f16,bf16}: the attention kernel. Launch
// kThreads threads per CTA, dynamic shared memory (1 + 2*NST) * 64 * (D+8) * 2
// bytes, a persistent grid of (multiprocessors x resident CTAs per
// multiprocessor) CTAs, after sparse_attention_schedule on the same stream (or
// after an earlier call on the same schedule: see finish_call).
#define RAPTOR_SPARSE_ATTN(D, NST, MINB, NAME, T)                                  \
  extern "C" __global__ void __launch_bounds__(raptor::sparse::kThreads, MINB) NAME( \
      const AttnParams p) {                                                       \
    raptor::sparse::attention<T, D, NST>(p);                                      \
  }
#define RAPTOR_SPARSE_ATTN_DT(suffix, T)                                          \
  RAPTOR_SPARSE_ATTN(32, 2, 4, sparse_attention_d32_##suffix, T)                  \
  RAPTOR_SPARSE_ATTN(64, 2, 4, sparse_attention_d64_##suffix, T)                  \
  RAPTOR_SPARSE_ATTN(128, 2, 2, sparse_attention_d128_##suffix, T)                \
  RAPTOR_SPARSE_ATTN(64, 2, 3, sparse_attention_d64_b3_##suffix, T)               \
  RAPTOR_SPARSE_ATTN(64, 3, 3, sparse_attention_d64_s3_##suffix, T)               \
  RAPTOR_SPARSE_ATTN(128, 3, 2, sparse_attention_d128_s3_##suffix, T)
RAPTOR_FOR_DTYPES(RAPTOR_SPARSE_ATTN_DT)

// sparse_attention_d{64,128}_wg[3]_{f16,bf16}: the wgmma kernel (sm_90a only;
// elsewhere it traps). Dynamic shared memory (1 + 2*NST) * 64 * D * 2 + 1024
// bytes (the tiles are aligned to 1024 bytes inside it).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define RAPTOR_SPARSE_ATTN_WG_BODY(T, D, NST) raptor::sparse::attention_wg<T, D, NST, 0, 1>(p);
#else
#define RAPTOR_SPARSE_ATTN_WG_BODY(T, D, NST) __trap();
#endif
#define RAPTOR_SPARSE_ATTN_WG(D, NST, MINB, NAME, T)                               \
  extern "C" __global__ void __launch_bounds__(raptor::sparse::kThreads, MINB) NAME( \
      const AttnParams p) {                                                       \
    RAPTOR_SPARSE_ATTN_WG_BODY(T, D, NST)                                         \
  }
#define RAPTOR_SPARSE_ATTN_WG_DT(suffix, T)                                       \
  RAPTOR_SPARSE_ATTN_WG(64, 2, 4, sparse_attention_d64_wg_##suffix, T)            \
  RAPTOR_SPARSE_ATTN_WG(64, 3, 4, sparse_attention_d64_wg3_##suffix, T)           \
  RAPTOR_SPARSE_ATTN_WG(128, 2, 2, sparse_attention_d128_wg_##suffix, T)
RAPTOR_FOR_DTYPES(RAPTOR_SPARSE_ATTN_WG_DT)

// sparse_attention_items writes the item records of the schedule (see the
// workspace layout in sparse_attention.cuh) for layers 0 .. layers-1 of a
// sparse model (one set for a dense model, whose records do not depend on the
// layer) and marks them valid for p's engine seed and r (ws[4..7]); the
// schedule kernel marks them invalid. The wgmma kernel reads a call's records
// when they are valid for it (layer, seed, r) instead of decoding each item and
// building its list (kernels/NOTES-attention.md, forty-second run: -2.5 to -4%
// on every workload); the records do not depend on Q, K, V, so a forward builds
// them once, with its schedule. Launch after the schedule kernel on the same
// stream, one thread per (ticket, set), 128 per CTA, at least capacity threads
// in x and the record sets in y (layers for a sparse model, 1 for a dense one);
// capacity is the tickets per set the workspace has room for (items_bound(T,
// nseq, H, C) when it holds ws_items_offset + kRecInts * items_bound * sets
// ints): a schedule of more tickets (T understated) gets no records.
extern "C" __global__ void __launch_bounds__(128) sparse_attention_items(const AttnParams p, int layers,
                                                                        int capacity) {
  using namespace raptor::sparse;
  __shared__ int s_hint;
  const int total = p.ws[1];
  const int sets = p.sparse ? layers : 1;
  const int tk = blockIdx.x * blockDim.x + threadIdx.x, layer = blockIdx.y;
  // valid only when the room and the grid cover every ticket and set; else nothing is written
  const bool ok = total <= capacity && (long long)gridDim.x * blockDim.x >= total && (int)gridDim.y >= sets && layers >= 1;
  if (tk == 0 && layer == 0)
    *reinterpret_cast<int4*>(p.ws + 4) = make_int4(!ok ? 0 : p.sparse ? layers : 0x7fffffff, (int)(unsigned)p.seed,
                                                   (int)(unsigned)(p.seed >> 32), p.random_blocks);
  if (!ok || layer >= sets || blockIdx.x * blockDim.x >= total) return;
  // the CTA's tickets are consecutive: thread 0 finds the first one's segment, the others start there
  int it[kItemInts];
  int hint = 0;
  if (threadIdx.x == 0) {
    decode_ticket(p, tk, hint, it);
    s_hint = hint;
  }
  __syncthreads();
  if (tk >= total) return;
  if (threadIdx.x != 0) {
    hint = s_hint;
    decode_ticket(p, tk, hint, it);
  }
  int rec[kRecInts];
#pragma unroll
  for (int i = 0; i < kRecInts; ++i) rec[i] = i < kRecItemInts ? it[i] : 0;
  if (it[5]) {
    int scr[kMaxRandom];
    const u64 rs = ((u64)(unsigned)it[12] << 32) | (unsigned)it[11];
    rec[4] = middle_list(rec + kRecItemInts, scr, p.seed, rs, layer, it[1], it[2], num_blocks(it[10]), p.random_blocks);
  }
  int4* out = reinterpret_cast<int4*>(p.ws + ws_items_offset(p.nseq, p.num_heads) +
                                      ((long long)layer * total + tk) * kRecInts);
#pragma unroll
  for (int i = 0; i < kRecInts / 4; ++i) out[i] = make_int4(rec[4 * i], rec[4 * i + 1], rec[4 * i + 2], rec[4 * i + 3]);
}

// sparse_attention_d{64,128}_ws[4]_{f16,bf16}: the warp-specialised TMA kernel
// (sparse_attention_ws.cuh; sm_90a only, elsewhere it traps), compiled only with
// -DRAPTOR_SA_WS (tests/gpu/attention/nvrtc.py defines it; the engine does not: the
// variants measured slower than _wg, NOTES-attention.md, and would double the module's
// sm_90a compile time, 7.4 s -> 14 s). (NCONS+1)*128 threads (ws: D = 64 NCONS 3, NST 3;
// D = 128 NCONS 2, NST 2; ws4: D = 64 NCONS 4, NST 2, D = 128 as ws; ws4n: ws4 without
// K/V supply, a measurement; ws4p: ws4 with the item-ahead producer, not yet run on a
// device), dynamic shared memory NCONS * (2 + 2*NST) * 64 * D * 2 + 1024
// bytes, one CTA per SM; tq, tk, tv: tensor maps of Q, K, V (see the header).
#if defined(RAPTOR_SA_WS)
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define RAPTOR_SPARSE_ATTN_WS_BODY(T, D, NC, NST, MODE) \
  raptor::sparse::attention_ws<T, D, NC, NST, MODE>(p, &tq, &tk, &tv);
#else
#define RAPTOR_SPARSE_ATTN_WS_BODY(T, D, NC, NST, MODE) __trap();
#endif
#define RAPTOR_SPARSE_ATTN_WS(D, NC, NST, NAME, T) RAPTOR_SPARSE_ATTN_WSM(D, NC, NST, 0, NAME, T)
#define RAPTOR_SPARSE_ATTN_WSM(D, NC, NST, MODE, NAME, T)                                            \
  extern "C" __global__ void __launch_bounds__((NC + 1) * 128, 1)                                   \
      NAME(const AttnParams p, const __grid_constant__ raptor::sparse::TmaDesc tq,                   \
           const __grid_constant__ raptor::sparse::TmaDesc tk,                                       \
           const __grid_constant__ raptor::sparse::TmaDesc tv) {                                     \
    RAPTOR_SPARSE_ATTN_WS_BODY(T, D, NC, NST, MODE)                                                  \
  }
#define RAPTOR_SPARSE_ATTN_WGV(D, NST, MINB, TR, IR, NAME, T)                                 \
  extern "C" __global__ void __launch_bounds__(raptor::sparse::kThreads, MINB) NAME(           \
      const AttnParams p) {                                                                 \
    RAPTOR_SPARSE_ATTN_WGV_BODY(T, D, NST, TR, IR)                                          \
  }
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define RAPTOR_SPARSE_ATTN_WGV_BODY(T, D, NST, TR, IR) raptor::sparse::attention_wg<T, D, NST, TR, IR>(p);
#else
#define RAPTOR_SPARSE_ATTN_WGV_BODY(T, D, NST, TR, IR) __trap();
#endif
// sparse_attention_d{64,128}_wgtr_{f16,bf16}: attention_wg with TR = 1 (the trace; wg otherwise).
#define RAPTOR_SPARSE_ATTN_WGV_DT(suffix, T)                                  \
  RAPTOR_SPARSE_ATTN_WGV(64, 2, 4, 1, 1, sparse_attention_d64_wgtr_##suffix, T)  \
  RAPTOR_SPARSE_ATTN_WGV(128, 2, 2, 1, 1, sparse_attention_d128_wgtr_##suffix, T)
RAPTOR_FOR_DTYPES(RAPTOR_SPARSE_ATTN_WGV_DT)

#define RAPTOR_SPARSE_ATTN_WS_DT(suffix, T)                               \
  RAPTOR_SPARSE_ATTN_WS(64, 3, 3, sparse_attention_d64_ws_##suffix, T)    \
  RAPTOR_SPARSE_ATTN_WS(128, 2, 2, sparse_attention_d128_ws_##suffix, T)  \
  RAPTOR_SPARSE_ATTN_WS(64, 4, 2, sparse_attention_d64_ws4_##suffix, T)   \
  RAPTOR_SPARSE_ATTN_WS(128, 2, 2, sparse_attention_d128_ws4_##suffix, T) \
  RAPTOR_SPARSE_ATTN_WSM(64, 4, 2, 2, sparse_attention_d64_ws4n_##suffix, T) \
  RAPTOR_SPARSE_ATTN_WSM(64, 4, 2, 3, sparse_attention_d64_ws4p_##suffix, T) \
  RAPTOR_SPARSE_ATTN_WSM(128, 2, 2, 3, sparse_attention_d128_ws4p_##suffix, T)
RAPTOR_FOR_DTYPES(RAPTOR_SPARSE_ATTN_WS_DT)
#endif  // RAPTOR_SA_WS


// sparse_attention_plan writes, for testing, the key-block list of every
// (query block, head) of a batch: out[(qbg*H + h)*(kMaxList+1)] = list length,
// then the list for middle rows of sparse sequences (-1 padded; global and
// dense rows attend 0..nb-1 and write only the length nb). qb_base[s] is the
// number of query blocks before sequence s (nseq+1 entries). The same
// middle_list as the attention kernel.
extern "C" __global__ void sparse_attention_plan(const AttnParams p, const int* qb_base, int* out) {
  using namespace raptor::sparse;
  const int H = p.num_heads, total = qb_base[p.nseq];
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (long long)total * H) return;
  const int qbg = (int)(idx / H), h = (int)(idx % H);
  int lo = 0, hi = p.nseq - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (qb_base[mid] <= qbg) lo = mid;
    else hi = mid - 1;
  }
  const int s = lo, i = qbg - qb_base[s];
  const int n = p.cu_seqlens[s + 1] - p.cu_seqlens[s], nb = num_blocks(n);
  int* o = out + idx * (kMaxList + 1);
  int lst[kMaxList], scr[kMaxRandom];
  int L = nb;
  if (is_sparse(n, p.sparse, p.random_blocks) && i > 0 && i < nb - 1)
    L = middle_list(lst, scr, p.seed, p.req_seeds ? p.req_seeds[s] : 0ull, p.layer, h, i, nb,
                    p.random_blocks);
  else
    L = -nb;  // marks a full row
  o[0] = L < 0 ? -L : L;
  for (int j = 0; j < kMaxList; ++j) o[1 + j] = (L > 0 && j < L) ? lst[j] : -1;
}

// sparse_attention_plan_vectors evaluates the generator on test cases:
// in[c*7 ..] = {seed, rseed, layer, head, block, nb, r}; out[c*23 ..] =
// {key, draws 0..5, R(block) (sorted; -1 padded to kMaxRandom) if nb > 0}.
extern "C" __global__ void sparse_attention_plan_vectors(const unsigned long long* in, int ncases,
                                                         unsigned long long* out) {
  using namespace raptor::sparse;
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= ncases) return;
  const unsigned long long* a = in + c * 7;
  const u64 k = key(a[0], a[1], (int)a[2], (int)a[3], (int)a[4]);
  unsigned long long* o = out + c * 23;
  o[0] = k;
  for (int j = 0; j < 6; ++j) o[1 + j] = draw(k, j);
  int rb[kMaxRandom];
  const int nb = (int)a[5], r = (int)a[6];
  if (nb > 0) random_blocks(rb, k, (int)a[4], nb, r);
  for (int j = 0; j < kMaxRandom; ++j) o[7 + j] = (nb > 0 && j < r) ? (unsigned long long)rb[j] : ~0ull;
}
