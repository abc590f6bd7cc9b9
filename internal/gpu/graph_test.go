package gpu

import (
	"fmt"
	"testing"

	"github.com/raptor-infer/raptor/internal/cuda"
)

func TestTokenClass(t *testing.T) {
	for _, tc := range []struct{ t, want int }{
		{1, 64}, {64, 64}, {65, 72}, {72, 72}, {73, 80}, {128, 128}, {129, 144},
		{2300, 2304}, {4096, 4096}, {4097, 4608},
	} {
		if got := tokenClass(tc.t); got != tc.want {
			t.Errorf("tokenClass(%d) = %d, want %d", tc.t, got, tc.want)
		}
	}
}

func TestSeqClass(t *testing.T) {
	for _, tc := range []struct{ s, want int }{{1, 1}, {2, 2}, {3, 4}, {4, 4}, {5, 8}, {64, 64}, {65, 128}} {
		if got := seqClass(tc.s); got != tc.want {
			t.Errorf("seqClass(%d) = %d, want %d", tc.s, got, tc.want)
		}
	}
}

// TestClassShape checks every batch shape up to 2,100 tokens: the class
// holds the batch, adds at most 12.5% tokens above 64, keeps T's GEMM plan
// class, and its padding sequences (1..padLen tokens, then empty ones) fill
// the class exactly.
func TestClassShape(t *testing.T) {
	for _, padLen := range []int{64, 5} {
		t.Run(fmt.Sprintf("padLen=%d", padLen), func(t *testing.T) {
			const maxT, maxS = 2048, 256
			for T := 1; T <= maxT+50; T++ {
				for _, S := range []int{1, 2, 3, 7, 8, 9, 13, 31, 64, 100, 255, T / 2, T} {
					if S < 1 || S > T {
						continue
					}
					tc, sc, pad, ok := classShape(T, S, padLen, maxT, maxS)
					if !ok {
						if T <= maxT && seqClass(S+(tokenClass(T)-T+padLen-1)/padLen) <= maxS {
							t.Fatalf("T=%d S=%d: no class", T, S)
						}
						continue
					}
					if tc > maxT || sc > maxS || tc < T || sc < S || (tc > T && sc == S) {
						t.Fatalf("T=%d S=%d: class (%d, %d)", T, S, tc, sc)
					}
					if tc != tokenClass(tc) || sc != seqClass(sc) {
						t.Fatalf("T=%d S=%d: (%d, %d) is not a class", T, S, tc, sc)
					}
					if T > 64 && (cuda.GEMMClass(tc) != cuda.GEMMClass(T) || 8*(tc-T) > tc) {
						t.Fatalf("T=%d: class %d (GEMM plan class %d, of T %d)", T, tc, cuda.GEMMClass(tc), cuda.GEMMClass(T))
					}
					if len(pad) != sc-S {
						t.Fatalf("T=%d S=%d: %d padding sequences for (%d, %d)", T, S, len(pad), tc, sc)
					}
					n, empty := T, false
					for _, l := range pad {
						if l < 0 || l > padLen || (empty && l > 0) {
							t.Fatalf("T=%d S=%d: padding %v", T, S, pad)
						}
						empty = l == 0
						n += l
					}
					if n != tc {
						t.Fatalf("T=%d S=%d: %d tokens after padding, class %d", T, S, n, tc)
					}
				}
			}
		})
	}
	for _, c := range []struct{ T, S int }{{0, 1}, {1, 0}, {5000, 1}, {2000, 300}} {
		if _, _, _, ok := classShape(c.T, c.S, 64, 4096, 256); ok {
			t.Errorf("classShape(%d, %d) has a class", c.T, c.S)
		}
	}
}

