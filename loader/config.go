package loader

import "fmt"

// Family is the architecture family of an encoder.
type Family uint8

const (
	FamilyBERT    Family = 0
	FamilyRoBERTa Family = 1
	FamilyBigBird Family = 2
)

func (f Family) String() string {
	switch f {
	case FamilyBERT:
		return "bert"
	case FamilyRoBERTa:
		return "roberta"
	case FamilyBigBird:
		return "bigbird"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// Activation is the FFN activation function.
type Activation uint8

const (
	ActGELU     Activation = 0 // exact erf GELU ("gelu")
	ActGELUTanh Activation = 1 // tanh approximation ("gelu_new", "gelu_pytorch_tanh")
)

func (a Activation) String() string {
	switch a {
	case ActGELU:
		return "gelu"
	case ActGELUTanh:
		return "gelu_tanh"
	}
	return fmt.Sprintf("activation(%d)", uint8(a))
}

// AttentionKind selects dense or BigBird block-sparse attention.
type AttentionKind uint8

const (
	AttentionDense       AttentionKind = 0
	AttentionBlockSparse AttentionKind = 1
)

func (a AttentionKind) String() string {
	switch a {
	case AttentionDense:
		return "dense"
	case AttentionBlockSparse:
		return "block_sparse"
	}
	return fmt.Sprintf("attention(%d)", uint8(a))
}

// DType is the element type of a stored tensor.
type DType uint8

const (
	F32  DType = 0
	F16  DType = 1
	BF16 DType = 2
)

// Size is the size of one element in bytes.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	}
	return 0
}

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case F16:
		return "f16"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// Config is the model configuration stored in a weight file.
type Config struct {
	Family         Family
	VocabSize      int
	Hidden         int
	Layers         int
	Heads          int
	Intermediate   int
	MaxPositions   int
	TypeVocabSize  int
	LayerNormEps   float32
	Activation     Activation
	PositionOffset int // first position id; RoBERTa/BigBird-from-RoBERTa: padding_idx+1, BERT: 0
	PadTokenID     int
	Attention      AttentionKind
	BlockSize      int // block_sparse only
	RandomBlocks   int // block_sparse only
	Pooler         bool
	DType          DType // dtype the weights are stored in
	// Tokenizer is the WordPiece tokenizer carried in the file; nil when the
	// file has none. Shared, read-only.
	Tokenizer *TokenizerSpec
	// Head is the task head carried in the file; nil when the file has none
	// (see loader/heads.go). Shared, read-only.
	Head *HeadSpec
}

// HeadDim is Hidden / Heads.
func (c *Config) HeadDim() int { return c.Hidden / c.Heads }
