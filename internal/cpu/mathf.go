package cpu

import "math"

// Float32 elementwise functions, accurate to a few ulp, used for softmax and
// GELU (math's float64 functions are several times slower).

// expf is e^x (Cephes expf: range reduction by ln 2 and a degree-6
// polynomial). Results below the smallest normal float32 are flushed to 0.
func expf(x float32) float32 {
	if x < -87.33654 {
		return 0
	}
	if x > 88.0 {
		x = 88.0
	}
	t := x * 1.44269504088896341
	k := (t + 12582912) - 12582912 // round to nearest (1.5 * 2^23 trick)
	r := x - k*0.693359375
	r = r - k*-2.12194440e-4
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	y := p*r*r + r + 1
	return y * math.Float32frombits(uint32(int32(k)+127)<<23)
}

// erff is erf(x): a rational approximation on [-4, 4] (Eigen's float erf),
// ±1 outside.
func erff(x float32) float32 {
	if x > 4 {
		x = 4
	} else if x < -4 {
		x = -4
	}
	x2 := x * x
	p := float32(-2.72614225801306e-10)
	p = p*x2 + 2.77068142495902e-08
	p = p*x2 + -2.10102402082508e-06
	p = p*x2 + -5.69250639462346e-05
	p = p*x2 + -7.34990630326855e-04
	p = p*x2 + -2.95459980854025e-03
	p = p*x2 + -1.60960333262415e-02
	p *= x
	q := float32(-1.45660718464996e-05)
	q = q*x2 + -2.13374055278905e-04
	q = q*x2 + -1.68282697438203e-03
	q = q*x2 + -7.37332916720468e-03
	q = q*x2 + -1.42647390514189e-02
	return p / q
}

// tanhf is tanh(x) = sign(x) * (1 - 2/(e^{2|x|}+1)), absolute error ~1e-7.
func tanhf(x float32) float32 {
	a := x
	if a < 0 {
		a = -a
	}
	if a > 9 {
		a = 9
	}
	var t float32
	if a < 0.0004 {
		t = a
	} else {
		t = 1 - 2/(expf(2*a)+1)
	}
	if x < 0 {
		return -t
	}
	return t
}

// geluErf is x * Φ(x) = 0.5 x (1 + erf(x/√2)) (HF "gelu").
func geluErf(x float32) float32 {
	return 0.5 * x * (1 + erff(x*0.70710678118654752))
}

// geluTanh is HF's "gelu_new" / "gelu_pytorch_tanh",
// 0.5 x (1 + tanh(y)) with y = sqrt(2/pi) (x + 0.044715 x^3), computed as
// x / (1 + e^(-2y)) (the same value: 0.5 (1 + tanh y) = sigmoid(2y)).
func geluTanh(x float32) float32 {
	return x / (1 + expf(x*(-1.5957691216057308+-0.07135481627159*x*x)))
}

// expShiftSum sets x[i] = e^(x[i]-m) and returns their sum (vectorised where
// the CPU allows; the result depends only on x and m).
func expShiftSum(x []float32, m float32) float32 {
	n8, sum := expShiftSumVec(x, m)
	for i := n8; i < len(x); i++ {
		p := expf(x[i] - m)
		x[i] = p
		sum += p
	}
	return sum
}

// geluTanhSlice applies geluTanh in place.
func geluTanhSlice(x []float32) {
	for i := geluTanhVec(x); i < len(x); i++ {
		x[i] = geluTanh(x[i])
	}
}

// geluErfSlice applies geluErf in place.
func geluErfSlice(x []float32) {
	for i := geluErfVec(x); i < len(x); i++ {
		x[i] = geluErf(x[i])
	}
}
