// Package engine runs transformer encoders (BERT, RoBERTa, BigBird) on packed,
// variable-length batches. A backend (the float32 CPU reference, or CUDA) sits
// behind one seam; everything above it — validation, pooling, the attention
// plan, the request queue — is shared.
package engine

import (
	"time"

	"github.com/raptor-infer/raptor/loader"
)

// BackendKind selects the compute backend.
type BackendKind int32

const (
	BackendAuto BackendKind = 0 // CUDA when a usable GPU is found, CPU otherwise
	BackendCPU  BackendKind = 1
	BackendCUDA BackendKind = 2
)

// ComputeDType is the precision the backend computes in. The CPU backend
// always computes in float32 and accepts any value. The values equal the C
// ABI's raptor_dtype_t.
type ComputeDType int32

const (
	ComputeFP32 ComputeDType = 0
	ComputeFP16 ComputeDType = 1
	ComputeBF16 ComputeDType = 2
)

// LogLevel is the severity of a log message.
type LogLevel int32

const (
	LogDebug LogLevel = 0
	LogInfo  LogLevel = 1
	LogWarn  LogLevel = 2
	LogError LogLevel = 3
)

// LogFunc receives the library's log messages. It may be called from any
// goroutine and must not block for long.
type LogFunc func(level LogLevel, msg string)

// Options configure an Engine. Start from DefaultOptions.
type Options struct {
	Backend BackendKind
	Device  int // the GPU ordinal when Devices is nil and AllDevices false
	// Devices lists the GPU ordinals to serve on: one engine per device in
	// this process, each with its own copy of every model's weights, and
	// the requests spread across them by load (devices.go). nil = the one
	// Device; an empty list, a negative or repeated ordinal is
	// status.InvalidArgument. On the CPU backend each listed ordinal is one
	// CPU replica sharing the Threads (a development and test aid).
	Devices []int
	// AllDevices serves on every GPU the driver lists (the CPU backend is
	// one device). It excludes Devices.
	AllDevices     bool
	Compute        ComputeDType
	MaxBatchTokens int           // token budget of one batch
	MaxQueueDelay  time.Duration // how long a request may wait for a batch to fill
	Threads        int           // CPU worker threads; 0 = runtime.NumCPU()
	KernelCacheDir string        // "" = user cache dir
	Seed           uint64        // engine seed of the attention plan's random blocks
	QueueCapacity  int           // max pending async requests; 0 = default
	Log            LogFunc       // nil = stderr at LogInfo and above
	// BLAS selects the CPU backend's GEMMs: "" = the RAPTOR_BLAS environment
	// variable, else "auto" (OpenBLAS where found, and raptor's packed
	// AVX2+FMA kernel for the linear layers where the CPU has it);
	// "openblas" = OpenBLAS for everything; "off" = pure Go; a path = that
	// shared library's cblas_sgemm. See internal/blas.Open.
	BLAS string
}

// DefaultOptions returns the default engine options.
func DefaultOptions() Options {
	return Options{
		Backend:        BackendAuto,
		Compute:        ComputeFP16,
		MaxBatchTokens: 16384,
		MaxQueueDelay:  2 * time.Millisecond,
		QueueCapacity:  1024,
	}
}

// Weights is what the engine needs from a model file: its config and its
// tensors converted to float32. *loader.File implements it.
type Weights interface {
	Config() loader.Config
	// Float32 returns the tensor's elements as float32 and its shape.
	Float32(name string) (data []float32, shape []int, err error)
}

// Batch is a packed batch: the token ids of all sequences back to back.
type Batch struct {
	Tokens     []int32  // all tokens, T = len(Tokens)
	CuSeqlens  []int32  // len nseq+1; CuSeqlens[0] = 0, strictly increasing, last = T
	TokenTypes []int32  // nil (all zero) or len T
	Seeds      []uint64 // nil (all zero) or len nseq: per-request seeds of the attention plan
}

// NumSeqs is the number of sequences in the batch.
func (b *Batch) NumSeqs() int {
	if len(b.CuSeqlens) == 0 {
		return 0
	}
	return len(b.CuSeqlens) - 1
}

// Pooling selects how a sequence's pooled embedding is formed.
type Pooling int32

const (
	PoolCLS  Pooling = 0 // the first token's hidden state
	PoolMean Pooling = 1 // mean over the sequence's tokens (sentence-transformers)
	// PoolPooler is HF's pooler_output, tanh(W h_first + b); it needs a model
	// with Config.Pooler.
	PoolPooler Pooling = 2
)

// Outputs are caller-provided destinations. Nil slices (and zero device
// pointers) are not computed.
type Outputs struct {
	Hidden []float32 // nil, or at least T*hidden: last hidden states, packed
	Pooled []float32 // nil, or at least nseq*hidden
	// HiddenDevice and PooledDevice are float32 destinations in the memory
	// of the engine's GPU (CUDA backend only; status.Unsupported on the
	// CPU), holding at least T*hidden and nseq*hidden floats; the caller
	// vouches for their size. Each excludes its host slice.
	HiddenDevice, PooledDevice uintptr
	Pooling                    Pooling
	Normalize                  bool // L2-normalise pooled vectors
	// Logits: nil, or at least the LogitsShape of the batch (rows*cols
	// floats) for a model with a task head (status.Unsupported without one).
	// Computed on the host from the last hidden states (see heads.go).
	Logits []float32
	// PaddedTokens is set by Encode: padding tokens computed with the batch.
	// Batches are packed, so it is 0 except on the CUDA backend, which runs
	// a batch of at most RAPTOR_CUDA_GRAPHS tokens (default 8192 for models
	// up to 512 wide, else 4096) and 1/16 as many sequences padded to a
	// token-count class (at most 12.5% more tokens above 64) as a CUDA graph;
	// the padding's outputs are dropped.
	PaddedTokens int
}
