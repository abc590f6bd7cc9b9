package hf

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// headCheckpoint copies engine/testdata/heads/<name> into a temp dir with
// config.json edited by edit.
func headCheckpoint(t *testing.T, name string, edit func(map[string]any)) string {
	t.Helper()
	src := filepath.Join("..", "..", "engine", "testdata", "heads", name)
	dir := t.TempDir()
	for _, f := range []string{"config.json", "model.safetensors"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "config.json" && edit != nil {
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			edit(m)
			if b, err = json.Marshal(m); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestConvertHeads: each family × task converts with the right head, labels
// in id order; unknown architectures and unnamed heads are refused naming them.
func TestConvertHeads(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kind    loader.HeadKind
		variant loader.HeadVariant
		labels  []string
	}{
		{"bert_seq", loader.HeadSequenceClassification, loader.HeadPooler, []string{"negative", "neutral", "positive"}},
		{"roberta_seq", loader.HeadSequenceClassification, loader.HeadDenseTanh, []string{"negative", "neutral", "positive"}},
		{"bigbird_seq", loader.HeadSequenceClassification, loader.HeadDenseAct, []string{"negative", "neutral", "positive"}},
		{"bert_tok", loader.HeadTokenClassification, loader.HeadLinear, []string{"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}},
		{"roberta_qa", loader.HeadQuestionAnswering, loader.HeadLinear, nil},
		{"bigbird_qa", loader.HeadQuestionAnswering, loader.HeadBigBirdQA, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Convert(headCheckpoint(t, tc.name, nil), Options{DType: loader.F32})
			if err != nil {
				t.Fatal(err)
			}
			h := res.Config.Head
			if h == nil || h.Kind != tc.kind || h.Variant != tc.variant || !reflect.DeepEqual(h.Labels, tc.labels) {
				t.Fatalf("head %+v, want %v/%v labels %q", h, tc.kind, tc.variant, tc.labels)
			}
		})
	}
	for _, tc := range []struct {
		name, fixture string
		edit          func(map[string]any)
		code          status.Code
		want          string
	}{
		{"masked lm", "bert_tok", func(m map[string]any) { m["architectures"] = []string{"BertForMaskedLM"} }, status.Unsupported, "architecture BertForMaskedLM is not supported (its head tensors: classifier.bias, classifier.weight)"},
		{"pretraining", "bert_seq", func(m map[string]any) { m["architectures"] = []string{"BertForPreTraining"} }, status.Unsupported, "BertForPreTraining is not supported"},
		{"no architecture", "bert_qa", func(m map[string]any) { delete(m, "architectures") }, status.Unsupported, "names no architecture but the checkpoint holds head tensor qa_outputs"},
		{"family mismatch", "bert_tok", func(m map[string]any) { m["architectures"] = []string{"RobertaForTokenClassification"} }, status.Unsupported, "is a roberta head"},
		{"bad id2label", "bert_tok", func(m map[string]any) { m["id2label"] = map[string]string{"0": "a", "7": "b"} }, status.InvalidModel, "id2label key"},
		{"labels vs tensor", "bert_tok", func(m map[string]any) { m["id2label"] = map[string]string{"0": "a", "1": "b"} }, status.InvalidModel, "classifier.weight has shape [5 32], config.json implies [2 32]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Convert(headCheckpoint(t, tc.fixture, tc.edit), Options{DType: loader.F32})
			if status.CodeOf(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.want)
			}
		})
	}
}
