// Host-side check of kernels/sparse_attention.cuh (compiled as plain C++):
// the plan generator and the work schedule, emulated sequentially the way
// sparse_attention_schedule and the attention kernel's decode use them.
// Driven by host_check.py, which compares against plan_ref.py.
//
// stdin: "plan seed rseed layer head n r" lines -> all middle lists of that
//        sequence; "sched nseq H r C sort sparse seed n_0 .. n_{nseq-1}" ->
//        one line per work item.
#include <cstdio>
#include <cstring>
#include <cstddef>
#include <vector>
#include <algorithm>
#include "../../../kernels/sparse_attention.cuh"

using namespace raptor::sparse;

int main() {
  static_assert(offsetof(AttnParams, cu_seqlens) == 96, "layout");
  static_assert(offsetof(AttnParams, seed) == 112, "layout");
  static_assert(offsetof(AttnParams, nseq) == 136, "layout");
  static_assert(offsetof(AttnParams, scale) == 164, "layout");
  char cmd[16];
  while (scanf("%15s", cmd) == 1) {
    if (!strcmp(cmd, "plan")) {
      unsigned long long seed, rseed;
      int layer, head, n, r;
      scanf("%llu %llu %d %d %d %d", &seed, &rseed, &layer, &head, &n, &r);
      const int nb = num_blocks(n);
      int out[kMaxList], scr[kMaxRandom];
      for (int i = 1; i <= nb - 2; ++i) {
        const int L = middle_list(out, scr, seed, rseed, layer, head, i, nb, r);
        printf("P %d", i);
        for (int j = 0; j < L; ++j) printf(" %d", out[j]);
        printf("\n");
      }
    } else if (!strcmp(cmd, "sched")) {
      int nseq, H, r, C, sort, sparse;
      unsigned long long seed;
      scanf("%d %d %d %d %d %d %llu", &nseq, &H, &r, &C, &sort, &sparse, &seed);
      std::vector<int> n(nseq), cu(nseq + 1, 0);
      for (int s = 0; s < nseq; ++s) {
        scanf("%d", &n[s]);
        cu[s + 1] = cu[s] + n[s];
      }
      // schedule kernel, sequentially
      int hist[kBuckets] = {0};
      std::vector<int> part_base(nseq);
      int carry = 0;
      for (int s = 0; s < nseq; ++s) {
        const int nb = num_blocks(n[s]);
        const bool sp = is_sparse(n[s], sparse, r);
        for (int kind = 0; kind < kKinds; ++kind) {
          int cnt, cost;
          seg_info(kind, nb, sp, r, C, cnt, cost);
          if (cnt > 0) hist[sort ? cost_bucket(cost) : 0]++;
        }
        part_base[s] = carry;
        const int nc = chunks_of(nb, sp, C);
        if (nc > 1) carry += 2 * H * nc;
      }
      const long long slots_used = carry;
      int run = 0;
      for (int b = kBuckets - 1; b >= 0; --b) {
        const int c = hist[b];
        hist[b] = run;
        run += c;
      }
      const int nseg = run;
      if (nseg > 4 * nseq) { printf("E too many segments\n"); return 1; }
      std::vector<int> cur(kBuckets, 0);
      struct Seg { int x, y, z, w; };
      std::vector<Seg> segs(nseg);
      for (int s = 0; s < nseq; ++s) {
        const int nb = num_blocks(n[s]);
        const bool sp = is_sparse(n[s], sparse, r);
        for (int kind = 0; kind < kKinds; ++kind) {
          int cnt, cost;
          seg_info(kind, nb, sp, r, C, cnt, cost);
          if (cnt > 0) {
            const int b = sort ? cost_bucket(cost) : 0;
            segs[hist[b] + cur[b]++] = {s, kind, cnt, cost};
          }
        }
      }
      int total = 0;
      int prev_cost = 1 << 30;
      for (auto& sg : segs) {
        if (sort && cost_bucket(sg.w) > prev_cost) { printf("E not sorted\n"); return 1; }
        prev_cost = cost_bucket(sg.w);
        sg.w = total;
        total += sg.z * H;
      }
      printf("T %d %d %lld %lld\n", total, nseg, slots_used,
             partial_slots_bound(cu[nseq], nseq, H, C));
      // attention kernel's decode, tickets in order, forward search + bsearch
      int hint = 0;
      for (int tk = 0; tk < total; ++tk) {
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
        const Seg sg = segs[lo];
        const int local = tk - sg.w, h = local / sg.z, e = local - h * sg.z, s = sg.x;
        const int nb = num_blocks(n[s]);
        Item it = decode_item(sg.y, e, s, h, nb, is_sparse(n[s], sparse, r), C);
        int lst[kMaxList], scr[kMaxRandom];
        int L = it.kv_len;
        if (it.list) L = middle_list(lst, scr, seed, (unsigned long long)s * 7919 + 1, 5, h, it.qblock, nb, r);
        long long slot = -1;
        if (it.nchunks > 1) slot = part_base[s] + (long long)(h * 2 + it.row) * it.nchunks + it.chunk;
        printf("I %d %d %d %d %d %d %lld %d %d", s, h, it.qblock, it.row, it.chunk, it.nchunks, slot,
               (s * H + h) * 2 + it.row, L);
        for (int j = 0; j < L; ++j) printf(" %d", it.list ? lst[j] : it.kv_begin + j);
        printf("\n");
      }
    }
  }
  return 0;
}
