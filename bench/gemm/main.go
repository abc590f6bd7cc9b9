// Command gemm benchmarks raptor's cuBLASLt GEMMs on the encoder's shapes
// (QKV, attention output projection, FFN1 with the GELU+bias epilogue, FFN2
// with bias; hidden 768 and 1024; M = 4096 to 65536 tokens) and a few
// elementwise kernels, and writes one JSON object per measurement.
// bench/gemm_torch.py times torch.nn.functional.linear on the same shapes in
// the same run and prints both side by side (see tests/gpu/run.sh).
//
// Timing follows the lent-GPU method: random operands (never zeros), four
// input sets rotated so that the inputs do not sit in L2, warm-up first,
// CUDA events around each repetition, the median reported with the 10th and
// 90th percentiles; the FLOP floor is the shape's FLOPs at the rate this
// binary measures on an 8192^3 GEMM of the same dtype.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"

	"github.com/raptor-infer/raptor/internal/cuda"
)

// Result is one measurement.
type Result struct {
	Kind     string  `json:"kind"` // "gemm", "ceiling", "elementwise", "copy"
	DType    string  `json:"dtype"`
	Hidden   int     `json:"hidden,omitempty"`
	Name     string  `json:"name"`
	M        int     `json:"m"`
	N        int     `json:"n"`
	K        int     `json:"k"`
	Epilogue string  `json:"epilogue,omitempty"`
	MedianMs float64 `json:"median_ms"`
	P10Ms    float64 `json:"p10_ms"`
	P90Ms    float64 `json:"p90_ms"`
	FLOPs    float64 `json:"flops,omitempty"`
	TFLOPs   float64 `json:"tflops,omitempty"`
	FloorMs  float64 `json:"floor_ms,omitempty"`
	Bytes    float64 `json:"bytes,omitempty"`
	GBs      float64 `json:"gbs,omitempty"`
	Algos    int     `json:"algos,omitempty"`
	Tuned    bool    `json:"tuned,omitempty"`
}

func main() {
	out := flag.String("out", "gemm_raptor.json", "JSON output (one object per line)")
	warm := flag.Int("warmup", 10, "warm-up repetitions")
	reps := flag.Int("reps", 50, "timed repetitions")
	autotune := flag.Bool("autotune", false, "time cuBLASLt's heuristic candidates and keep the fastest per shape")
	msFlag := flag.String("m", "4096,8192,16384,32768,65536", "token counts M")
	flag.Parse()
	var ms []int
	for _, f := range splitInts(*msFlag) {
		ms = append(ms, f)
	}
	dev, err := cuda.Open(cuda.Config{CacheDir: os.Getenv("RAPTOR_KERNEL_CACHE"), GemmAutotune: *autotune})
	if err != nil {
		fmt.Fprintln(os.Stderr, "gemm bench:", err)
		os.Exit(1)
	}
	defer dev.Close()
	fmt.Printf("device: %s\ncuBLASLt %d (%s), autotune=%v, warm-up %d, reps %d\n",
		dev.Info(), dev.Info().CublasLtVer, dev.Info().CublasLtPath, *autotune, *warm, *reps)
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	emit := func(r Result) {
		enc.Encode(r)
		switch r.Kind {
		case "gemm", "ceiling":
			fmt.Printf("%-8s %-5s h%-5d %-9s M=%-6d N=%-5d K=%-5d %-9s %8.3f ms [%7.3f, %7.3f]  %6.1f TFLOP/s  floor %7.3f ms  algos %d\n",
				r.Kind, r.DType, r.Hidden, r.Name, r.M, r.N, r.K, r.Epilogue, r.MedianMs, r.P10Ms, r.P90Ms, r.TFLOPs, r.FloorMs, r.Algos)
		default:
			fmt.Printf("%-8s %-5s h%-5d %-22s M=%-6d %8.3f ms [%7.3f, %7.3f]  %7.0f GB/s\n",
				r.Kind, r.DType, r.Hidden, r.Name, r.M, r.MedianMs, r.P10Ms, r.P90Ms, r.GBs)
		}
	}
	err = dev.Do(func(c *cuda.Ctx) error {
		b := &bench{c: c, warm: *warm, reps: *reps}
		return b.run(ms, emit)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "gemm bench:", err)
		os.Exit(1)
	}
}

