package raptor

import (
	"errors"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// Backend selects where an engine computes.
type Backend int32

// Backends (raptor.h RAPTOR_BACKEND_*).
const (
	BackendAuto Backend = 0 // CUDA when a usable GPU is found, CPU otherwise
	BackendCPU  Backend = 1
	BackendCUDA Backend = 2 // ErrBackendUnavailable when no usable GPU is found
)

// DType is an element type (raptor.h RAPTOR_DTYPE_*).
type DType int32

// Element types.
const (
	DTypeFP32 DType = 0
	DTypeFP16 DType = 1
	DTypeBF16 DType = 2
)

// EngineOptions mirror raptor_engine_options_t. Start from
// Library.DefaultEngineOptions, which returns the library's defaults.
type EngineOptions struct {
	Backend        Backend
	Device         int
	Compute        DType         // compute precision on the GPU (the CPU always computes in fp32)
	Threads        int           // CPU worker threads; 0 = all cores
	MaxBatchTokens int64         // token budget of one batch
	MaxQueueDelay  time.Duration // how long a submitted request may wait for its batch to fill
	QueueCapacity  int64         // pending asynchronous requests before Submit gives ErrBusy
	Seed           uint64        // engine seed of the block-sparse plan
	KernelCacheDir string        // "" = the user cache dir
	// Devices lists the GPU ordinals to serve on (one device worker and one
	// copy of the weights per GPU, batches spread by load); nil = the one
	// Device. An empty list, a repeated or negative ordinal: ErrInvalidArgument;
	// an ordinal the host does not have: ErrOutOfRange.
	Devices []int
	// AllDevices serves on every GPU of the host (excludes Devices).
	AllDevices bool
}

// DefaultEngineOptions returns the library's default engine options.
func (l *Library) DefaultEngineOptions() EngineOptions {
	var c cEngineOptions
	l.engineOptionsDefault(&c)
	return EngineOptions{
		Backend:        Backend(c.Backend),
		Device:         int(c.Device),
		Compute:        DType(c.ComputeDType),
		Threads:        int(c.WorkerThreads),
		MaxBatchTokens: c.MaxBatchTokens,
		MaxQueueDelay:  time.Duration(c.MaxQueueDelayUs) * time.Microsecond,
		QueueCapacity:  c.QueueCapacity,
		Seed:           c.Seed,
	}
}

// Engine is a raptor engine (raptor_engine_t). Close it when done.
type Engine struct {
	lib *Library
	h   uintptr

	mu     sync.Mutex
	closed bool
	models map[*Model]struct{}
}

// NewEngine creates an engine; opts == nil means the library's defaults.
func (l *Library) NewEngine(opts *EngineOptions) (*Engine, error) {
	var c cEngineOptions
	l.engineOptionsDefault(&c)
	var dir []byte
	if opts != nil {
		c.Backend = int32(opts.Backend)
		c.Device = int32(opts.Device)
		c.ComputeDType = int32(opts.Compute)
		c.WorkerThreads = int32(opts.Threads)
		c.MaxBatchTokens = opts.MaxBatchTokens
		c.MaxQueueDelayUs = opts.MaxQueueDelay.Microseconds()
		c.QueueCapacity = opts.QueueCapacity
		c.Seed = opts.Seed
		if opts.Devices != nil || opts.AllDevices {
			if _, err := l.devices(); err != nil {
				return nil, err
			}
			c.StructSize = unsafe.Sizeof(c) // the appended fields (zero but these)
			if opts.Devices != nil {
				list := make([]int32, len(opts.Devices)+1) // never empty: an empty list still has an address
				for i, d := range opts.Devices {
					list[i] = int32(d)
				}
				c.Devices, c.NumDevices = &list[0], uintptr(len(opts.Devices))
				defer runtime.KeepAlive(list)
			}
			if opts.AllDevices {
				c.AllDevices = 1
			}
		}
		if opts.KernelCacheDir != "" {
			var err error
			if dir, err = cString(opts.KernelCacheDir); err != nil {
				return nil, err
			}
			c.KernelCacheDir = &dir[0]
		}
	}
	var h uintptr
	if err := l.call(func() int32 { return l.engineCreate(&c, &h) }); err != nil {
		return nil, err
	}
	return &Engine{lib: l, h: h, models: map[*Model]struct{}{}}, nil
}

// Library is the library the engine belongs to.
func (e *Engine) Library() *Library { return e.lib }

func (e *Engine) handle() (uintptr, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return 0, &Error{Status: StatusInvalidHandle, Msg: "engine is closed"}
	}
	return e.h, nil
}

// Backend is the backend the engine runs on: "cpu" or "cuda" ("" once closed).
func (e *Engine) Backend() string {
	h, err := e.handle()
	if err != nil {
		return ""
	}
	return e.lib.engineBackend(h)
}

