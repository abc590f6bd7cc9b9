package engine

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/raptor-infer/raptor/internal/status"
)

// Engine owns a compute backend and the models loaded on it. Its methods are
// safe for concurrent use.
type Engine struct {
	opts Options
	log  LogFunc
	be   backend   // the first device's backend
	devs []*device // every device, in the order selected (devices.go)

	mu     sync.RWMutex // held for reading by every running call, for writing by Close
	closed bool
}

// New starts an engine. BackendCUDA opens the CUDA backend (internal/gpu)
// or fails with its error (status.BackendUnavailable when no usable GPU or
// CUDA library is found; status.Unsupported for ComputeFP32). BackendAuto
// tries the CUDA backend and, when it is unavailable (or the compute dtype
// is fp32), logs one line and runs on the CPU.
func New(opts Options) (*Engine, error) {
	e := &Engine{opts: opts, log: opts.Log}
	if e.log == nil {
		e.log = stderrLog
	}
	if opts.Threads < 0 {
		return nil, status.Errorf(status.InvalidArgument, "threads = %d", opts.Threads)
	}
	switch opts.Backend {
	case BackendAuto, BackendCPU, BackendCUDA:
	default:
		return nil, status.Errorf(status.InvalidArgument, "unknown backend %d", opts.Backend)
	}
	ordinals, err := opts.deviceList()
	if err != nil {
		return nil, err
	}
	if err := e.openDevices(opts, ordinals); err != nil {
		return nil, err
	}
	e.be = e.devs[0].be
	if len(e.devs) == 1 {
		e.logf(LogInfo, "engine ready: %s", e.be.name())
	} else {
		e.logf(LogInfo, "engine ready on %d devices: %s", len(e.devs), e.BackendName())
	}
	return e, nil
}

var levelNames = [...]string{LogDebug: "DEBUG", LogInfo: "INFO", LogWarn: "WARN", LogError: "ERROR"}

// stderrLog is the default logger: LogInfo and above to stderr (never stdout).
func stderrLog(level LogLevel, msg string) {
	if level < LogInfo {
		return
	}
	name := "LOG"
	if int(level) < len(levelNames) {
		name = levelNames[level]
	}
	fmt.Fprintf(os.Stderr, "raptor %s: %s\n", name, msg)
}

func (e *Engine) logf(level LogLevel, format string, args ...any) {
	e.log(level, fmt.Sprintf(format, args...))
}

// BackendName describes the backend, e.g. "cpu (2 threads, gemm OpenBLAS 0.3.21 Haswell)".
func (e *Engine) BackendName() string {
	if e == nil {
		return ""
	}
	if len(e.devs) > 1 {
		names := make([]string, len(e.devs))
		for i, d := range e.devs {
			names[i] = fmt.Sprintf("[%d] %s", d.ordinal, d.be.name())
		}
		return fmt.Sprintf("%d devices: %s", len(e.devs), strings.Join(names, "; "))
	}
	return e.be.name()
}

// Close waits for running calls, then releases the backend. Models of a
// closed engine fail with status.Shutdown. Close is idempotent.
func (e *Engine) Close() error {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	for _, d := range e.devs {
		d.be.close()
	}
	return nil
}
