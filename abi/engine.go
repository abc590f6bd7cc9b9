package main

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/status"
)

// version is the library's version string (raptor_version).
const version = "0.1.0"

var (
	versionC  = C.CString(version)
	emptyC    = C.CString("")
	backendsC = map[string]*C.char{"cpu": C.CString("cpu"), "cuda": C.CString("cuda")}
)

//export raptorgo_version
func raptorgo_version() *C.char { return versionC }

// Limits on engine options, far above any real use.
const (
	maxQueueCapacity = 1 << 24
	maxBatchTokens   = 1 << 30
	maxWorkerThreads = 1 << 16
)

// engineObj is what an engine handle refers to: the engine, the
// asynchronous request machinery, and the handles of its models and
// requests (freed with it).
type engineObj struct {
	eng   *engine.Engine
	async *engine.Async
	stats engine.Stats

	shut atomic.Bool // raptor_engine_shutdown was called: no new work
	// stopped ends when raptor_engine_shutdown starts: long calls in
	// progress (a warm-up's hundreds of batches) stop at their next step.
	stopped context.Context
	stop    context.CancelFunc

	mu       sync.Mutex
	closed   bool
	models   map[*modelObj]handle
	requests map[*requestObj]handle
}

//export raptorgo_engine_options_default
func raptorgo_engine_options_default(o *C.raptor_engine_options_t) {
	defer guard("raptor_engine_options_default", nil)()
	if o == nil {
		return
	}
	fillEngineOptions(o, C.RAPTOR_ENGINE_OPTIONS_V1_SIZE)
}

// fillEngineOptions writes the defaults into the first size bytes of o.
func fillEngineOptions(o *C.raptor_engine_options_t, size C.size_t) {
	d := engine.DefaultOptions()
	full := C.raptor_engine_options_t{
		backend:            C.int32_t(d.Backend),
		device:             C.int32_t(d.Device),
		compute_dtype:      C.int32_t(d.Compute),
		worker_threads:     C.int32_t(d.Threads),
		max_batch_tokens:   C.int64_t(d.MaxBatchTokens),
		max_queue_delay_us: C.int64_t(d.MaxQueueDelay / time.Microsecond),
		queue_capacity:     C.int64_t(d.QueueCapacity),
		seed:               C.uint64_t(d.Seed),
	}
	copyStruct(unsafe.Pointer(o), unsafe.Pointer(&full), size)
}

// engineOptions converts and checks the C options.
func engineOptions(o *C.raptor_engine_options_t) (engine.Options, error) {
	opts := engine.DefaultOptions()
	if o == nil {
		return opts, nil
	}
	if err := checkSizes("raptor_engine_options_t", o.struct_size, C.RAPTOR_ENGINE_OPTIONS_V1_SIZE, C.sizeof_raptor_engine_options_t); err != nil {
		return opts, err
	}
	if o.struct_size == C.sizeof_raptor_engine_options_t {
		if err := deviceOptions(o, &opts); err != nil {
			return opts, err
		}
	}
	switch o.backend {
	case C.RAPTOR_BACKEND_AUTO, C.RAPTOR_BACKEND_CPU, C.RAPTOR_BACKEND_CUDA:
	default:
		return opts, status.Errorf(status.InvalidArgument, "unknown backend %d (RAPTOR_BACKEND_AUTO, _CPU or _CUDA)", o.backend)
	}
	switch o.compute_dtype {
	case C.RAPTOR_DTYPE_FP32, C.RAPTOR_DTYPE_FP16, C.RAPTOR_DTYPE_BF16:
	default:
		return opts, status.Errorf(status.InvalidArgument, "unknown compute_dtype %d (RAPTOR_DTYPE_FP32, _FP16 or _BF16)", o.compute_dtype)
	}
	switch {
	case o.device < 0:
		return opts, status.Errorf(status.InvalidArgument, "device %d is negative", o.device)
	case o.device >= C.RAPTOR_MAX_DEVICES:
		return opts, status.Errorf(status.OutOfRange, "device %d is beyond RAPTOR_MAX_DEVICES - 1 (%d)", o.device, C.RAPTOR_MAX_DEVICES-1)
	case o.worker_threads < 0 || o.worker_threads > maxWorkerThreads:
		return opts, status.Errorf(status.InvalidArgument, "worker_threads %d outside [0, %d]", o.worker_threads, maxWorkerThreads)
	case o.max_batch_tokens < 1 || o.max_batch_tokens > maxBatchTokens:
		return opts, status.Errorf(status.InvalidArgument, "max_batch_tokens %d outside [1, %d]", o.max_batch_tokens, maxBatchTokens)
	case o.max_queue_delay_us < 0 || int64(o.max_queue_delay_us) > int64(time.Hour/time.Microsecond):
		return opts, status.Errorf(status.InvalidArgument, "max_queue_delay_us %d outside [0, one hour]", o.max_queue_delay_us)
	case o.queue_capacity < 1 || o.queue_capacity > maxQueueCapacity:
		return opts, status.Errorf(status.InvalidArgument, "queue_capacity %d outside [1, %d]", o.queue_capacity, maxQueueCapacity)
	}
	opts.Backend = engine.BackendKind(o.backend)
	opts.Device = int(o.device)
	opts.Compute = engine.ComputeDType(o.compute_dtype)
	opts.Threads = int(o.worker_threads)
	opts.MaxBatchTokens = int(o.max_batch_tokens)
	opts.MaxQueueDelay = time.Duration(o.max_queue_delay_us) * time.Microsecond
	opts.QueueCapacity = int(o.queue_capacity)
	opts.Seed = uint64(o.seed)
	if o.kernel_cache_dir != nil {
		opts.KernelCacheDir = C.GoString(o.kernel_cache_dir)
	}
	return opts, nil
}

