package main

/*
#include "shim.h"
*/
import "C"

import (
	"math"
	"runtime"
	"time"
	"unsafe"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/status"
)

// The scheduler's exports (issue 8): raptor_submit_with_options,
// raptor_engine_shutdown, raptor_engine_metrics_prometheus, and the
// appended fields of raptor_engine_stats_t (accepted at its v1 size too).

// Compile-time checks: the appended enum values equal the engine's, the
// stats v1 size is where the appended fields start, and the status slots
// agree.
var (
	_ = [1]struct{}{}[C.RAPTOR_POOLING_POOLER-int(engine.PoolPooler)]
	_ = [1]struct{}{}[C.RAPTOR_ENGINE_STATS_V1_SIZE-(unsafe.Offsetof(C.raptor_engine_stats_t{}.process_heap_bytes)+8)]
	_ = [1]struct{}{}[C.RAPTOR_STATUS_SLOTS-engine.StatusSlots]
	_ = [1]struct{}{}[C.RAPTOR_SHUTDOWN_DRAIN]
	_ = [1]struct{}{}[C.RAPTOR_SHUTDOWN_CANCEL-1]
)

// maxDurationUS bounds the deadlines and timeouts of the submit options:
// 100 days, far from time.Duration's overflow.
const maxDurationUS = 100 * 24 * 3600 * 1_000_000

// submitOptions converts and checks the C submit options (nil = defaults).
// The deadline is relative to now.
func submitOptions(o *C.raptor_submit_options_t, now time.Time) (engine.SubmitOptions, error) {
	var so engine.SubmitOptions
	if o == nil {
		return so, nil
	}
	if err := checkSize("raptor_submit_options_t", o.struct_size, C.sizeof_raptor_submit_options_t); err != nil {
		return so, err
	}
	switch {
	case o.deadline_us < 0:
		return so, status.Errorf(status.InvalidArgument, "options.deadline_us %d is negative (0 = no deadline)", int64(o.deadline_us))
	case o.deadline_us > maxDurationUS:
		return so, status.Errorf(status.OutOfRange, "options.deadline_us %d exceeds 100 days", int64(o.deadline_us))
	case o.block_timeout_us > maxDurationUS:
		return so, status.Errorf(status.OutOfRange, "options.block_timeout_us %d exceeds 100 days (negative = no limit)", int64(o.block_timeout_us))
	}
	so.Priority = int32(o.priority)
	if o.deadline_us > 0 {
		so.Deadline = now.Add(time.Duration(o.deadline_us) * time.Microsecond)
	}
	switch {
	case o.block_timeout_us < 0:
		so.BlockTimeout = -1
	default:
		so.BlockTimeout = time.Duration(o.block_timeout_us) * time.Microsecond
	}
	if C.raptorc_in_completion() != 0 {
		so.BlockTimeout = 0 // a callback waiting for queue space can stop the queue draining
	}
	return so, nil
}

//export raptorgo_submit_with_options
func raptorgo_submit_with_options(mh C.uintptr_t, b *C.raptor_batch_t, o *C.raptor_output_t, opts *C.raptor_submit_options_t,
	done C.uintptr_t, userData C.uintptr_t, outReq *C.uintptr_t) (st C.raptor_status_t) {
	const name = "raptor_submit_with_options"
	defer guard(name, &st)()
	now := time.Now()
	m, err := lookup[*modelObj](handle(mh), kindModel)
	if err != nil {
		return fail(name, err)
	}
	if outReq == nil {
		return failf(name, status.InvalidArgument, "out_req is NULL")
	}
	so, err := submitOptions(opts, now)
	if err != nil {
		return fail(name, err)
	}
	return m.submit(name, b, o, so, done, userData, outReq)
}

//export raptorgo_engine_shutdown
func raptorgo_engine_shutdown(h C.uintptr_t, mode C.int32_t, timeoutUS C.int64_t) (st C.raptor_status_t) {
	const name = "raptor_engine_shutdown"
	defer guard(name, &st)()
	if refuseInCallback(name) {
		return C.RAPTOR_ERR_INVALID_ARGUMENT
	}
	e, err := lookup[*engineObj](handle(h), kindEngine)
	if err != nil {
		return fail(name, err)
	}
	if mode != C.RAPTOR_SHUTDOWN_DRAIN && mode != C.RAPTOR_SHUTDOWN_CANCEL {
		return failf(name, status.InvalidArgument, "unknown mode %d (RAPTOR_SHUTDOWN_DRAIN or _CANCEL)", mode)
	}
	timeout := time.Duration(-1)
	if timeoutUS >= 0 && int64(timeoutUS) <= math.MaxInt64/int64(time.Microsecond) {
		timeout = time.Duration(timeoutUS) * time.Microsecond
	}
	e.beginShutdown()
	if err := e.async.Shutdown(mode == C.RAPTOR_SHUTDOWN_DRAIN, timeout); err != nil {
		return fail(name, err)
	}
	return C.RAPTOR_OK
}

