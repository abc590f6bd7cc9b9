package loader

import (
	"reflect"
	"strings"
	"testing"
)

// TestHeadRoundTrip writes a model with each head variant and reads it back:
// the head spec and its tensors survive; a file without a head reads as nil.
func TestHeadRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		head *HeadSpec
	}{
		{"none", nil},
		{"bert-seq", &HeadSpec{Kind: HeadSequenceClassification, Variant: HeadPooler, NumLabels: 3, Labels: []string{"neg", "neu", "pös"}, QuestionSepID: -1}},
		{"roberta-seq", &HeadSpec{Kind: HeadSequenceClassification, Variant: HeadDenseTanh, NumLabels: 2, QuestionSepID: -1}},
		{"bigbird-seq", &HeadSpec{Kind: HeadSequenceClassification, Variant: HeadDenseAct, NumLabels: 5, QuestionSepID: -1}},
		{"token", &HeadSpec{Kind: HeadTokenClassification, Variant: HeadLinear, NumLabels: 4, Labels: []string{"O", "B-PER", "I-PER", "B-LOC"}, QuestionSepID: -1}},
		{"qa", &HeadSpec{Kind: HeadQuestionAnswering, Variant: HeadLinear, NumLabels: 2, QuestionSepID: -1}},
		{"bigbird-qa", &HeadSpec{Kind: HeadQuestionAnswering, Variant: HeadBigBirdQA, NumLabels: 2, QuestionSepID: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig(F32)
			cfg.Head = tc.head
			data, want := writeModel(t, cfg, WriterOptions{})
			f, err := Read(data)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := f.Config().Head
			if !reflect.DeepEqual(got, tc.head) {
				t.Fatalf("head = %+v, want %+v", got, tc.head)
			}
			for _, e := range HeadTensors(cfg) {
				d, shape, err := f.Float32(e.Name)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(shape, e.Shape) || !reflect.DeepEqual(d, want[e.Name]) {
					t.Fatalf("%s: shape %v, want %v (or data differs)", e.Name, shape, e.Shape)
				}
			}
			if (tc.head == nil) != (len(HeadTensors(cfg)) == 0) {
				t.Fatal("HeadTensors and the head disagree")
			}
		})
	}
}

// TestHeadValidate: every bad head config is refused with a message naming
// the problem.
func TestHeadValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		head HeadSpec
		want string
	}{
		{"kind none", HeadSpec{Kind: HeadNone}, "kind none"},
		{"unknown kind", HeadSpec{Kind: 9, NumLabels: 2}, "unknown head kind"},
		{"unknown variant", HeadSpec{Kind: HeadTokenClassification, Variant: 9, NumLabels: 2}, "unknown head variant"},
		{"zero labels", HeadSpec{Kind: HeadTokenClassification, NumLabels: 0, QuestionSepID: -1}, "num_labels 0"},
		{"qa labels", HeadSpec{Kind: HeadQuestionAnswering, NumLabels: 3, QuestionSepID: -1}, "want 2"},
		{"variant mismatch", HeadSpec{Kind: HeadSequenceClassification, Variant: HeadLinear, NumLabels: 2, QuestionSepID: -1}, "cannot compute"},
		{"label count", HeadSpec{Kind: HeadTokenClassification, NumLabels: 2, Labels: []string{"a"}, QuestionSepID: -1}, "1 label names for 2"},
		{"bad utf8", HeadSpec{Kind: HeadTokenClassification, NumLabels: 1, Labels: []string{"\xff"}, QuestionSepID: -1}, "UTF-8"},
		{"sep id", HeadSpec{Kind: HeadQuestionAnswering, Variant: HeadBigBirdQA, NumLabels: 2, QuestionSepID: 5000}, "question sep id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig(F32)
			h := tc.head
			cfg.Head = &h
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	cfg := tinyConfig(F32)
	cfg.Pooler = false
	cfg.Head = &HeadSpec{Kind: HeadSequenceClassification, Variant: HeadPooler, NumLabels: 2, QuestionSepID: -1}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "pooler") {
		t.Fatalf("pooler head without pooler: %v", err)
	}
}
