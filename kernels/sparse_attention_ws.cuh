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
  __shared__ int s_item[NCONS][2][kItemInts];
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


// Variants ws4k / ws4k3 / ws4k3h (ws4p's producer with separate K and V rings, 2-3 K stages, L2
// hints) ran once (NOTES-attention.md, fourteenth run): correct, bitwise = wg, 6-12% slower than
// ws4p; removed, code in 043a3f7.

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace sparse
}  // namespace raptor
