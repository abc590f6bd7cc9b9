package engine

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/raptor-infer/raptor/internal/gpu"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

// TestGPUWarmup: after Model.Warmup, every batch of requests like its
// options (random ragged batches up to its MaxTokens) replays a captured
// CUDA graph: no capture and no eager class batch after the warm-up, for a
// dense and a block-sparse model, pooled and hidden outputs.
func TestGPUWarmup(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    loader.Config
		maxLen int
		o      WarmupOptions
	}{
		{"dense pooled", gpuConfig(loader.FamilyBERT, loader.AttentionDense, 384, 12, 1536, 2), 512,
			WarmupOptions{MaxTokens: 2048, Pooled: true, Pooling: PoolMean}},
		{"sparse hidden with types and seeds", gpuConfig(loader.FamilyBigBird, loader.AttentionBlockSparse, 256, 4, 512, 2), 4096,
			WarmupOptions{MaxTokens: 1500, Hidden: true, TokenTypes: true, Seeds: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := gpuEngine(t, ComputeFP16) // skips without a GPU
			tc.cfg.MaxPositions = tc.maxLen
			m, err := e.Load(testmodel.Random(tc.cfg, 5, 0.02))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			gmod := m.bm.(cudaModel).m
			st, err := m.Warmup(context.Background(), tc.o)
			if err != nil {
				t.Fatal(err)
			}
			g0 := gmod.GraphStats()
			t.Logf("warm-up: %+v; graphs %+v", st, g0)
			if st.Classes == 0 || st.Batches != 2*st.Classes || g0.Captures != int64(st.Classes) || g0.Fails != 0 {
				t.Fatalf("warm-up %+v, graphs %+v: want one capture per class", st, g0)
			}
			rng := rand.New(rand.NewPCG(9, 9))
			n := 0
			for n < 200 {
				var lens []int
				T := 0
				for {
					l := 1 + rng.IntN(min(tc.maxLen, 600))
					if T+l > tc.o.MaxTokens {
						break
					}
					lens, T = append(lens, l), T+l
					if rng.IntN(4) == 0 {
						break
					}
				}
				if len(lens) == 0 {
					continue
				}
				b := raggedBatch(rng, tc.cfg, lens)
				if !tc.o.TokenTypes {
					b.TokenTypes = nil
				}
				if !tc.o.Seeds {
					b.Seeds = nil
				}
				out := &Outputs{Pooling: tc.o.Pooling}
				if tc.o.Hidden {
					out.Hidden = make([]float32, T*tc.cfg.Hidden)
				}
				if tc.o.Pooled {
					out.Pooled = make([]float32, len(lens)*tc.cfg.Hidden)
				}
				if err := m.Encode(context.Background(), b, out); err != nil {
					t.Fatal(err)
				}
				n++
			}
			g1 := gmod.GraphStats()
			if g1.Captures != g0.Captures || g1.Replays-g0.Replays != int64(n) || g1.Batches-g0.Batches != int64(n) {
				t.Fatalf("after the warm-up, %d batches: graphs %+v -> %+v; want %d replays and no capture", n, g0, g1, n)
			}
		})
	}
	// Above the graph limit (4096 tokens for a model 768 wide): batches run
	// eagerly, and after a warm-up to MaxTokens their GEMM plans exist (no
	// plan miss in their enqueue).
	t.Run("above the graph limit", func(t *testing.T) {
		e := gpuEngine(t, ComputeFP16)
		cfg := gpuConfig(loader.FamilyBERT, loader.AttentionDense, 768, 12, 3072, 2)
		cfg.MaxPositions = 512
		m, err := e.Load(testmodel.Random(cfg, 5, 0.02))
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		gmod := m.bm.(cudaModel).m
		rng := rand.New(rand.NewPCG(4, 4))
		// A warm-up to the graph limit only, then a 4,496-token batch: it
		// makes the plans of its class (the control: misses are seen).
		// Then a warm-up to 9,000 tokens and an 8,012-token batch: none.
		for i, step := range []struct {
			maxTokens  int
			lens       []int
			wantMisses bool
		}{
			{4096, []int{512, 512, 512, 512, 512, 512, 512, 512, 400}, true},
			{9000, []int{500, 300, 512, 512, 512, 512, 512, 512, 512, 512, 512, 512, 512, 512, 512, 512, 512, 100}, false},
		} {
			if _, err := m.Warmup(context.Background(), WarmupOptions{MaxTokens: step.maxTokens, Pooled: true, Pooling: PoolMean}); err != nil {
				t.Fatal(err)
			}
			before := gmod.GraphStats().Batches
			b := raggedBatch(rng, cfg, step.lens)
			b.TokenTypes, b.Seeds = nil, nil
			var tr gpu.ForwardTrace
			out := &Outputs{Pooled: make([]float32, len(step.lens)*cfg.Hidden), Pooling: PoolMean}
			if err := m.Encode(gpu.WithTrace(context.Background(), &tr), b, out); err != nil {
				t.Fatal(err)
			}
			if st := gmod.GraphStats(); st.Batches != before {
				t.Fatalf("step %d: a %d-token batch ran as a graph class (%+v): the test wants batches above the limit", i, len(b.Tokens), st)
			}
			if (tr.PlanMisses > 0) != step.wantMisses {
				t.Errorf("step %d: a %d-token batch after a warm-up to %d tokens: %d GEMM plan misses (want some: %v)",
					i, len(b.Tokens), step.maxTokens, tr.PlanMisses, step.wantMisses)
			}
		}
	})
}
