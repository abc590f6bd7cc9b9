package raptor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// schedFuncs are the scheduler functions appended to the ABI; a library
// that predates them answers StatusUnsupported.
type schedFuncs struct {
	once                 sync.Once
	err                  error
	submitOptionsDefault func(*cSubmitOptions)
	submitWithOptions    func(uintptr, *cBatch, *cOutput, *cSubmitOptions, uintptr, uintptr, *uintptr) int32
	engineShutdown       func(uintptr, int32, int64) int32
	metricsPrometheus    func(uintptr, *byte, uintptr, *uintptr) int32
}

func (l *Library) sched() (*schedFuncs, error) {
	l.sf.once.Do(func() {
		l.sf.err = l.registerAppended("the scheduler", []symbol{
			{&l.sf.submitOptionsDefault, "raptor_submit_options_default"},
			{&l.sf.submitWithOptions, "raptor_submit_with_options"},
			{&l.sf.engineShutdown, "raptor_engine_shutdown"},
			{&l.sf.metricsPrometheus, "raptor_engine_metrics_prometheus"},
		})
	})
	return &l.sf, l.sf.err
}

// SubmitOptions are a request's scheduling options (raptor_submit_options_t).
// The zero value is the default: priority 0, no deadline, ErrBusy at once
// when the queue is full.
type SubmitOptions struct {
	// Priority: higher runs first (strict priority).
	Priority int32
	// Deadline, relative to the submit: if the request has not completed
	// (started being delivered) by then, it completes with
	// ErrDeadlineExceeded. 0 = none. Microsecond resolution.
	Deadline time.Duration
	// BlockTimeout: how long the submit waits for space in a full queue
	// before ErrBusy; 0 = not at all, negative = no limit.
	BlockTimeout time.Duration
}

// SubmitWithOptions is Submit with a priority, a deadline and blocking on a
// full queue (raptor_submit_with_options).
func (m *Model) SubmitWithOptions(ctx context.Context, seqs [][]int32, opts EncodeOptions, so SubmitOptions) (*Request, error) {
	sf, err := m.lib.sched()
	if err != nil {
		return nil, err
	}
	var c cSubmitOptions
	sf.submitOptionsDefault(&c)
	c.Priority = so.Priority
	if so.Deadline > 0 {
		c.DeadlineUs = max(so.Deadline.Microseconds(), 1)
	} else if so.Deadline < 0 {
		return nil, &Error{Status: StatusInvalidArgument, Msg: fmt.Sprintf("negative deadline %v", so.Deadline)}
	}
	switch {
	case so.BlockTimeout < 0:
		c.BlockTimeoutUs = -1
	case so.BlockTimeout > 0:
		c.BlockTimeoutUs = max(so.BlockTimeout.Microseconds(), 1)
	}
	return m.submit(ctx, seqs, opts, &c)
}

// ShutdownMode says what raptor_engine_shutdown does with pending requests.
type ShutdownMode int32

// Shutdown modes (RAPTOR_SHUTDOWN_*).
const (
	ShutdownDrain  ShutdownMode = 0 // let queued and running requests complete, up to the timeout
	ShutdownCancel ShutdownMode = 1 // complete them with ErrShutdown at once
)

// Shutdown stops the engine's service (raptor_engine_shutdown): new submits,
// encodes and loads get ErrShutdown; pending requests drain (for up to
// timeout; negative = no limit) or are cancelled, and every one completes
// with a status before Shutdown returns. A drain that runs out of time
// returns ErrTimeout (the rest completed with ErrShutdown). The engine stays
// open for Stats and Metrics; Close it afterwards. It must not be called
// from a completion callback.
func (e *Engine) Shutdown(mode ShutdownMode, timeout time.Duration) error {
	sf, err := e.lib.sched()
	if err != nil {
		return err
	}
	h, err := e.handle()
	if err != nil {
		return err
	}
	us := int64(-1)
	if timeout >= 0 {
		us = timeout.Microseconds()
	}
	return e.lib.call(func() int32 { return sf.engineShutdown(h, int32(mode), us) })
}

// Metrics returns the engine's metrics in the Prometheus text exposition
// format (raptor_engine_metrics_prometheus).
func (e *Engine) Metrics() (string, error) {
	sf, err := e.lib.sched()
	if err != nil {
		return "", err
	}
	h, err := e.handle()
	if err != nil {
		return "", err
	}
	var n uintptr
	if err := e.lib.call(func() int32 { return sf.metricsPrometheus(h, nil, 0, &n) }); err != nil {
		return "", err
	}
	for range 8 { // the text grows between the size query and the call: slack, then retry
		buf := make([]byte, n+4096)
		err := e.lib.call(func() int32 { return sf.metricsPrometheus(h, &buf[0], uintptr(len(buf)), &n) })
		if err == nil {
			return string(buf[:n]), nil
		}
		if !errors.Is(err, ErrBufferTooSmall) {
			return "", err
		}
		n = uintptr(len(buf)) * 2
	}
	return "", &Error{Status: StatusInternal, Msg: "the metrics text kept growing"}
}
