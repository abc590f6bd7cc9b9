package loader

import "fmt"

// Canonical tensor names inside a raptor weight file. They follow HuggingFace's
// BertModel naming with the model prefix ("bert.", "roberta.", ...) removed.
// Linear weights are stored as HF stores them: [out_features, in_features].
const (
	TensorWordEmb      = "embeddings.word_embeddings.weight"       // [vocab, hidden]
	TensorPosEmb       = "embeddings.position_embeddings.weight"   // [max_positions, hidden]
	TensorTypeEmb      = "embeddings.token_type_embeddings.weight" // [type_vocab, hidden]
	TensorEmbLNWeight  = "embeddings.LayerNorm.weight"             // [hidden]
	TensorEmbLNBias    = "embeddings.LayerNorm.bias"               // [hidden]
	TensorPoolerWeight = "pooler.dense.weight"                     // [hidden, hidden]
	TensorPoolerBias   = "pooler.dense.bias"                       // [hidden]
)

// Per-layer tensor name suffixes; LayerTensor joins them with the layer prefix.
const (
	LayerQueryWeight   = "attention.self.query.weight"       // [hidden, hidden]
	LayerQueryBias     = "attention.self.query.bias"         // [hidden]
	LayerKeyWeight     = "attention.self.key.weight"         // [hidden, hidden]
	LayerKeyBias       = "attention.self.key.bias"           // [hidden]
	LayerValueWeight   = "attention.self.value.weight"       // [hidden, hidden]
	LayerValueBias     = "attention.self.value.bias"         // [hidden]
	LayerAttnOutWeight = "attention.output.dense.weight"     // [hidden, hidden]
	LayerAttnOutBias   = "attention.output.dense.bias"       // [hidden]
	LayerAttnLNWeight  = "attention.output.LayerNorm.weight" // [hidden]
	LayerAttnLNBias    = "attention.output.LayerNorm.bias"   // [hidden]
	LayerInterWeight   = "intermediate.dense.weight"         // [intermediate, hidden]
	LayerInterBias     = "intermediate.dense.bias"           // [intermediate]
	LayerOutWeight     = "output.dense.weight"               // [hidden, intermediate]
	LayerOutBias       = "output.dense.bias"                 // [hidden]
	LayerOutLNWeight   = "output.LayerNorm.weight"           // [hidden]
	LayerOutLNBias     = "output.LayerNorm.bias"             // [hidden]
)

// LayerTensor returns the canonical name of a per-layer tensor.
func LayerTensor(layer int, suffix string) string {
	return fmt.Sprintf("encoder.layer.%d.%s", layer, suffix)
}
