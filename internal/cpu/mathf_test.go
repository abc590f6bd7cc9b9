package cpu

import (
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
