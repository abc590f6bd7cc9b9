package engine

import (
	"context"

	"github.com/raptor-infer/raptor/internal/cpu"
	"github.com/raptor-infer/raptor/internal/model"
)

// backend is the seam between the shared engine (validation, pooling,
// requests) and a compute backend. The CUDA backend will implement it too.
type backend interface {
	// name describes the backend for logs and Engine.BackendName.
	name() string
	// load takes ownership of p and prepares it for forward passes.
	load(p *model.Params) (backendModel, error)
	// close releases the backend; no model of it runs afterwards.
	close()
}

// backendModel is a model loaded on a backend.
type backendModel interface {
	// forward writes the last hidden states of a validated batch into
	// hidden[:T*Hidden]. It may be called concurrently; it returns
	// ctx.Err() when ctx ends before it completes.
	forward(ctx context.Context, b *model.Batch, hidden []float32) error
	release()
}

type cpuBackend struct{ b *cpu.Backend }

func (c cpuBackend) name() string { return c.b.Name() }
func (c cpuBackend) close()       { c.b.Close() }
func (c cpuBackend) load(p *model.Params) (backendModel, error) {
	return cpuModel{c.b.Load(p)}, nil
}

type cpuModel struct{ m *cpu.Model }

func (c cpuModel) forward(ctx context.Context, b *model.Batch, hidden []float32) error {
	return c.m.Forward(ctx, b, hidden)
}
func (c cpuModel) release() { c.m.Release() }