func splitInts(s string) []int {
	var out []int
	n, have := 0, false
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if have {
				out = append(out, n)
			}
			n, have = 0, false
			continue
		}
		n = n*10 + int(s[i]-'0')
		have = true
	}
	return out
}

type bench struct {
	c          *cuda.Ctx
	warm, reps int
}

// timeIt runs fn warm times, then reps times between events, and returns the
// median, 10th and 90th percentile in milliseconds. fn gets the repetition
// index (to rotate input sets).
func (b *bench) timeIt(fn func(i int) error) (med, p10, p90 float64, err error) {
	c := b.c
	start, err := c.NewEvent(true)
	if err != nil {
		return
	}
	defer c.DestroyEvent(start)
	end, err := c.NewEvent(true)
	if err != nil {
		return
	}
	defer c.DestroyEvent(end)
	for i := 0; i < b.warm; i++ {
		if err = fn(i); err != nil {
			return
		}
	}
	if err = c.Sync(); err != nil {
		return
	}
	times := make([]float64, 0, b.reps)
	for i := 0; i < b.reps; i++ {
		c.RecordEvent(start, c.Compute())
		if err = fn(i); err != nil {
			return
		}
		c.RecordEvent(end, c.Compute())
		if err = c.EventSync(end); err != nil {
			return
		}
		ms, e := c.Elapsed(start, end)
		if e != nil {
			err = e
			return
		}
		times = append(times, float64(ms))
	}
	sort.Float64s(times)
	q := func(p float64) float64 { return times[int(p*float64(len(times)-1)+0.5)] }
	return q(0.5), q(0.1), q(0.9), nil
}

const sets = 4 // input sets rotated between repetitions

