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
// mbar_test says (without blocking) whether the phase of parity `parity` has completed.
__device__ __forceinline__ unsigned mbar_test(unsigned bar, unsigned parity) {
  unsigned ok;
  asm volatile(
      "{\n.reg .pred p;\n"
      "mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(ok)
      : "r"(bar), "r"(parity)
      : "memory");
  return ok;
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
// tma_load_2d_hint: tma_load_2d with an L2 cache policy (createpolicy, below).
__device__ __forceinline__ void tma_load_2d_hint(unsigned dst, const TmaDesc* map, int c0, int c1, unsigned bar,
                                                 unsigned long long pol) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, {%2, "
      "%3}], [%4], %5;" ::"r"(dst),
      "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(bar), "l"(pol)
      : "memory");
}
__device__ __forceinline__ unsigned long long l2_evict_last() {
  unsigned long long pol;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(pol));
  return pol;
}
__device__ __forceinline__ unsigned long long l2_evict_first() {
  unsigned long long pol;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  return pol;
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

// Register budgets after setmaxnreg: producer PREG, consumers CREG, within the
// CTA's registers at launch ((NCONS+1)*128 threads at the __launch_bounds__ cap).
template <int NCONS> struct WsRegs;
template <> struct WsRegs<2> { static constexpr int P = 40, C = 232; };  // 384 x 168 = 64,512
template <> struct WsRegs<3> { static constexpr int P = 40, C = 152; };  // 512 x 128 = 65,536
template <> struct WsRegs<4> { static constexpr int P = 32, C = 112; };  // 640 x 96 = 61,440

// MODE 0: the kernel. MODE 3 (kernel ws4p, not yet run on a device): the producer publishes
// each item a whole item ahead (below). MODE 2, a measurement only (wrong results; kernel ws4n): the producer loads
// only each item's first NST blocks and signals the others without data, so the consumers run on
// stale tiles: the time without K/V supply. (MODE 1, FlashAttention-3's intra-warpgroup order,
// kernel wso, was measured slower and removed: NOTES-attention.md, twelfth run, commit 9345356.)
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
    if (c < NCONS && MODE == 3) {
      // An item ahead: the warp polls (never blocks) and does whichever is possible: publish the
      // next item into its slot as soon as the consumer has released it (the ticket taken right
      // after the previous publish), or load the next K/V block into the ring. Items are
      // published in order, blocks loaded in order; the loader reads an item's list only after
      // publishing it and is past an item before the consumer releases its slot.
      const unsigned qs = base + (unsigned)c * CSM, ks = qs + 2 * TB, vs = ks + NST * TB;
      int hint = 0;
      unsigned pub = 0, ld = 0;  // next item to publish; item being loaded
      int lj = 0;                // next block of item ld
      int st = 0;
      unsigned ph = 0;
      bool done_pub = false;
      int tkt = 0;
      if (lane == 0) tkt = atomicAdd(p.ws, 1);
      for (;;) {
        bool moved = false;
        if (!done_pub) {
          const int slot = pub & 1;
          unsigned ok = 0;
          if (lane == 0) ok = mbar_test(bar(c, 2 + slot), ((pub >> 1) & 1) ^ 1);
          if (__shfl_sync(0xffffffffu, ok, 0)) {
            int* it = s_item[c][slot];
            warp_next_item(p, __shfl_sync(0xffffffffu, tkt, 0), hint, it, s_list[c][slot], lane);
            __syncwarp();
            const int s = it[0];
            if (lane == 0) {
              if (s < 0) {
                mbar_arrive(bar(c, slot));
              } else {
                tkt = atomicAdd(p.ws, 1);  // the next item's ticket, used at the next publish
                const int h = it[1], qb = it[2], tok0 = it[9];
                mbar_arrive_tx(bar(c, slot), TB);
#pragma unroll
                for (int u = 0; u < NSUB; ++u)
                  tma_load_2d(qs + slot * TB + u * 8192, tq, h * (int)p.q_head + 64 * u, tok0 + qb * kBlock,
                              bar(c, slot));
              }
            }
            done_pub = s < 0;
            ++pub;
            moved = true;
          }
        }
        if (ld < pub) {
          const int* it = s_item[c][ld & 1];
          if (it[0] < 0) break;  // the end marker: every block is loaded
          unsigned ok = 0;
          if (lane == 0) ok = mbar_test(bar(c, 4 + NST + st), ph ^ 1);
          if (__shfl_sync(0xffffffffu, ok, 0)) {
            if (lane == 0) {
              const int h = it[1], kv_begin = it[3], use_list = it[5], tok0 = it[9];
              const int kb = use_list ? s_list[c][ld & 1][lj] : kv_begin + lj;
              const unsigned fb = bar(c, 4 + st);
              mbar_arrive_tx(fb, 2 * TB);
              const int row = tok0 + kb * kBlock;
#pragma unroll
              for (int u = 0; u < NSUB; ++u) {
                tma_load_2d(ks + st * TB + u * 8192, tk, h * (int)p.k_head + 64 * u, row, fb);
                tma_load_2d(vs + st * TB + u * 8192, tv, h * (int)p.v_head + 64 * u, row, fb);
              }
            }
            if (++st == NST) {
              st = 0;
              ph ^= 1;
            }
            if (++lj == it[4]) {
              lj = 0;
              ++ld;
            }
            moved = true;
          }
        }
        if (!moved) __nanosleep(32);
        __syncwarp();
      }
    } else if (c < NCONS) {
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
      // the item's Q tile is free (every wgmma of the item is waited for): stage O there
      wg_epilogue<T, D, 1>(p, sq, o, m0, m1, l0, l1, sl2, it, wtid, &s_last[c], 1 + c);
      fence_proxy_async();  // the staging stores before the producer's next TMA write of the slot
      __syncwarp();
      if (lane == 0) mbar_arrive(bar(c, 2 + slot));
      ++kcount;
    }
  }
}


