package blas

import "sync"

// Go returns the pure-Go GEMM.
func Go() Gemm { return goGemm{} }

type goGemm struct{}

func (goGemm) Name() string { return "go" }

// kc is the depth of one pass over K: each element of C receives
// alpha * (sum over the pass, accumulated in order from zero) once per pass.
const kc = 256

var packPool = sync.Pool{New: func() any { s := make([]float32, 0, kc*256); return &s }}

// Sgemm implements Gemm. B is read as n rows of k (packed so when !transB),
// and each element of C is a dot product accumulated in ascending k, the same
// operations in every code path, so a row's result depends neither on m nor
// on where the row sits.
func (goGemm) Sgemm(transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if !checkArgs(transB, m, n, k, a, lda, b, ldb, c, ldc) {
		return
	}
	scaleC(m, n, beta, c, ldc)
	var pp *[]float32
	if !transB {
		pp = packPool.Get().(*[]float32)
		defer packPool.Put(pp)
	}
	for k0 := 0; k0 < k; k0 += kc {
		kn := min(kc, k-k0)
		bt, ldt, off := b, ldb, k0
		if !transB {
			// Pack B[k0:k0+kn, :] transposed: row j holds column j.
			if cap(*pp) < n*kn {
				*pp = make([]float32, n*kn)
			}
			p := (*pp)[:n*kn]
			for kk := 0; kk < kn; kk++ {
				row := b[(k0+kk)*ldb : (k0+kk)*ldb+n]
				for j, v := range row {
					p[j*kn+kk] = v
				}
			}
			bt, ldt, off = p, kn, 0
		}
		i := 0
		for ; i+4 <= m; i += 4 {
			j := 0
			for ; j+4 <= n; j += 4 {
				kernel4x4(kn, alpha, a[i*lda+k0:], lda, bt[j*ldt+off:], ldt, c[i*ldc+j:], ldc)
			}
			for ; j < n; j++ {
				for ii := i; ii < i+4; ii++ {
					c[ii*ldc+j] += float32(alpha * dot(a[ii*lda+k0:ii*lda+k0+kn], bt[j*ldt+off:j*ldt+off+kn]))
				}
			}
		}
		for ; i < m; i++ {
			ar := a[i*lda+k0 : i*lda+k0+kn]
			for j := 0; j < n; j++ {
				c[i*ldc+j] += float32(alpha * dot(ar, bt[j*ldt+off:j*ldt+off+kn]))
			}
		}
	}
}

// dot accumulates x·y in ascending order from zero, rounding every product
// (float32(...) forbids fusing into FMA), exactly as kernel4x4 does.
func dot(x, y []float32) float32 {
	y = y[:len(x)]
	var s float32
	for i, v := range x {
		s += float32(v * y[i])
	}
	return s
}

// kernel4x4 adds alpha * A[0:4, 0:kn] · Bt[0:4, 0:kn]^T to C[0:4, 0:4].
func kernel4x4(kn int, alpha float32, a []float32, lda int, bt []float32, ldb int, c []float32, ldc int) {
	a0, a1, a2, a3 := a[:kn], a[lda:lda+kn], a[2*lda:2*lda+kn], a[3*lda:3*lda+kn]
	b0, b1, b2, b3 := bt[:kn], bt[ldb:ldb+kn], bt[2*ldb:2*ldb+kn], bt[3*ldb:3*ldb+kn]
	var c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33 float32
	for kk := 0; kk < kn; kk++ {
		x0, x1, x2, x3 := a0[kk], a1[kk], a2[kk], a3[kk]
		y0, y1, y2, y3 := b0[kk], b1[kk], b2[kk], b3[kk]
		c00 += float32(x0 * y0)
		c01 += float32(x0 * y1)
		c02 += float32(x0 * y2)
		c03 += float32(x0 * y3)
		c10 += float32(x1 * y0)
		c11 += float32(x1 * y1)
		c12 += float32(x1 * y2)
		c13 += float32(x1 * y3)
		c20 += float32(x2 * y0)
		c21 += float32(x2 * y1)
		c22 += float32(x2 * y2)
		c23 += float32(x2 * y3)
		c30 += float32(x3 * y0)
		c31 += float32(x3 * y1)
		c32 += float32(x3 * y2)
		c33 += float32(x3 * y3)
	}
	r0, r1, r2, r3 := c[:4], c[ldc:ldc+4], c[2*ldc:2*ldc+4], c[3*ldc:3*ldc+4]
	r0[0] += float32(alpha * c00)
	r0[1] += float32(alpha * c01)
	r0[2] += float32(alpha * c02)
	r0[3] += float32(alpha * c03)
	r1[0] += float32(alpha * c10)
	r1[1] += float32(alpha * c11)
	r1[2] += float32(alpha * c12)
	r1[3] += float32(alpha * c13)
	r2[0] += float32(alpha * c20)
	r2[1] += float32(alpha * c21)
	r2[2] += float32(alpha * c22)
	r2[3] += float32(alpha * c23)
	r3[0] += float32(alpha * c30)
	r3[1] += float32(alpha * c31)
	r3[2] += float32(alpha * c32)
	r3[3] += float32(alpha * c33)
}
