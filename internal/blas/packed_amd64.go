package blas

import "unsafe"

//go:noescape
func sgemm6x16(k int, a0, a1, a2, a3, a4, a5, b, c unsafe.Pointer)

var hasAVX2FMA = detectAVX2FMA()

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
func xgetbv0() (eax uint32)

func detectAVX2FMA() bool {
	maxID, _, _, _ := cpuid(0, 0)
	if maxID < 7 {
		return false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	const fma, osxsave, avx = 1 << 12, 1 << 27, 1 << 28
	if ecx1&(fma|osxsave|avx) != fma|osxsave|avx || xgetbv0()&6 != 6 {
		return false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	return ebx7&(1<<5) != 0
}

// kernel6x16 sets tile[r*16+j] = sum_k rows[r][k] * panel[k*16+j] (one FMA
// chain per element, ascending k).
func kernel6x16(k int, rows *[rowBlock]*float32, panel []float32, tile *[rowBlock * panelWidth]float32) {
	if hasAVX2FMA {
		sgemm6x16(k, unsafe.Pointer(rows[0]), unsafe.Pointer(rows[1]), unsafe.Pointer(rows[2]),
			unsafe.Pointer(rows[3]), unsafe.Pointer(rows[4]), unsafe.Pointer(rows[5]),
			unsafe.Pointer(&panel[0]), unsafe.Pointer(&tile[0]))
		return
	}
	kernel6x16Go(k, rows, panel, tile)
}
