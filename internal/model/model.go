// Package model holds an encoder's validated float32 weights, in the
// canonical layout every backend starts from, and the packed batch a backend
// computes. It is the data side of the engine/backend seam.
package model

import (
	"fmt"
	"math"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// Params are a model's weights. Linear weights are [out, in], as HF stores
// them. Every slice is owned by Params (copied from the source).
type Params struct {
	Config  loader.Config
	WordEmb []float32 // [vocab, hidden]
	PosEmb  []float32 // [max_positions, hidden]
	TypeEmb []float32 // [type_vocab, hidden]
	EmbLNW  []float32 // [hidden]
	EmbLNB  []float32 // [hidden]
	Layers  []Layer
	PoolerW []float32 // [hidden, hidden], nil unless Config.Pooler
	PoolerB []float32 // [hidden], nil unless Config.Pooler
}

// Layer is one encoder layer's weights.
type Layer struct {
	QKVW     []float32 // [3*hidden, hidden]: query, key, value weights stacked
	QKVB     []float32 // [3*hidden]
	AttnOutW []float32 // [hidden, hidden]
	AttnOutB []float32 // [hidden]
	AttnLNW  []float32 // [hidden]
	AttnLNB  []float32 // [hidden]
	InterW   []float32 // [intermediate, hidden]
	InterB   []float32 // [intermediate]
	OutW     []float32 // [hidden, intermediate]
	OutB     []float32 // [hidden]
	OutLNW   []float32 // [hidden]
	OutLNB   []float32 // [hidden]
}

// Source returns a tensor's float32 elements and shape by canonical name
// (loader/names.go).
type Source func(name string) (data []float32, shape []int, err error)

// Limits on a config's dimensions, far above any real encoder; they keep a
// corrupt config from asking for absurd allocations.
const (
	maxDim    = 1 << 16
	maxVocab  = 1 << 24
	maxLayers = 1 << 10
)

// ValidateConfig checks that cfg describes a model raptor can run.
func ValidateConfig(cfg loader.Config) error {
	bad := func(format string, args ...any) error {
		return status.Errorf(status.InvalidModel, "invalid model config: "+format, args...)
	}
	switch cfg.Family {
	case loader.FamilyBERT, loader.FamilyRoBERTa, loader.FamilyBigBird:
	default:
		return bad("unknown family %v", cfg.Family)
	}
	switch cfg.Activation {
	case loader.ActGELU, loader.ActGELUTanh:
	default:
		return bad("unknown activation %v", cfg.Activation)
	}
	for _, d := range []struct {
		name  string
		v, hi int
	}{
		{"vocab_size", cfg.VocabSize, maxVocab}, {"hidden", cfg.Hidden, maxDim}, {"layers", cfg.Layers, maxLayers},
		{"heads", cfg.Heads, maxDim}, {"intermediate", cfg.Intermediate, 4 * maxDim},
		{"max_positions", cfg.MaxPositions, maxVocab}, {"type_vocab_size", cfg.TypeVocabSize, maxVocab},
	} {
		if d.v < 1 || d.v > d.hi {
			return bad("%s = %d, want 1..%d", d.name, d.v, d.hi)
		}
	}
	if cfg.Hidden%cfg.Heads != 0 {
		return bad("hidden %d is not a multiple of heads %d", cfg.Hidden, cfg.Heads)
	}
	if !(cfg.LayerNormEps > 0) || math.IsInf(float64(cfg.LayerNormEps), 0) {
		return bad("layer_norm_eps = %g", cfg.LayerNormEps)
	}
	if cfg.PositionOffset < 0 || cfg.PositionOffset >= cfg.MaxPositions {
		return bad("position_offset %d outside [0, max_positions %d)", cfg.PositionOffset, cfg.MaxPositions)
	}
	switch cfg.Attention {
	case loader.AttentionDense:
	case loader.AttentionBlockSparse:
		if cfg.BlockSize < 1 || cfg.BlockSize > 4096 {
			return bad("block_size = %d, want 1..4096", cfg.BlockSize)
		}
		if cfg.RandomBlocks < 0 || cfg.RandomBlocks > 64 {
			return bad("random_blocks = %d, want 0..64", cfg.RandomBlocks)
		}
	default:
		return bad("unknown attention %v", cfg.Attention)
	}
	return nil
}

// Build validates cfg and the shape of every tensor it needs, and copies the
// tensors into a new Params. Errors are status.InvalidModel.
func Build(cfg loader.Config, get Source) (*Params, error) {
	if err := ValidateConfig(cfg); err != nil {
		return nil, err
	}
	h, in := cfg.Hidden, cfg.Intermediate
	var firstErr error
	fetch := func(name string, shape ...int) []float32 {
		if firstErr != nil {
			return nil
		}
		data, got, err := get(name)
		if err != nil {
			firstErr = status.Wrap(status.InvalidModel, err, "tensor "+name)
			return nil
		}
		n := 1
		for _, d := range shape {
			n *= d
		}
		if !equalShape(got, shape) || len(data) != n {
			firstErr = status.Errorf(status.InvalidModel, "tensor %s: shape %v with %d elements, want %v", name, got, len(data), shape)
			return nil
		}
		return append([]float32(nil), data...)
	}
	p := &Params{Config: cfg}
	p.WordEmb = fetch(loader.TensorWordEmb, cfg.VocabSize, h)
	p.PosEmb = fetch(loader.TensorPosEmb, cfg.MaxPositions, h)
	p.TypeEmb = fetch(loader.TensorTypeEmb, cfg.TypeVocabSize, h)
	p.EmbLNW = fetch(loader.TensorEmbLNWeight, h)
	p.EmbLNB = fetch(loader.TensorEmbLNBias, h)
	p.Layers = make([]Layer, cfg.Layers)
	for l := range p.Layers {
		t := func(suffix string, shape ...int) []float32 { return fetch(loader.LayerTensor(l, suffix), shape...) }
		q, k, v := t(loader.LayerQueryWeight, h, h), t(loader.LayerKeyWeight, h, h), t(loader.LayerValueWeight, h, h)
		qb, kb, vb := t(loader.LayerQueryBias, h), t(loader.LayerKeyBias, h), t(loader.LayerValueBias, h)
		p.Layers[l] = Layer{
			QKVW:     concat(q, k, v),
			QKVB:     concat(qb, kb, vb),
			AttnOutW: t(loader.LayerAttnOutWeight, h, h),
			AttnOutB: t(loader.LayerAttnOutBias, h),
			AttnLNW:  t(loader.LayerAttnLNWeight, h),
			AttnLNB:  t(loader.LayerAttnLNBias, h),
			InterW:   t(loader.LayerInterWeight, in, h),
			InterB:   t(loader.LayerInterBias, in),
			OutW:     t(loader.LayerOutWeight, h, in),
			OutB:     t(loader.LayerOutBias, h),
			OutLNW:   t(loader.LayerOutLNWeight, h),
			OutLNB:   t(loader.LayerOutLNBias, h),
		}
	}
	if cfg.Pooler {
		p.PoolerW = fetch(loader.TensorPoolerWeight, h, h)
		p.PoolerB = fetch(loader.TensorPoolerBias, h)
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return p, nil
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func concat(parts ...[]float32) []float32 {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]float32, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Batch is a validated packed batch (see engine.Batch): token ids back to
// back, cu_seqlens offsets, token types (nil = all 0) and per-request seeds
// (nil = all 0).
type Batch struct {
	Tokens     []int32
	CuSeqlens  []int32
	TokenTypes []int32
	Seeds      []uint64
}

// NumSeqs is the number of sequences.
func (b *Batch) NumSeqs() int { return len(b.CuSeqlens) - 1 }

// Seq returns sequence s's token range [start, end).
func (b *Batch) Seq(s int) (start, end int) { return int(b.CuSeqlens[s]), int(b.CuSeqlens[s+1]) }

// Seed returns sequence s's request seed.
func (b *Batch) Seed(s int) uint64 {
	if b.Seeds == nil {
		return 0
	}
	return b.Seeds[s]
}

// String describes the batch briefly.
func (b *Batch) String() string {
	return fmt.Sprintf("batch(%d seqs, %d tokens)", b.NumSeqs(), len(b.Tokens))
}
