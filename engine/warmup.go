package engine

import (
	"context"
	"math/rand/v2"
	"slices"

	"github.com/raptor-infer/raptor/internal/gpu"
	"github.com/raptor-infer/raptor/internal/status"
)

// WarmupOptions describe the requests Model.Warmup prepares the model for:
// their largest batch and the parts of a request that shape a batch's
// kernels (whether token type ids and seeds are passed, which outputs are
// asked for). Requests that ask for logits compute hidden states: set
// Hidden for them.
type WarmupOptions struct {
	// MaxTokens is the largest batch (merged requests) to prepare, in
	// tokens; 0 means every batch size the backend replays as a CUDA graph
	// (RAPTOR_CUDA_GRAPHS; by default 8192 tokens for models up to 512
	// wide, else 4096). Negative is an error.
	MaxTokens int
	// TokenTypes and Seeds: the requests pass token type ids, seeds.
	TokenTypes, Seeds bool
	// Hidden: the requests ask for hidden states (host or device memory
	// alike). Pooled: for pooled vectors, with Pooling and Normalize.
	Hidden, Pooled bool
	Pooling        Pooling
	Normalize      bool
}

// WarmupStats say what Model.Warmup did.
type WarmupStats struct {
	Classes int // CUDA-graph batch classes prepared on each device (0 on the CPU)
	Batches int // batches run, over every device
}

// Warmup prepares the model for a stream of requests like o so that the
// first of them do not pay one-time costs. On the GPU the backend runs a
// batch of up to 8192 tokens (4096 for models wider than 512;
// RAPTOR_CUDA_GRAPHS sets it) as one of a few hundred
// class shapes, whose first batch loads the kernels and GEMM plans and whose
// second captures a CUDA graph; Warmup runs two batches of every class that
// such requests can make, up to o.MaxTokens tokens, on every device of the
// engine, so that their batches replay graphs from the start. Above the
// graph limit, batches run eagerly with cuBLASLt plans made per class of
// token counts (four per power of two) on the class's first batch: Warmup
// runs one batch of each class up to o.MaxTokens. Measured on an H200
// (all-MiniLM-L6-v2, bench/RESULTS.md, issue 8): 463 classes in 1.4 s
// (graph limit 8192); without it, the first seconds of a request stream at a quarter
// of the offline rate had a p99 latency of 11-19 ms, with it 1.3 ms. On the
// CPU it runs one small batch. Requests may be served meanwhile. A class is
// keyed by the options too, so warm up once per kind of request served; at
// most 512 classes per model are kept as graphs.
//
// It returns status.InvalidArgument for a negative MaxTokens or options
// asking for no output, the model's validation errors for options it
// cannot serve (e.g. PoolPooler without a pooler), and ctx's error when
// ctx ends first.
func (m *Model) Warmup(ctx context.Context, o WarmupOptions) (WarmupStats, error) {
	var st WarmupStats
	if m == nil {
		return st, status.Errorf(status.InvalidHandle, "nil model")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if o.MaxTokens < 0 {
		return st, status.Errorf(status.InvalidArgument, "warm-up max tokens %d is negative", o.MaxTokens)
	}
	if !o.Hidden && !o.Pooled {
		return st, status.Errorf(status.InvalidArgument, "warm-up for requests that ask for neither hidden states nor pooled vectors: there is nothing to compute")
	}
	maxLen := m.cfg.MaxPositions - m.cfg.PositionOffset
	if o.MaxTokens > 0 {
		// Requests of at most MaxTokens tokens; but a class's padding
		// sequences are up to 64 tokens long (the classes of a short
		// batch have few sequences), so the shapes may use those too.
		maxLen = min(maxLen, max(o.MaxTokens, 64))
	}
	rng := rand.New(rand.NewPCG(uint64(m.cfg.VocabSize), 1))
	var hidden, pooled []float32 // the outputs, grown to the largest shape and reused
	run := func(ctx context.Context, T, S int) error {
		b := warmupBatch(rng, T, S, m.cfg.VocabSize, o)
		out := &Outputs{Pooling: o.Pooling, Normalize: o.Normalize}
		if o.Hidden {
			hidden = slices.Grow(hidden[:0], T*m.cfg.Hidden)[:T*m.cfg.Hidden]
			out.Hidden = hidden
		}
		if o.Pooled {
			pooled = slices.Grow(pooled[:0], S*m.cfg.Hidden)[:S*m.cfg.Hidden]
			out.Pooled = pooled
		}
		err := m.Encode(ctx, b, out)
		if err == nil {
			st.Batches++
		}
		return err
	}
	m.mu.RLock()
	bms := m.rep.bms
	m.mu.RUnlock()
	var devErr error // a device that failed during the warm-up; the others go on
	warmed := 0
	for i, bm := range bms {
		if bm == nil || m.e.DeviceErr(i) != nil {
			continue // a failed device takes no work
		}
		dctx := ctx
		if len(bms) > 1 {
			dctx = onDevice(ctx, i)
		}
		g, ok := bm.(warmShaper)
		var shapes, plans []gpu.Shape
		if ok {
			shapes, plans = g.graphShapes(o.MaxTokens, maxLen), g.planShapes(o.MaxTokens, maxLen)
		} else {
			plans = []gpu.Shape{{T: min(maxLen, 64), S: 1}} // the CPU: one small batch
		}
		err := func() error {
			for _, s := range shapes {
				for range 2 { // the first runs eagerly, the second is captured
					if err := run(dctx, s.T, s.S); err != nil {
						return err
					}
				}
			}
			for _, s := range plans {
				if err := run(dctx, s.T, s.S); err != nil {
					return err
				}
			}
			return nil
		}()
		switch {
		case err == nil:
			st.Classes = len(shapes)
			warmed++
		case status.CodeOf(err) == status.DeviceFailed && len(bms) > 1:
			devErr = err // this device takes no more work; warm the others
		default:
			return st, err
		}
	}
	if warmed == 0 {
		if devErr == nil {
			devErr = m.e.allFailed()
		}
		if devErr == nil {
			devErr = status.Errorf(status.DeviceFailed, "no device of the engine could be warmed up")
		}
		return st, devErr
	}
	return st, nil
}

// warmShaper is implemented by backend models whose batches have shapes
// worth preparing (the CUDA backend: graph classes and GEMM plan classes).
type warmShaper interface {
	graphShapes(maxTokens, maxLen int) []gpu.Shape
	planShapes(maxTokens, maxLen int) []gpu.Shape
}

// warmupBatch is a batch of T tokens (random ids below vocab) in S
// sequences of near-equal lengths, with token types and seeds when o asks.
func warmupBatch(rng *rand.Rand, T, S, vocab int, o WarmupOptions) *Batch {
	b := &Batch{Tokens: make([]int32, T), CuSeqlens: make([]int32, S+1)}
	for i := range b.Tokens {
		b.Tokens[i] = int32(rng.IntN(vocab))
	}
	for s := 0; s < S; s++ {
		n := T / S
		if s < T%S {
			n++
		}
		b.CuSeqlens[s+1] = b.CuSeqlens[s] + int32(n)
	}
	if o.TokenTypes {
		b.TokenTypes = make([]int32, T)
	}
	if o.Seeds {
		b.Seeds = make([]uint64, S)
		for i := range b.Seeds {
			b.Seeds[i] = rng.Uint64()
		}
	}
	return b
}