//export raptorgo_engine_metrics_prometheus
func raptorgo_engine_metrics_prometheus(h C.uintptr_t, buf *C.char, capacity C.size_t, n *C.size_t) (st C.raptor_status_t) {
	const name = "raptor_engine_metrics_prometheus"
	defer guard(name, &st)()
	e, err := lookup[*engineObj](handle(h), kindEngine)
	if err != nil {
		return fail(name, err)
	}
	switch {
	case n == nil:
		return failf(name, status.InvalidArgument, "len is NULL")
	case buf == nil && capacity != 0:
		return failf(name, status.InvalidArgument, "buf is NULL but cap is %d", uint64(capacity))
	}
	snap := e.async.Stats()
	e.mu.Lock()
	models, reqs := len(e.models), len(e.requests)
	e.mu.Unlock()
	text := snap.AppendPrometheus(nil,
		engine.Gauge{Name: "raptor_live_models", Help: "Models of this engine not yet freed.", Value: float64(models)},
		engine.Gauge{Name: "raptor_live_requests", Help: "Request handles of this engine not yet freed.", Value: float64(reqs)},
		engine.Gauge{Name: "raptor_process_handles", Help: "Live raptor handles of any kind in the process.", Value: float64(handles.count())},
		engine.Gauge{Name: "raptor_process_goroutines", Help: "Go runtime goroutines in the process.", Value: float64(runtime.NumGoroutine())},
		engine.Gauge{Name: "raptor_process_heap_bytes", Help: "Go heap in use, bytes.", Value: float64(heapBytes())},
	)
	text = engine.AppendDevicePrometheus(text, e.eng.Devices(), e.async.DeviceStats())
	if buf == nil {
		*n = C.size_t(len(text))
		return C.RAPTOR_OK
	}
	if uint64(capacity) < uint64(len(text))+1 {
		return failf(name, status.BufferTooSmall, "buf holds %d bytes, the metrics text needs %d with its NUL", uint64(capacity), len(text)+1)
	}
	d := unsafe.Slice((*byte)(unsafe.Pointer(buf)), len(text)+1)
	copy(d, text)
	d[len(text)] = 0
	*n = C.size_t(len(text))
	return C.RAPTOR_OK
}

// fillStats writes the engine's stats into s, at the caller's struct_size
// (v1 or current; checked by the caller).
func (e *engineObj) fillStats(s *C.raptor_engine_stats_t) {
	snap := e.async.Stats()
	e.mu.Lock()
	models, reqs := len(e.models), len(e.requests)
	e.mu.Unlock()
	us := func(d time.Duration) C.int64_t { return C.int64_t(d / time.Microsecond) }
	full := C.raptor_engine_stats_t{
		requests_submitted:   C.uint64_t(snap.Submitted),
		requests_completed:   C.uint64_t(snap.Completed),
		requests_failed:      C.uint64_t(snap.Failed),
		requests_cancelled:   C.uint64_t(snap.Cancelled),
		batches:              C.uint64_t(snap.Batches),
		tokens:               C.uint64_t(snap.Tokens),
		queue_depth:          C.int64_t(snap.QueueDepth),
		live_models:          C.int64_t(models),
		live_requests:        C.int64_t(reqs),
		process_handles:      C.int64_t(handles.count()),
		process_goroutines:   C.int64_t(runtime.NumGoroutine()),
		process_heap_bytes:   C.int64_t(heapBytes()),
		queue_latency_p50_us: us(snap.QueueLatencyP50),
		queue_latency_p99_us: us(snap.QueueLatencyP99),
		latency_p50_us:       us(snap.LatencyP50),
		latency_p99_us:       us(snap.LatencyP99),
		scheduler_batches:    C.uint64_t(snap.SchedBatches),
		scheduler_requests:   C.uint64_t(snap.SchedRequests),
		mean_batch_requests:  C.double(snap.MeanBatchRequests),
		mean_batch_fill:      C.double(snap.MeanBatchFill),
		padded_tokens:        C.uint64_t(snap.PaddedTokens),
		padding_ratio:        C.double(snap.PaddingRatio),
		tokens_per_second:    C.double(snap.TokensPerSecond),
		device_busy_share:    C.double(snap.DeviceBusyShare),
		device_busy_us:       us(snap.DeviceBusy),
		uptime_us:            us(snap.Uptime),
		queue_capacity:       C.int64_t(snap.QueueCapacity),
	}
	for i := range snap.CompletedByStatus {
		full.completed_by_status[i] = C.uint64_t(snap.CompletedByStatus[i])
		full.rejected_by_status[i] = C.uint64_t(snap.RejectedByStatus[i])
	}
	copyStruct(unsafe.Pointer(s), unsafe.Pointer(&full), s.struct_size)
}