// ---------------------------------------------------------------------------------------------
// Variants ws4k / ws4k3 / ws4k3h (NOTES-attention.md, fourteenth run: correct, bitwise = wg, measured
// 6-12% SLOWER than ws4p; kept for profiling, not used by the engine): ws4p's item-ahead producer with
// separate K and V rings. A block's K tile has its own full/empty barriers, released by the
// consumer as soon as its QK^T is waited for (early in the block step), and its V tile its own,
// released after PV; the consumer waits for V only right before PV. So the producer can refill a
// K stage about one block step earlier than ws4's joint stage, and QK^T starts once K lands. NK K
// stages, NV V stages, 2 Q slots: per consumer (2 + NK + NV) tiles (ws4k: 2 + 2 + 2, ws4p's shared
// memory; ws4k3: 2 + 3 + 2 = 7 tiles, 224 KiB at D = 64 with 4 consumers). The block step is
// wg_block's arithmetic, instruction for instruction (ws_block_kv below is wg_block with two hooks),
// so results stay bitwise equal to wg.
template <typename T, int D, typename KDone, typename VWait>
__device__ __forceinline__ void ws_block_kv(unsigned sQ, unsigned ks, unsigned vs, int kvalid, float sl2, int t4,
                                            float (&o)[D / 2], float& m0, float& m1, float& l0, float& l1,
                                            KDone kdone, VWait vwait) {
  constexpr int NT = D / 8;
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
  kdone();  // this warp's reads of the K tile are done
  if (kvalid < kBlock) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
#pragma unroll
      for (int c = 0; c < 4; ++c)
        if (i * 8 + 2 * t4 + (c & 1) >= kvalid) sc[4 * i + c] = neg_inf();
    }
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
  vwait();  // the V tile has landed
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

// A loader cursor of the producer warp: item (publication count), block of the item, ring stage
// and phase.
struct WsCursor {
  unsigned item;
  int j, st;
  unsigned ph;
  bool done;
};

