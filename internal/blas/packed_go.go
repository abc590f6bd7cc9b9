package blas

import (
	"math"
	"unsafe"
)

// kernel6x16Go is the portable kernel6x16: the same FMA chains, through
// math.FMA (exact fused multiply-add, rounded once), so it gives the AVX2
// kernel's bits.
func kernel6x16Go(k int, rows *[rowBlock]*float32, panel []float32, tile *[rowBlock * panelWidth]float32) {
	for r := 0; r < rowBlock; r++ {
		a := unsafe.Slice(rows[r], k)
		var acc [panelWidth]float32
		for kk, av := range a {
			b := panel[kk*panelWidth : kk*panelWidth+panelWidth]
			for j := range acc {
				acc[j] = float32(math.FMA(float64(av), float64(b[j]), float64(acc[j])))
			}
		}
		copy(tile[r*panelWidth:], acc[:])
	}
}
