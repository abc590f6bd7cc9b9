package engine

import (
	"context"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

// TestGPUStreamOverlap measures whether small forwards on separate streams
// of one GPU overlap (issue 8: a request waits for the batch ahead of it
// unless its own batch can start beside it). An engine with k streams on
// the GPU (Options.StreamsPerDevice: k devices, each its own worker,
// stream and weights) runs k goroutines, each encoding the same batch on
// its own device back to back for a while; the control runs k goroutines
// on one stream. It logs forwards/s and the mean time per forward of each
// goroutine. A measurement, not an assertion: RAPTOR_OVERLAP=1 runs it.
func TestGPUStreamOverlap(t *testing.T) {
	if os.Getenv("RAPTOR_OVERLAP") != "1" {
		t.Skip("skipping: a measurement; RAPTOR_OVERLAP=1 runs it (on the GPU machine)")
	}
	cfg := gpuConfig(loader.FamilyBERT, loader.AttentionDense, 384, 12, 1536, 6)
	cfg.MaxPositions = 512
	w := testmodel.Random(cfg, 77, 0.02)
	sizes := []struct {
		name string
		lens []int
	}{
		{"1x128", []int{128}},
		{"serving-5", []int{60, 31, 150, 17, 240}},
		{"serving-20", []int{60, 31, 150, 17, 88, 240, 45, 12, 102, 66, 9, 380, 54, 120, 23, 71, 190, 38, 95, 410}},
	}
	dur := 800 * time.Millisecond
	run := func(m *Model, devs, workers int, b *Batch) (perSec, msPer float64) {
		counts := make([]int, workers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		var t0 time.Time
		for g := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := context.Background()
				if devs > 1 {
					ctx = onDevice(ctx, g%devs)
				}
				out := &Outputs{Pooled: make([]float32, b.NumSeqs()*cfg.Hidden), Pooling: PoolMean}
				for range 30 { // warm-up: the class graph is captured on its second batch
					if err := m.Encode(ctx, b, out); err != nil {
						t.Error(err)
						return
					}
				}
				<-start
				for time.Since(t0) < dur {
					if err := m.Encode(ctx, b, out); err != nil {
						t.Error(err)
						return
					}
					counts[g]++
				}
			}()
		}
		time.Sleep(300 * time.Millisecond) // the warm-ups
		t0 = time.Now()
		close(start)
		wg.Wait()
		el := time.Since(t0)
		n := 0
		for _, c := range counts {
			n += c
		}
		return float64(n) / el.Seconds(), float64(workers) * el.Seconds() * 1000 / float64(max(n, 1))
	}
	base := map[string]float64{}
	for _, k := range []int{1, 2, 4, 8} {
		opts := DefaultOptions()
		opts.Backend, opts.Compute, opts.Seed = BackendCUDA, ComputeFP16, gpuTestSeed
		opts.KernelCacheDir = os.Getenv("RAPTOR_KERNEL_CACHE")
		opts.StreamsPerDevice = k
		opts.Log = func(LogLevel, string) {}
		e, err := New(opts)
		if err != nil {
			if status.CodeOf(err) == status.BackendUnavailable {
				t.Skipf("skipping: no usable GPU here: %v", err)
			}
			t.Fatal(err)
		}
		m, err := e.Load(w)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sizes {
			b := raggedBatch(rand.New(rand.NewPCG(1, 2)), cfg, s.lens)
			ps, ms := run(m, k, k, b)
			if k == 1 {
				base[s.name] = ps
			}
			t.Logf("overlap %-10s %5d tokens: %d streams x 1 goroutine: %8.0f forwards/s (%.2fx one stream), %.3f ms per forward",
				s.name, len(b.Tokens), k, ps, ps/base[s.name], ms)
			if k == 1 {
				for _, g := range []int{2, 4} {
					ps, ms := run(m, 1, g, b)
					t.Logf("overlap %-10s %5d tokens: 1 stream x %d goroutines: %8.0f forwards/s (%.2fx), %.3f ms per forward",
						s.name, len(b.Tokens), g, ps, ps/base[s.name], ms)
				}
			}
		}
		m.Close()
		e.Close()
	}
}
