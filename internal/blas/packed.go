package blas

// Packed is a K x N matrix (the transposed weight of a linear layer) packed
// once into panels of 16 columns, for Mul. Mul computes every element of its
// product as one fused multiply-add chain in ascending k, whatever the
// number of rows and the row's position: a row's result never depends on
// the other rows, so rows of different sequences can share one call without
// breaking batch invariance. It uses AVX2+FMA where the CPU has them and a
// pure-Go kernel with the same arithmetic (math.FMA) otherwise.
type Packed struct {
	K, N   int
	panels int
	data   []float32 // panels x K x 16
}

const panelWidth = 16
const rowBlock = 6

// Pack packs the K x N row-major matrix b (leading dimension ldb).
func Pack(b []float32, k, n, ldb int) *Packed {
	if k < 1 || n < 1 || ldb < n || len(b) < (k-1)*ldb+n {
		panic("blas: Pack: bad dimensions")
	}
	p := &Packed{K: k, N: n, panels: (n + panelWidth - 1) / panelWidth}
	p.data = make([]float32, p.panels*k*panelWidth)
	for pi := 0; pi < p.panels; pi++ {
		dst := p.data[pi*k*panelWidth:]
		for kk := 0; kk < k; kk++ {
			for j := 0; j < panelWidth; j++ {
				if col := pi*panelWidth + j; col < n {
					dst[kk*panelWidth+j] = b[kk*ldb+col]
				}
			}
		}
	}
	return p
}

// Mul adds A·B to C: C[i, j] += sum_k A[i, k] B[k, j] for i < m, with A
// m x K (leading dimension lda) and C m x N (ldc).
func (p *Packed) Mul(m int, a []float32, lda int, c []float32, ldc int) {
	if m <= 0 {
		return
	}
	if lda < p.K || ldc < p.N || len(a) < (m-1)*lda+p.K || len(c) < (m-1)*ldc+p.N {
		panic("blas: Packed.Mul: slice too short for its dimensions")
	}
	var tile [rowBlock * panelWidth]float32
	var rows [rowBlock]*float32
	for pi := 0; pi < p.panels; pi++ {
		panel := p.data[pi*p.K*panelWidth : (pi+1)*p.K*panelWidth]
		col0 := pi * panelWidth
		ncol := min(panelWidth, p.N-col0)
		for i := 0; i < m; i += rowBlock {
			nr := min(rowBlock, m-i)
			for r := 0; r < rowBlock; r++ {
				rows[r] = &a[(i+min(r, nr-1))*lda] // spare slots repeat the last row
			}
			kernel6x16(p.K, &rows, panel, &tile)
			for r := 0; r < nr; r++ {
				dst := c[(i+r)*ldc+col0 : (i+r)*ldc+col0+ncol]
				for j := range dst {
					dst[j] += tile[r*panelWidth+j]
				}
			}
		}
	}
}

// PackedFast reports whether Packed.Mul runs its AVX2+FMA kernel here (the
// portable kernel is exact but slow).
func PackedFast() bool { return hasAVX2FMA }

// PackedKernel names the kernel Packed.Mul uses.
func PackedKernel() string {
	if hasAVX2FMA {
		return "avx2-fma 6x16"
	}
	return "go-fma 6x16"
}