// HINT 1 (variant ws4k3h): K/V loads with an L2 evict_last policy, Q loads evict_first (K/V blocks
// are read by several items: window, global and random blocks; Q once).
template <typename T, int D, int NCONS, int NK, int NV, int HINT = 0>
__device__ __forceinline__ void attention_ws_kv(const AttnParams& p, const TmaDesc* tq, const TmaDesc* tk,
                                                const TmaDesc* tv) {
  static_assert(D == 64 || D == 128, "head dim");
  constexpr int TB = kBlock * D * 2;
  constexpr int NSUB = D / 64;
  constexpr int CSM = (2 + NK + NV) * TB;  // per consumer: Q[2], K[NK], V[NV]
  constexpr int NB = 4 + 2 * NK + 2 * NV;
  // barrier i of consumer c: 0,1 item full; 2,3 item empty; KF.. K full; KE.. K empty; VF.. V full;
  // VE.. V empty
  constexpr int KF = 4, KE = KF + NK, VF = KE + NK, VE = VF + NV;
  extern __shared__ __align__(16) unsigned char smem_ws[];
  const unsigned base = (smem_u32(smem_ws) + 1023u) & ~1023u;
  __shared__ __align__(8) unsigned long long s_bar[NCONS][NB];
  __shared__ int s_item[NCONS][2][12];
  __shared__ int s_list[NCONS][2][kMaxList];
  __shared__ int s_last[NCONS];
  const unsigned bar0 = smem_u32(&s_bar[0][0]);
  auto bar = [&](int c, int i) { return bar0 + (unsigned)(c * NB + i) * 8u; };

  const int tid = threadIdx.x, wgi = tid >> 7, lane = tid & 31;
  if (tid == 0) {
    for (int c = 0; c < NCONS; ++c) {
      mbar_init(bar(c, 0), 1);
      mbar_init(bar(c, 1), 1);
      mbar_init(bar(c, 2), 4);
      mbar_init(bar(c, 3), 4);
      for (int i = 0; i < NK; ++i) {
        mbar_init(bar(c, KF + i), 1);
        mbar_init(bar(c, KE + i), 4);
      }
      for (int i = 0; i < NV; ++i) {
        mbar_init(bar(c, VF + i), 1);
        mbar_init(bar(c, VE + i), 4);
      }
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    tma_prefetch_desc(tq);
    tma_prefetch_desc(tk);
    tma_prefetch_desc(tv);
  }
  __syncthreads();

  if (wgi == 0) {
    // ------------------------------------------------------------ producer (ws4p's, two loaders)
    regs_dec<WsRegs<NCONS>::P>();
    const int c = tid >> 5;
    if (c >= NCONS) return;
    const unsigned qs = base + (unsigned)c * CSM, ks = qs + 2 * TB, vs = ks + NK * TB;
    int hint = 0;
    unsigned pub = 0;  // next item to publish
    bool done_pub = false;
    WsCursor kc{0, 0, 0, 0, false}, vc{0, 0, 0, 0, false};
    int tkt = 0;
    if (lane == 0) tkt = atomicAdd(p.ws, 1);
    // one loader step: the next tile of cursor cu (K: isk) into its ring if its stage is free
    auto step = [&](WsCursor& cu, bool isk) -> bool {
      if (cu.done || cu.item >= pub) return false;
      const int* it = s_item[c][cu.item & 1];
      if (it[0] < 0) {
        cu.done = true;  // the end marker: every tile is loaded
        return true;
      }
      const int nst = isk ? NK : NV;
      unsigned ok = 0;
      if (lane == 0) ok = mbar_test(bar(c, (isk ? KE : VE) + cu.st), cu.ph ^ 1);
      if (!__shfl_sync(0xffffffffu, ok, 0)) return false;
      if (lane == 0) {
        const int h = it[1], kv_begin = it[3], use_list = it[5], tok0 = it[9];
        const int kb = use_list ? s_list[c][cu.item & 1][cu.j] : kv_begin + cu.j;
        const unsigned fb = bar(c, (isk ? KF : VF) + cu.st);
        mbar_arrive_tx(fb, TB);
        const int row = tok0 + kb * kBlock;
        const unsigned dst = (isk ? ks : vs) + cu.st * TB;
        const TmaDesc* map = isk ? tk : tv;
        const int col = h * (int)(isk ? p.k_head : p.v_head);
#pragma unroll
        for (int u = 0; u < NSUB; ++u) {
          if constexpr (HINT) tma_load_2d_hint(dst + u * 8192, map, col + 64 * u, row, fb, l2_evict_last());
          else tma_load_2d(dst + u * 8192, map, col + 64 * u, row, fb);
        }
      }
      if (++cu.st == nst) {
        cu.st = 0;
        cu.ph ^= 1;
      }
      if (++cu.j == it[4]) {
        cu.j = 0;
        ++cu.item;
      }
      return true;
    };
    for (;;) {
      bool moved = false;
      if (!done_pub) {
        const int slot = pub & 1;
        unsigned ok = 0;
        if (lane == 0) ok = mbar_test(bar(c, 2 + slot), ((pub >> 1) & 1) ^ 1);
        if (__shfl_sync(0xffffffffu, ok, 0)) {
          int* it = s_item[c][slot];
          warp_next_item(p, __shfl_sync(0xffffffffu, tkt, 0), hint, it, s_list[c][slot], lane);
          __syncwarp();
          const int s = it[0];
          if (lane == 0) {
            if (s < 0) {
              mbar_arrive(bar(c, slot));
            } else {
              tkt = atomicAdd(p.ws, 1);  // the next item's ticket, used at the next publish
              const int h = it[1], qb = it[2], tok0 = it[9];
              mbar_arrive_tx(bar(c, slot), TB);
#pragma unroll
              for (int u = 0; u < NSUB; ++u) {
                if constexpr (HINT)
                  tma_load_2d_hint(qs + slot * TB + u * 8192, tq, h * (int)p.q_head + 64 * u, tok0 + qb * kBlock,
                                   bar(c, slot), l2_evict_first());
                else
                  tma_load_2d(qs + slot * TB + u * 8192, tq, h * (int)p.q_head + 64 * u, tok0 + qb * kBlock,
                              bar(c, slot));
              }
            }
          }
          done_pub = s < 0;
          ++pub;
          moved = true;
        }
      }
      moved |= step(kc, true);
      moved |= step(vc, false);
      if (kc.done && vc.done) break;
      if (!moved) __nanosleep(32);
      __syncwarp();
    }
  } else {
    // ------------------------------------------------------------ consumers
    regs_inc<WsRegs<NCONS>::C>();
    const int c = wgi - 1, wtid = tid & 127, t4 = tid & 3;
    const unsigned qs = base + (unsigned)c * CSM, ks = qs + 2 * TB, vs = ks + NK * TB;
    const float sl2 = p.scale * 1.4426950408889634f;
    unsigned kcount = 0;
    int kst = 0, vst = 0;
    unsigned kph = 0, vph = 0;
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
      for (int j = 0; j < L; ++j) {
        const int kb = use_list ? lst[j] : kv_begin + j;
        mbar_wait(bar(c, KF + kst), kph);
        const unsigned ke = bar(c, KE + kst), vf = bar(c, VF + vst);
        ws_block_kv<T, D>(
            sq, ks + kst * TB, vs + vst * TB, n - kb * kBlock, sl2, t4, o, m0, m1, l0, l1,
            [&] {
              if (lane == 0) mbar_arrive(ke);
            },
            [&] { mbar_wait(vf, vph); });
        if (lane == 0) mbar_arrive(bar(c, VE + vst));
        if (++kst == NK) {
          kst = 0;
          kph ^= 1;
        }
        if (++vst == NV) {
          vst = 0;
          vph ^= 1;
        }
      }
      wg_epilogue<T, D, 1>(p, sq, o, m0, m1, l0, l1, sl2, it, wtid, &s_last[c], 1 + c);
      fence_proxy_async();
      __syncwarp();
      if (lane == 0) mbar_arrive(bar(c, 2 + slot));
      ++kcount;
    }
  }
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace sparse
}  // namespace raptor

