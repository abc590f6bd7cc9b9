package cpu

import (
	"fmt"
	"math"
	"testing"
)

func TestMathf(t *testing.T) {
	for _, tc := range []struct {
		name   string
		f      func(float32) float32
		ref    func(float64) float64
		lo, hi float64
		relTol float64 // relative to max(|ref|, floor)
		floor  float64
	}{
		{"exp", expf, math.Exp, -87, 0, 3e-7, 0},
		{"exp+", expf, math.Exp, 0, 20, 3e-7, 0},
		{"erf", erff, math.Erf, -6, 6, 2e-6, 1e-2},
		{"tanh", tanhf, math.Tanh, -12, 12, 3e-7, 1},
		{"gelu", geluErf, func(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }, -10, 10, 2e-6, 1},
		{"gelu_tanh", geluTanh, func(x float64) float64 {
			return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
		}, -10, 10, 1e-6, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var worst float64
			const steps = 200000
			for i := 0; i <= steps; i++ {
				x := float32(tc.lo + (tc.hi-tc.lo)*float64(i)/steps)
				want := tc.ref(float64(x))
				got := float64(tc.f(x))
				e := math.Abs(got-want) / math.Max(math.Abs(want), tc.floor)
				if math.Abs(want) < 1e-30 && tc.floor == 0 {
					e = math.Abs(got - want)
				}
				worst = math.Max(worst, e)
			}
			t.Logf("max relative error %.3g", worst)
			if worst > tc.relTol {
				t.Fatalf("max relative error %.3g > %.3g", worst, tc.relTol)
			}
		})
	}
}

// TestSliceKernels checks the (vectorised, where available) slice versions
// against float64, with lengths that exercise the scalar tails.
func TestSliceKernels(t *testing.T) {
	t.Logf("AVX2 kernels: %v", useAVX2)
	gelu := func(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }
	geluT := func(x float64) float64 { return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x))) }
	for _, n := range []int{1, 7, 8, 9, 100, 1027} {
		xs := make([]float32, n)
		for i := range xs {
			xs[i] = float32(-12 + 24*float64(i)/float64(max(n-1, 1)))
		}
		t.Run(fmt.Sprintf("gelu/n=%d", n), func(t *testing.T) {
			for _, c := range []struct {
				f   func([]float32)
				ref func(float64) float64
			}{{geluErfSlice, gelu}, {geluTanhSlice, geluT}} {
				y := append([]float32(nil), xs...)
				c.f(y)
				for i, x := range xs {
					want := c.ref(float64(x))
					if e := math.Abs(float64(y[i])-want) / math.Max(1, math.Abs(want)); e > 2e-6 {
						t.Fatalf("x=%g: got %g want %g", x, y[i], want)
					}
				}
			}
		})
		t.Run(fmt.Sprintf("exp/n=%d", n), func(t *testing.T) {
			y := make([]float32, n)
			for i := range y {
				y[i] = float32(-100 + 100*float64(i)/float64(max(n-1, 1)))
			}
			x0 := append([]float32(nil), y...)
			sum := expShiftSum(y, 1.5)
			var want float64
			for i, x := range x0 {
				arg := float64(x - 1.5) // the float32 argument both paths see
				w := math.Exp(arg)
				if arg < -87.3 {
					w = 0
				}
				want += w
				if math.Abs(float64(y[i])-w) > 3e-7*w+1e-37 {
					t.Fatalf("exp(%g): got %g want %g", arg, y[i], w)
				}
			}
			if math.Abs(float64(sum)-want) > 1e-6*want {
				t.Fatalf("sum %g want %g", sum, want)
			}
		})
	}
}
