package engine

import (
	"github.com/raptor-infer/raptor/internal/plan"
	"github.com/raptor-infer/raptor/loader"
)

// SequenceCost is the scheduler's cost model: the floating-point operations
// of one sequence of n tokens through the encoder of config c.
//
//   - The linear layers cost 2·(4·H² + 2·H·I) per token and layer (Q, K, V
//     and the attention output, and the two FFN matrices).
//   - Attention costs 4·H per (query, key) pair and layer (Q·Kᵀ and P·V over
//     all heads). A dense sequence attends n² pairs. A block-sparse one
//     (block b, r random blocks, nb = ⌈n/b⌉ blocks) attends b² pairs per
//     (query block, key block): the two global rows nb key blocks each, every
//     middle row 3 (window) + 2 (global) + r (random) key blocks, about 8.
//
// Embeddings, LayerNorm, softmax and the activation are linear in n and small
// next to the GEMMs; they are left out. The scheduler only compares costs and
// divides them by a measured rate, so the unit does not matter.
func SequenceCost(c loader.Config, n int) float64 {
	if n <= 0 {
		return 0
	}
	H, I, L := float64(c.Hidden), float64(c.Intermediate), float64(c.Layers)
	lin := 2 * (4*H*H + 2*H*I) * float64(n)
	var pairs float64
	if c.Attention == loader.AttentionBlockSparse && c.BlockSize > 0 && !plan.IsDense(n, c.BlockSize, c.RandomBlocks) {
		b := float64(c.BlockSize)
		nb := float64((n + c.BlockSize - 1) / c.BlockSize)
		pairs = b * b * (2*nb + (nb-2)*float64(5+c.RandomBlocks))
	} else {
		pairs = float64(n) * float64(n)
	}
	return L * (lin + 4*H*pairs)
}

// coster is implemented by encoders that know the cost of a sequence (*Model
// does); other encoders cost one unit per token.
type coster interface {
	seqCost(n int) float64
}

// merger is implemented by encoders whose requests may share one batch
// (*Model does): the scheduler concatenates their sequences, encodes the
// hidden states once, and forms each request's pooled vectors and logits
// from its own rows. An encoder that is not a merger runs every request as
// a batch of its own, and so does a request with device-memory outputs.
type merger interface {
	// hiddenSize is the width of one token's hidden state.
	hiddenSize() int
	// fromHidden writes out.Pooled and out.Logits (those not nil) for b from
	// b's last hidden states (hidden[:T*hiddenSize()], packed like b). Both
	// depend on each sequence's own rows only, so the result is the one
	// Encode gives for b alone.
	fromHidden(b *Batch, hidden []float32, out *Outputs)
}

func (m *Model) seqCost(n int) float64 { return SequenceCost(m.cfg, n) }

func (m *Model) hiddenSize() int { return m.cfg.Hidden }

func (m *Model) fromHidden(b *Batch, hidden []float32, out *Outputs) {
	if out.Pooled != nil {
		m.pool(b, hidden, out)
	}
	if out.Logits != nil && m.head != nil {
		m.head.apply(b, hidden, out.Logits)
	}
}