// Kernels of the ws4k variants (here rather than in sparse_attention.cu's RAPTOR_SA_WS list: same
// launch contract as ws4p; NCONS, NK, NV in tests/gpu/attention/sparse_attn.py's WS_CFG).
#if defined(RAPTOR_SA_WS)
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define RAPTOR_SA_WSKV_BODY(T, D, NC, NK, NV, HINT) \
  raptor::sparse::attention_ws_kv<T, D, NC, NK, NV, HINT>(p, &tq, &tk, &tv);
#else
#define RAPTOR_SA_WSKV_BODY(T, D, NC, NK, NV, HINT) __trap();
#endif
#define RAPTOR_SA_WSKV(D, NC, NK, NV, NAME, T) RAPTOR_SA_WSKVH(D, NC, NK, NV, 0, NAME, T)
#define RAPTOR_SA_WSKVH(D, NC, NK, NV, HINT, NAME, T)                                                    \
  extern "C" __global__ void __launch_bounds__((NC + 1) * 128, 1)                                   \
      NAME(const raptor::sparse::AttnParams p, const __grid_constant__ raptor::sparse::TmaDesc tq,  \
           const __grid_constant__ raptor::sparse::TmaDesc tk,                                       \
           const __grid_constant__ raptor::sparse::TmaDesc tv) {                                     \
    RAPTOR_SA_WSKV_BODY(T, D, NC, NK, NV, HINT)                                                      \
  }
#define RAPTOR_SA_WSKV_DT(suffix, T)                                         \
  RAPTOR_SA_WSKV(64, 4, 2, 2, sparse_attention_d64_ws4k_##suffix, T)        \
  RAPTOR_SA_WSKV(128, 2, 2, 2, sparse_attention_d128_ws4k_##suffix, T)      \
  RAPTOR_SA_WSKV(64, 4, 3, 2, sparse_attention_d64_ws4k3_##suffix, T)       \
  RAPTOR_SA_WSKV(128, 2, 3, 2, sparse_attention_d128_ws4k3_##suffix, T)     \
  RAPTOR_SA_WSKVH(64, 4, 3, 2, 1, sparse_attention_d64_ws4k3h_##suffix, T)  \
  RAPTOR_SA_WSKVH(128, 2, 3, 2, 1, sparse_attention_d128_ws4k3h_##suffix, T)
RAPTOR_FOR_DTYPES(RAPTOR_SA_WSKV_DT)
#endif  // RAPTOR_SA_WS
