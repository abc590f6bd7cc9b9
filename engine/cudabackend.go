package engine

import (
	"context"

	"github.com/raptor-infer/raptor/internal/cuda"
	"github.com/raptor-infer/raptor/internal/gpu"
	"github.com/raptor-infer/raptor/internal/model"
	"github.com/raptor-infer/raptor/internal/status"
)

// outputEncoder is implemented by backend models that write an encode's
// outputs themselves: pooling on the device, and destinations in device
// memory (Outputs.HiddenDevice, PooledDevice). The CPU backend does not
// implement it; the engine pools its hidden states on the host.
type outputEncoder interface {
	encode(ctx context.Context, b *model.Batch, out *Outputs) error
}

// cudaBackend is the CUDA backend (internal/gpu) behind the seam.
type cudaBackend struct{ b *gpu.Backend }

// openCUDA opens the CUDA backend. The compute dtype must be FP16 or BF16:
// the GPU path has no fp32 compute, so ComputeFP32 is status.Unsupported
// (BackendAuto then serves fp32 on the CPU).
func openCUDA(opts Options, log LogFunc) (backend, error) {
	var dt cuda.DType
	switch opts.Compute {
	case ComputeFP16:
		dt = cuda.F16
	case ComputeBF16:
		dt = cuda.BF16
	case ComputeFP32:
		return nil, status.Errorf(status.Unsupported, "the CUDA backend computes in fp16 or bf16, not fp32 (use the CPU backend for fp32)")
	default:
		return nil, status.Errorf(status.InvalidArgument, "unknown compute dtype %d", opts.Compute)
	}
	b, err := gpu.Open(gpu.Options{Device: opts.Device, CacheDir: opts.KernelCacheDir, DType: dt, Seed: opts.Seed,
		Log: func(l cuda.LogLevel, msg string) { log(LogLevel(l), msg) }})
	if err != nil {
		return nil, err
	}
	return cudaBackend{b}, nil
}

func (c cudaBackend) name() string { return c.b.Name() }
func (c cudaBackend) close()       { c.b.Close() }
func (c cudaBackend) load(p *model.Params) (backendModel, error) {
	m, err := c.b.Load(p)
	if err != nil {
		return nil, err
	}
	return cudaModel{m}, nil
}

type cudaModel struct{ m *gpu.Model }

func (c cudaModel) forward(ctx context.Context, b *model.Batch, hidden []float32) error {
	return c.m.Forward(ctx, b, &gpu.Outputs{Hidden: hidden})
}

func (c cudaModel) encode(ctx context.Context, b *model.Batch, out *Outputs) error {
	o := &gpu.Outputs{Hidden: out.Hidden, HiddenDev: out.HiddenDevice, PooledDev: out.PooledDevice,
		Pooling: gpu.Pooling(out.Pooling), Normalize: out.Normalize}
	if out.Pooled != nil {
		o.Pooled = out.Pooled
	}
	err := c.m.Forward(ctx, b, o)
	out.PaddedTokens = o.PadTokens
	return err
}

func (c cudaModel) release() { c.m.Release() }

// graphShapes is the batch shape of every class the model replays as a
// CUDA graph (Model.Warmup).
func (c cudaModel) graphShapes(maxTokens, maxLen int) []gpu.Shape {
	return c.m.GraphShapes(maxTokens, maxLen)
}

// planShapes is a batch shape per GEMM plan class above the graph limit,
// up to maxTokens (Model.Warmup).
func (c cudaModel) planShapes(maxTokens, maxLen int) []gpu.Shape {
	return c.m.PlanShapes(maxTokens, maxLen)
}

// DeviceOutputs says whether the engine accepts Outputs.HiddenDevice and
// PooledDevice (float32 destinations in its GPU's memory): true on the CUDA
// backend only. The C ABI checks it to refuse device outputs up front.
func (e *Engine) DeviceOutputs() bool {
	if e == nil {
		return false
	}
	_, ok := e.be.(cudaBackend)
	return ok
}

// oneStreamer is implemented by encoders whose device runs the batches of
// all lanes in order on one stream (the CUDA backend: one compute stream per
// device). For them the scheduler keeps no lane for short batches
// (SchedState.ShortOnly does not apply): a short batch formed while a long
// one computes waits for it on the stream anyway, and on the GPU a batch's
// cost is mostly its fixed host enqueue (all-MiniLM-L6-v2 on an H100: about
// 0.7 ms of kernel launches for 100 to 8192 tokens), so capping every other
// batch at a quarter of the budget halved the throughput at saturation
// (bench/RESULTS.md, issue 8).
type oneStreamer interface{ oneStream() bool }

func (m *Model) oneStream() bool {
	_, ok := m.e.be.(cudaBackend)
	return ok
}

// PipelineLanes is the AsyncOptions.Lanes that suits the engine's backend.
// On the GPU it is 3: two lanes take long batches, so batch k+1 is packed,
// uploaded and its kernels enqueued while batch k computes, and one lane is
// kept for short batches. With 2 lanes (one for long batches) a stream of
// 8,192-token BigBird-base batches left a ~1 ms idle gap on the GPU before
// every batch (the next batch is formed only after the previous one
// finished); with 3 the device was busy 99.97% of the time, gaps 1-2 us,
// and the stream ran in 82.6 ms instead of 101.4 ms (TestGPUTimeline, H100,
// bench/RESULTS.md, issue 7). On the CPU it is DefaultLanes: the batches
// share the cores, so more lanes only add latency.
func (e *Engine) PipelineLanes() int {
	if e != nil {
		if _, ok := e.be.(cudaBackend); ok {
			return 3
		}
	}
	return DefaultLanes
}
