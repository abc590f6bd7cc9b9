package loader

import (
	"fmt"
	"unicode/utf8"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/raptor-infer/raptor/loader/internal/fb"
)

// HeadKind is the task a model's head computes logits for.
type HeadKind uint8

const (
	// HeadNone: a bare encoder (hidden states and pooled embeddings only).
	HeadNone HeadKind = 0
	// HeadSequenceClassification: logits [num_seqs, num_labels] from the
	// first token of each sequence.
	HeadSequenceClassification HeadKind = 1
	// HeadTokenClassification: logits [num_tokens, num_labels], one row per
	// token, packed like the input.
	HeadTokenClassification HeadKind = 2
	// HeadQuestionAnswering: start and end logits per token, stored as
	// [num_tokens, 2] (column 0 start, column 1 end).
	HeadQuestionAnswering HeadKind = 3
)

func (k HeadKind) String() string {
	switch k {
	case HeadNone:
		return "none"
	case HeadSequenceClassification:
		return "sequence_classification"
	case HeadTokenClassification:
		return "token_classification"
	case HeadQuestionAnswering:
		return "question_answering"
	}
	return fmt.Sprintf("head(%d)", uint8(k))
}

// HeadVariant is how a head turns the last hidden states into logits (the
// HF module it mirrors). See the Tensor*Head* names for the tensors each
// variant needs.
type HeadVariant uint8

const (
	// HeadLinear: one linear layer per token: classifier.* (token
	// classification) or qa_outputs.* (question answering).
	HeadLinear HeadVariant = 0
	// HeadPooler: BERT sequence classification,
	// classifier(tanh(pooler.dense(h_first))); needs Config.Pooler.
	HeadPooler HeadVariant = 1
	// HeadDenseTanh: RoBERTa's classification head,
	// classifier.out_proj(tanh(classifier.dense(h_first))).
	HeadDenseTanh HeadVariant = 2
	// HeadDenseAct: BigBird's classification head,
	// classifier.out_proj(act(classifier.dense(h_first))) with act the
	// encoder's FFN activation (Config.Activation).
	HeadDenseAct HeadVariant = 3
	// HeadBigBirdQA: BigBirdForQuestionAnsweringHead: per token
	// x = LayerNorm(h + output(act(intermediate(h)))), logits =
	// qa_outputs(x); then, as HF does, every token before and including the
	// first QuestionSepID except the first token gets 1e6 subtracted.
	HeadBigBirdQA HeadVariant = 4
)

func (v HeadVariant) String() string {
	switch v {
	case HeadLinear:
		return "linear"
	case HeadPooler:
		return "pooler"
	case HeadDenseTanh:
		return "dense_tanh"
	case HeadDenseAct:
		return "dense_act"
	case HeadBigBirdQA:
		return "bigbird_qa"
	}
	return fmt.Sprintf("variant(%d)", uint8(v))
}

// HeadSpec describes a model's task head (Config.Head; nil = no head).
type HeadSpec struct {
	Kind      HeadKind
	Variant   HeadVariant
	NumLabels int      // logits per row; 2 for question answering
	Labels    []string // id2label in id order, or nil; shared, read-only
	// QuestionSepID is the token id that ends the question (HeadBigBirdQA);
	// -1 turns the question mask off.
	QuestionSepID int
}

// Canonical names of head tensors: HF's names without the model prefix.
// Linear weights are [out_features, in_features]; L is num_labels, H hidden,
// I intermediate.
const (
	TensorClassifierWeight        = "classifier.weight"          // [L, H]  HeadLinear (token), HeadPooler
	TensorClassifierBias          = "classifier.bias"            // [L]
	TensorClassifierDenseWeight   = "classifier.dense.weight"    // [H, H]  HeadDenseTanh, HeadDenseAct
	TensorClassifierDenseBias     = "classifier.dense.bias"      // [H]
	TensorClassifierOutProjWeight = "classifier.out_proj.weight" // [L, H]
	TensorClassifierOutProjBias   = "classifier.out_proj.bias"   // [L]
	TensorQAOutputsWeight         = "qa_outputs.weight"          // [2, H]  HeadLinear (question answering)
	TensorQAOutputsBias           = "qa_outputs.bias"            // [2]
	// BigBirdForQuestionAnsweringHead (HeadBigBirdQA).
	TensorQAInterWeight = "qa_classifier.intermediate.dense.weight" // [I, H]
	TensorQAInterBias   = "qa_classifier.intermediate.dense.bias"   // [I]
	TensorQAOutWeight   = "qa_classifier.output.dense.weight"       // [H, I]
	TensorQAOutBias     = "qa_classifier.output.dense.bias"         // [H]
	TensorQALNWeight    = "qa_classifier.output.LayerNorm.weight"   // [H]
	TensorQALNBias      = "qa_classifier.output.LayerNorm.bias"     // [H]
	TensorQAHeadWeight  = "qa_classifier.qa_outputs.weight"         // [2, H]
	TensorQAHeadBias    = "qa_classifier.qa_outputs.bias"           // [2]
)

// maxLabels bounds num_labels.
const maxLabels = 1 << 16

