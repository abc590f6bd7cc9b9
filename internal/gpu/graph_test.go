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

// TestClassShape checks every batch shape up to 2,100 tokens: the class
// holds the batch, adds at most 12.5% tokens above 64 (plus one class step
// where S is not a class), keeps T's GEMM plan class, and its padding
// sequences are 1..padLen tokens that fill the class exactly.
func TestClassShape(t *testing.T) {
	for _, padLen := range []int{64, 5} {
		t.Run(fmt.Sprintf("padLen=%d", padLen), func(t *testing.T) {
			const maxT = 2048
			classed, noClass := 0, 0
			for T := 1; T <= maxT+50; T++ {
				for _, S := range []int{1, 2, 3, 7, 8, 9, 13, 31, 64, 100, T / 2, T} {
					if S < 1 || S > T {
						continue
					}
					tc, sc, pad, ok := classShape(T, S, padLen, maxT)
					if !ok {
						if T <= maxT-maxT/8 && S == 1 {
							t.Fatalf("T=%d S=%d: no class", T, S)
						}
						noClass++
						continue
					}
					classed++
					if tc > maxT || tc < T || sc < S || sc > tc {
						t.Fatalf("T=%d S=%d: class (%d, %d)", T, S, tc, sc)
					}
					if tc != tokenClass(tc) || sc != seqClass(sc) {
						t.Fatalf("T=%d S=%d: (%d, %d) is not a class", T, S, tc, sc)
					}
					if T > 64 && cuda.GEMMClass(tc) != cuda.GEMMClass(T) {
						t.Fatalf("T=%d: class %d leaves the GEMM plan class %d", T, tc, cuda.GEMMClass(T))
					}
					if len(pad) != sc-S {
						t.Fatalf("T=%d S=%d: %d padding sequences for (%d, %d)", T, S, len(pad), tc, sc)
					}
					n := T
					for _, l := range pad {
						if l < 1 || l > padLen {
							t.Fatalf("T=%d S=%d: padding sequence of %d tokens", T, S, l)
						}
						n += l
					}
					if n != tc {
						t.Fatalf("T=%d S=%d: %d tokens after padding, class %d", T, S, n, tc)
					}
				}
			}
			t.Logf("%d shapes with a class, %d without", classed, noClass)
			if noClass > classed/10 {
				t.Errorf("%d of %d shapes have no class", noClass, classed+noClass)
			}
		})
	}
	if _, _, _, ok := classShape(0, 1, 64, 4096); ok {
		t.Error("classShape(0, 1) has a class")
	}
	if _, _, _, ok := classShape(5000, 1, 64, 4096); ok {
		t.Error("classShape(5000, 1) above maxT 4096 has a class")
	}
}
