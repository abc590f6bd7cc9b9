// Block-sparse attention: launch parameters, the attention plan's generator
// and the work schedule, shared by kernels/sparse_attention.cu and by host
// code (the functions compile as plain C++ too, for host-side tests).
//
// Everything under "Plan" is ARCHITECTURE.md's "The attention plan" and
// internal/plan's generator, bit for bit: a GPU plan must equal the CPU plan
// element for element (tests/gpu/attention checks it on the device).
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define RAPTOR_HD __host__ __device__ __forceinline__
#else
#define RAPTOR_HD inline
#endif

namespace raptor {
namespace sparse {

typedef unsigned long long u64;

// The kernel's block size b (query tile and key block), fixed at 64.
constexpr int kBlock = 64;
// Most random blocks r a launch may ask for.
constexpr int kMaxRandom = 16;
// Longest key-block list of a middle query row: {0, i-1, i, i+1, nb-1} + r.
constexpr int kMaxList = 5 + kMaxRandom;
// Cost buckets of the schedule (a work item's cost is its number of key
// blocks; costs >= kBuckets-1 share the top bucket).
constexpr int kBuckets = 64;
// Ints of a decoded work item in shared memory (kernels/sparse_attention.cu,
// decode_seg).
constexpr int kItemInts = 13;
// Threads of the attention kernel (4 warps, 16 query rows each) and of the
// schedule kernel (one CTA).
constexpr int kThreads = 128;
constexpr int kScheduleThreads = 1024;

// AttnParams is the one launch-parameter block of every sparse-attention
// kernel, passed by value (168 bytes, 8-byte aligned; field offsets below).
// Strides are in elements. Every Q/K/V/O row of one head is D contiguous
// 16-bit elements starting on a 16-byte boundary: pointers 16-byte aligned,
// row and head strides multiples of 8.
//
// The engine passes the fused QKV GEMM output [T, 3, H, D] directly:
//   q = qkv, k = qkv + H*D, v = qkv + 2*H*D, row strides 3*H*D, head strides D;
// and O as [T, H, D] = [T, H*D] (row stride H*D, head stride D), the input
// of the output projection GEMM.
struct AttnParams {
  const void* q;                    //   0
  const void* k;                    //   8
  const void* v;                    //  16
  void* o;                          //  24
  long long q_row, k_row, v_row, o_row;      //  32  40  48  56  token strides
  long long q_head, k_head, v_head, o_head;  //  64  72  80  88  head strides
  const int* cu_seqlens;            //  96  [nseq+1], cu[0] = 0, cu[nseq] = T
  const u64* req_seeds;             // 104  [nseq] request seeds (NULL: all 0)
  u64 seed;                         // 112  engine seed
  int* ws;                          // 120  schedule workspace, ws_ints(nseq, H) ints (more with item records)
  float* partial;                   // 128  split-KV partials, partial_floats(...) floats
  int nseq;                         // 136
  int num_heads;                    // 140
  int layer;                        // 144
  int random_blocks;                // 148  r, 0 .. kMaxRandom
  int sparse;                       // 152  0: the model attends densely
  int split_blocks;                 // 156  C: global rows are split into chunks of C key blocks
  int sort_by_cost;                 // 160  1: most expensive work first (0: arrival order;
                                    //      2: by sequence, longest first, each one's work most expensive first;
                                    //      3: 2 with the tail's global-row chunks moved ahead; a dense
                                    //      model (sparse 0) takes 2 and 3 as 1)
  float scale;                      // 164  softmax scale, normally 1/sqrt(D)
};
static_assert(sizeof(AttnParams) == 168, "AttnParams layout");

RAPTOR_HD int imin(int a, int b) { return a < b ? a : b; }
RAPTOR_HD int imax(int a, int b) { return a > b ? a : b; }

// ---------------------------------------------------------------- Plan

constexpr u64 kGamma = 0x9E3779B97F4A7C15ull;
constexpr u64 kStart = 0x243F6A8885A308D3ull;

RAPTOR_HD u64 mix(u64 z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// key is the generator key of query block i of head h in layer l.
RAPTOR_HD u64 key(u64 seed, u64 rseed, int layer, int head, int block) {
  u64 k = kStart;
  k = mix((k ^ seed) + kGamma);
  k = mix((k ^ rseed) + kGamma);
  k = mix((k ^ (u64)(unsigned)layer) + kGamma);
  k = mix((k ^ (u64)(unsigned)head) + kGamma);
  k = mix((k ^ (u64)(unsigned)block) + kGamma);
  return k;
}

// draw is the 32-bit draw number j of key k.
RAPTOR_HD unsigned draw(u64 k, int j) { return (unsigned)(mix(k + (u64)(j + 1) * kGamma) >> 32); }

// is_sparse says whether a sequence of n tokens uses the block-sparse plan.
RAPTOR_HD bool is_sparse(int n, int sparse, int r) { return sparse && n > (5 + 2 * r) * kBlock; }

RAPTOR_HD int num_blocks(int n) { return (n + kBlock - 1) / kBlock; }

// random_blocks writes R(i) sorted ascending to out[0..r), for query block i
// (1 <= i <= nb-2) of a sparse sequence of nb blocks (Floyd's algorithm over
// the candidates {1..nb-2} \ [lo, hi], one draw per step).
RAPTOR_HD void random_blocks(int* out, u64 k, int i, int nb, int r) {
  const int lo = imax(1, i - 1), hi = imin(nb - 2, i + 1);
  const int width = hi - lo + 1;
  const int m = (nb - 2) - width;
  for (int step = 0; step < r; ++step) {
    const int t = m - r + step;
    int x = (int)(((u64)draw(k, step) * (u64)(t + 1)) >> 32);
    for (int j = 0; j < step; ++j) {
      if (out[j] == x) { x = t; break; }
    }
    out[step] = x;
  }
  for (int j = 0; j < r; ++j) {
    int b = 1 + out[j];
    if (b >= lo) b += width;
    out[j] = b;
  }
  for (int a = 1; a < r; ++a) {
    const int v = out[a];
    int j = a;
    for (; j > 0 && out[j - 1] > v; --j) out[j] = out[j - 1];
    out[j] = v;
  }
}

// middle_list writes the key blocks of middle query row i (1 <= i <= nb-2) of
// a sparse sequence, sorted ascending and each once, to out and returns their
// number (2 + |window| + r <= kMaxList). scratch holds r ints.
RAPTOR_HD int middle_list(int* out, int* scratch, u64 seed, u64 rseed, int layer, int head, int i,
                          int nb, int r) {
  random_blocks(scratch, key(seed, rseed, layer, head, i), i, nb, r);
  int n = 0;
  out[n++] = 0;
  int w = imax(1, i - 1);
  const int whi = imin(nb - 2, i + 1);
  int j = 0;
  // merge the window [w, whi] with R (both inside [1, nb-2], disjoint)
  while (w <= whi || j < r) {
    if (j >= r || (w <= whi && w < scratch[j])) out[n++] = w++;
    else out[n++] = scratch[j++];
  }
  out[n++] = nb - 1;
  return n;
}

// ---------------------------------------------------------------- Schedule
//
// A work item is (sequence, head, query block, range of its key-block list).
// Items come in segments: runs of items of one sequence with one cost, all
// heads, head-major (consecutive items share the sequence's K/V in L2):
//
//   kind 0  dense sequence: rows 0..nb-1, all nb key blocks, cost nb
//   kind 1  sparse, middle rows 2..nb-3: 5+r key blocks from the plan
//   kind 2  sparse, rows 1 and nb-2: 4+r key blocks from the plan
//   kind 3  sparse, global rows 0 and nb-1, full chunks of C key blocks
//   kind 4  sparse, global rows 0 and nb-1, the last chunk (nb mod C blocks)
//
// A global row split into more than one chunk (nb > C) writes fp32 partials
// (unnormalised O, row max, row sum) per chunk; the CTA that finishes a row's
// last chunk combines them (split-KV, counted by a per-row semaphore).
// The schedule kernel sorts segments by cost, most expensive first, and the
// persistent attention grid pulls items in that order from one atomic
// ticket counter (longest-processing-time-first list scheduling).
// sort_by_cost 2 keeps each sequence's segments together instead (most
// expensive first: normally its global-row chunks, then its other rows),
// sequences longest first: a sequence's K/V
// are read from memory once, while its rows run, instead of once by the
// global rows at the start and again by the middle rows later; the tail is
// still the shortest sequences' cheapest items.
//
// The schedule depends only on cu_seqlens, the request seeds (copied into it),
// H, r, C, sparse and the order, not on the layer, the engine seed or Q/K/V: the mma.sync and wgmma kernels leave the
// workspace as the schedule kernel wrote it (the last CTA to leave resets the
// ticket counter and its own count, the combine resets each semaphore), so one
// schedule serves every layer of a forward. (The warp-specialised kernels of
// sparse_attention_ws.cuh do not reset it: schedule before each of their calls.)

constexpr int kKinds = 5;

// seg_info gives the item count (per head) and cost of segment kind of a
// sequence of nb blocks.
RAPTOR_HD void seg_info(int kind, int nb, bool sp, int r, int C, int& count, int& cost) {
  count = 0;
  cost = 0;
  if (!sp) {
    if (kind == 0) { count = nb; cost = nb; }
    return;
  }
  const int nfull = nb / C, rem = nb - nfull * C;
  switch (kind) {
    case 1: count = nb - 4; cost = 5 + r; break;
    case 2: count = 2; cost = 4 + r; break;
    case 3: count = 2 * nfull; cost = C; break;
    case 4: count = rem ? 2 : 0; cost = rem; break;
    default: break;
  }
}

RAPTOR_HD int cost_bucket(int cost) { return imin(cost, kBuckets - 1); }

// length_bucket orders sequences by length for sort_by_cost 2 and 3 (a bucket
// per block count below 48, then two per power of two from 48 blocks on, the
// top bucket from 6,144 blocks): non-decreasing in nb, at most kBuckets-1.
RAPTOR_HD int length_bucket(int nb) {
  if (nb < 48) return nb;
  int l = 5;
  while ((nb >> (l + 1)) != 0) ++l;  // 2^l <= nb < 2^(l+1), l >= 5
  return imin(kBuckets - 1, 48 + 2 * (l - 5) + ((nb >> (l - 1)) & 1));
}

// chunks_of is the number of chunks each global row of a sequence is split
// into (1: not split).
RAPTOR_HD int chunks_of(int nb, bool sp, int C) {
  if (!sp) return 1;
  return nb / C + (nb % C ? 1 : 0);
}

// Item is one decoded work item.
struct Item {
  int seq, head, qblock;
  int kv_begin, kv_len;  // list mode 0: blocks kv_begin .. kv_begin+kv_len-1
  int list;              // 1: the key blocks come from middle_list
  int row, chunk, nchunks;  // global row 0/1, its chunk, chunks of the row (>1: split)
};

// decode_item turns item e (< count, per head) of segment kind of head h into
// its query block and key range.
RAPTOR_HD Item decode_item(int kind, int e, int seq, int head, int nb, bool sp, int C) {
  Item it;
  it.seq = seq;
  it.head = head;
  it.list = 0;
  it.row = 0;
  it.chunk = 0;
  it.nchunks = 1;
  it.kv_begin = 0;
  it.kv_len = nb;
  it.qblock = e;
  if (kind == 1 || kind == 2) {
    it.list = 1;
    it.qblock = kind == 1 ? 2 + e : (e == 0 ? 1 : nb - 2);
    it.kv_len = 0;  // set by middle_list
  } else if (kind == 3 || kind == 4) {
    const int nfull = nb / C;
    it.nchunks = chunks_of(nb, sp, C);
    if (kind == 3) {
      it.row = e / nfull;
      it.chunk = e - it.row * nfull;
    } else {
      it.row = e;
      it.chunk = nfull;
    }
    it.qblock = it.row ? nb - 1 : 0;
    it.kv_begin = it.chunk * C;
    it.kv_len = imin(C, nb - it.kv_begin);
  }
  return it;
}

// Workspace layout (ints): [0] ticket counter, [1] total items, [2] segment
// count, [3] CTAs of the running call that have left; [4..7] the item records'
// validity (record sets, engine seed low and high 32 bits, r; [4] = 0: none,
// set by the schedule kernel; sparse_attention_items fills them); at 16: segments as int4 {seq, kind, count per head,
// first ticket}, at most 4 per sequence; then part_base[nseq] (first partial
// slot of each sequence); then sem[2*H*nseq] (split-row semaphores); then, from
// the next multiple of 4 ints, one int4 per segment {first token, length, request
// seed low 32 bits, high 32 bits}: with its segment, everything a ticket's decode
// reads (the schedule thus also depends on the request seeds); then, optionally,
// from the next multiple of 32 ints (ws_items_offset), the item records: set l
// (layer l of a sparse model; a dense model has one set for every layer) holds
// kRecInts ints per ticket at (l * total + ticket) * kRecInts: the ticket's
// decoded item (kItemInts' first kRecItemInts ints; [4] is a list item's list length),
// then its key-block list (kMaxList ints).
RAPTOR_HD long long ws_segments_offset() { return 16; }
RAPTOR_HD long long ws_part_base_offset(int nseq) { return 16 + 16LL * nseq; }
RAPTOR_HD long long ws_sem_offset(int nseq) { return 16 + 17LL * nseq; }
RAPTOR_HD long long ws_seginfo_offset(int nseq, int heads) {
  return (16 + 17LL * nseq + 2LL * heads * nseq + 3) & ~3LL;
}
RAPTOR_HD long long ws_ints(int nseq, int heads) { return ws_seginfo_offset(nseq, heads) + 16LL * nseq; }
constexpr int kRecInts = 32, kRecItemInts = 11;  // a record: kRecItemInts ints of its item, then its list
static_assert(kRecItemInts <= kItemInts && kRecItemInts + kMaxList <= kRecInts, "item record layout");
RAPTOR_HD long long ws_items_offset(int nseq, int heads) { return (ws_ints(nseq, heads) + 31) & ~31LL; }
// items_bound bounds the tickets of any batch of T tokens in nseq sequences:
// per sequence and head nb - 2 + 2 * ceil(nb / C) <= nb + 2 nb / C + 2, and
// the nb sum to at most ceil(T / 64) + nseq.
RAPTOR_HD long long items_bound(long long T, int nseq, int heads, int C) {
  const long long B = (T + kBlock - 1) / kBlock + nseq;
  return (long long)heads * (B + (2 * B + C - 1) / C + 2LL * nseq);
}

// A partial slot holds 64*D floats of unnormalised O, then 64 row maxima
// (log2 domain) and 64 row sums.
RAPTOR_HD constexpr long long partial_slot_floats(int D) { return 64LL * D + 128; }

// partial_slots_bound bounds the partial slots of any batch of T tokens in
// nseq sequences: each sparse sequence has 2*H*ceil(nb/C) slots, nb <= n/64+1.
RAPTOR_HD long long partial_slots_bound(long long T, int nseq, int heads, int C) {
  return 2LL * heads * (((T + kBlock - 1) / kBlock + nseq) / C + nseq);
}

}  // namespace sparse
}  // namespace raptor