// checkSize checks a struct_size against the ABI v1 size of the struct.
func checkSize(name string, got C.size_t, want C.size_t) error {
	if got != want {
		return status.Errorf(status.InvalidArgument, "%s.struct_size is %d, but this library (ABI v%d) knows only size %d: fill it with its *_default() function or set sizeof(%s)", name, got, C.RAPTOR_ABI_VERSION, want, name)
	}
	return nil
}

// newEngineObj wraps eng (created with opts) with its asynchronous
// request machinery.
func newEngineObj(eng *engine.Engine, opts engine.Options) *engineObj {
	e := &engineObj{eng: eng, models: map[*modelObj]handle{}, requests: map[*requestObj]handle{}}
	e.stopped, e.stop = context.WithCancel(context.Background())
	e.async = engine.NewAsync(engine.AsyncOptions{
		QueueCapacity:  opts.QueueCapacity,
		MaxBatchTokens: opts.MaxBatchTokens,
		MaxQueueDelay:  opts.MaxQueueDelay,
		Stats:          &e.stats,
		Log:            logMessage,
		Devices:        eng.NumDevices(),
		DeviceErr:      eng.DeviceErr,
		Lanes:          eng.PipelineLanes(),
	})
	return e
}

//export raptorgo_engine_create
func raptorgo_engine_create(o *C.raptor_engine_options_t, out *C.uintptr_t) (st C.raptor_status_t) {
	const name = "raptor_engine_create"
	defer guard(name, &st)()
	if out == nil {
		return failf(name, status.InvalidArgument, "out is NULL")
	}
	opts, err := engineOptions(o)
	if err != nil {
		return fail(name, err)
	}
	opts.Log = logMessage
	eng, err := engine.New(opts)
	if err != nil {
		return fail(name, err)
	}
	e := newEngineObj(eng, opts)
	h, err := handles.add(kindEngine, e)
	if err != nil {
		e.async.Close()
		eng.Close()
		return fail(name, err)
	}
	*out = C.uintptr_t(h)
	return C.RAPTOR_OK
}

// beginShutdown marks the engine shut down: no new work, and long calls
// in progress (engineObj.stopped) stop at their next step.
func (e *engineObj) beginShutdown() {
	e.shut.Store(true)
	e.stop()
}

// refuseInCallback reports whether the calling thread runs a completion
// or log callback, where the free functions would wait for that very
// callback (or for a lock held around it): they refuse instead.
func refuseInCallback(name string) bool {
	which := "completion"
	switch {
	case C.raptorc_in_completion() != 0:
	case C.raptorc_in_log() != 0:
		which = "log"
	default:
		return false
	}
	effect := "nothing was freed"
	if name == "raptor_engine_shutdown" {
		effect = "the engine was not shut down"
	}
	failf(name, status.InvalidArgument, "must not be called from a %s callback; %s", which, effect)
	logf(engine.LogError, "%s called from a %s callback; %s", name, which, effect)
	return true
}

//export raptorgo_engine_free
func raptorgo_engine_free(h C.uintptr_t) {
	const name = "raptor_engine_free"
	defer guard(name, nil)()
	if h == 0 || refuseInCallback(name) {
		return
	}
	obj, err := handles.remove(handle(h), kindEngine)
	if err != nil {
		fail(name, err)
		return
	}
	obj.(*engineObj).close()
}

// close completes every pending request with SHUTDOWN (callbacks included),
// then frees the models, the request handles and the engine.
func (e *engineObj) close() {
	defer e.stop()
	e.mu.Lock()
	e.closed = true
	models := make(map[*modelObj]handle, len(e.models))
	for m, h := range e.models {
		models[m] = h
	}
	e.mu.Unlock()
	for _, h := range models {
		handles.remove(h, kindModel) // may fail: a racing raptor_model_free got it
	}
	e.async.Close()
	for m := range models {
		m.close()
	}
	e.mu.Lock()
	reqs := e.requests
	e.requests = map[*requestObj]handle{}
	e.mu.Unlock()
	for r, h := range reqs {
		if _, err := handles.remove(h, kindRequest); err == nil {
			r.release()
		}
	}
	e.eng.Close()
}

//export raptorgo_engine_backend
func raptorgo_engine_backend(h C.uintptr_t) (s *C.char) {
	const name = "raptor_engine_backend"
	s = emptyC
	defer guard(name, nil)()
	e, err := lookup[*engineObj](handle(h), kindEngine)
	if err != nil {
		fail(name, err)
		return emptyC
	}
	if strings.HasPrefix(e.eng.BackendName(), "cuda") {
		return backendsC["cuda"]
	}
	return backendsC["cpu"]
}

//export raptorgo_engine_get_stats
func raptorgo_engine_get_stats(h C.uintptr_t, s *C.raptor_engine_stats_t) (st C.raptor_status_t) {
	const name = "raptor_engine_get_stats"
	defer guard(name, &st)()
	e, err := lookup[*engineObj](handle(h), kindEngine)
	if err != nil {
		return fail(name, err)
	}
	if s == nil {
		return failf(name, status.InvalidArgument, "stats is NULL")
	}
	if err := checkSizes("raptor_engine_stats_t", s.struct_size, C.RAPTOR_ENGINE_STATS_V1_SIZE, C.sizeof_raptor_engine_stats_t); err != nil {
		return fail(name, err)
	}
	e.fillStats(s)
	return C.RAPTOR_OK
}

// heapBytes is the Go heap in use: live objects plus those not yet swept.
func heapBytes() uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return sample[0].Value.Uint64()
}
