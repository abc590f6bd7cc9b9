// Package blas is raptor's single-precision GEMM: OpenBLAS (or another
// library exporting cblas_sgemm) loaded at run time with purego, or a
// pure-Go blocked GEMM where none is found or where it is switched off.
//
// Matrices are row-major. The engine never relies on a GEMM's per-row result
// being independent of the number of rows M (OpenBLAS's is not: M = 1 goes
// through GEMV, and its kernels' edge paths differ); batch invariance comes
// from the engine calling GEMMs on row tiles fixed relative to each sequence.
// The pure-Go GEMM nonetheless computes every element with the same sequence
// of operations whatever M, N and the element's position.
package blas

import (
	"fmt"
	"os"
	"strings"
)

// Gemm is a single-precision general matrix multiply.
type Gemm interface {
	// Name describes the implementation (e.g. "openblas 0.3.21 Haswell" or "go").
	Name() string
	// Sgemm computes C = alpha*A*op(B) + beta*C with row-major A (m x k,
	// leading dimension lda), op(B) k x n (B is k x n with leading dimension
	// ldb, or n x k if transB), C m x n (ldc). If beta is 0, C is not read.
	// It panics if a slice is too short for its dimensions.
	Sgemm(transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
}

// EnvVar selects the GEMMs (see Open).
const EnvVar = "RAPTOR_BLAS"

// Open returns the GEMMs that spec selects; an empty spec reads the
// environment variable RAPTOR_BLAS.
//
//   - "" or "auto": OpenBLAS where found (else pure Go) for attention, and the
//     packed AVX2+FMA kernel for the linear layers where the CPU has it
//     (else the same GEMM as attention);
//   - "openblas": OpenBLAS for everything (pure Go if it is not found);
//   - "off" (or "go", "0", "false", "none"): the pure-Go GEMM for everything;
//   - anything else: the path of a shared library exporting cblas_sgemm,
//     for everything.
//
// packed says whether the linear layers use Packed. note explains the
// choice, for the log.
func Open(spec string) (g Gemm, packed bool, note string) {
	if spec == "" {
		spec = os.Getenv(EnvVar)
	}
	mode := strings.ToLower(strings.TrimSpace(spec))
	switch mode {
	case "off", "go", "0", "false", "none":
		return Go(), false, fmt.Sprintf("pure-Go GEMM (%s=%s)", EnvVar, spec)
	case "", "auto", "on", "1", "true", "openblas":
		var errs []string
		g = nil
		for _, p := range defaultLibs {
			o, err := LoadLibrary(p)
			if err == nil {
				g = o
				break
			}
			errs = append(errs, err.Error())
		}
		note = "GEMM: "
		if g == nil {
			g = Go()
			note = "no OpenBLAS found (" + strings.Join(errs, "; ") + "); GEMM: "
		}
		note += g.Name()
		if mode != "openblas" && PackedFast() {
			return g, true, note + "; linear layers: packed " + PackedKernel()
		}
		return g, false, note
	default:
		o, err := LoadLibrary(spec)
		if err != nil {
			return Go(), false, fmt.Sprintf("pure-Go GEMM: %v", err)
		}
		return o, false, "GEMM: " + o.Name()
	}
}

var defaultLibs = []string{"libopenblas.so.0", "libopenblas.so"}

// checkArgs panics unless the slices hold the matrices the dimensions
// describe. It reports whether there is anything to multiply.
func checkArgs(transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) bool {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("blas: negative dimension m=%d n=%d k=%d", m, n, k))
	}
	if m == 0 || n == 0 {
		return false
	}
	need := func(what string, s []float32, rows, cols, ld int) {
		if ld < cols || ld < 1 {
			panic(fmt.Sprintf("blas: %s leading dimension %d < %d columns", what, ld, cols))
		}
		if rows > 0 && cols > 0 && len(s) < (rows-1)*ld+cols {
			panic(fmt.Sprintf("blas: %s has %d elements, needs %d (%dx%d, ld %d)", what, len(s), (rows-1)*ld+cols, rows, cols, ld))
		}
	}
	need("C", c, m, n, ldc)
	if k == 0 {
		return true
	}
	need("A", a, m, k, lda)
	if transB {
		need("B", b, n, k, ldb)
	} else {
		need("B", b, k, n, ldb)
	}
	return true
}

// scaleC sets C = beta*C (beta 0 writes zeros without reading C).
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	if beta == 1 {
		return
	}
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}