func TestGraphShapes(t *testing.T) {
	// reqLen: the requests' longest sequence (maxLen, the shapes' longest,
	// may be longer: Model.Warmup passes at least 64, a padding sequence).
	for _, tc := range []struct{ limit, graphTokens, maxS, maxLen, reqLen, padLen int }{
		{4096, 4096, 256, 512, 512, 64}, // all-MiniLM-L6-v2 with a limit of 4096
		{8192, 8192, 512, 512, 512, 64}, // its default limit
		{1000, 4096, 256, 512, 512, 64}, // a smaller warm-up
		{4096, 4096, 256, 4096, 4096, 64},
		{2048, 2048, 128, 100, 100, 64},
		{5120, 5120, 320, 512, 512, 64}, // RAPTOR_CUDA_GRAPHS=5000, rounded up to its class
		{50, 4096, 256, 512, 512, 64},
		{10, 8192, 512, 64, 10, 64}, // a warm-up to 10 tokens: requests of 10, shapes of 64
		{64, 64, 64, 64, 5, 5},      // a model of 5 positions
	} {
		t.Run(fmt.Sprintf("limit=%d/maxLen=%d/reqLen=%d", tc.limit, tc.maxLen, tc.reqLen), func(t *testing.T) {
			maxT := tokenClass(tc.graphTokens)
			shapes := graphShapes(tc.limit, tc.graphTokens, tc.maxS, tc.maxLen)
			classes := map[[2]int]bool{}
			for _, s := range shapes {
				c, sc, pad, ok := classShape(s.T, s.S, tc.padLen, maxT, tc.maxS)
				if !ok || c != s.T || len(pad) != sc-s.S || s.S*tc.maxLen < s.T || s.S > s.T {
					t.Fatalf("shape %+v: class (%d, %d) ok %v, padding %v", s, c, sc, ok, pad)
				}
				for _, l := range pad {
					if l != 0 {
						t.Fatalf("shape %+v: padding tokens %v", s, pad)
					}
				}
				k := [2]int{c, sc}
				if classes[k] {
					t.Fatalf("class %v twice", k)
				}
				classes[k] = true
			}
			// Every batch of at most limit tokens (sequences of at most
			// reqLen) that has a class has one of these.
			for T := 1; T <= min(tc.limit, tc.graphTokens); T++ {
				minS := (T + tc.reqLen - 1) / tc.reqLen
				for _, S := range []int{minS, minS + 1, 2 * minS, 3, 7, 8, 9, 31, 64, 100, 255, T / 2, T - 1, T} {
					if S < minS || S < 1 || S > T {
						continue
					}
					c, sc, _, ok := classShape(T, S, tc.padLen, maxT, tc.maxS)
					if ok && !classes[[2]int{c, sc}] {
						t.Fatalf("a batch of %d tokens in %d sequences makes class (%d, %d), not warmed", T, S, c, sc)
					}
				}
			}
			t.Logf("%d classes", len(shapes))
		})
	}
}

func TestPlanShapes(t *testing.T) {
	for _, tc := range []struct{ lo, max, maxLen, want int }{
		{4096, 131072, 512, 20}, // four classes per power of two, 2^12 to 2^17
		{4096, 4096, 512, 0},
		{4096, 5000, 512, 1}, // the class of 5000 tokens (5120), capped at 5000
		{0, 100, 512, 0},     // every M up to 64 is a class of its own, then 65..100 (class 112)
	} {
		shapes := planShapes(tc.lo, tc.max, tc.maxLen)
		seen := map[int]bool{}
		for _, s := range shapes {
			c := cuda.GEMMClass(s.T)
			if s.T <= tc.lo || s.T > tc.max || seen[c] || s.S*tc.maxLen < s.T || (s.S-1)*tc.maxLen >= s.T {
				t.Fatalf("%+v: shape %+v (class %d) in %v", tc, s, c, shapes)
			}
			seen[c] = true
		}
		for T := tc.lo + 1; T <= tc.max; T++ {
			if !seen[cuda.GEMMClass(T)] && T > 64 {
				t.Fatalf("%+v: M %d (class %d) not prepared: %v", tc, T, cuda.GEMMClass(T), shapes)
			}
		}
		if tc.lo >= 64 && len(shapes) != tc.want {
			t.Errorf("%+v: %d shapes, want %d", tc, len(shapes), tc.want)
		}
	}
}
