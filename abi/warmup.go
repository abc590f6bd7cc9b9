package main

/*
#include "shim.h"
*/
import "C"

import (
	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/status"
)

// Warm-up (issue 8): raptor_model_warmup.

//export raptorgo_model_warmup
func raptorgo_model_warmup(h C.uintptr_t, p *C.raptor_warmup_params_t, outBatches *C.int64_t) (st C.raptor_status_t) {
	const name = "raptor_model_warmup"
	defer guard(name, &st)()
	m, err := liveModel(h)
	if err != nil {
		return fail(name, err)
	}
	o := engine.WarmupOptions{Pooled: true, Pooling: engine.PoolMean}
	if p != nil {
		if err := checkSize("raptor_warmup_params_t", p.struct_size, C.sizeof_raptor_warmup_params_t); err != nil {
			return fail(name, err)
		}
		if p.max_tokens < 0 {
			return failf(name, status.InvalidArgument, "params.max_tokens %d is negative (0 = every batch size replayed as a graph)", int64(p.max_tokens))
		}
		if p.max_tokens > 1<<31 {
			return failf(name, status.OutOfRange, "params.max_tokens %d exceeds 2^31", int64(p.max_tokens))
		}
		if p.pooled != 0 && (p.pooling < C.RAPTOR_POOLING_CLS || p.pooling > C.RAPTOR_POOLING_POOLER) {
			return failf(name, status.InvalidArgument, "params.pooling %d is not a RAPTOR_POOLING_* value", int32(p.pooling))
		}
		o = engine.WarmupOptions{MaxTokens: int(p.max_tokens), TokenTypes: p.token_type_ids != 0, Seeds: p.seeds != 0,
			Hidden: p.hidden != 0, Pooled: p.pooled != 0, Pooling: engine.Pooling(p.pooling), Normalize: p.normalize != 0}
		if !o.Pooled {
			o.Pooling, o.Normalize = engine.PoolMean, false
		}
	}
	// A warm-up runs hundreds of batches (about a second on a GPU): it
	// stops at the next batch once raptor_engine_shutdown starts.
	st2, err := m.m.Warmup(m.e.stopped, o)
	if err != nil {
		if m.e.shut.Load() && status.CodeOf(err) == status.Cancelled {
			return failf(name, status.Shutdown, "the engine was shut down during the warm-up (raptor_engine_shutdown)")
		}
		return fail(name, err)
	}
	if outBatches != nil {
		*outBatches = C.int64_t(st2.Batches)
	}
	return C.RAPTOR_OK
}
