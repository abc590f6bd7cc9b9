package engine

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

// blasModes are the GEMMs every numeric test runs with.
var blasModes = []string{"off", "openblas", "auto"}

func newTestEngine(t testing.TB, blasMode string, threads int) *Engine {
	t.Helper()
	return newCPUTestEngine(t, blasMode, threads, nil)
}

// newCPUTestEngine is a quiet CPU engine (seed 1234) on the given GEMMs,
// threads and devices (nil: the one device), closed when the test ends.
func newCPUTestEngine(t testing.TB, blasMode string, threads int, devices []int) *Engine {
	t.Helper()
	opts := DefaultOptions()
	opts.Backend = BackendCPU
	opts.BLAS = blasMode
	opts.Threads = threads
	opts.Seed = 1234
	opts.Devices = devices
	opts.Log = func(LogLevel, string) {}
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func tinyConfig(family loader.Family, hidden, heads int, sparse bool) loader.Config {
	c := loader.Config{Family: family, VocabSize: 50, Hidden: hidden, Layers: 2, Heads: heads,
		Intermediate: 2 * hidden, MaxPositions: 1100, TypeVocabSize: 2, LayerNormEps: 1e-12,
		Activation: loader.ActGELU, Pooler: true}
	if family == loader.FamilyRoBERTa {
		c.PositionOffset, c.PadTokenID, c.TypeVocabSize = 2, 1, 1
	}
	if sparse {
		c.Attention, c.BlockSize, c.RandomBlocks, c.Activation = loader.AttentionBlockSparse, 16, 2, loader.ActGELUTanh
	}
	return c
}

type encCase struct {
	tokens, cu, types []int32
	seeds             []uint64
}

func randomBatch(r *rand.Rand, cfg loader.Config, lens []int) encCase {
	var c encCase
	c.cu = []int32{0}
	for s, n := range lens {
		for i := 0; i < n; i++ {
			c.tokens = append(c.tokens, int32(r.IntN(cfg.VocabSize)))
			c.types = append(c.types, int32(r.IntN(cfg.TypeVocabSize)))
		}
		c.cu = append(c.cu, int32(len(c.tokens)))
		c.seeds = append(c.seeds, uint64(s*977+3))
	}
	return c
}

// relErr is max |got - want| / max |want|.
func relErr(got []float32, want []float64) float64 {
	var e, m float64
	for i, w := range want {
		e = math.Max(e, math.Abs(float64(got[i])-w))
		m = math.Max(m, math.Abs(w))
	}
	return e / m
}

// TestEncodeMatchesFloat64Reference compares the whole encoder with the
// float64 reference on ragged batches: dense BERT and RoBERTa, and BigBird
// block-sparse with sequences below, at and above the dense threshold
// ((5+2r)b = 144 here), head dims 32 and 64.
func TestEncodeMatchesFloat64Reference(t *testing.T) {
	for _, mode := range blasModes {
		for _, tc := range []struct {
			name string
			cfg  loader.Config
			lens []int
		}{
			{"bert/d=32", tinyConfig(loader.FamilyBERT, 64, 2, false), []int{1, 7, 64, 65, 300}},
			{"roberta/d=64", tinyConfig(loader.FamilyRoBERTa, 128, 2, false), []int{33, 1, 130}},
			{"bigbird/d=32", tinyConfig(loader.FamilyBigBird, 64, 2, true), []int{145, 1, 144, 15, 16, 17, 400}},
			{"bigbird/d=64", tinyConfig(loader.FamilyBigBird, 128, 2, true), []int{161, 300, 2}},
		} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				e := newTestEngine(t, mode, 2)
				w := testmodel.Random(tc.cfg, 1, 0.2)
				m, err := e.Load(w)
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				r := rand.New(rand.NewPCG(2, 3))
				bc := randomBatch(r, tc.cfg, tc.lens)
				H := tc.cfg.Hidden
				out := Outputs{Hidden: make([]float32, len(bc.tokens)*H)}
				if err := m.Encode(context.Background(), &Batch{Tokens: bc.tokens, CuSeqlens: bc.cu, TokenTypes: bc.types, Seeds: bc.seeds}, &out); err != nil {
					t.Fatal(err)
				}
				ref := testmodel.Reference(w, bc.tokens, bc.cu, bc.types, bc.seeds, 1234)
				var want []float64
				for _, row := range ref {
					want = append(want, row...)
				}
				re := relErr(out.Hidden, want)
				t.Logf("relative error %.3g", re)
				if re > 1e-5 {
					t.Fatalf("relative error %.3g > 1e-5", re)
				}
			})
		}
	}
}

