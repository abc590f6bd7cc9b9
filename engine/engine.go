package engine

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/raptor-infer/raptor/internal/blas"
	"github.com/raptor-infer/raptor/internal/cpu"
	"github.com/raptor-infer/raptor/internal/status"
)

// Engine owns a compute backend and the models loaded on it. Its methods are
// safe for concurrent use.
type Engine struct {
	opts Options
	log  LogFunc
	be   backend

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
	case BackendAuto:
		be, err := openCUDA(opts, e.log)
		if err == nil {
			e.be = be
			e.logf(LogInfo, "engine ready: %s", e.be.name())
			return e, nil
		}
		switch status.CodeOf(err) {
		case status.BackendUnavailable, status.Unsupported:
			msg := strings.Join(strings.Fields(err.Error()), " ") // one line
			e.logf(LogInfo, "no GPU backend available, using the CPU backend: %s", msg)
		default:
			return nil, err
		}
	case BackendCPU:
	case BackendCUDA:
		be, err := openCUDA(opts, e.log)
		if err != nil {
			return nil, err
		}
		e.be = be
		e.logf(LogInfo, "engine ready: %s", e.be.name())
		return e, nil
	default:
		return nil, status.Errorf(status.InvalidArgument, "unknown backend %d", opts.Backend)
	}
	threads := opts.Threads
	if threads == 0 {
		threads = runtime.NumCPU()
	}
	g, packed, note := blas.Open(opts.BLAS)
	e.logf(LogInfo, "%s", note)
	e.be = cpuBackend{cpu.New(threads, g, packed, opts.Seed)}
	e.logf(LogInfo, "engine ready: %s", e.be.name())
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
	e.be.close()
	return nil
}
