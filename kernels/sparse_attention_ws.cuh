// Warp-specialised block-sparse attention (sm_90a), variant "ws"
// (kernels/NOTES-attention.md, issue 6: the FlashAttention-3-structured kernel).
// Included by kernels/sparse_attention.cu after the wgmma kernel, whose
// per-block step (wg_block), key-block lists (warp_next_item) and epilogue
// (wg_epilogue) it reuses, so its arithmetic is the wg kernel's, bit for bit.
//
// CTA: (NCONS + 1) warpgroups, one persistent CTA per SM.
//   warpgroup 0, the producer (setmaxnreg.dec): warp c < NCONS serves consumer c.
//     It takes tickets, decodes items and builds their key-block lists
//     (warp_next_item) into a two-slot item ring of consumer c, loads the
//     item's Q tile into the slot and the item's K/V blocks into consumer c's
//     NST-stage ring, all by TMA (cp.async.bulk.tensor.2d, 128-byte swizzle,
//     64 x 64 boxes), one elected lane issuing.
//   warpgroups 1..NCONS, the consumers (setmaxnreg.inc): each runs its own
//     items: per block, wait the stage's full barrier, wg_block (QK^T, online
//     softmax, PV on wgmma), release the stage; after the last block the
//     epilogue (O staged through the item's own Q tile), then release the item
//     slot. No CTA-wide barrier after the set-up; the split-row epilogue uses
//     the consumer's named barrier (1 + c).
// Barriers (mbarrier, per consumer): item full[2] (producer arrive +
// expect_tx of the Q tile), item empty[2] (one arrive per consumer warp), kv
// full[NST] (arrive + expect_tx of K and V), kv empty[NST] (one arrive per
// consumer warp after its wgmma reads of the stage are waited for).
//
// Tensor maps (host: cuTensorMapEncodeTiled, tests/gpu/attention/sparse_attn.py):
// one per Q, K, V, 2-D, 16-bit elements, inner dimension (H-1)*head_stride + D
// columns, T rows of row_stride*2 bytes, box 64 x 64, CU_TENSOR_MAP_SWIZZLE_128B,
// out-of-bounds zero fill. Head h, 64-column sub-tile u of a 64-row block at
// row t starts at coordinates (h*head_stride + 64u, t). A sequence's partial
// last block reads the next sequence's rows (finite; masked to P = 0 for K/V,
// rows never stored for Q) and zeros past T.
#pragma once

namespace raptor {
namespace sparse {

// TmaDesc is a CUtensorMap (128 bytes, 64-byte aligned), opaque here.
struct __align__(64) TmaDesc {
  unsigned long long v[16];
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_arrive_tx(unsigned bar, unsigned tx) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(tx) : "memory");
}
// mbar_wait returns once the phase of parity `parity` of the barrier has completed.
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "WS_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WS_WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void tma_load_2d(unsigned dst, const TmaDesc* map, int c0, int c1, unsigned bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
          dst),
      "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void tma_prefetch_desc(const TmaDesc* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<unsigned long long>(map)) : "memory");
}
template <int N>
__device__ __forceinline__ void regs_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void regs_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}

// ws_qk issues S = Q K^T (64 x 64) on the warpgroup without waiting (one commit group); the
// caller waits (wgmma.wait_group) and then pins sc (reg_fence) before reading it.
template <typename T, int D>
__device__ __forceinline__ void ws_qk(unsigned sQ, unsigned ks, float (&sc)[32]) {
#pragma unroll
  for (int i = 0; i < 32; ++i) sc[i] = 0.f;
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const unsigned off = (kk >> 2) * 8192 + (kk & 3) * 32;
    Wg<T>::ss_m64n64(sc, wg_desc(sQ + off, 16, 1024), wg_desc(ks + off, 16, 1024), kk > 0);
  }
  wg_commit();
}
__device__ __forceinline__ void wg_wait1() { asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory"); }

// ws_softmax_pv is wg_block after its S = Q K^T: mask, online softmax, O rescale, O += P V issued
// and committed (not waited for). Same arithmetic as wg_block.
// The mask is branch-free (selects on every element): a branch while a wgmma is in flight makes
// ptxas serialise every wgmma of the kernel (C7518).
template <typename T, int D>
__device__ __forceinline__ void ws_softmax_pv(float (&sc)[32], unsigned vs, int kvalid, float sl2, int t4,
                                              float (&o)[D / 2], float& m0, float& m1, float& l0, float& l1) {
  constexpr int NT = D / 8;
  const int lim = kvalid - 2 * t4;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
#pragma unroll
    for (int c = 0; c < 4; ++c) sc[4 * i + c] = i * 8 + (c & 1) >= lim ? neg_inf() : sc[4 * i + c];
  }
  float mx0 = m0, mx1 = m1;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    mx0 = fmaxf(mx0, fmaxf(sc[4 * i], sc[4 * i + 1]));
    mx1 = fmaxf(mx1, fmaxf(sc[4 * i + 2], sc[4 * i + 3]));
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
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const unsigned long long dv = wg_desc(vs + kk * 2048, 8192, 1024);
    if constexpr (D == 64) Wg<T>::rs_m64n64_tb(o, pa[kk], dv);
    else Wg<T>::rs_m64n128_tb(o, pa[kk], dv);
  }
  wg_commit();
}

