package engine

// GPU tests of the CUDA backend (issue 7), against the CPU backend on the
// same weights. They run on the GPU machine through tests/gpu/run.sh and
// skip elsewhere, saying why.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/raptor-infer/raptor/internal/cuda"
	"github.com/raptor-infer/raptor/internal/gpu"
	"github.com/raptor-infer/raptor/internal/model"
	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

const gpuTestSeed = 1234

// gpuEngine opens a CUDA engine computing in dt, or skips the test.
func gpuEngine(t testing.TB, dt ComputeDType) *Engine {
	t.Helper()
	opts := DefaultOptions()
	opts.Backend, opts.Compute, opts.Seed = BackendCUDA, dt, gpuTestSeed
	opts.KernelCacheDir = os.Getenv("RAPTOR_KERNEL_CACHE")
	opts.Log = func(l LogLevel, msg string) {
		if l >= LogWarn {
			t.Logf("raptor: %s", msg)
		}
	}
	e, err := New(opts)
	if err != nil {
		if status.CodeOf(err) == status.BackendUnavailable {
			t.Skipf("skipping: no usable GPU here: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func cpuRefEngine(t testing.TB) *Engine {
	t.Helper()
	opts := DefaultOptions()
	opts.Backend, opts.Seed, opts.Log = BackendCPU, gpuTestSeed, func(LogLevel, string) {}
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

type gpuCase struct {
	name string
	cfg  loader.Config
}

func gpuConfig(fam loader.Family, att loader.AttentionKind, h, heads, inter, layers int) loader.Config {
	c := loader.Config{Family: fam, VocabSize: 1000, Hidden: h, Layers: layers, Heads: heads, Intermediate: inter,
		MaxPositions: 4096 + 2, TypeVocabSize: 2, LayerNormEps: 1e-12, Activation: loader.ActGELU,
		Attention: att, Pooler: true}
	if fam == loader.FamilyRoBERTa {
		c.PositionOffset, c.PadTokenID, c.LayerNormEps, c.TypeVocabSize = 2, 1, 1e-5, 1
	}
	if att == loader.AttentionBlockSparse {
		c.BlockSize, c.RandomBlocks = 64, 3
	}
	return c
}

// raggedBatch draws nseq lengths in [1, maxLen] (mixing short, medium and
// long) with random tokens, token types and request seeds.
func raggedBatch(rng *rand.Rand, cfg loader.Config, lens []int) *Batch {
	b := &Batch{CuSeqlens: []int32{0}}
	for _, n := range lens {
		for i := 0; i < n; i++ {
			b.Tokens = append(b.Tokens, int32(rng.IntN(cfg.VocabSize)))
			b.TokenTypes = append(b.TokenTypes, int32(rng.IntN(cfg.TypeVocabSize)))
		}
		b.CuSeqlens = append(b.CuSeqlens, int32(len(b.Tokens)))
		b.Seeds = append(b.Seeds, rng.Uint64())
	}
	return b
}

// gpuRelErr is ||a-b|| / ||b|| and max |a-b|.
func gpuRelErr(a, b []float32) (rel, maxAbs float64) {
	var num, den float64
	for i := range b {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
		maxAbs = math.Max(maxAbs, math.Abs(d))
	}
	return math.Sqrt(num / math.Max(den, 1e-30)), maxAbs
}

func encodeOut(t testing.TB, m *Model, b *Batch, pool Pooling, norm bool) (hidden, pooled []float32) {
	t.Helper()
	H := m.Config().Hidden
	out := &Outputs{Hidden: make([]float32, len(b.Tokens)*H), Pooled: make([]float32, b.NumSeqs()*H), Pooling: pool, Normalize: norm}
	if err := m.Encode(context.Background(), b, out); err != nil {
		t.Fatal(err)
	}
	return out.Hidden, out.Pooled
}

// TestGPUForwardVsCPU: the whole forward, every family and attention mode,
// tiny and base shapes, fp16 and bf16, random ragged batches (lengths 1 ..
// 4096 mixed), against the float32 CPU backend on the same weights: hidden
// states and all three poolings.
func TestGPUForwardVsCPU(t *testing.T) {
	probe := gpuEngine(t, ComputeFP16)
	cases := []gpuCase{
		{"bert-tiny-dense", gpuConfig(loader.FamilyBERT, loader.AttentionDense, 64, 2, 128, 2)},
		{"roberta-tiny-dense", gpuConfig(loader.FamilyRoBERTa, loader.AttentionDense, 128, 4, 256, 2)},
		{"bigbird-tiny-sparse-d128", gpuConfig(loader.FamilyBigBird, loader.AttentionBlockSparse, 256, 2, 512, 2)},
		{"bigbird-tiny-dense", gpuConfig(loader.FamilyBigBird, loader.AttentionDense, 64, 2, 128, 2)},
		{"bert-base-dense", gpuConfig(loader.FamilyBERT, loader.AttentionDense, 768, 12, 3072, 2)},
		{"bigbird-base-sparse", gpuConfig(loader.FamilyBigBird, loader.AttentionBlockSparse, 768, 12, 3072, 2)},
	}
	cases[1].cfg.Activation = loader.ActGELUTanh // the cuBLASLt GELU epilogue path
	cpuE := cpuRefEngine(t)
	engines := map[ComputeDType]*Engine{ComputeFP16: probe, ComputeBF16: gpuEngine(t, ComputeBF16)}
	tol := map[ComputeDType]float64{ComputeFP16: 1e-2, ComputeBF16: 2e-2}
	for ci, c := range cases {
		w := testmodel.Random(c.cfg, uint64(ci+1), 0.05)
		cm, err := cpuE.Load(w)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(uint64(ci), 7))
		lens := []int{1, 4096, 63, 64, 65, 700, 1100, 5, 2049, 447, 129, 3000}
		if c.cfg.Hidden >= 768 {
			lens = []int{1, 4096, 65, 1100, 5, 2049, 640}
		}
		b := raggedBatch(rng, c.cfg, lens)
		refHidden, refPooled := map[Pooling][]float32{}, map[Pooling][]float32{}
		for _, pool := range []Pooling{PoolMean, PoolCLS, PoolPooler} {
			refHidden[pool], refPooled[pool] = encodeOut(t, cm, b, pool, pool == PoolMean)
		}
		cm.Close()
		for _, dt := range []ComputeDType{ComputeFP16, ComputeBF16} {
			name := fmt.Sprintf("%s/%s", c.name, map[ComputeDType]string{ComputeFP16: "f16", ComputeBF16: "bf16"}[dt])
			gm, err := engines[dt].Load(w)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for _, pool := range []Pooling{PoolMean, PoolCLS, PoolPooler} {
				h, p := encodeOut(t, gm, b, pool, pool == PoolMean)
				rh, mh := gpuRelErr(h, refHidden[pool])
				rp, mp := gpuRelErr(p, refPooled[pool])
				t.Logf("%-32s T=%5d pool=%d hidden rel %.2e (max abs %.2e)  pooled rel %.2e (max abs %.2e)", name, len(b.Tokens), pool, rh, mh, rp, mp)
				if !(rh <= tol[dt]) || !(rp <= tol[dt]) {
					t.Errorf("%s pool %d: relative error hidden %.3g pooled %.3g > %.g", name, pool, rh, rp, tol[dt])
				}
			}
			gm.Close()
		}
	}
}

// TestGPUBatchInvariance: a request's outputs on the GPU do not depend on
// what shares its batch or on the order, within rounding.
func TestGPUBatchInvariance(t *testing.T) {
	e := gpuEngine(t, ComputeFP16)
	cfg := gpuConfig(loader.FamilyBigBird, loader.AttentionBlockSparse, 256, 4, 512, 2)
	m, err := e.Load(testmodel.Random(cfg, 9, 0.05))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rng := rand.New(rand.NewPCG(3, 3))
	lens := []int{900, 17, 2500, 1, 640, 1300}
	b := raggedBatch(rng, cfg, lens)
	all, _ := encodeOut(t, m, b, PoolMean, false)
	H := cfg.Hidden
	worst := 0.0
	bitSame := 0
	for s := range lens {
		start, end := int(b.CuSeqlens[s]), int(b.CuSeqlens[s+1])
		one := &Batch{Tokens: b.Tokens[start:end], CuSeqlens: []int32{0, int32(end - start)}, TokenTypes: b.TokenTypes[start:end], Seeds: b.Seeds[s : s+1]}
		h, _ := encodeOut(t, m, one, PoolMean, false)
		r, _ := gpuRelErr(h, all[start*H:end*H])
		worst = math.Max(worst, r)
		same := true
		for i := range h {
			same = same && h[i] == all[start*H+i]
		}
		if same {
			bitSame++
		}
	}
	t.Logf("batch invariance: worst rel error alone vs in batch %.2e; %d of %d sequences bit-identical", worst, bitSame, len(lens))
	if worst > 5e-3 {
		t.Errorf("batch invariance: rel error %.3g > 5e-3", worst)
	}
}

// TestGPUDeviceOutputs: outputs written straight into device memory equal
// the host outputs.
func TestGPUDeviceOutputs(t *testing.T) {
	e := gpuEngine(t, ComputeFP16)
	cfg := gpuConfig(loader.FamilyBERT, loader.AttentionDense, 128, 2, 256, 2)
	m, err := e.Load(testmodel.Random(cfg, 5, 0.05))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b := raggedBatch(rand.New(rand.NewPCG(1, 1)), cfg, []int{33, 200, 7})
	host, hostPooled := encodeOut(t, m, b, PoolMean, true)
	dev := e.be.(cudaBackend).b.Device()
	H, T, S := cfg.Hidden, len(b.Tokens), b.NumSeqs()
	var hb, pb cuda.Buffer
	if err := dev.Do(func(c *cuda.Ctx) error {
		var err error
		if hb, err = c.Alloc(int64(4 * T * H)); err != nil {
			return err
		}
		pb, err = c.Alloc(int64(4 * S * H))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	out := &Outputs{HiddenDevice: uintptr(hb.Ptr), PooledDevice: uintptr(pb.Ptr), Pooling: PoolMean, Normalize: true}
	if err := m.Encode(context.Background(), b, out); err != nil {
		t.Fatal(err)
	}
	gh, gp := make([]float32, T*H), make([]float32, S*H)
	if err := dev.Do(func(c *cuda.Ctx) error {
		defer c.Free(hb)
		defer c.Free(pb)
		if err := cuda.DownloadSlice(c, gh, hb.Ptr); err != nil {
			return err
		}
		return cuda.DownloadSlice(c, gp, pb.Ptr)
	}); err != nil {
		t.Fatal(err)
	}
	rh, _ := gpuRelErr(gh, host)
	rp, _ := gpuRelErr(gp, hostPooled)
	t.Logf("device outputs vs host outputs: hidden rel %.2e, pooled rel %.2e", rh, rp)
	if rh > 1e-6 || rp > 1e-6 {
		t.Errorf("device outputs differ from host outputs: %.3g %.3g", rh, rp)
	}
	// a CPU engine refuses device outputs
	cm, err := cpuRefEngine(t).Load(testmodel.Random(cfg, 5, 0.05))
	if err != nil {
		t.Fatal(err)
	}
	defer cm.Close()
	if err := cm.Encode(context.Background(), b, out); status.CodeOf(err) != status.Unsupported {
		t.Errorf("CPU engine with device outputs: %v, want Unsupported", err)
	}
}

// TestGPUMiniLM: the real all-MiniLM-L6-v2 (an f16 raptor file, path in
// $RAPTOR_MINILM_FILE), GPU fp16 vs the CPU backend on the same file: the
// mean-pooled normalised embeddings of 50 varied inputs, cosine >= 0.9999.
func TestGPUMiniLM(t *testing.T) {
	path := os.Getenv("RAPTOR_MINILM_FILE")
	if path == "" {
		t.Skip("skipping: RAPTOR_MINILM_FILE is not set (tests/gpu/run.sh carries an f16 conversion)")
	}
	e := gpuEngine(t, ComputeFP16)
	f, err := loader.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gm, err := e.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	defer gm.Close()
	cm, err := cpuRefEngine(t).Load(f)
	if err != nil {
		t.Fatal(err)
	}
	defer cm.Close()
	cfg := f.Config()
	rng := rand.New(rand.NewPCG(50, 50))
	var lens []int
	for i := 0; i < 50; i++ {
		lens = append(lens, 3+rng.IntN(250))
	}
	b := &Batch{CuSeqlens: []int32{0}}
	for _, n := range lens {
		b.Tokens = append(b.Tokens, 101)
		for i := 1; i < n-1; i++ {
			b.Tokens = append(b.Tokens, int32(1000+rng.IntN(cfg.VocabSize-1000)))
		}
		b.Tokens = append(b.Tokens, 102)
		b.CuSeqlens = append(b.CuSeqlens, int32(len(b.Tokens)))
	}
	_, gp := encodeOut(t, gm, b, PoolMean, true)
	_, cp := encodeOut(t, cm, b, PoolMean, true)
	H := cfg.Hidden
	worst := 1.0
	for s := range lens {
		var dot, na, nb float64
		for j := 0; j < H; j++ {
			a, c := float64(gp[s*H+j]), float64(cp[s*H+j])
			dot += a * c
			na += a * a
			nb += c * c
		}
		worst = math.Min(worst, dot/math.Sqrt(na*nb))
	}
	t.Logf("MiniLM f16 GPU vs CPU: worst cosine over 50 inputs %.6f", worst)
	if worst < 0.9999 {
		t.Errorf("MiniLM cosine %.6f < 0.9999", worst)
	}
}

// TestGPUBenchE2E times BigBird-base (random weights, fp16, block_sparse)
// when $RAPTOR_BENCH_OUT names a JSON file to write (bench/peers.py reads
// it): device time from the first to the last kernel (CUDA events), and
// wall time of Encode with fp32 hidden states to host memory; medians.
func TestGPUBenchE2E(t *testing.T) {
	outPath := os.Getenv("RAPTOR_BENCH_OUT")
	if outPath == "" {
		t.Skip("skipping: RAPTOR_BENCH_OUT is not set (bench/peers.py sets it)")
	}
	e := gpuEngine(t, ComputeFP16)
	cfg := gpuConfig(loader.FamilyBigBird, loader.AttentionBlockSparse, 768, 12, 3072, 12)
	cfg.MaxPositions = 4096
	w := testmodel.Random(cfg, 77, 0.02)
	m, err := e.Load(w)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	gmod := m.bm.(cudaModel).m
	dev := e.be.(cudaBackend).b.Device()
	rng := rand.New(rand.NewPCG(2024, 7))
	varied := make([]int, 32)
	for i := range varied {
		varied[i] = 128 + rng.IntN(2980-128)
	}
	type result struct {
		Name          string    `json:"name"`
		Lengths       []int     `json:"lengths"`
		Tokens        int       `json:"tokens"`
		DeviceMs      float64   `json:"device_ms_median"`
		DeviceAll     []float64 `json:"device_ms"`
		EncodeMs      float64   `json:"encode_ms_median"`
		PeakBytes     int64     `json:"peak_pool_bytes"`
		WeightsBytes  int64     `json:"weights_bytes"`
		NonFiniteOuts int       `json:"nonfinite_outputs"`
	}
	var results []result
	var weightsBytes int64
	dev.Do(func(c *cuda.Ctx) error { weightsBytes = c.MemStats().InUse; return nil })
	for _, wl := range []struct {
		name string
		lens []int
	}{{"8x4096", []int{4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096}}, {"32 varied", varied}} {
		b := raggedBatch(rng, cfg, wl.lens)
		b.TokenTypes = nil
		mb := &model.Batch{Tokens: b.Tokens, CuSeqlens: b.CuSeqlens, Seeds: b.Seeds}
		hidden := make([]float32, len(b.Tokens)*cfg.Hidden)
		var dms []float64
		for i := 0; i < 25; i++ {
			ms, err := gmod.Timed(mb, &gpu.Outputs{Hidden: hidden})
			if err != nil {
				t.Fatal(err)
			}
			if i >= 5 {
				dms = append(dms, float64(ms))
			}
		}
		var wms []float64
		for i := 0; i < 10; i++ {
			t0 := time.Now()
			if err := m.Encode(context.Background(), b, &Outputs{Hidden: hidden}); err != nil {
				t.Fatal(err)
			}
			wms = append(wms, float64(time.Since(t0).Microseconds())/1000)
		}
		bad := 0
		for _, v := range hidden {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				bad++
			}
		}
		var peak int64
		dev.Do(func(c *cuda.Ctx) error { peak = c.MemStats().Peak; return nil })
		r := result{wl.name, wl.lens, len(b.Tokens), median(dms), dms, median(wms), peak, weightsBytes, bad}
		t.Logf("bench %s: %d tokens, device %.2f ms, encode (host fp32 out) %.2f ms, pool peak %d MiB", r.Name, r.Tokens, r.DeviceMs, r.EncodeMs, peak>>20)
		results = append(results, r)
	}
	raw, _ := json.MarshalIndent(results, "", " ")
	if err := os.WriteFile(outPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
