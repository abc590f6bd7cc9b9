package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// GPU tests share one Device and one kernel cache directory, so each module
// compiles once per run. On a machine without a usable GPU they skip with
// the reason Open gave.

var (
	gpuOnce     sync.Once
	gpuDev      *Device
	gpuErr      error
	gpuCacheDir string
	gpuLogMu    sync.Mutex
	gpuLog      []string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if gpuDev != nil {
		gpuDev.Close()
	}
	if gpuCacheDir != "" {
		os.RemoveAll(gpuCacheDir)
	}
	os.Exit(code)
}

func logSink(prefix string, sink *[]string, mu *sync.Mutex) func(LogLevel, string) {
	return func(l LogLevel, msg string) {
		mu.Lock()
		*sink = append(*sink, fmt.Sprintf("%s[%d] %s", prefix, l, msg))
		mu.Unlock()
	}
}

// gpu returns the shared test device, or skips the test.
func gpu(t testing.TB) *Device {
	t.Helper()
	gpuOnce.Do(func() {
		dir, err := os.MkdirTemp("", "raptor-kcache-")
		if err != nil {
			gpuErr = err
			return
		}
		gpuCacheDir = dir
		gpuDev, gpuErr = Open(Config{Device: 0, CacheDir: dir, Log: logSink("", &gpuLog, &gpuLogMu)})
	})
	if gpuErr != nil {
		if status.CodeOf(gpuErr) == status.BackendUnavailable {
			first := strings.TrimSuffix(strings.SplitN(gpuErr.Error(), "\n", 2)[0], "; tried:")
			t.Skipf("no usable GPU here: %s", first)
		}
		t.Fatalf("Open: %v", gpuErr)
	}
	return gpuDev
}

// do runs fn on the shared device and fails the test on error.
func do(t testing.TB, fn func(c *Ctx) error) {
	t.Helper()
	if err := gpu(t).Do(fn); err != nil {
		t.Fatal(err)
	}
}

// half-precision helpers (host side, through the loader's conversions,
// which are tested exhaustively there).

func toBits(dt DType, f float32) uint16 {
	if dt == BF16 {
		return loader.F32ToBF16(f)
	}
	return loader.F32ToF16(f)
}

func fromBits(dt DType, h uint16) float64 {
	if dt == BF16 {
		return float64(loader.BF16ToF32(h))
	}
	return float64(loader.F16ToF32(h))
}

// randHalf returns n values drawn from U(lo, hi), rounded to dt, as bits
// and as the float64 values they encode.
func randHalf(rng *rand.Rand, dt DType, n int, lo, hi float64) ([]uint16, []float64) {
	bits := make([]uint16, n)
	vals := make([]float64, n)
	for i := range bits {
		bits[i] = toBits(dt, float32(lo+(hi-lo)*rng.Float64()))
		vals[i] = fromBits(dt, bits[i])
	}
	return bits, vals
}

// relTol is the per-element relative tolerance of a value rounded to dt
// (one unit in the last place: twice the rounding error).
func relTol(dt DType) float64 {
	if dt == BF16 {
		return 1.0 / 128
	}
	return 1.0 / 1024
}

// cmpStats compares got (dt bits) with a float64 reference.
type cmpStats struct {
	n, bad, nonFinite int
	relL2, maxAbs     float64
	firstBad          string
}

func compareHalf(dt DType, got []uint16, ref []float64, atol float64) cmpStats {
	var s cmpStats
	var num, den float64
	s.n = len(ref)
	for i, r := range ref {
		g := fromBits(dt, got[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			s.nonFinite++
			if s.firstBad == "" {
				s.firstBad = fmt.Sprintf("[%d] = %v (bits %#04x), want %v", i, g, got[i], r)
			}
			continue
		}
		d := math.Abs(g - r)
		num += d * d
		den += r * r
		s.maxAbs = max(s.maxAbs, d)
		if d > relTol(dt)*math.Abs(r)+atol {
			s.bad++
			if s.firstBad == "" {
				s.firstBad = fmt.Sprintf("[%d] = %v, want %v (diff %.3g)", i, g, r, d)
			}
		}
	}
	if den > 0 {
		s.relL2 = math.Sqrt(num / den)
	}
	return s
}

func (s cmpStats) String() string {
	return fmt.Sprintf("n=%d rel_err=%.2e max_abs=%.2e out_of_tol=%d non_finite=%d", s.n, s.relL2, s.maxAbs, s.bad, s.nonFinite)
}

// check fails t unless every element was written (finite: outputs are
// poisoned with NaN beforehand), within tolerance, and the relative error
// is under maxRel.
func (s cmpStats) check(t testing.TB, name string, maxRel float64) {
	t.Helper()
	t.Logf("%-40s %s", name, s)
	if s.nonFinite > 0 || s.bad > 0 || s.relL2 >= maxRel || s.n == 0 {
		t.Errorf("%s: %s; first bad %s (max rel err %.1e)", name, s, s.firstBad, maxRel)
	}
}

// maxRelFor is the relative L2 error an elementwise kernel must stay under:
// a few roundings of its output type.
func maxRelFor(dt DType) float64 {
	if dt == BF16 {
		return 8e-3
	}
	return 1e-3
}

// poison is the byte every output is filled with before a kernel runs:
// 0xffff is a NaN in both fp16 and bf16 (and 0xffffffff in fp32).
const poison = 0xff

// devHalf allocates and uploads a []uint16.
func devHalf(t testing.TB, c *Ctx, data []uint16) Buffer {
	t.Helper()
	b, err := c.Alloc(int64(len(data)) * 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := UploadSlice(c, b.Ptr, data); err != nil {
		t.Fatal(err)
	}
	return b
}

func devInt32(t testing.TB, c *Ctx, data []int32) Buffer {
	t.Helper()
	b, err := c.Alloc(int64(len(data))*4 + 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := UploadSlice(c, b.Ptr, data); err != nil {
		t.Fatal(err)
	}
	return b
}

// poisoned allocates n bytes filled with the poison byte.
func poisoned(t testing.TB, c *Ctx, n int64) Buffer {
	t.Helper()
	b, err := c.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Memset8(b.Ptr, poison, n); err != nil {
		t.Fatal(err)
	}
	return b
}

func downloadHalf(t testing.TB, c *Ctx, p DevPtr, n int) []uint16 {
	t.Helper()
	out := make([]uint16, n)
	if err := DownloadSlice(c, out, p); err != nil {
		t.Fatal(err)
	}
	return out
}

func gelu64(x float64, tanh bool) float64 {
	if tanh {
		return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
	}
	return 0.5 * x * (1 + math.Erf(x/math.Sqrt2))
}

// layerNorm64 normalises v in place and applies gamma and beta.
func layerNorm64(v, g, b []float64, eps float64) {
	var mean float64
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	var vr float64
	for _, x := range v {
		vr += (x - mean) * (x - mean)
	}
	vr /= float64(len(v))
	r := 1 / math.Sqrt(vr+eps)
	for i := range v {
		v[i] = (v[i]-mean)*r*g[i] + b[i]
	}
}
