package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/raptor-infer/raptor/internal/model"
	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// Model is a model loaded on an engine. Encode is safe for concurrent use.
type Model struct {
	e   *Engine
	cfg loader.Config
	bm  backendModel // the first device's replica
	rep *replicaSet  // one replica per device of the engine (devices.go)

	poolerW, poolerB []float32
	head             *head // task head (heads.go); nil for a bare encoder

	mu     sync.RWMutex
	closed bool
}

// Load validates w's config and the shape of every tensor (status.InvalidModel
// on any mismatch) and loads the model. Load copies what it needs: w may be
// closed when Load returns.
func (e *Engine) Load(w Weights) (*Model, error) {
	if e == nil {
		return nil, status.Errorf(status.InvalidHandle, "nil engine")
	}
	if w == nil {
		return nil, status.Errorf(status.InvalidArgument, "nil weights")
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return nil, status.Errorf(status.Shutdown, "engine is closed")
	}
	p, err := model.Build(w.Config(), w.Float32)
	if err != nil {
		return nil, err
	}
	m := &Model{e: e, cfg: p.Config, poolerW: p.PoolerW, poolerB: p.PoolerB}
	if m.head, err = loadHead(p.Config, w.Float32, p.PoolerW, p.PoolerB); err != nil {
		return nil, err
	}
	bms, sizes, err := e.replicas(p)
	if err != nil {
		return nil, err
	}
	m.rep = &replicaSet{bms: bms, sizes: sizes}
	for _, bm := range bms {
		if bm != nil && m.bm == nil {
			m.bm = bm // the first healthy device's
		}
	}
	c := m.cfg
	e.logf(LogInfo, "loaded %s model: %d layers, hidden %d, %d heads, %s attention", c.Family, c.Layers, c.Hidden, c.Heads, c.Attention)
	return m, nil
}

// Config is the model's configuration.
func (m *Model) Config() loader.Config { return m.cfg }

// Close releases the model after running calls finish; later calls fail
// with status.InvalidHandle. Close is idempotent.
func (m *Model) Close() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		m.rep.release(m.e)
	}
}

