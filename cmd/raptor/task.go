package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/loader"
)

// taskLine is one JSONL line of `raptor encode --task`.
type taskLine struct {
	Index int `json:"index"`
	// Sequence classification: the top label, its id and logit, all logits.
	Label  string    `json:"label,omitempty"`
	ID     *int      `json:"id,omitempty"`
	Score  *float32  `json:"score,omitempty"`
	Logits []float32 `json:"logits,omitempty"`
	// Token classification: the top label of every token.
	Labels []string `json:"labels,omitempty"`
	// Question answering: the start and end token of the best span
	// (argmax of start, then argmax of end at or after it).
	Start *int `json:"start,omitempty"`
	End   *int `json:"end,omitempty"`
}

// encodeTask runs the model's task head over seqs (batches of at most
// maxBatchTokens tokens) and writes one JSON line per input with its top
// label (sequence classification), per-token labels (token classification)
// or best answer span (question answering).
func encodeTask(ctx context.Context, m *engine.Model, seqs [][]int32, maxBatchTokens int, w io.Writer) error {
	head := m.Head()
	if head == nil {
		return fmt.Errorf("--task needs a model converted from an HF *For* checkpoint (sequence/token classification, question answering); this model has no task head")
	}
	label := func(id int) string {
		if id < len(head.Labels) {
			return head.Labels[id]
		}
		return fmt.Sprintf("LABEL_%d", id)
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for first := 0; first < len(seqs); {
		b := &engine.Batch{CuSeqlens: []int32{0}}
		last := first
		for last < len(seqs) && (last == first || len(b.Tokens)+len(seqs[last]) <= maxBatchTokens) {
			b.Tokens = append(b.Tokens, seqs[last]...)
			b.CuSeqlens = append(b.CuSeqlens, int32(len(b.Tokens)))
			last++
		}
		rows, cols, err := m.LogitsShape(b)
		if err != nil {
			return err
		}
		out := engine.Outputs{Logits: make([]float32, rows*cols)}
		if err := m.Encode(ctx, b, &out); err != nil {
			return err
		}
		row := func(r int) []float32 { return out.Logits[r*cols : (r+1)*cols] }
		for s := 0; s < last-first; s++ {
			line := taskLine{Index: first + s}
			lo, hi := int(b.CuSeqlens[s]), int(b.CuSeqlens[s+1])
			switch head.Kind {
			case loader.HeadSequenceClassification:
				id := argmax32(row(s))
				score := row(s)[id]
				line.Label, line.ID, line.Score, line.Logits = label(id), &id, &score, row(s)
			case loader.HeadTokenClassification:
				for t := lo; t < hi; t++ {
					line.Labels = append(line.Labels, label(argmax32(row(t))))
				}
			case loader.HeadQuestionAnswering:
				start := 0
				for t := lo; t < hi; t++ {
					if out.Logits[2*t] > out.Logits[2*(lo+start)] {
						start = t - lo
					}
				}
				end := start
				for t := lo + start; t < hi; t++ {
					if out.Logits[2*t+1] > out.Logits[2*(lo+end)+1] {
						end = t - lo
					}
				}
				line.Start, line.End = &start, &end
			}
			if err := enc.Encode(&line); err != nil {
				return err
			}
		}
		first = last
	}
	return bw.Flush()
}

func argmax32(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
