package raptor

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/raptor-infer/raptor/loader"
)

// TestClassify: a random sequence-classification model through the Go
// binding (logits, labels, argmax, batch invariance), and a model without a
// head answering StatusUnsupported.
func TestClassify(t *testing.T) {
	lib := library(t)
	opts := lib.DefaultEngineOptions()
	opts.Backend = BackendCPU
	eng, err := lib.NewEngine(&opts)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	cfg := loader.Config{Family: loader.FamilyBERT, VocabSize: 50, Hidden: 16, Layers: 1, Heads: 2,
		Intermediate: 32, MaxPositions: 64, TypeVocabSize: 2, LayerNormEps: 1e-12, Pooler: true, DType: loader.F32}
	load := func(head *loader.HeadSpec) *Model {
		c := cfg
		c.Head = head
		w, err := loader.NewRandomWriter(c, 5, loader.WriterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		img, err := w.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		m, err := eng.LoadModelBytes(img)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	labels := []string{"spam", "ham"}
	m := load(&loader.HeadSpec{Kind: loader.HeadSequenceClassification, Variant: loader.HeadPooler, NumLabels: 2, Labels: labels, QuestionSepID: -1})
	defer m.Close()
	info, err := m.Info()
	if err != nil || info.HeadKind != HeadSequenceClassification || info.NumLabels != 2 {
		t.Fatalf("info %+v, %v", info, err)
	}
	seqs := [][]int32{{1, 2, 3}, {4, 5}, {6, 7, 8, 9}}
	r, err := m.Classify(context.Background(), seqs, EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != HeadSequenceClassification || !reflect.DeepEqual(r.Labels, labels) || len(r.Logits) != 3 || len(r.Logits[0]) != 2 || len(r.Top) != 3 {
		t.Fatalf("classification %+v", r)
	}
	one, err := m.Classify(context.Background(), seqs[1:2], EncodeOptions{})
	if err != nil || !reflect.DeepEqual(one.Logits[0], r.Logits[1]) {
		t.Fatalf("alone %v (%v), in a batch %v", one.Logits, err, r.Logits[1])
	}
	tok := load(&loader.HeadSpec{Kind: loader.HeadTokenClassification, Variant: loader.HeadLinear, NumLabels: 3, QuestionSepID: -1})
	defer tok.Close()
	rt, err := tok.Classify(context.Background(), seqs, EncodeOptions{})
	if err != nil || len(rt.Logits) != 9 || !reflect.DeepEqual(rt.Labels, []string{"LABEL_0", "LABEL_1", "LABEL_2"}) {
		t.Fatalf("token classification %+v, %v", rt, err)
	}
	bare := load(nil)
	defer bare.Close()
	var e *Error
	if _, err := bare.Classify(context.Background(), seqs, EncodeOptions{}); !errors.As(err, &e) || e.Status != StatusUnsupported {
		t.Fatalf("classify without a head: %v", err)
	}
	if l, err := bare.Labels(); l != nil || err != nil {
		t.Fatalf("labels without a head: %v, %v", l, err)
	}
}