// Encode runs the encoder on a packed batch and writes the outputs out asks
// for. Every input is validated first (status.InvalidArgument,
// status.OutOfRange, status.BufferTooSmall); outputs are written only on
// success. ctx is honoured between layers (status.Cancelled or
// status.DeadlineExceeded). A request's outputs are bit-identical whatever
// else shares its batch.
func (m *Model) Encode(ctx context.Context, b *Batch, out *Outputs) (err error) {
	if m == nil {
		return status.Errorf(status.InvalidHandle, "nil model")
	}
	if b == nil || out == nil {
		return status.Errorf(status.InvalidArgument, "nil batch or outputs")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	out.PaddedTokens = 0
	if out.Logits != nil {
		return m.encodeLogits(ctx, b, out) // heads.go: Encode, then the head
	}
	defer func() {
		if r := recover(); r != nil {
			err = status.Errorf(status.Internal, "panic in encode: %v", r)
		}
	}()
	m.e.mu.RLock()
	defer m.e.mu.RUnlock()
	if m.e.closed {
		return status.Errorf(status.Shutdown, "engine is closed")
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return status.Errorf(status.InvalidHandle, "model is closed")
	}
	if err := m.validate(b, out); err != nil {
		return err
	}
	if out.Hidden == nil && out.Pooled == nil && out.HiddenDevice == 0 && out.PooledDevice == 0 {
		return nil
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	mb0 := &model.Batch{Tokens: b.Tokens, CuSeqlens: b.CuSeqlens, TokenTypes: b.TokenTypes, Seeds: b.Seeds}
	if (out.HiddenDevice != 0 || out.PooledDevice != 0) && len(m.e.devs) > 1 {
		return status.Errorf(status.Unsupported, "device-memory outputs need an engine on one device; this one runs on %d", len(m.e.devs))
	}
	dev, err := m.e.pick(ctx, len(b.Tokens))
	if err != nil {
		return err
	}
	defer dev.load.Add(-int64(len(b.Tokens)))
	bm := m.rep.bms[dev.index]
	if bm == nil { // the device failed before the model was loaded (sticky: pick skips it)
		return status.Errorf(status.DeviceFailed, "device %d (ordinal %d) has no copy of the model: it had failed when the model was loaded", dev.index, dev.ordinal)
	}
	if oe, ok := bm.(outputEncoder); ok {
		if err := m.e.run(dev, func() error { return oe.encode(ctx, mb0, out) }); err != nil {
			if e := ctxErr(ctx); e != nil {
				return e
			}
			return err
		}
		return nil
	}
	if out.HiddenDevice != 0 || out.PooledDevice != 0 {
		return status.Errorf(status.Unsupported, "device-memory outputs need the CUDA backend; this engine runs on %s", m.e.be.name())
	}
	T, H := len(b.Tokens), m.cfg.Hidden
	hidden := make([]float32, T*H)
	if err := m.e.run(dev, func() error { return bm.forward(ctx, mb0, hidden) }); err != nil {
		if e := ctxErr(ctx); e != nil {
			return e
		}
		return err
	}
	if out.Pooled != nil {
		m.pool(b, hidden, out)
	}
	if out.Hidden != nil {
		copy(out.Hidden, hidden)
	}
	return nil
}

func ctxErr(ctx context.Context) error {
	switch err := ctx.Err(); {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return status.Wrap(status.DeadlineExceeded, err, "encode")
	default:
		return status.Wrap(status.Cancelled, err, "encode")
	}
}

// validate checks a batch and its outputs against the model.
func (m *Model) validate(b *Batch, out *Outputs) error {
	c := &m.cfg
	T := len(b.Tokens)
	nseq := b.NumSeqs()
	if nseq < 1 || T == 0 {
		return status.Errorf(status.InvalidArgument, "empty batch (%d tokens, %d cu_seqlens)", T, len(b.CuSeqlens))
	}
	if int64(T) > math.MaxInt32 {
		return status.Errorf(status.OutOfRange, "batch of %d tokens", T)
	}
	if b.CuSeqlens[0] != 0 {
		return status.Errorf(status.InvalidArgument, "cu_seqlens[0] = %d, want 0", b.CuSeqlens[0])
	}
	maxLen := c.MaxPositions - c.PositionOffset
	for s := 0; s < nseq; s++ {
		n := int64(b.CuSeqlens[s+1]) - int64(b.CuSeqlens[s])
		if n <= 0 {
			return status.Errorf(status.InvalidArgument, "cu_seqlens not strictly increasing at %d (%d -> %d): empty sequence", s+1, b.CuSeqlens[s], b.CuSeqlens[s+1])
		}
		if n > int64(maxLen) {
			return status.Errorf(status.OutOfRange, "sequence %d has %d tokens, the model allows %d", s, n, maxLen)
		}
	}
	if int(b.CuSeqlens[nseq]) != T {
		return status.Errorf(status.InvalidArgument, "cu_seqlens[%d] = %d, want the token count %d", nseq, b.CuSeqlens[nseq], T)
	}
	if b.TokenTypes != nil && len(b.TokenTypes) != T {
		return status.Errorf(status.InvalidArgument, "%d token types for %d tokens", len(b.TokenTypes), T)
	}
	if b.Seeds != nil && len(b.Seeds) != nseq {
		return status.Errorf(status.InvalidArgument, "%d seeds for %d sequences", len(b.Seeds), nseq)
	}
	for i, t := range b.Tokens {
		if t < 0 || int(t) >= c.VocabSize {
			return status.Errorf(status.OutOfRange, "token %d = %d outside vocabulary [0, %d)", i, t, c.VocabSize)
		}
	}
	for i, t := range b.TokenTypes {
		if t < 0 || int(t) >= c.TypeVocabSize {
			return status.Errorf(status.OutOfRange, "token type %d = %d outside [0, %d)", i, t, c.TypeVocabSize)
		}
	}
	H := c.Hidden
	if out.Hidden != nil && len(out.Hidden) < T*H {
		return status.Errorf(status.BufferTooSmall, "hidden output holds %d floats, needs %d", len(out.Hidden), T*H)
	}
	if (out.Hidden != nil && out.HiddenDevice != 0) || (out.Pooled != nil && out.PooledDevice != 0) {
		return status.Errorf(status.InvalidArgument, "an output has both a host slice and a device pointer")
	}
	if out.Pooled != nil || out.PooledDevice != 0 {
		if out.Pooled != nil && len(out.Pooled) < nseq*H {
			return status.Errorf(status.BufferTooSmall, "pooled output holds %d floats, needs %d", len(out.Pooled), nseq*H)
		}
		switch out.Pooling {
		case PoolCLS, PoolMean:
		case PoolPooler:
			if m.poolerW == nil {
				return status.Errorf(status.InvalidArgument, "pooling %d needs a model with a pooler", out.Pooling)
			}
		default:
			return status.Errorf(status.InvalidArgument, "unknown pooling %d", out.Pooling)
		}
	}
	return m.validateLogits(b, out)
}

// pool writes the pooled vector of every sequence.
func (m *Model) pool(b *Batch, hidden []float32, out *Outputs) {
	H := m.cfg.Hidden
	acc := make([]float64, H)
	for s := 0; s < b.NumSeqs(); s++ {
		start, end := int(b.CuSeqlens[s]), int(b.CuSeqlens[s+1])
		dst := out.Pooled[s*H : (s+1)*H]
		first := hidden[start*H : (start+1)*H]
		switch out.Pooling {
		case PoolCLS:
			copy(dst, first)
		case PoolMean:
			clear(acc)
			for t := start; t < end; t++ {
				for j, v := range hidden[t*H : (t+1)*H] {
					acc[j] += float64(v)
				}
			}
			for j := range dst {
				dst[j] = float32(acc[j] / float64(end-start))
			}
		case PoolPooler:
			for o := range dst {
				w := m.poolerW[o*H : (o+1)*H]
				var sum float64
				for j, v := range first {
					sum += float64(w[j]) * float64(v)
				}
				dst[o] = float32(math.Tanh(sum + float64(m.poolerB[o])))
			}
		}
		if out.Normalize {
			var ss float64
			for _, v := range dst {
				ss += float64(v) * float64(v)
			}
			norm := math.Max(math.Sqrt(ss), 1e-12)
			for j := range dst {
				dst[j] = float32(float64(dst[j]) / norm)
			}
		}
	}
}

// String describes the model.
func (m *Model) String() string {
	return fmt.Sprintf("raptor.Model(%s, %d layers, hidden %d)", m.cfg.Family, m.cfg.Layers, m.cfg.Hidden)
}
