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
	"slices"
	"sort"
	"strings"
	"sync/atomic"
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

// devOuts are fp32 device buffers for a batch's hidden states (T x H)
// and pooled vectors (S x H), on dev.
type devOuts struct {
	dev       *cuda.Device
	hid, pool cuda.Buffer
	T, S, H   int
}

func newDevOuts(t *testing.T, dev *cuda.Device, T, S, H int) *devOuts {
	t.Helper()
	d := &devOuts{dev: dev, T: T, S: S, H: H}
	if err := dev.Do(func(c *cuda.Ctx) error {
		var err error
		if d.hid, err = c.Alloc(int64(4 * T * H)); err != nil {
			return err
		}
		d.pool, err = c.Alloc(int64(4 * S * H))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return d
}

// read downloads both buffers.
func (d *devOuts) read(t *testing.T) (hidden, pooled []float32) {
	t.Helper()
	hidden, pooled = make([]float32, d.T*d.H), make([]float32, d.S*d.H)
	if err := d.dev.Do(func(c *cuda.Ctx) error {
		if err := cuda.DownloadSlice(c, hidden, d.hid.Ptr); err != nil {
			return err
		}
		return cuda.DownloadSlice(c, pooled, d.pool.Ptr)
	}); err != nil {
		t.Fatal(err)
	}
	return hidden, pooled
}

func (d *devOuts) free() {
	_ = d.dev.Do(func(c *cuda.Ctx) error { c.Free(d.hid); return c.Free(d.pool) })
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
	do := newDevOuts(t, e.be.(cudaBackend).b.Device(), len(b.Tokens), b.NumSeqs(), cfg.Hidden)
	defer do.free()
	out := &Outputs{HiddenDevice: uintptr(do.hid.Ptr), PooledDevice: uintptr(do.pool.Ptr), Pooling: PoolMean, Normalize: true}
	if err := m.Encode(context.Background(), b, out); err != nil {
		t.Fatal(err)
	}
	gh, gp := do.read(t)
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

// TestGPUBenchE2E times BigBird-base and BigBird-large (random weights,
// fp16, block_sparse b=64 r=3) when $RAPTOR_BENCH_OUT names a JSON file to
// write (bench/peers.py reads it): device time from the first to the last
// kernel (CUDA events), the wall time of Encode with fp32 hidden states to
// host memory, and the wall time of Forward with fp32 hidden states into a
// device buffer (the ABI's device-memory outputs); medians. Workloads
// (issue 7), lengths drawn with fixed seeds (math/rand/v2 PCG):
//
//	8x4096      8 sequences of 4096
//	64 uniform  64 lengths uniform in [512, 4096], PCG(2026, 64)
//	long-tail   64 lengths, 58 (90%) uniform in [32, 1024] and 6 (10%)
//	            uniform in [1025, 8192], shuffled, PCG(2026, 90)
//	1x16384     one sequence of 16384
//
// BigBird-large runs 8x4096. RAPTOR_BENCH_MODELS=base,large selects.
func TestGPUBenchE2E(t *testing.T) {
	outPath := os.Getenv("RAPTOR_BENCH_OUT")
	if outPath == "" {
		t.Skip("skipping: RAPTOR_BENCH_OUT is not set (bench/peers.py sets it)")
	}
	e := gpuEngine(t, ComputeFP16)
	dev := e.be.(cudaBackend).b.Device()
	eight := []int{4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096}
	rng := rand.New(rand.NewPCG(2026, 64))
	uniform := make([]int, 64)
	for i := range uniform {
		uniform[i] = 512 + rng.IntN(4096-512+1)
	}
	rng = rand.New(rand.NewPCG(2026, 90))
	tail := make([]int, 64)
	for i := range tail {
		if i < 58 {
			tail[i] = 32 + rng.IntN(1024-32+1)
		} else {
			tail[i] = 1025 + rng.IntN(8192-1025+1)
		}
	}
	rng.Shuffle(len(tail), func(i, j int) { tail[i], tail[j] = tail[j], tail[i] })
	type wload struct {
		name string
		lens []int
	}
	type result struct {
		Model         string    `json:"model"`
		Hidden        int       `json:"hidden"`
		Layers        int       `json:"layers"`
		Heads         int       `json:"heads"`
		Inter         int       `json:"intermediate"`
		Name          string    `json:"name"`
		Lengths       []int     `json:"lengths"`
		Tokens        int       `json:"tokens"`
		DeviceMs      float64   `json:"device_ms_median"`
		DeviceAll     []float64 `json:"device_ms"`
		EncodeMs      float64   `json:"encode_ms_median"`
		DevOutMs      float64   `json:"devout_ms_median"`
		PeakBytes     int64     `json:"peak_pool_bytes"`
		WeightsBytes  int64     `json:"weights_bytes"`
		NonFiniteOuts int       `json:"nonfinite_outputs"`
		Error         string    `json:"error,omitempty"`
	}
	var results []result
	sel := os.Getenv("RAPTOR_BENCH_MODELS")
	if sel == "" {
		sel = "base,large"
	}
	for _, mc := range []struct {
		name                         string
		h, heads, inter, layers, pos int
		wls                          []wload
	}{
		{"base", 768, 12, 3072, 12, 16384, []wload{{"8x4096", eight}, {"64 uniform [512,4096]", uniform}, {"long-tail (90% <=1k, 10% <=8k)", tail}, {"1x16384", []int{16384}}}},
		{"large", 1024, 16, 4096, 24, 4096, []wload{{"8x4096", eight}}},
	} {
		if !strings.Contains(sel, mc.name) {
			continue
		}
		cfg := gpuConfig(loader.FamilyBigBird, loader.AttentionBlockSparse, mc.h, mc.heads, mc.inter, mc.layers)
		cfg.MaxPositions = mc.pos
		var before int64
		dev.Do(func(c *cuda.Ctx) error { c.Trim(); before = c.MemStats().InUse; return nil })
		m, err := e.Load(testmodel.Random(cfg, 77, 0.02))
		if err != nil {
			t.Fatal(err)
		}
		gmod := m.bm.(cudaModel).m
		var weightsBytes int64
		dev.Do(func(c *cuda.Ctx) error { weightsBytes = c.MemStats().InUse - before; return nil })
		for _, wl := range mc.wls {
			r := result{Model: "BigBird-" + mc.name, Hidden: mc.h, Layers: mc.layers, Heads: mc.heads, Inter: mc.inter,
				Name: wl.name, Lengths: wl.lens, WeightsBytes: weightsBytes}
			err := func() error {
				b := raggedBatch(rng, cfg, wl.lens)
				b.TokenTypes = nil
				r.Tokens = len(b.Tokens)
				dev.Do(func(c *cuda.Ctx) error { c.Trim(); c.ResetPeak(); return nil })
				mb := &model.Batch{Tokens: b.Tokens, CuSeqlens: b.CuSeqlens, Seeds: b.Seeds}
				hidden := make([]float32, len(b.Tokens)*cfg.Hidden)
				for i := 0; i < 25; i++ {
					ms, err := gmod.Timed(mb, &gpu.Outputs{Hidden: hidden})
					if err != nil {
						return err
					}
					if i >= 5 {
						r.DeviceAll = append(r.DeviceAll, float64(ms))
					}
				}
				var peak int64
				dev.Do(func(c *cuda.Ctx) error { peak = c.MemStats().Peak; return nil })
				var wms, dms []float64
				for i := 0; i < 10; i++ {
					t0 := time.Now()
					if err := m.Encode(context.Background(), b, &Outputs{Hidden: hidden}); err != nil {
						return err
					}
					wms = append(wms, float64(time.Since(t0).Microseconds())/1000)
				}
				for _, v := range hidden {
					if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
						r.NonFiniteOuts++
					}
				}
				var dbuf cuda.Buffer
				if err := dev.Do(func(c *cuda.Ctx) error {
					var err error
					dbuf, err = c.Alloc(4 * int64(len(hidden)))
					return err
				}); err != nil {
					return err
				}
				defer dev.Do(func(c *cuda.Ctx) error { return c.Free(dbuf) })
				for i := 0; i < 11; i++ {
					t0 := time.Now()
					if err := gmod.Forward(context.Background(), mb, &gpu.Outputs{HiddenDev: uintptr(dbuf.Ptr)}); err != nil {
						return err
					}
					if i > 0 {
						dms = append(dms, float64(time.Since(t0).Microseconds())/1000)
					}
				}
				r.DeviceMs, r.EncodeMs, r.DevOutMs, r.PeakBytes = median(r.DeviceAll), median(wms), median(dms), peak
				return nil
			}()
			if err != nil {
				r.Error = err.Error()
				t.Errorf("bench %s %s: %v", mc.name, wl.name, err)
			}
			t.Logf("bench %s %s: %d tokens, device %.2f ms, encode (host fp32 out) %.2f ms, forward (device fp32 out) %.2f ms, pool peak %d MiB, weights %d MiB",
				mc.name, r.Name, r.Tokens, r.DeviceMs, r.EncodeMs, r.DevOutMs, r.PeakBytes>>20, weightsBytes>>20)
			results = append(results, r)
		}
		m.Close()
	}
	raw, _ := json.MarshalIndent(results, "", " ")
	if err := os.WriteFile(outPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGPUTimeline submits a stream of 20 asynchronous requests (2 x 4096
// tokens each, BigBird-base, fp16) through the engine's Async pipeline and
// records the device timeline: CUDA timing events on the compute
// stream at each batch's first and last kernel, relative to one base event
// (gpu.Model.StartTimeline). The gap between batch k's last kernel and
// batch k+1's first is the device's idle time between them; each batch's
// host enqueue interval is logged too (same origin), which says whether a
// gap was the host's (the next enqueue began after the last kernel) or the
// device's stream ordering. Three streams: pooled outputs with 2 and with 3
// lanes, fp32 hidden states to host memory with 3 lanes. Writes
// $RAPTOR_TIMELINE_OUT (JSON) when set.
func TestGPUTimeline(t *testing.T) {
	e := gpuEngine(t, ComputeFP16)
	cfg := gpuConfig(loader.FamilyBigBird, loader.AttentionBlockSparse, 768, 12, 3072, 12)
	cfg.MaxPositions = 4096
	m, err := e.Load(testmodel.Random(cfg, 77, 0.02))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	gmod := m.bm.(cudaModel).m
	rng := rand.New(rand.NewPCG(20, 20))
	type stream struct {
		Name    string             `json:"name"`
		Spans   []gpu.TimelineSpan `json:"spans"`
		GapsMs  []float64          `json:"gaps_ms"`
		MaxGap  float64            `json:"max_gap_ms"`
		MedGap  float64            `json:"median_gap_ms"`
		Busy    float64            `json:"busy_fraction"`
		WallMs  float64            `json:"wall_ms"`
		Batches int                `json:"batches"`
		// Late: batches whose enqueue ended (host clock) after the previous
		// batch's last kernel (device clock; both from StartTimeline).
		Late     int     `json:"late_enqueues"`
		MedEnqMs float64 `json:"median_enqueue_ms"`
	}
	var out []stream
	// Lanes 2 is the engine's default, where one lane is kept for short
	// batches (NewLengthAware), so these 8192-token batches run one at a
	// time; lanes 3 gives two long lanes, so the next batch is enqueued while
	// the previous one computes (the device pipeline's own overlap).
	for _, cse := range []struct {
		hiddenOut bool
		lanes     int
	}{{false, 2}, {false, 3}, {true, 3}} {
		hiddenOut := cse.hiddenOut
		const n = 20
		bs := make([]*Batch, n)
		for i := range bs {
			bs[i] = raggedBatch(rng, cfg, []int{4096, 4096})
			bs[i].TokenTypes = nil
		}
		// warm-up (kernels, pools) outside the timeline
		if err := m.Encode(context.Background(), bs[0], &Outputs{Hidden: make([]float32, 8192*768)}); err != nil {
			t.Fatal(err)
		}
		a := NewAsync(AsyncOptions{Lanes: cse.lanes, MaxBatchTokens: 8192})
		tg := a.Target(m)
		if err := gmod.StartTimeline(); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		reqs := make([]*Request, n)
		for i, b := range bs {
			o := &Outputs{Pooled: make([]float32, 2*768), Pooling: PoolMean}
			if hiddenOut {
				o.Hidden = make([]float32, 8192*768)
			}
			r, err := tg.Submit(b, o, SubmitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			reqs[i] = r
		}
		for _, r := range reqs {
			if err := r.Wait(time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		wall := float64(time.Since(t0).Microseconds()) / 1000
		spans, err := gmod.StopTimeline()
		a.Close()
		if err != nil {
			t.Fatal(err)
		}
		s := stream{Name: fmt.Sprintf("pooled outputs, %d lanes", cse.lanes), Spans: spans, WallMs: wall, Batches: len(spans)}
		if hiddenOut {
			s.Name = fmt.Sprintf("fp32 hidden states to host, %d lanes", cse.lanes)
		}
		busy := 0.0
		var enq []float64
		for i, sp := range spans {
			busy += sp.End - sp.Start
			enq = append(enq, sp.EnqEnd-sp.EnqStart)
			if i > 0 {
				s.GapsMs = append(s.GapsMs, sp.Start-spans[i-1].End)
				if sp.EnqEnd > spans[i-1].End {
					s.Late++
				}
			}
		}
		s.MedEnqMs = median(enq)
		if len(spans) > 1 {
			s.Busy = busy / (spans[len(spans)-1].End - spans[0].Start)
			s.MedGap = median(s.GapsMs)
			s.MaxGap = slices.Max(s.GapsMs)
		}
		t.Logf("timeline %s: %d batches, busy %.4f of first..last kernel, gaps median %.3f ms max %.3f ms, wall %.1f ms, host enqueue median %.3f ms, %d enqueues ended after the previous batch's last kernel, gaps %v",
			s.Name, s.Batches, s.Busy, s.MedGap, s.MaxGap, wall, s.MedEnqMs, s.Late, s.GapsMs)
		for i, sp := range spans {
			if i < 6 {
				t.Logf("timeline %s span %d: enqueue [%.3f, %.3f] device [%.3f, %.3f]", s.Name, i, sp.EnqStart, sp.EnqEnd, sp.Start, sp.End)
			}
		}
		out = append(out, s)
	}
	if p := os.Getenv("RAPTOR_TIMELINE_OUT"); p != "" {
		raw, _ := json.MarshalIndent(out, "", " ")
		os.WriteFile(p, raw, 0o644)
	}
}

// graphAndPlain loads p on a CUDA engine with graphs of up to graphTokens
// tokens and on a graph-free one (RAPTOR_CUDA_GRAPHS=0), fp16; both are
// closed when t ends.
func graphAndPlain(t *testing.T, p Weights, graphTokens string) (e *Engine, m, plain *Model) {
	t.Helper()
	load := func(env string) (*Engine, *Model) {
		t.Setenv("RAPTOR_CUDA_GRAPHS", env)
		e := gpuEngine(t, ComputeFP16)
		m, err := e.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		return e, m
	}
	_, plain = load("0")
	e, m = load(graphTokens)
	return e, m, plain
}

// TestGPUGraphClasses runs ragged batches through an engine with CUDA graphs
// by token-count class (the default, internal/gpu/graph.go) and a graph-free
// one (RAPTOR_CUDA_GRAPHS=0), on a block-sparse model with a pooler: each
// batch three times (eager on the class arena, captured, replayed), with
// host outputs, device outputs and every pooling; the classes include padding sequences with
// tokens and empty ones. The repeats must be
// bitwise equal to each other and equal to the graph-free engine's; the
// graph counters must show padding, captures and replays.
func TestGPUGraphClasses(t *testing.T) {
	cfg := gpuConfig(loader.FamilyBigBird, loader.AttentionBlockSparse, 256, 4, 512, 3)
	e, m, pm := graphAndPlain(t, testmodel.Random(cfg, 77, 0.02), "16384") // skips without a GPU
	gmod := m.bm.(cudaModel).m
	if st := pm.bm.(cudaModel).m.GraphStats(); st.Batches != 0 {
		t.Fatalf("graph-free engine: %+v", st)
	}
	H := cfg.Hidden
	dev := e.be.(cudaBackend).b.Device()
	rng := rand.New(rand.NewPCG(3, 3))
	bitwise, compared := 0, 0
	for _, lens := range [][]int{{30}, {1}, {100, 700, 1500}, {64, 64, 64, 64}, {1, 63, 65, 129, 200}, {3000},
		{900, 17, 33}, {5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5}, {4000, 90}} {
		b := raggedBatch(rng, cfg, lens)
		name := fmt.Sprint(lens)
		for _, pool := range []Pooling{PoolMean, PoolCLS, PoolPooler} {
			wantH, wantP := encodeOut(t, pm, b, pool, pool == PoolCLS)
			var firstH, firstP []float32
			for i := 0; i < 3; i++ {
				h, p := encodeOut(t, m, b, pool, pool == PoolCLS)
				if i == 0 {
					firstH, firstP = h, p
				} else if !slices.Equal(h, firstH) || !slices.Equal(p, firstP) {
					t.Errorf("%s pooling %d run %d: outputs differ from the first run's", name, pool, i)
				}
			}
			rh, _ := gpuRelErr(firstH, wantH)
			rp, _ := gpuRelErr(firstP, wantP)
			compared++
			if slices.Equal(firstH, wantH) && slices.Equal(firstP, wantP) {
				bitwise++
			} else if rh > 2e-3 || rp > 2e-3 {
				t.Errorf("%s pooling %d: outputs vs the graph-free engine's: hidden rel %.2e, pooled rel %.2e (bound 2e-3)", name, pool, rh, rp)
			} else {
				t.Logf("%s pooling %d: not bitwise equal to the graph-free engine (hidden rel %.2e, pooled rel %.2e)", name, pool, rh, rp)
			}
		}
		// device outputs: the class path copies the real rows to the caller's pointers
		do := newDevOuts(t, dev, len(b.Tokens), b.NumSeqs(), H)
		wantH, wantP := encodeOut(t, pm, b, PoolMean, false)
		for i := 0; i < 3; i++ {
			out := &Outputs{HiddenDevice: uintptr(do.hid.Ptr), PooledDevice: uintptr(do.pool.Ptr), Pooling: PoolMean}
			if err := m.Encode(context.Background(), b, out); err != nil {
				t.Fatal(err)
			}
			h, p := do.read(t)
			rh, _ := gpuRelErr(h, wantH)
			rp, _ := gpuRelErr(p, wantP)
			if rh > 2e-3 || rp > 2e-3 {
				t.Errorf("%s device outputs run %d: hidden rel %.2e, pooled rel %.2e vs the graph-free engine (bound 2e-3)", name, i, rh, rp)
			}
		}
		do.free()
	}
	st := gmod.GraphStats()
	t.Logf("graph classes: %+v; %d of %d host-output comparisons bitwise equal to the graph-free engine", st, bitwise, compared)
	// each class: its first batch eager, its second captured, then replays
	if st.Captures < 8 || st.Fails != 0 || st.Replays != st.Batches-st.Captures || st.PadTokens == 0 || st.Batches < int64(3*compared) {
		t.Errorf("graph counters %+v: want >= 8 captures, none failed, every class batch but the first replayed, padding, >= %d class batches", st, 3*compared)
	}
}

// TestGPUGraphCaptureBesideOtherEngines captures CUDA graph classes on one
// engine while other engines of the same GPU (the same primary context) are
// created, load a model, encode and close on another goroutine: their
// context-wide calls (allocations, module loads, stream and context
// teardown) must neither invalidate a capture nor crash the driver (the GPU
// soak saw both before the capture lock, internal/cuda/capturelock.go).
func TestGPUGraphCaptureBesideOtherEngines(t *testing.T) {
	cfg := gpuConfig(loader.FamilyBigBird, loader.AttentionBlockSparse, 128, 2, 256, 2)
	params := testmodel.Random(cfg, 9, 0.05)
	_, m, pm := graphAndPlain(t, params, "4096") // skips without a GPU
	gmod := m.bm.(cudaModel).m

	stop := make(chan struct{})
	churn := make(chan error, 1)
	var cycles atomic.Int64
	go func() {
		opts := DefaultOptions()
		opts.Backend, opts.Compute, opts.Seed = BackendCUDA, ComputeFP16, gpuTestSeed
		opts.KernelCacheDir = os.Getenv("RAPTOR_KERNEL_CACHE")
		opts.Log = func(LogLevel, string) {}
		rng := rand.New(rand.NewPCG(5, 5))
		for {
			select {
			case <-stop:
				churn <- nil
				return
			default:
			}
			o, err := New(opts)
			if err != nil {
				churn <- err
				return
			}
			om, err := o.Load(params)
			if err == nil {
				b := raggedBatch(rng, cfg, []int{1 + rng.IntN(300), 1 + rng.IntN(300)})
				err = om.Encode(context.Background(), b, &Outputs{Pooled: make([]float32, 2*cfg.Hidden), Pooling: PoolMean})
				om.Close()
			}
			o.Close()
			if err != nil {
				churn <- err
				return
			}
			cycles.Add(1)
		}
	}()
	// Random (T, S) shapes: ~200 classes, captured while the other engines
	// come and go; until three of their cycles are done (at most 90 s).
	rng := rand.New(rand.NewPCG(6, 6))
	worst, batches := 0.0, 0
	for t0 := time.Now(); (cycles.Load() < 3 || batches < 400) && time.Since(t0) < 90*time.Second; {
		T, S := 40+rng.IntN(3960), 1+rng.IntN(8)
		lens := make([]int, S)
		for i := range lens {
			lens[i] = T / S
		}
		lens[0] += T % S
		b := raggedBatch(rng, cfg, lens)
		_, want := encodeOut(t, pm, b, PoolMean, false)
		for range 2 { // a new class: eager, then captured
			_, got := encodeOut(t, m, b, PoolMean, false)
			r, _ := gpuRelErr(got, want)
			worst = max(worst, r)
			batches++
		}
	}
	close(stop)
	if err := <-churn; err != nil {
		t.Fatalf("the other engines: %v", err)
	}
	st := gmod.GraphStats()
	t.Logf("%d batches beside %d engine create/load/encode/close cycles: graph stats %+v; worst pooled rel err vs the graph-free engine %.2e", batches, cycles.Load(), st, worst)
	if cycles.Load() < 2 {
		t.Errorf("only %d engine cycles ran beside the captures", cycles.Load())
	}
	if st.Fails != 0 || st.Captures < 20 {
		t.Errorf("graph captures beside other engines: %+v, want no failed capture and >= 20 captures", st)
	}
	if worst > 2e-3 {
		t.Errorf("outputs vs the graph-free engine: worst pooled rel err %.2e (bound 2e-3)", worst)
	}
}

// TestGPUProfile is issue 7's per-stage profile: device ms per stage
// (timing events after every op, summed over layers) of BigBird-base on
// 8x4096, long-tail and 1x16384 and BigBird-large on 8x4096 (fp16,
// block_sparse), the host enqueue time, a CUDA-graph probe (the same
// kernels replayed as one graph, on 8x4096 and two small batches). Writes
// $RAPTOR_PROFILE_OUT (JSON).
func TestGPUProfile(t *testing.T) {
	outPath := os.Getenv("RAPTOR_PROFILE_OUT")
	if outPath == "" {
		t.Skip("skipping: RAPTOR_PROFILE_OUT is not set (tests/gpu/issue7.sh sets it)")
	}
	e := gpuEngine(t, ComputeFP16)
	type prof struct {
		Model   string             `json:"model"`
		Name    string             `json:"name"`
		Tokens  int                `json:"tokens"`
		Stages  map[string]float64 `json:"stage_ms"`
		Total   float64            `json:"total_ms"`
		Enqueue float64            `json:"enqueue_host_ms"`
	}
	type graph struct {
		Model  string         `json:"model"`
		Name   string         `json:"name"`
		Tokens int            `json:"tokens"`
		Probe  gpu.GraphProbe `json:"probe"`
	}
	var res struct {
		Profiles []prof  `json:"profiles"`
		Graphs   []graph `json:"graphs"`
	}
	rng := rand.New(rand.NewPCG(2026, 90))
	tail := make([]int, 64)
	for i := range tail {
		if i < 58 {
			tail[i] = 32 + rng.IntN(1024-32+1)
		} else {
			tail[i] = 1025 + rng.IntN(8192-1025+1)
		}
	}
	eight := []int{4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096}
	// a merged serving batch of all-MiniLM-L6-v2's shape (bench/serve's
	// length mix: ~20 requests, ~2.1k tokens)
	serving := []int{60, 31, 150, 17, 88, 240, 45, 12, 102, 66, 9, 380, 54, 120, 23, 71, 190, 38, 95, 410}
	for _, mc := range []struct {
		name                         string
		dense                        bool
		h, heads, inter, layers, pos int
		wls                          map[string][]int
		graphs                       map[string][]int
	}{
		{"minilm", true, 384, 12, 1536, 6, 512, map[string][]int{"serving-20": serving, "1x128": {128}},
			map[string][]int{"serving-20": serving, "1x128": {128}}},
		{"base", false, 768, 12, 3072, 12, 16384, map[string][]int{"8x4096": eight, "long-tail": tail, "1x16384": {16384}},
			map[string][]int{"8x4096": eight, "1x512": {512}, "8x512": {512, 512, 512, 512, 512, 512, 512, 512}}},
		{"large", false, 1024, 16, 4096, 24, 4096, map[string][]int{"8x4096": eight}, nil},
	} {
		if sel := os.Getenv("RAPTOR_PROFILE_MODELS"); sel != "" && !strings.Contains(sel, mc.name) {
			continue
		}
		if os.Getenv("RAPTOR_PROFILE_PROBES") == "0" {
			mc.graphs = nil
		}
		cfg := gpuConfig(loader.FamilyBigBird, loader.AttentionBlockSparse, mc.h, mc.heads, mc.inter, mc.layers)
		if mc.dense {
			cfg = gpuConfig(loader.FamilyBERT, loader.AttentionDense, mc.h, mc.heads, mc.inter, mc.layers)
		}
		cfg.MaxPositions = mc.pos
		m, err := e.Load(testmodel.Random(cfg, 77, 0.02))
		if err != nil {
			t.Fatal(err)
		}
		gmod := m.bm.(cudaModel).m
		names := make([]string, 0, len(mc.wls))
		for n := range mc.wls {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			b := raggedBatch(rand.New(rand.NewPCG(1, 2)), cfg, mc.wls[name])
			mb := &model.Batch{Tokens: b.Tokens, CuSeqlens: b.CuSeqlens, Seeds: b.Seeds}
			hidden := make([]float32, len(b.Tokens)*cfg.Hidden)
			out := &gpu.Outputs{Hidden: hidden}
			for i := 0; i < 3; i++ {
				if _, err := gmod.Timed(mb, out); err != nil {
					t.Fatal(err)
				}
			}
			var best gpu.StageProfile
			for i := 0; i < 5; i++ { // the run with the median total
				sp, err := gmod.Profile(mb, out)
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 || sp.TotalMs < best.TotalMs {
					best = sp
				}
			}
			p := prof{Model: mc.name, Name: name, Tokens: len(b.Tokens), Stages: map[string]float64{}, Total: best.TotalMs, Enqueue: best.EnqueueMs}
			line := ""
			for i, n := range gpu.StageNames {
				p.Stages[n] = best.Ms[i]
				line += fmt.Sprintf(" %s %.3f (%.1f%%)", n, best.Ms[i], 100*best.Ms[i]/best.TotalMs)
			}
			t.Logf("profile %s %s: %d tokens, total %.3f ms, host enqueue %.3f ms:%s", mc.name, name, len(b.Tokens), best.TotalMs, best.EnqueueMs, line)
			res.Profiles = append(res.Profiles, p)
		}
		gnames := make([]string, 0, len(mc.graphs))
		for n := range mc.graphs {
			gnames = append(gnames, n)
		}
		sort.Strings(gnames)
		for _, name := range gnames {
			b := raggedBatch(rand.New(rand.NewPCG(1, 2)), cfg, mc.graphs[name])
			mb := &model.Batch{Tokens: b.Tokens, CuSeqlens: b.CuSeqlens, Seeds: b.Seeds}
			g, err := gmod.ProbeGraph(mb, 20)
			if err != nil {
				t.Errorf("graph probe %s %s: %v", mc.name, name, err)
				continue
			}
			t.Logf("graph %s %s: %d tokens, %d nodes; device ms per forward alone eager %.3f graph %.3f; back-to-back eager %.3f graph %.3f; host enqueue eager %.3f graph %.3f ms; capture %.1f ms; identical %v",
				mc.name, name, len(b.Tokens), g.Kernels, g.EagerMs, g.GraphMs, g.EagerStreamMs, g.GraphStreamMs, g.EagerHostMs, g.GraphHostMs, g.CaptureMs, g.Identical)
			if !g.Identical {
				t.Errorf("graph %s %s: graph outputs differ from eager", mc.name, name)
			}
			res.Graphs = append(res.Graphs, graph{mc.name, name, len(b.Tokens), g})
		}
		m.Close()
	}
	raw, _ := json.MarshalIndent(res, "", " ")
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
