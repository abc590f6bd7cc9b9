package hf

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// headConfig holds the config.json fields that describe a task head.
type headConfig struct {
	Architectures []string          `json:"architectures"`
	ID2Label      map[string]string `json:"id2label"`
	NumLabels     *int              `json:"num_labels"`
	SepTokenID    *int              `json:"sep_token_id"`
}

// headArch is a supported HF task architecture.
type headArch struct {
	family  loader.Family
	kind    loader.HeadKind
	variant loader.HeadVariant
}

// headArchs are the task architectures the converter accepts. The base
// models (BertModel, RobertaModel, XLMRobertaModel, BigBirdModel) convert
// without a head.
var headArchs = map[string]headArch{
	"BertForSequenceClassification":       {loader.FamilyBERT, loader.HeadSequenceClassification, loader.HeadPooler},
	"BertForTokenClassification":          {loader.FamilyBERT, loader.HeadTokenClassification, loader.HeadLinear},
	"BertForQuestionAnswering":            {loader.FamilyBERT, loader.HeadQuestionAnswering, loader.HeadLinear},
	"RobertaForSequenceClassification":    {loader.FamilyRoBERTa, loader.HeadSequenceClassification, loader.HeadDenseTanh},
	"RobertaForTokenClassification":       {loader.FamilyRoBERTa, loader.HeadTokenClassification, loader.HeadLinear},
	"RobertaForQuestionAnswering":         {loader.FamilyRoBERTa, loader.HeadQuestionAnswering, loader.HeadLinear},
	"XLMRobertaForSequenceClassification": {loader.FamilyRoBERTa, loader.HeadSequenceClassification, loader.HeadDenseTanh},
	"XLMRobertaForTokenClassification":    {loader.FamilyRoBERTa, loader.HeadTokenClassification, loader.HeadLinear},
	"XLMRobertaForQuestionAnswering":      {loader.FamilyRoBERTa, loader.HeadQuestionAnswering, loader.HeadLinear},
	"BigBirdForSequenceClassification":    {loader.FamilyBigBird, loader.HeadSequenceClassification, loader.HeadDenseAct},
	"BigBirdForTokenClassification":       {loader.FamilyBigBird, loader.HeadTokenClassification, loader.HeadLinear},
	"BigBirdForQuestionAnswering":         {loader.FamilyBigBird, loader.HeadQuestionAnswering, loader.HeadBigBirdQA},
}

// baseArchs convert without a head.
var baseArchs = map[string]bool{"BertModel": true, "RobertaModel": true, "XLMRobertaModel": true, "BigBirdModel": true}

// SupportedHeadArchitectures lists the task architectures Convert accepts,
// sorted.
func SupportedHeadArchitectures() []string {
	out := make([]string, 0, len(headArchs))
	for a := range headArchs {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// headTensorNames are the canonical names of every head tensor; a
// checkpoint stores them without the model prefix, as raptor does.
var headTensorNames = map[string]bool{}

func init() {
	for _, n := range []string{
		loader.TensorClassifierWeight, loader.TensorClassifierBias,
		loader.TensorClassifierDenseWeight, loader.TensorClassifierDenseBias,
		loader.TensorClassifierOutProjWeight, loader.TensorClassifierOutProjBias,
		loader.TensorQAOutputsWeight, loader.TensorQAOutputsBias,
		loader.TensorQAInterWeight, loader.TensorQAInterBias, loader.TensorQAOutWeight, loader.TensorQAOutBias,
		loader.TensorQALNWeight, loader.TensorQALNBias, loader.TensorQAHeadWeight, loader.TensorQAHeadBias,
	} {
		headTensorNames[n] = true
	}
}

// readHead returns the head of the checkpoint in dir, from config.json's
// architectures (and id2label, sep_token_id) and the tensors present: nil
// for a base model. Architectures it does not know are refused with a
// message naming them; so is a checkpoint whose config names no task but
// whose tensors hold a head.
func readHead(dir string, cfg loader.Config, all map[string]*stTensor) (*loader.HeadSpec, error) {
	var hc headConfig
	if err := readJSON(filepath.Join(dir, "config.json"), &hc); err != nil {
		return nil, err
	}
	supported := strings.Join(SupportedHeadArchitectures(), ", ")
	var arch headArch
	var name string
	switch len(hc.Architectures) {
	case 0:
		for n := range all {
			if headTensorNames[n] {
				return nil, status.Errorf(status.Unsupported, "config.json names no architecture but the checkpoint holds head tensor %s: set \"architectures\" to one of %s", n, supported)
			}
		}
		return nil, nil
	case 1:
		name = hc.Architectures[0]
	default:
		return nil, status.Errorf(status.Unsupported, "config.json lists %d architectures %q; want one", len(hc.Architectures), hc.Architectures)
	}
	if baseArchs[name] {
		return nil, nil
	}
	arch, ok := headArchs[name]
	if !ok {
		var heads []string
		for n := range all {
			if p, _, _ := strings.Cut(n, "."); p == "cls" || p == "lm_head" || headTensorNames[n] || p == "classifier" || p == "qa_outputs" || p == "qa_classifier" {
				heads = append(heads, n)
			}
		}
		sort.Strings(heads)
		msg := ""
		if len(heads) > 0 {
			msg = fmt.Sprintf(" (its head tensors: %s)", listFirst(heads, 6))
		}
		return nil, status.Errorf(status.Unsupported, "architecture %s is not supported%s: raptor converts base models (BertModel, RobertaModel, XLMRobertaModel, BigBirdModel) and the task heads %s", name, msg, supported)
	}
	if arch.family != cfg.Family {
		return nil, status.Errorf(status.Unsupported, "architecture %s is a %s head but config.json's model_type is a %s model", name, arch.family, cfg.Family)
	}
	h := &loader.HeadSpec{Kind: arch.kind, Variant: arch.variant, QuestionSepID: -1}
	if arch.kind == loader.HeadQuestionAnswering {
		h.NumLabels = 2 // HF: start and end logits, whatever id2label says
	} else {
		labels, err := id2label(hc.ID2Label)
		if err != nil {
			return nil, err
		}
		h.Labels = labels
		h.NumLabels = len(labels)
		if h.NumLabels == 0 && hc.NumLabels != nil {
			h.NumLabels = *hc.NumLabels
		}
		if h.NumLabels == 0 {
			return nil, status.Errorf(status.InvalidModel, "config.json of %s has neither id2label nor num_labels", name)
		}
	}
	if arch.variant == loader.HeadBigBirdQA {
		// BigBirdForQuestionAnswering masks the question (every token up to
		// the first sep_token_id) out of the logits.
		if hc.SepTokenID != nil {
			h.QuestionSepID = *hc.SepTokenID
		}
	}
	return h, nil
}

// id2label returns the label names in id order; the ids must be 0..n-1.
func id2label(m map[string]string) ([]string, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make([]string, len(m))
	seen := make([]bool, len(m))
	for k, v := range m {
		id, err := strconv.Atoi(k)
		if err != nil || id < 0 || id >= len(m) || seen[id] {
			return nil, status.Errorf(status.InvalidModel, "config.json id2label key %q: the ids must be 0..%d, each once", k, len(m)-1)
		}
		seen[id] = true
		out[id] = v
	}
	return out, nil
}

func listFirst(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:max], ", "), len(names)-max)
}