// TestBatchInvariance encodes requests alone and inside batches of other
// requests, in several orders, and requires bit-identical hidden states and
// pooled vectors.
func TestBatchInvariance(t *testing.T) {
	for _, mode := range blasModes {
		for _, tc := range []struct {
			name string
			cfg  loader.Config
			lens []int
		}{
			{"bert", tinyConfig(loader.FamilyBERT, 64, 4, false), []int{1, 2, 5, 31, 200, 257, 600, 3}},
			{"bigbird", tinyConfig(loader.FamilyBigBird, 64, 2, true), []int{1, 145, 144, 700, 17, 300, 1000}},
		} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				e := newTestEngine(t, mode, 3)
				m, err := e.Load(testmodel.Random(tc.cfg, 9, 0.2))
				if err != nil {
					t.Fatal(err)
				}
				r := rand.New(rand.NewPCG(4, 5))
				reqs := make([]encCase, len(tc.lens))
				for i, n := range tc.lens {
					reqs[i] = randomBatch(r, tc.cfg, []int{n})
					reqs[i].seeds = []uint64{uint64(100 + i)}
				}
				H := tc.cfg.Hidden
				encode := func(order []int) (hidden [][]float32, pooled [][]float32) {
					var b Batch
					b.CuSeqlens = []int32{0}
					for _, i := range order {
						b.Tokens = append(b.Tokens, reqs[i].tokens...)
						b.TokenTypes = append(b.TokenTypes, reqs[i].types...)
						b.Seeds = append(b.Seeds, reqs[i].seeds...)
						b.CuSeqlens = append(b.CuSeqlens, int32(len(b.Tokens)))
					}
					out := Outputs{Hidden: make([]float32, len(b.Tokens)*H), Pooled: make([]float32, len(order)*H), Pooling: PoolMean, Normalize: true}
					if err := m.Encode(context.Background(), &b, &out); err != nil {
						t.Fatal(err)
					}
					hidden = make([][]float32, len(reqs))
					pooled = make([][]float32, len(reqs))
					for k, i := range order {
						hidden[i] = out.Hidden[int(b.CuSeqlens[k])*H : int(b.CuSeqlens[k+1])*H]
						pooled[i] = out.Pooled[k*H : (k+1)*H]
					}
					return
				}
				aloneH := make([][]float32, len(reqs))
				aloneP := make([][]float32, len(reqs))
				for i := range reqs {
					h, p := encode([]int{i})
					aloneH[i], aloneP[i] = h[i], p[i]
				}
				all := make([]int, len(reqs))
				for i := range all {
					all[i] = i
				}
				orders := [][]int{all, {len(reqs) - 1, 0}, {2, 0, 1}}
				for k := 0; k < 3; k++ {
					o := append([]int(nil), all...)
					r.Shuffle(len(o), func(i, j int) { o[i], o[j] = o[j], o[i] })
					orders = append(orders, o[:1+r.IntN(len(o))])
				}
				for _, order := range orders {
					h, p := encode(order)
					for _, i := range order {
						if !bitEqual(h[i], aloneH[i]) || !bitEqual(p[i], aloneP[i]) {
							t.Fatalf("request %d (len %d) differs inside batch %v", i, tc.lens[i], order)
						}
					}
				}
			})
		}
	}
}

func bitEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func TestEncodeValidation(t *testing.T) {
	e := newTestEngine(t, "off", 1)
	cfg := tinyConfig(loader.FamilyRoBERTa, 32, 2, false)
	cfg.MaxPositions = 12 // 10 tokens at most (offset 2)
	cfg.Pooler = false
	m, err := e.Load(testmodel.Random(cfg, 1, 0.1))
	if err != nil {
		t.Fatal(err)
	}
	H := cfg.Hidden
	ok := func() (*Batch, *Outputs) {
		return &Batch{Tokens: []int32{1, 2, 3, 4, 5}, CuSeqlens: []int32{0, 2, 5}},
			&Outputs{Hidden: make([]float32, 5*H), Pooled: make([]float32, 2*H)}
	}
	for _, tc := range []struct {
		name string
		edit func(b *Batch, o *Outputs)
		want status.Code
	}{
		{"ok", func(*Batch, *Outputs) {}, status.OK},
		{"no outputs", func(b *Batch, o *Outputs) { o.Hidden, o.Pooled = nil, nil }, status.OK},
		{"empty batch", func(b *Batch, o *Outputs) { b.Tokens, b.CuSeqlens = nil, nil }, status.InvalidArgument},
		{"only cu0", func(b *Batch, o *Outputs) { b.CuSeqlens = []int32{0} }, status.InvalidArgument},
		{"cu0 not zero", func(b *Batch, o *Outputs) { b.CuSeqlens = []int32{1, 2, 5} }, status.InvalidArgument},
		{"decreasing", func(b *Batch, o *Outputs) { b.CuSeqlens = []int32{0, 3, 2, 5} }, status.InvalidArgument},
		{"zero-length sequence", func(b *Batch, o *Outputs) { b.CuSeqlens = []int32{0, 2, 2, 5} }, status.InvalidArgument},
		{"last != T", func(b *Batch, o *Outputs) { b.CuSeqlens = []int32{0, 2, 4} }, status.InvalidArgument},
		{"last > T", func(b *Batch, o *Outputs) { b.CuSeqlens = []int32{0, 2, 6} }, status.InvalidArgument},
		{"negative token", func(b *Batch, o *Outputs) { b.Tokens[3] = -1 }, status.OutOfRange},
		{"token >= vocab", func(b *Batch, o *Outputs) { b.Tokens[0] = 50 }, status.OutOfRange},
		{"token type out of range", func(b *Batch, o *Outputs) { b.TokenTypes = []int32{0, 0, 1, 0, 0} }, status.OutOfRange},
		{"token types length", func(b *Batch, o *Outputs) { b.TokenTypes = []int32{0, 0} }, status.InvalidArgument},
		{"seeds length", func(b *Batch, o *Outputs) { b.Seeds = []uint64{1} }, status.InvalidArgument},
		{"too long", func(b *Batch, o *Outputs) {
			b.Tokens = make([]int32, 11)
			b.CuSeqlens = []int32{0, 11}
			o.Hidden, o.Pooled = nil, nil
		}, status.OutOfRange},
		{"longest allowed", func(b *Batch, o *Outputs) {
			b.Tokens = make([]int32, 10)
			b.CuSeqlens = []int32{0, 10}
			o.Hidden, o.Pooled = nil, make([]float32, H)
		}, status.OK},
		{"hidden too short", func(b *Batch, o *Outputs) { o.Hidden = o.Hidden[:5*H-1] }, status.BufferTooSmall},
		{"pooled too short", func(b *Batch, o *Outputs) { o.Pooled = o.Pooled[:H] }, status.BufferTooSmall},
		{"bad pooling", func(b *Batch, o *Outputs) { o.Pooling = 7 }, status.InvalidArgument},
		{"pooler without weights", func(b *Batch, o *Outputs) { o.Pooling = PoolPooler }, status.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, o := ok()
			tc.edit(b, o)
			before := append([]float32(nil), o.Hidden...)
			err := m.Encode(context.Background(), b, o)
			if got := status.CodeOf(err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
			if err != nil && !bitEqual(before, o.Hidden) {
				t.Fatal("outputs written on error")
			}
		})
	}
	if err := m.Encode(context.Background(), nil, &Outputs{}); status.CodeOf(err) != status.InvalidArgument {
		t.Fatalf("nil batch: %v", err)
	}
}

