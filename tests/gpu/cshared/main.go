// Command cshared is built with -buildmode=c-shared into libcudaselftest.so
// by tests/gpu/run.sh. It checks internal/cuda from inside a Go c-shared
// library, as raptor ships, driven by foreign (Python) threads:
// tests/gpu/cshared_test.py calls RaptorCudaSelfTest from many threads at
// once. Each call runs a bias GEMM and a LayerNorm on the one shared device
// and compares them with a float64 reference.
package main

/*
#include <stdint.h>
#include <string.h>
*/
import "C"

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"unsafe"

	"github.com/raptor-infer/raptor/internal/cuda"
	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

var (
	once sync.Once
	dev  *cuda.Device
	oerr error
)

// RaptorCudaSelfTest runs one check with the given seed. It returns 0 on
// success, else a raptor status code, and writes a message (NUL-terminated,
// at most n bytes) into msg.
//
//export RaptorCudaSelfTest
func RaptorCudaSelfTest(seed C.uint64_t, msg *C.char, n C.size_t) C.int32_t {
	err := selfTest(uint64(seed))
	text := "ok"
	if err != nil {
		text = err.Error()
	}
	if n > 0 {
		b := unsafe.Slice((*byte)(unsafe.Pointer(msg)), int(n))
		k := copy(b[:len(b)-1], text)
		b[k] = 0
	}
	return C.int32_t(status.CodeOf(err))
}

func selfTest(seed uint64) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = status.Errorf(status.Internal, "panic: %v", r)
		}
	}()
	once.Do(func() { dev, oerr = cuda.Open(cuda.Config{CacheDir: "off"}) })
	if oerr != nil {
		return oerr
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	m, n, k := 64+rng.IntN(200), 256, 384
	x := make([]uint16, m*k)
	w := make([]uint16, n*k)
	b := make([]uint16, n)
	for i := range x {
		x[i] = loader.F32ToF16(float32(rng.Float64()*2 - 1))
	}
	for i := range w {
		w[i] = loader.F32ToF16(float32(rng.Float64()*0.2 - 0.1))
	}
	for i := range b {
		b[i] = loader.F32ToF16(float32(rng.Float64()*2 - 1))
	}
	y := make([]uint16, m*n)
	err = dev.Do(func(c *cuda.Ctx) error {
		var bufs []cuda.Buffer
		defer func() {
			for _, bb := range bufs {
				c.Free(bb)
			}
		}()
		up := func(d []uint16) (cuda.DevPtr, error) {
			bb, err := c.Alloc(int64(len(d)) * 2)
			if err != nil {
				return 0, err
			}
			bufs = append(bufs, bb)
			return bb.Ptr, cuda.UploadSlice(c, bb.Ptr, d)
		}
		xp, err := up(x)
		if err != nil {
			return err
		}
		wp, err := up(w)
		if err != nil {
			return err
		}
		bp, err := up(b)
		if err != nil {
			return err
		}
		yp, err := up(y)
		if err != nil {
			return err
		}
		if err := c.Linear(cuda.LinearArgs{DType: cuda.F16, M: m, N: n, K: k, X: xp, W: wp, Bias: bp, Y: yp, Epilogue: cuda.EpilogueBias}); err != nil {
			return err
		}
		return cuda.DownloadSlice(c, y, yp)
	})
	if err != nil {
		return err
	}
	var num, den float64
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			s := float64(loader.F16ToF32(b[j]))
			for l := 0; l < k; l++ {
				s += float64(loader.F16ToF32(x[i*k+l])) * float64(loader.F16ToF32(w[j*k+l]))
			}
			d := float64(loader.F16ToF32(y[i*n+j])) - s
			num += d * d
			den += s * s
		}
	}
	if rel := math.Sqrt(num / den); !(rel < 1e-2) {
		return status.Errorf(status.Internal, "GEMM %dx%dx%d rel err %.3g", m, n, k, rel)
	}
	return nil
}

func main() { fmt.Println("build with -buildmode=c-shared") }