// Stats are an engine's statistics (raptor_engine_stats_t).
type Stats struct {
	RequestsSubmitted, RequestsCompleted, RequestsFailed, RequestsCancelled uint64
	Batches, Tokens                                                         uint64
	QueueDepth, LiveModels, LiveRequests                                    int64
	ProcessHandles, ProcessGoroutines, ProcessHeapBytes                     int64

	// The scheduler's (zero from a library that predates it). Latency
	// quantiles cover every asynchronous request since the engine started;
	// rates the last 10 s.
	QueueLatencyP50, QueueLatencyP99 time.Duration // submit to the start of the request's batch
	LatencyP50, LatencyP99           time.Duration // submit to completion, successful requests
	SchedulerBatches                 uint64        // batches the scheduler formed
	SchedulerRequests                uint64        // requests in them
	MeanBatchRequests, MeanBatchFill float64       // per scheduler batch; fill = tokens / max_batch_tokens
	PaddedTokens                     uint64        // none from packing; CUDA graph token-count classes pad small GPU batches
	PaddingRatio                     float64       // PaddedTokens / (tokens + PaddedTokens)
	TokensPerSecond                  float64
	DeviceBusyShare                  float64 // 0..1
	DeviceBusy, Uptime               time.Duration
	QueueCapacity                    int64
	CompletedByStatus                [32]uint64 // requests completed, by final status (index: Status)
	RejectedByStatus                 [32]uint64 // submits refused, by status
}

// Stats returns the engine's statistics.
func (e *Engine) Stats() (Stats, error) {
	h, err := e.handle()
	if err != nil {
		return Stats{}, err
	}
	c := cEngineStats{StructSize: unsafe.Sizeof(cEngineStats{})}
	err = e.lib.call(func() int32 { return e.lib.engineGetStats(h, &c) })
	if errors.Is(err, ErrInvalidArgument) { // a library older than the scheduler's fields
		c = cEngineStats{StructSize: cEngineStatsV1Size}
		err = e.lib.call(func() int32 { return e.lib.engineGetStats(h, &c) })
	}
	if err != nil {
		return Stats{}, err
	}
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return Stats{
		RequestsSubmitted: c.RequestsSubmitted, RequestsCompleted: c.RequestsCompleted,
		RequestsFailed: c.RequestsFailed, RequestsCancelled: c.RequestsCancelled,
		Batches: c.Batches, Tokens: c.Tokens,
		QueueDepth: c.QueueDepth, LiveModels: c.LiveModels, LiveRequests: c.LiveRequests,
		ProcessHandles: c.ProcessHandles, ProcessGoroutines: c.ProcessGoroutines,
		ProcessHeapBytes: c.ProcessHeapBytes,
		QueueLatencyP50:  us(c.QueueLatencyP50Us), QueueLatencyP99: us(c.QueueLatencyP99Us),
		LatencyP50: us(c.LatencyP50Us), LatencyP99: us(c.LatencyP99Us),
		SchedulerBatches: c.SchedulerBatches, SchedulerRequests: c.SchedulerRequests,
		MeanBatchRequests: c.MeanBatchRequests, MeanBatchFill: c.MeanBatchFill,
		PaddedTokens: c.PaddedTokens, PaddingRatio: c.PaddingRatio,
		TokensPerSecond: c.TokensPerSecond, DeviceBusyShare: c.DeviceBusyShare,
		DeviceBusy: us(c.DeviceBusyUs), Uptime: us(c.UptimeUs), QueueCapacity: c.QueueCapacity,
		CompletedByStatus: c.CompletedByStatus, RejectedByStatus: c.RejectedByStatus,
	}, nil
}

// LoadModel loads a raptor model file (see `raptor convert`).
func (e *Engine) LoadModel(path string) (*Model, error) {
	h, err := e.handle()
	if err != nil {
		return nil, err
	}
	p, err := cString(path)
	if err != nil {
		return nil, err
	}
	var m uintptr
	if err := e.lib.call(func() int32 { return e.lib.modelLoad(h, &p[0], &m) }); err != nil {
		return nil, err
	}
	return e.adopt(m)
}

// LoadModelBytes loads a model from a file image in memory; the library
// copies what it needs, so data may be reused afterwards.
func (e *Engine) LoadModelBytes(data []byte) (*Model, error) {
	h, err := e.handle()
	if err != nil {
		return nil, err
	}
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	var m uintptr
	if err := e.lib.call(func() int32 { return e.lib.modelLoadFromMemory(h, p, uintptr(len(data)), &m) }); err != nil {
		return nil, err
	}
	return e.adopt(m)
}

func (e *Engine) adopt(h uintptr) (*Model, error) {
	m := &Model{eng: e, lib: e.lib, h: h}
	info, err := m.Info()
	if err != nil {
		e.lib.modelFree(h)
		return nil, err
	}
	m.info = info
	e.mu.Lock()
	e.models[m] = struct{}{}
	e.mu.Unlock()
	return m, nil
}

// Close frees the engine and its models. Pending requests complete with
// ErrShutdown first. Closing twice does nothing.
func (e *Engine) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	models := e.models
	e.models = nil
	e.mu.Unlock()
	for m := range models {
		m.markClosed()
	}
	e.lib.engineFree(e.h)
}