func TestLoadValidation(t *testing.T) {
	e := newTestEngine(t, "off", 1)
	base := tinyConfig(loader.FamilyBERT, 32, 2, false)
	for _, tc := range []struct {
		name string
		edit func(w *testmodel.Weights)
	}{
		{"missing tensor", func(w *testmodel.Weights) { delete(w.Tensors, loader.LayerTensor(1, loader.LayerKeyBias)) }},
		{"wrong shape", func(w *testmodel.Weights) {
			n := loader.LayerTensor(0, loader.LayerInterWeight)
			tt := w.Tensors[n]
			tt.Shape = []int{tt.Shape[1], tt.Shape[0]}
			w.Tensors[n] = tt
		}},
		{"short data", func(w *testmodel.Weights) {
			tt := w.Tensors[loader.TensorWordEmb]
			tt.Data = tt.Data[:10]
			w.Tensors[loader.TensorWordEmb] = tt
		}},
		{"missing pooler", func(w *testmodel.Weights) { delete(w.Tensors, loader.TensorPoolerBias) }},
		{"heads do not divide hidden", func(w *testmodel.Weights) { w.Cfg.Heads = 3 }},
		{"zero layers", func(w *testmodel.Weights) { w.Cfg.Layers = 0 }},
		{"bad eps", func(w *testmodel.Weights) { w.Cfg.LayerNormEps = 0 }},
		{"offset beyond positions", func(w *testmodel.Weights) { w.Cfg.PositionOffset = w.Cfg.MaxPositions }},
		{"sparse without block size", func(w *testmodel.Weights) { w.Cfg.Attention = loader.AttentionBlockSparse }},
		{"unknown activation", func(w *testmodel.Weights) { w.Cfg.Activation = 9 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := testmodel.Random(base, 1, 0.1)
			tc.edit(w)
			if _, err := e.Load(w); status.CodeOf(err) != status.InvalidModel {
				t.Fatalf("got %v, want INVALID_MODEL", err)
			}
		})
	}
}

func TestEncodeCancelled(t *testing.T) {
	e := newTestEngine(t, "off", 1)
	m, err := e.Load(testmodel.Random(tinyConfig(loader.FamilyBERT, 32, 2, false), 1, 0.1))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := Outputs{Hidden: make([]float32, 3*32)}
	err = m.Encode(ctx, &Batch{Tokens: []int32{1, 2, 3}, CuSeqlens: []int32{0, 3}}, &out)
	if status.CodeOf(err) != status.Cancelled {
		t.Fatalf("got %v, want CANCELLED", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 0)
	defer cancel2()
	if err := m.Encode(ctx2, &Batch{Tokens: []int32{1}, CuSeqlens: []int32{0, 1}}, &out); status.CodeOf(err) != status.DeadlineExceeded {
		t.Fatalf("got %v, want DEADLINE_EXCEEDED", err)
	}
}

func TestBackendsAndLifecycle(t *testing.T) {
	opts := DefaultOptions()
	opts.Backend = BackendCUDA
	if _, err := New(opts); status.CodeOf(err) != status.BackendUnavailable {
		t.Fatalf("cuda: %v", err)
	}
	var mu sync.Mutex
	var logs []string
	opts = DefaultOptions()
	opts.BLAS = "off"
	opts.Log = func(l LogLevel, msg string) { mu.Lock(); logs = append(logs, msg); mu.Unlock() }
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(e.BackendName(), "cpu") {
		t.Fatalf("backend %q", e.BackendName())
	}
	n := 0
	for _, l := range logs {
		if strings.Contains(l, "no GPU backend") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("GPU fallback logged %d times: %q", n, logs)
	}
	m, err := e.Load(testmodel.Random(tinyConfig(loader.FamilyBERT, 32, 2, false), 1, 0.1))
	if err != nil {
		t.Fatal(err)
	}
	b := &Batch{Tokens: []int32{1, 2}, CuSeqlens: []int32{0, 2}}
	m.Close()
	if err := m.Encode(context.Background(), b, &Outputs{Pooled: make([]float32, 32)}); status.CodeOf(err) != status.InvalidHandle {
		t.Fatalf("closed model: %v", err)
	}
	m2, _ := e.Load(testmodel.Random(tinyConfig(loader.FamilyBERT, 32, 2, false), 1, 0.1))
	e.Close()
	e.Close()
	if err := m2.Encode(context.Background(), b, &Outputs{Pooled: make([]float32, 32)}); status.CodeOf(err) != status.Shutdown {
		t.Fatalf("closed engine: %v", err)
	}
	if _, err := e.Load(testmodel.Random(tinyConfig(loader.FamilyBERT, 32, 2, false), 1, 0.1)); status.CodeOf(err) != status.Shutdown {
		t.Fatalf("load on closed engine: %v", err)
	}
	opts.Threads = -1
	if _, err := New(opts); status.CodeOf(err) != status.InvalidArgument {
		t.Fatalf("threads -1: %v", err)
	}
}

// TestPooling checks CLS, mean, pooler and normalisation against the float64
// reference hidden states.
func TestPooling(t *testing.T) {
	cfg := tinyConfig(loader.FamilyBERT, 64, 2, false)
	e := newTestEngine(t, "auto", 2)
	w := testmodel.Random(cfg, 3, 0.2)
	m, err := e.Load(w)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(8, 8))
	bc := randomBatch(r, cfg, []int{5, 1, 40})
	ref := testmodel.Reference(w, bc.tokens, bc.cu, bc.types, nil, 1234)
	H := cfg.Hidden
	for _, tc := range []struct {
		pooling   Pooling
		normalize bool
	}{{PoolCLS, false}, {PoolMean, false}, {PoolMean, true}, {PoolPooler, false}, {PoolPooler, true}} {
		t.Run(fmt.Sprintf("pooling=%d/normalize=%v", tc.pooling, tc.normalize), func(t *testing.T) {
			out := Outputs{Pooled: make([]float32, 3*H), Pooling: tc.pooling, Normalize: tc.normalize}
			if err := m.Encode(context.Background(), &Batch{Tokens: bc.tokens, CuSeqlens: bc.cu, TokenTypes: bc.types}, &out); err != nil {
				t.Fatal(err)
			}
			var want []float64
			for s := 0; s < 3; s++ {
				rows := ref[bc.cu[s]:bc.cu[s+1]]
				v := make([]float64, H)
				switch tc.pooling {
				case PoolCLS:
					copy(v, rows[0])
				case PoolMean:
					for _, row := range rows {
						for j := range v {
							v[j] += row[j] / float64(len(rows))
						}
					}
				case PoolPooler:
					pw, pb := w.T(loader.TensorPoolerWeight), w.T(loader.TensorPoolerBias)
					for o := range v {
						sum := float64(pb[o])
						for j := 0; j < H; j++ {
							sum += float64(pw[o*H+j]) * rows[0][j]
						}
						v[o] = math.Tanh(sum)
					}
				}
				if tc.normalize {
					var ss float64
					for _, u := range v {
						ss += u * u
					}
					for j := range v {
						v[j] /= math.Sqrt(ss)
					}
				}
				want = append(want, v...)
			}
			if re := relErr(out.Pooled, want); re > 1e-5 {
				t.Fatalf("relative error %.3g", re)
			}
		})
	}
}