func (b *bench) run(ms []int, emit func(Result)) error {
	c := b.c
	maxM := 8192
	for _, m := range ms {
		maxM = max(maxM, m)
	}
	maxK, maxN := 4096, 4096
	// Four X sets of the largest shape, one W, one bias, one Y; random.
	var xs [sets]cuda.Buffer
	for i := range xs {
		x, err := c.Alloc(int64(maxM) * int64(maxK) * 2)
		if err != nil {
			return err
		}
		xs[i] = x
	}
	w, err := c.Alloc(int64(max(maxN, 8192)) * int64(max(maxK, 8192)) * 2)
	if err != nil {
		return err
	}
	bias, err := c.Alloc(int64(max(maxN, 8192)) * 2)
	if err != nil {
		return err
	}
	y, err := c.Alloc(int64(maxM) * int64(max(maxN, 8192)) * 2)
	if err != nil {
		return err
	}
	fill := func(dt cuda.DType) error {
		for i, x := range xs {
			if err := c.FillUniform(dt, x.Ptr, x.Size/2, uint64(10+i), -1, 1); err != nil {
				return err
			}
		}
		if err := c.FillUniform(dt, w.Ptr, w.Size/2, 20, -1.0/16, 1.0/16); err != nil {
			return err
		}
		return c.FillUniform(dt, bias.Ptr, bias.Size/2, 21, -1, 1)
	}

	// Copy ceiling: a 1 GiB device-to-device copy (bytes read + written).
	{
		n := int64(1 << 30)
		src, dst := xs[0], y
		n = min(n, src.Size, dst.Size)
		med, p10, p90, err := b.timeIt(func(int) error { return c.CopyDtoD(dst.Ptr, src.Ptr, n) })
		if err != nil {
			return err
		}
		emit(Result{Kind: "copy", Name: "DtoD copy", MedianMs: med, P10Ms: p10, P90Ms: p90, Bytes: 2 * float64(n), GBs: 2 * float64(n) / med / 1e6})
	}

	for _, dt := range []cuda.DType{cuda.F16, cuda.BF16} {
		if err := fill(dt); err != nil {
			return err
		}
		// The ceiling: 8192^3 without epilogue.
		ceil := cuda.LinearArgs{DType: dt, M: 8192, N: 8192, K: 8192, X: w.Ptr, W: w.Ptr, Y: y.Ptr}
		pi, err := c.LinearPlan(ceil)
		if err != nil {
			return err
		}
		med, p10, p90, err := b.timeIt(func(int) error { return c.Linear(ceil) })
		if err != nil {
			return err
		}
		fl := 2.0 * 8192 * 8192 * 8192
		rate := fl / (med * 1e-3) // FLOP/s
		emit(Result{Kind: "ceiling", DType: dt.String(), Name: "8192^3", M: 8192, N: 8192, K: 8192, Epilogue: "none",
			MedianMs: med, P10Ms: p10, P90Ms: p90, FLOPs: fl, TFLOPs: rate / 1e12, FloorMs: med, Algos: pi.Candidates, Tuned: pi.Tuned})

		for _, hidden := range []int{768, 1024} {
			gemms := []struct {
				name string
				n, k int
				epi  cuda.Epilogue
			}{
				{"qkv", 3 * hidden, hidden, cuda.EpilogueBias},
				{"out_proj", hidden, hidden, cuda.EpilogueBias},
				{"ffn1", 4 * hidden, hidden, cuda.EpilogueGELUBias},
				{"ffn2", hidden, 4 * hidden, cuda.EpilogueBias},
			}
			for _, g := range gemms {
				for _, m := range ms {
					args := func(i int) cuda.LinearArgs {
						return cuda.LinearArgs{DType: dt, M: m, N: g.n, K: g.k, X: xs[i%sets].Ptr, W: w.Ptr, Bias: bias.Ptr, Y: y.Ptr, Epilogue: g.epi}
					}
					pi, err := c.LinearPlan(args(0))
					if err != nil {
						return err
					}
					med, p10, p90, err := b.timeIt(func(i int) error { return c.Linear(args(i)) })
					if err != nil {
						return err
					}
					fl := 2 * float64(m) * float64(g.n) * float64(g.k)
					emit(Result{Kind: "gemm", DType: dt.String(), Hidden: hidden, Name: g.name, M: m, N: g.n, K: g.k, Epilogue: g.epi.String(),
						MedianMs: med, P10Ms: p10, P90Ms: p90, FLOPs: fl, TFLOPs: fl / (med * 1e-3) / 1e12, FloorMs: fl / rate * 1e3,
						Algos: pi.Candidates, Tuned: pi.Tuned})
				}
			}
			// Elementwise kernels at the largest M, for their bandwidth.
			m := ms[len(ms)-1]
			ew := []struct {
				name  string
				bytes float64
				fn    func(i int) error
			}{
				{"add_ln(x+res)", 3 * float64(m*hidden*2), func(i int) error {
					return c.AddLayerNorm(dt, y.Ptr, xs[i%sets].Ptr, xs[(i+1)%sets].Ptr, 0, w.Ptr, w.Ptr, m, hidden, 1e-12)
				}},
				{"bias_gelu_erf(4h)", 2 * float64(m*4*hidden*2), func(i int) error {
					return c.BiasGELU(dt, y.Ptr, xs[i%sets].Ptr, bias.Ptr, m, 4*hidden, false)
				}},
			}
			for _, e := range ew {
				med, p10, p90, err := b.timeIt(e.fn)
				if err != nil {
					return err
				}
				emit(Result{Kind: "elementwise", DType: dt.String(), Hidden: hidden, Name: e.name, M: m, N: hidden,
					MedianMs: med, P10Ms: p10, P90Ms: p90, Bytes: e.bytes, GBs: e.bytes / med / 1e6})
			}
		}
	}
	return c.Sync()
}
