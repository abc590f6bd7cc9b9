package hf

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// hfConfig holds the config.json fields the converter reads. Pointers tell
// absent fields from zero values.
type hfConfig struct {
	ModelType             string   `json:"model_type"`
	Architectures         []string `json:"architectures"`
	VocabSize             int      `json:"vocab_size"`
	HiddenSize            int      `json:"hidden_size"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	NumAttentionHeads     int      `json:"num_attention_heads"`
	IntermediateSize      int      `json:"intermediate_size"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
	TypeVocabSize         *int     `json:"type_vocab_size"`
	LayerNormEps          *float64 `json:"layer_norm_eps"`
	HiddenAct             *string  `json:"hidden_act"`
	PadTokenID            *int     `json:"pad_token_id"`
	PositionEmbeddingType *string  `json:"position_embedding_type"`
	IsDecoder             bool     `json:"is_decoder"`
	AddCrossAttention     bool     `json:"add_cross_attention"`
	// BigBird
	AttentionType     *string `json:"attention_type"`
	BlockSize         *int    `json:"block_size"`
	NumRandomBlocks   *int    `json:"num_random_blocks"`
	RescaleEmbeddings bool    `json:"rescale_embeddings"`
	UseBias           *bool   `json:"use_bias"`
}

// activations maps HF hidden_act names to raptor activations. "gelu_fast"
// and "gelu_accurate" are the same tanh formula as "gelu_new" with the
// constants written differently.
var activations = map[string]loader.Activation{
	"gelu":              loader.ActGELU,
	"gelu_python":       loader.ActGELU,
	"gelu_new":          loader.ActGELUTanh,
	"gelu_pytorch_tanh": loader.ActGELUTanh,
	"gelu_python_tanh":  loader.ActGELUTanh,
	"gelu_fast":         loader.ActGELUTanh,
	"gelu_accurate":     loader.ActGELUTanh,
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return status.Wrap(status.IO, err, "read "+filepath.Base(path))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return status.Errorf(status.InvalidModel, "%s: bad JSON: %v", path, err)
	}
	return nil
}

// configFrom maps an HF config.json onto a raptor Config (without dtype,
// pooler and tokenizer, which come from elsewhere).
func configFrom(c *hfConfig) (loader.Config, error) {
	unsupported := func(format string, args ...any) (loader.Config, error) {
		return loader.Config{}, status.Errorf(status.Unsupported, "config.json: %s", fmt.Sprintf(format, args...))
	}
	var cfg loader.Config
	switch c.ModelType {
	case "bert":
		cfg.Family = loader.FamilyBERT
	case "roberta", "xlm-roberta":
		cfg.Family = loader.FamilyRoBERTa
	case "big_bird":
		cfg.Family = loader.FamilyBigBird
	default:
		return unsupported("model_type %q is not supported (bert, roberta, xlm-roberta, big_bird)", c.ModelType)
	}
	if c.IsDecoder || c.AddCrossAttention {
		return unsupported("decoder models (is_decoder, add_cross_attention) are not supported")
	}
	if p := c.PositionEmbeddingType; p != nil && *p != "absolute" {
		return unsupported("position_embedding_type %q is not supported (absolute only)", *p)
	}
	if c.RescaleEmbeddings {
		return unsupported("rescale_embeddings=true is not supported")
	}
	if c.UseBias != nil && !*c.UseBias {
		return unsupported("use_bias=false is not supported")
	}
	act := "gelu"
	if c.HiddenAct != nil {
		act = *c.HiddenAct
	}
	a, ok := activations[act]
	if !ok {
		return unsupported("hidden_act %q is not supported (gelu, gelu_python: exact; gelu_new, gelu_pytorch_tanh, gelu_python_tanh, gelu_fast, gelu_accurate: tanh approximation)", act)
	}
	cfg.Activation = a
	cfg.VocabSize, cfg.Hidden, cfg.Layers = c.VocabSize, c.HiddenSize, c.NumHiddenLayers
	cfg.Heads, cfg.Intermediate, cfg.MaxPositions = c.NumAttentionHeads, c.IntermediateSize, c.MaxPositionEmbeddings
	cfg.TypeVocabSize = 2
	if c.TypeVocabSize != nil {
		cfg.TypeVocabSize = *c.TypeVocabSize
	}
	cfg.LayerNormEps = 1e-12
	if c.LayerNormEps != nil {
		cfg.LayerNormEps = float32(*c.LayerNormEps)
	}
	cfg.PadTokenID = -1
	if c.PadTokenID != nil {
		cfg.PadTokenID = *c.PadTokenID
	}
	// Position ids: BERT and BigBird count from 0 (BigBirdEmbeddings uses
	// arange(max_position_embeddings)); RoBERTa from padding_idx + 1
	// (create_position_ids_from_input_ids).
	if cfg.Family == loader.FamilyRoBERTa {
		if c.PadTokenID == nil || *c.PadTokenID < 0 {
			return unsupported("a RoBERTa config needs pad_token_id (position ids start at pad_token_id + 1)")
		}
		cfg.PositionOffset = *c.PadTokenID + 1
	}
	if cfg.Family == loader.FamilyBigBird {
		at := "block_sparse"
		if c.AttentionType != nil {
			at = *c.AttentionType
		}
		switch at {
		case "block_sparse":
			cfg.Attention, cfg.BlockSize, cfg.RandomBlocks = loader.AttentionBlockSparse, 64, 3
			if c.BlockSize != nil {
				cfg.BlockSize = *c.BlockSize
			}
			if c.NumRandomBlocks != nil {
				cfg.RandomBlocks = *c.NumRandomBlocks
			}
		case "original_full":
			cfg.Attention = loader.AttentionDense
		default:
			return unsupported("attention_type %q is not supported (block_sparse, original_full)", at)
		}
	}
	return cfg, nil
}