// TestConcurrentEncode runs encodes of different batches on one model from
// several goroutines at once; each must equal its sequential result bit for
// bit (the workers' scratch is per worker, the rest per call).
func TestConcurrentEncode(t *testing.T) {
	for _, mode := range blasModes {
		t.Run(mode, func(t *testing.T) {
			cfg := tinyConfig(loader.FamilyBigBird, 64, 2, true)
			e := newTestEngine(t, mode, 2)
			m, err := e.Load(testmodel.Random(cfg, 4, 0.2))
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(6, 6))
			const n = 6
			batches := make([]*Batch, n)
			want := make([][]float32, n)
			for i := range batches {
				bc := randomBatch(r, cfg, []int{1 + r.IntN(300), 1 + r.IntN(40), 145 + r.IntN(200)})
				batches[i] = &Batch{Tokens: bc.tokens, CuSeqlens: bc.cu, TokenTypes: bc.types, Seeds: bc.seeds}
				out := Outputs{Hidden: make([]float32, len(bc.tokens)*cfg.Hidden)}
				if err := m.Encode(context.Background(), batches[i], &out); err != nil {
					t.Fatal(err)
				}
				want[i] = out.Hidden
			}
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range batches {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out := Outputs{Hidden: make([]float32, len(batches[i].Tokens)*cfg.Hidden)}
					if err := m.Encode(context.Background(), batches[i], &out); err != nil {
						errs <- err
						return
					}
					if !bitEqual(out.Hidden, want[i]) {
						errs <- fmt.Errorf("batch %d differs when run concurrently", i)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		})
	}
}
