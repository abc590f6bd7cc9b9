package raptor

import (
	"fmt"
	"sync"
)

// warmFuncs are the warm-up functions appended to the ABI; a library that
// predates them answers StatusUnsupported.
type warmFuncs struct {
	once          sync.Once
	err           error
	paramsDefault func(*cWarmupParams)
	warmup        func(uintptr, *cWarmupParams, *int64) int32
}

func (l *Library) warmFuncs() (*warmFuncs, error) {
	l.wf.once.Do(func() {
		l.wf.err = l.registerAppended("the warm-up", []symbol{
			{&l.wf.paramsDefault, "raptor_warmup_params_default"},
			{&l.wf.warmup, "raptor_model_warmup"},
		})
	})
	return &l.wf, l.wf.err
}

// WarmupOptions describe the requests Model.Warmup prepares the model for
// (raptor_warmup_params_t). The zero value: requests for mean-pooled
// vectors, without token types or seeds, batches of every size the engine
// replays as a CUDA graph.
type WarmupOptions struct {
	MaxTokens  int     // the largest batch to prepare, in tokens; 0 = every size replayed as a graph
	Pooling    Pooling // of the requests' pooled vectors; PoolingNone: they ask for none
	Normalize  bool    // L2-normalised pooled vectors
	Hidden     bool    // they ask for hidden states (or logits, computed from them)
	TokenTypes bool    // they pass token type ids
	Seeds      bool    // they pass seeds
}

// Warmup prepares the model for a stream of requests like o, so that the
// first of them do not pay one-time costs (raptor_model_warmup: on the GPU,
// two batches of every batch class such requests can make, capturing their
// CUDA graphs; on the CPU one small batch). It blocks until done and returns
// the number of batches run.
func (m *Model) Warmup(o WarmupOptions) (int64, error) {
	h, err := m.handle()
	if err != nil {
		return 0, err
	}
	wf, err := m.lib.warmFuncs()
	if err != nil {
		return 0, err
	}
	var p cWarmupParams
	wf.paramsDefault(&p)
	p.MaxTokens = int64(o.MaxTokens)
	switch o.Pooling {
	case PoolingMean, PoolingCLS, PoolingPooler:
		p.Pooled = 1
		p.Pooling = map[Pooling]int32{PoolingMean: cPoolingMean, PoolingCLS: cPoolingCLS, PoolingPooler: cPoolingPooler}[o.Pooling]
	case PoolingNone:
		p.Pooled = 0
	default:
		return 0, &Error{Status: StatusInvalidArgument, Msg: fmt.Sprintf("unknown pooling %d", o.Pooling)}
	}
	p.Normalize = b2i(o.Normalize && p.Pooled != 0)
	p.Hidden, p.TokenTypeIDs, p.Seeds = b2i(o.Hidden), b2i(o.TokenTypes), b2i(o.Seeds)
	var n int64
	if err := m.lib.call(func() int32 { return wf.warmup(h, &p, &n) }); err != nil {
		return 0, err
	}
	return n, nil
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}
