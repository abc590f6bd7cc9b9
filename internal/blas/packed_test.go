package blas

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestPackedMul(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, tc := range []struct{ m, k, n int }{{1, 1, 1}, {5, 7, 3}, {6, 16, 16}, {13, 384, 1152}, {7, 33, 50}, {64, 100, 17}} {
		t.Run(fmt.Sprintf("%dx%dx%d", tc.m, tc.k, tc.n), func(t *testing.T) {
			lda, ldb, ldc := tc.k+2, tc.n+3, tc.n+1
			a, b, c := randSlice(r, tc.m*lda), randSlice(r, tc.k*ldb), randSlice(r, tc.m*ldc)
			want := make([]float64, len(c))
			for i := 0; i < tc.m; i++ {
				for j := 0; j < tc.n; j++ {
					s := float64(c[i*ldc+j])
					for kk := 0; kk < tc.k; kk++ {
						s += float64(a[i*lda+kk]) * float64(b[kk*ldb+j])
					}
					want[i*ldc+j] = s
				}
			}
			p := Pack(b, tc.k, tc.n, ldb)
			cg := append([]float32(nil), c...)
			p.Mul(tc.m, a, lda, c, ldc)
			var maxErr float64
			for i := 0; i < tc.m; i++ {
				for j := 0; j < tc.n; j++ {
					maxErr = math.Max(maxErr, math.Abs(float64(c[i*ldc+j])-want[i*ldc+j]))
				}
			}
			if tol := 1e-5 * math.Sqrt(float64(tc.k)) * 4; maxErr > tol {
				t.Fatalf("max error %g > %g", maxErr, tol)
			}
			// The portable kernel gives the same bits.
			if hasAVX2FMA {
				hasAVX2FMA = false
				p.Mul(tc.m, a, lda, cg, ldc)
				hasAVX2FMA = true
				for i := range c {
					if c[i] != cg[i] {
						t.Fatalf("portable kernel differs at %d: %g vs %g", i, cg[i], c[i])
					}
				}
			}
		})
	}
}

// TestPackedRowInvariance: a row's result is the same whatever m and the
// row's position.
func TestPackedRowInvariance(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 9))
	const k, n = 300, 70
	a := randSlice(r, 40*k)
	p := Pack(randSlice(r, k*n), k, n, n)
	full := make([]float32, 40*n)
	p.Mul(40, a, k, full, n)
	for _, m := range []int{1, 2, 5, 6, 7, 11} {
		for _, off := range []int{0, 1, 3, 20} {
			c := make([]float32, m*n)
			p.Mul(m, a[off*k:], k, c, n)
			for i := range c {
				if c[i] != full[off*n+i] {
					t.Fatalf("m=%d off=%d: element %d differs", m, off, i)
				}
			}
		}
	}
}

func BenchmarkPacked(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, m := range []int{16, 48, 256} {
		const n, k = 1536, 384
		a, c := randSlice(r, m*k), make([]float32, m*n)
		p := Pack(randSlice(r, k*n), k, n, n)
		b.Run(fmt.Sprintf("m=%d", m), func(b *testing.B) {
			for b.Loop() {
				p.Mul(m, a, k, c, n)
			}
			b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