// HeadTensors returns the names and shapes of the tensors cfg's head needs
// (nil for no head). ExpectedTensors includes them.
func HeadTensors(cfg Config) []ExpectedTensor {
	if cfg.Head == nil {
		return nil
	}
	h, in, l := cfg.Hidden, cfg.Intermediate, cfg.Head.NumLabels
	switch cfg.Head.Variant {
	case HeadLinear:
		switch cfg.Head.Kind {
		case HeadTokenClassification:
			return []ExpectedTensor{{TensorClassifierWeight, []int{l, h}}, {TensorClassifierBias, []int{l}}}
		case HeadQuestionAnswering:
			return []ExpectedTensor{{TensorQAOutputsWeight, []int{l, h}}, {TensorQAOutputsBias, []int{l}}}
		}
	case HeadPooler:
		if cfg.Head.Kind == HeadSequenceClassification {
			return []ExpectedTensor{{TensorClassifierWeight, []int{l, h}}, {TensorClassifierBias, []int{l}}}
		}
	case HeadDenseTanh, HeadDenseAct:
		if cfg.Head.Kind == HeadSequenceClassification {
			return []ExpectedTensor{
				{TensorClassifierDenseWeight, []int{h, h}}, {TensorClassifierDenseBias, []int{h}},
				{TensorClassifierOutProjWeight, []int{l, h}}, {TensorClassifierOutProjBias, []int{l}},
			}
		}
	case HeadBigBirdQA:
		if cfg.Head.Kind == HeadQuestionAnswering {
			return []ExpectedTensor{
				{TensorQAInterWeight, []int{in, h}}, {TensorQAInterBias, []int{in}},
				{TensorQAOutWeight, []int{h, in}}, {TensorQAOutBias, []int{h}},
				{TensorQALNWeight, []int{h}}, {TensorQALNBias, []int{h}},
				{TensorQAHeadWeight, []int{l, h}}, {TensorQAHeadBias, []int{l}},
			}
		}
	}
	return nil
}

// validateHead returns the problems of c.Head, if any.
func (c *Config) validateHead() []string {
	hd := c.Head
	if hd == nil {
		return nil
	}
	var bad []string
	check := func(ok bool, format string, args ...any) {
		if !ok {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	check(hd.Kind != HeadNone, "a head of kind none (leave Config.Head nil for no head)")
	check(hd.Kind <= HeadQuestionAnswering, "unknown head kind %d", uint8(hd.Kind))
	check(hd.Variant <= HeadBigBirdQA, "unknown head variant %d", uint8(hd.Variant))
	if len(bad) > 0 {
		return bad
	}
	check(hd.NumLabels >= 1 && hd.NumLabels <= maxLabels, "head num_labels %d outside [1, %d]", hd.NumLabels, maxLabels)
	if hd.Kind == HeadQuestionAnswering {
		check(hd.NumLabels == 2, "a question-answering head has %d labels, want 2 (start, end)", hd.NumLabels)
	}
	check(HeadTensors(*c) != nil, "head variant %s cannot compute %s", hd.Variant, hd.Kind)
	if hd.Variant == HeadPooler {
		check(c.Pooler, "head variant pooler needs the pooler tensors (config pooler = false)")
	}
	check(hd.QuestionSepID >= -1 && hd.QuestionSepID < c.VocabSize, "head question sep id %d outside [-1, vocab size %d)", hd.QuestionSepID, c.VocabSize)
	check(len(hd.Labels) == 0 || len(hd.Labels) == hd.NumLabels, "head has %d label names for %d labels", len(hd.Labels), hd.NumLabels)
	for i, s := range hd.Labels {
		if len(s) > maxTokenLen || !utf8.ValidString(s) {
			bad = append(bad, fmt.Sprintf("head label %d is not valid UTF-8 of at most %d bytes", i, maxTokenLen))
			break
		}
	}
	return bad
}

// encodeHead adds h's Head table to b; 0 when h has no head.
func encodeHead(b *flatbuffers.Builder, h *HeadSpec) flatbuffers.UOffsetT {
	if h == nil {
		return 0
	}
	var labels flatbuffers.UOffsetT
	if len(h.Labels) > 0 {
		strs := make([]flatbuffers.UOffsetT, len(h.Labels))
		for i, s := range h.Labels {
			strs[i] = b.CreateString(s)
		}
		fb.HeadStartLabelsVector(b, len(strs))
		for i := len(strs) - 1; i >= 0; i-- {
			b.PrependUOffsetT(strs[i])
		}
		labels = b.EndVector(len(strs))
	}
	fb.HeadStart(b)
	fb.HeadAddKind(b, fb.HeadKind(h.Kind))
	fb.HeadAddVariant(b, fb.HeadVariant(h.Variant))
	fb.HeadAddNumLabels(b, uint32(h.NumLabels))
	if labels != 0 {
		fb.HeadAddLabels(b, labels)
	}
	fb.HeadAddQuestionSepId(b, int32(h.QuestionSepID))
	return fb.HeadEnd(b)
}

// decodeHead reads the verified Head table of m; the zero HeadSpec when
// there is none. Label counts and sizes are bounded here; the rest is
// checked by Config.Validate.
func decodeHead(m *fb.Model) (*HeadSpec, error) {
	t := m.Head(nil)
	if t == nil {
		return nil, nil
	}
	h := &HeadSpec{
		Kind: HeadKind(t.Kind()), Variant: HeadVariant(t.Variant()),
		NumLabels: int(t.NumLabels()), QuestionSepID: int(t.QuestionSepId()),
	}
	n := t.LabelsLength()
	if n > maxLabels {
		return nil, fmt.Errorf("head has %d label names, more than %d", n, maxLabels)
	}
	if n > 0 {
		h.Labels = make([]string, n)
		for i := range h.Labels {
			s := t.Labels(i)
			if len(s) > maxTokenLen {
				return nil, fmt.Errorf("head label %d is %d bytes long, more than %d", i, len(s), maxTokenLen)
			}
			h.Labels[i] = string(s)
		}
	}
	return h, nil
}

// HeadKind is the kind of c's head; HeadNone when it has none.
func (c *Config) HeadKind() HeadKind {
	if c.Head == nil {
		return HeadNone
	}
	return c.Head.Kind
}
