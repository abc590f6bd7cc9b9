package blas

import (
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/ebitengine/purego"
)

const (
	cblasRowMajor = 101
	cblasNoTrans  = 111
	cblasTrans    = 112
)

// OpenBLAS is a cblas_sgemm from a shared library loaded at run time.
type OpenBLAS struct {
	name  string
	sgemm func(order, transA, transB, m, n, k int32, alpha float32, a *float32, lda int32, b *float32, ldb int32, beta float32, c *float32, ldc int32)
}

var (
	libMu    sync.Mutex
	libCache = map[string]*OpenBLAS{}
)

// LoadLibrary dlopens path (a name the dynamic loader resolves, or a file)
// and binds its cblas_sgemm. Where the library is OpenBLAS, its own threading
// is set to one thread: raptor parallelises over row tiles and attention
// blocks with its own worker pool, and two pools on the same cores would
// oversubscribe them. (This setting is process-wide for that library.)
// Libraries are loaded once per path and never unloaded.
func LoadLibrary(path string) (*OpenBLAS, error) {
	libMu.Lock()
	defer libMu.Unlock()
	if o, ok := libCache[path]; ok {
		return o, nil
	}
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("dlopen %s: %w", path, err)
	}
	sym, err := purego.Dlsym(h, "cblas_sgemm")
	if err != nil {
		return nil, fmt.Errorf("%s has no cblas_sgemm: %w", path, err)
	}
	o := &OpenBLAS{name: path}
	purego.RegisterFunc(&o.sgemm, sym)
	if s, err := purego.Dlsym(h, "openblas_set_num_threads"); err == nil {
		var set func(int32)
		purego.RegisterFunc(&set, s)
		set(1)
	}
	if s, err := purego.Dlsym(h, "openblas_get_config"); err == nil {
		var cfg func() string
		purego.RegisterFunc(&cfg, s)
		o.name = cfg()
		if f := strings.Fields(o.name); len(f) >= 2 {
			o.name = f[0] + " " + f[1] // "OpenBLAS 0.3.21"
		}
		if s, err := purego.Dlsym(h, "openblas_get_corename"); err == nil {
			var core func() string
			purego.RegisterFunc(&core, s)
			o.name += " " + core()
		}
	}
	libCache[path] = o
	return o, nil
}

// Name describes the library.
func (o *OpenBLAS) Name() string { return o.name }

// Sgemm implements Gemm.
func (o *OpenBLAS) Sgemm(transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if !checkArgs(transB, m, n, k, a, lda, b, ldb, c, ldc) {
		return
	}
	if k == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	for _, v := range [...]int{m, n, k, lda, ldb, ldc} {
		if v > math.MaxInt32 {
			panic("blas: dimension exceeds int32")
		}
	}
	tb := int32(cblasNoTrans)
	if transB {
		tb = cblasTrans
	}
	o.sgemm(cblasRowMajor, cblasNoTrans, tb, int32(m), int32(n), int32(k), alpha, &a[0], int32(lda), &b[0], int32(ldb), beta, &c[0], int32(ldc))
}