// Register budgets after setmaxnreg: producer PREG, consumers CREG, within the
// CTA's registers at launch ((NCONS+1)*128 threads at the __launch_bounds__ cap).
template <int NCONS> struct WsRegs;
template <> struct WsRegs<2> { static constexpr int P = 40, C = 232; };  // 384 x 168 = 64,512
template <> struct WsRegs<3> { static constexpr int P = 40, C = 152; };  // 512 x 128 = 65,536
template <> struct WsRegs<4> { static constexpr int P = 32, C = 112; };  // 640 x 96 = 61,440

// MODE 0: per block wait full, wg_block, release. MODE 1 (FlashAttention-3's intra-warpgroup
// order): Q K^T of block j+1 is issued before the softmax of block j and runs under it (two S
// tiles, the loop unrolled by two so that neither is copied while a wgmma writes it). MODE 2, a
// measurement only (wrong results): the producer loads only each item's first NST blocks and
// signals the others without data, so the consumers run on stale tiles: the time without
// K/V supply.
template <typename T, int D, int NCONS, int NST, int MODE = 0>
__device__ __forceinline__ void attention_ws(const AttnParams& p, const TmaDesc* tq, const TmaDesc* tk,
                                             const TmaDesc* tv) {
  static_assert(D == 64 || D == 128, "head dim");
  constexpr int TB = kBlock * D * 2;          // bytes per 64-row tile
  constexpr int NSUB = D / 64;                // 64-column sub-tiles (TMA boxes) per tile
  constexpr int CSM = (2 + 2 * NST) * TB;     // per consumer: Q[2], K[NST], V[NST]
  constexpr int NB = 4 + 2 * NST;             // barriers per consumer
  extern __shared__ __align__(16) unsigned char smem_ws[];
  const unsigned base = (smem_u32(smem_ws) + 1023u) & ~1023u;
  __shared__ __align__(8) unsigned long long s_bar[NCONS][NB];
  __shared__ int s_item[NCONS][2][12];
  __shared__ int s_list[NCONS][2][kMaxList];
  __shared__ int s_last[NCONS];
  // barrier i of consumer c: 0,1 item full; 2,3 item empty; 4.. kv full; 4+NST.. kv empty
  const unsigned bar0 = smem_u32(&s_bar[0][0]);
  auto bar = [&](int c, int i) { return bar0 + (unsigned)(c * NB + i) * 8u; };

  const int tid = threadIdx.x, wgi = tid >> 7, lane = tid & 31;
  if (tid == 0) {
    for (int c = 0; c < NCONS; ++c) {
      mbar_init(bar(c, 0), 1);
      mbar_init(bar(c, 1), 1);
      mbar_init(bar(c, 2), 4);
      mbar_init(bar(c, 3), 4);
      for (int i = 0; i < NST; ++i) {
        mbar_init(bar(c, 4 + i), 1);
        mbar_init(bar(c, 4 + NST + i), 4);
      }
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    tma_prefetch_desc(tq);
    tma_prefetch_desc(tk);
    tma_prefetch_desc(tv);
  }
  __syncthreads();

  if (wgi == 0) {
    // ------------------------------------------------------------ producer
    regs_dec<WsRegs<NCONS>::P>();
    const int c = tid >> 5;
    if (c < NCONS) {
      const unsigned qs = base + (unsigned)c * CSM, ks = qs + 2 * TB, vs = ks + NST * TB;
      int hint = 0;
      unsigned kcount = 0;
      int st = 0;
      unsigned ph = 0;  // kv ring: stage and phase of the next block (lane 0)
      for (;;) {
        const int slot = kcount & 1;
        if (lane == 0) mbar_wait(bar(c, 2 + slot), ((kcount >> 1) & 1) ^ 1);
        __syncwarp();
        int tkt = 0;
        if (lane == 0) tkt = atomicAdd(p.ws, 1);
        tkt = __shfl_sync(0xffffffffu, tkt, 0);
        int* it = s_item[c][slot];
        const int* lst = s_list[c][slot];
        warp_next_item(p, tkt, hint, it, s_list[c][slot], lane);
        __syncwarp();
        const int s = it[0];
        if (lane == 0) {
          if (s < 0) {
            mbar_arrive(bar(c, slot));
          } else {
            const int h = it[1], qb = it[2], kv_begin = it[3], L = it[4], use_list = it[5], tok0 = it[9];
            const int qc = h * (int)p.q_head, kc = h * (int)p.k_head, vc = h * (int)p.v_head;
            mbar_arrive_tx(bar(c, slot), TB);
#pragma unroll
            for (int u = 0; u < NSUB; ++u)
              tma_load_2d(qs + slot * TB + u * 8192, tq, qc + 64 * u, tok0 + qb * kBlock, bar(c, slot));
            for (int j = 0; j < L; ++j) {
              const int kb = use_list ? lst[j] : kv_begin + j;
              mbar_wait(bar(c, 4 + NST + st), ph ^ 1);
              const unsigned fb = bar(c, 4 + st);
              if (MODE == 2 && j >= NST) {
                mbar_arrive(fb);
              } else {
                mbar_arrive_tx(fb, 2 * TB);
                const int row = tok0 + kb * kBlock;
#pragma unroll
                for (int u = 0; u < NSUB; ++u) {
                  tma_load_2d(ks + st * TB + u * 8192, tk, kc + 64 * u, row, fb);
                  tma_load_2d(vs + st * TB + u * 8192, tv, vc + 64 * u, row, fb);
                }
              }
              if (++st == NST) {
                st = 0;
                ph ^= 1;
              }
            }
          }
        }
        __syncwarp();
        if (s < 0) break;
        ++kcount;
      }
    }
  } else {
    // ------------------------------------------------------------ consumers
    regs_inc<WsRegs<NCONS>::C>();
    const int c = wgi - 1, wtid = tid & 127, t4 = tid & 3;
    const unsigned qs = base + (unsigned)c * CSM, ks = qs + 2 * TB, vs = ks + NST * TB;
    const float sl2 = p.scale * 1.4426950408889634f;
    unsigned kcount = 0;
    int st = 0;
    unsigned ph = 0;
    float o[D / 2];
    float m0, m1, l0, l1;
    for (;;) {
      const int slot = kcount & 1;
      mbar_wait(bar(c, slot), (kcount >> 1) & 1);
      const int* it = s_item[c][slot];
      const int s = it[0];
      if (s < 0) break;
      const int kv_begin = it[3], L = it[4], use_list = it[5], n = it[10];
      const int* lst = s_list[c][slot];
      const unsigned sq = qs + slot * TB;
#pragma unroll
      for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
      m0 = neg_inf();
      m1 = neg_inf();
      l0 = 0.f;
      l1 = 0.f;
      if constexpr (MODE != 1) {
        for (int j = 0; j < L; ++j) {
          const int kb = use_list ? lst[j] : kv_begin + j;
          mbar_wait(bar(c, 4 + st), ph);
          wg_block<T, D>(sq, ks + st * TB, vs + st * TB, n - kb * kBlock, sl2, t4, o, m0, m1, l0, l1);
          if (lane == 0) mbar_arrive(bar(c, 4 + NST + st));
          if (++st == NST) {
            st = 0;
            ph ^= 1;
          }
        }
      } else {
        float sa[32], sb[32];
        // step j: S(j) in cur (complete); issue S(j+1) into nxt, softmax(j) and PV(j) under it,
        // wait both, release j's stage. Nothing is in flight at a branch (C7518).
        auto step = [&](int j, float(&cur)[32], float(&nxt)[32]) {
          const int st1 = st + 1 == NST ? 0 : st + 1;
          const unsigned ph1 = st + 1 == NST ? ph ^ 1 : ph;
          mbar_wait(bar(c, 4 + st1), ph1);
          ws_qk<T, D>(sq, ks + st1 * TB, nxt);
          const int kb = use_list ? lst[j] : kv_begin + j;
          ws_softmax_pv<T, D>(cur, vs + st * TB, n - kb * kBlock, sl2, t4, o, m0, m1, l0, l1);
          wg_wait0();
#pragma unroll
          for (int i = 0; i < 32; ++i) reg_fence(nxt[i]);
#pragma unroll
          for (int i = 0; i < D / 2; ++i) reg_fence(o[i]);
          if (lane == 0) mbar_arrive(bar(c, 4 + NST + st));
          st = st1;
          ph = ph1;
        };
        auto last = [&](int j, float(&cur)[32]) {
          const int kb = use_list ? lst[j] : kv_begin + j;
          ws_softmax_pv<T, D>(cur, vs + st * TB, n - kb * kBlock, sl2, t4, o, m0, m1, l0, l1);
          wg_wait0();
#pragma unroll
          for (int i = 0; i < D / 2; ++i) reg_fence(o[i]);
          if (lane == 0) mbar_arrive(bar(c, 4 + NST + st));
          if (++st == NST) {
            st = 0;
            ph ^= 1;
          }
        };
        mbar_wait(bar(c, 4 + st), ph);
        ws_qk<T, D>(sq, ks + st * TB, sa);
        wg_wait0();
#pragma unroll
        for (int i = 0; i < 32; ++i) reg_fence(sa[i]);
        int j = 0;
        for (; j + 2 < L; j += 2) {
          step(j, sa, sb);
          step(j + 1, sb, sa);
        }
        if (j + 1 < L) {
          step(j, sa, sb);
          last(j + 1, sb);
        } else {
          last(j, sa);
        }
      }
      // the item's Q tile is free (every wgmma of the item is waited for): stage O there
      wg_epilogue<T, D, 1>(p, sq, o, m0, m1, l0, l1, sl2, it, wtid, &s_last[c], 1 + c);
      fence_proxy_async();  // the staging stores before the producer's next TMA write of the slot
      __syncwarp();
      if (lane == 0) mbar_arrive(bar(c, 2 + slot));
      ++kcount;
    }
  }
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace sparse
}  // namespace raptor
