package cpu

// AVX2+FMA kernels (vec_amd64.s) for the elementwise functions, used when
// the CPU and OS support them; the pure-Go versions in mathf.go otherwise.

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
func xgetbv0() (eax uint32)

//go:noescape
func expShiftSumAVX2(x *float32, n int, m float32) float32

//go:noescape
func geluTanhAVX2(x *float32, n int)

//go:noescape
func geluErfAVX2(x *float32, n int)

var useAVX2 = detectAVX2()

func detectAVX2() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	const fma, osxsave, avx = 1 << 12, 1 << 27, 1 << 28
	if ecx1&(fma|osxsave|avx) != fma|osxsave|avx {
		return false
	}
	if xgetbv0()&6 != 6 { // the OS saves XMM and YMM state
		return false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	return ebx7&(1<<5) != 0
}

func expShiftSumVec(x []float32, m float32) (n8 int, sum float32) {
	if !useAVX2 || len(x) < 8 {
		return 0, 0
	}
	n8 = len(x) &^ 7
	return n8, expShiftSumAVX2(&x[0], n8, m)
}

func geluTanhVec(x []float32) int {
	if !useAVX2 || len(x) < 8 {
		return 0
	}
	n8 := len(x) &^ 7
	geluTanhAVX2(&x[0], n8)
	return n8
}

func geluErfVec(x []float32) int {
	if !useAVX2 || len(x) < 8 {
		return 0
	}
	n8 := len(x) &^ 7
	geluErfAVX2(&x[0], n8)
	return n8
}
