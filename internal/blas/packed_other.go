//go:build !amd64

package blas

func kernel6x16(k int, rows *[rowBlock]*float32, panel []float32, tile *[rowBlock * panelWidth]float32) {
	kernel6x16Go(k, rows, panel, tile)
}

var hasAVX2FMA = false
