package engine

import (
	"context"
	"math"
	"runtime"
	"sync"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// Task heads (issue 11). A head turns the encoder's last hidden states into
// logits. It is shared engine code, independent of the backend: the backend
// computes the hidden states and the head runs on the host, in float32
// storage with float64 accumulation, so every backend gets the same head.
// (Running the head on the device is a later optimisation; its cost is one
// or two small GEMMs against the encoder's dozens.)
//
// Logits shapes (row-major, float32):
//   - sequence classification: [num_seqs, num_labels];
//   - token classification:    [num_tokens, num_labels], packed like the input;
//   - question answering:      [num_tokens, 2]: start logit, end logit.

// head holds a model's head weights in float32 ([out, in] like HF).
type head struct {
	spec loader.HeadSpec
	act  loader.Activation
	eps  float32
	H, I int
	// Sequence classification: dense (pooler or classifier.dense) then out.
	denseW, denseB []float32 // [H, H], [H]; nil for HeadLinear
	outW, outB     []float32 // [L, H], [L]
	// HeadBigBirdQA: intermediate, output, LayerNorm (outW/outB are qa_outputs).
	interW, interB, ffnW, ffnB, lnW, lnB []float32
}

// loadHead reads cfg's head from src; nil when the model has none. pooler
// weights (for HeadPooler) come from the already loaded Params.
func loadHead(cfg loader.Config, src func(string) ([]float32, []int, error), poolerW, poolerB []float32) (*head, error) {
	if cfg.Head == nil {
		return nil, nil
	}
	h := &head{spec: *cfg.Head, act: cfg.Activation, eps: cfg.LayerNormEps, H: cfg.Hidden, I: cfg.Intermediate}
	get := map[string][]float32{}
	for _, e := range loader.HeadTensors(cfg) {
		d, shape, err := src(e.Name)
		if err != nil {
			return nil, status.Wrap(status.InvalidModel, err, "head tensor "+e.Name)
		}
		n := 1
		for _, s := range e.Shape {
			n *= s
		}
		if len(shape) != len(e.Shape) || len(d) != n {
			return nil, status.Errorf(status.InvalidModel, "head tensor %s has shape %v, the config needs %v", e.Name, shape, e.Shape)
		}
		get[e.Name] = append([]float32(nil), d...)
	}
	switch h.spec.Variant {
	case loader.HeadLinear:
		if h.spec.Kind == loader.HeadQuestionAnswering {
			h.outW, h.outB = get[loader.TensorQAOutputsWeight], get[loader.TensorQAOutputsBias]
		} else {
			h.outW, h.outB = get[loader.TensorClassifierWeight], get[loader.TensorClassifierBias]
		}
	case loader.HeadPooler:
		if poolerW == nil {
			return nil, status.Errorf(status.InvalidModel, "head variant pooler needs the pooler tensors")
		}
		h.denseW, h.denseB = poolerW, poolerB
		h.outW, h.outB = get[loader.TensorClassifierWeight], get[loader.TensorClassifierBias]
	case loader.HeadDenseTanh, loader.HeadDenseAct:
		h.denseW, h.denseB = get[loader.TensorClassifierDenseWeight], get[loader.TensorClassifierDenseBias]
		h.outW, h.outB = get[loader.TensorClassifierOutProjWeight], get[loader.TensorClassifierOutProjBias]
	case loader.HeadBigBirdQA:
		h.interW, h.interB = get[loader.TensorQAInterWeight], get[loader.TensorQAInterBias]
		h.ffnW, h.ffnB = get[loader.TensorQAOutWeight], get[loader.TensorQAOutBias]
		h.lnW, h.lnB = get[loader.TensorQALNWeight], get[loader.TensorQALNBias]
		h.outW, h.outB = get[loader.TensorQAHeadWeight], get[loader.TensorQAHeadBias]
	default:
		return nil, status.Errorf(status.InvalidModel, "unknown head variant %v", h.spec.Variant)
	}
	return h, nil
}

// Head returns the model's task head, or nil for a bare encoder.
func (m *Model) Head() *loader.HeadSpec { return m.cfg.Head }

// LogitsShape returns the shape of the logits of batch b: [rows, cols].
// status.Unsupported when the model has no head.
func (m *Model) LogitsShape(b *Batch) (rows, cols int, err error) {
	if m == nil {
		return 0, 0, status.Errorf(status.InvalidHandle, "nil model")
	}
	if m.head == nil {
		return 0, 0, status.Errorf(status.Unsupported, "the model has no task head (it was converted from a base model such as BertModel): it has no logits; use hidden or pooled outputs")
	}
	if b == nil {
		return 0, 0, status.Errorf(status.InvalidArgument, "nil batch")
	}
	if m.head.spec.Kind == loader.HeadSequenceClassification {
		return b.NumSeqs(), m.head.spec.NumLabels, nil
	}
	return len(b.Tokens), m.head.spec.NumLabels, nil
}

// validateLogits checks out.Logits against the batch (called by validate).
func (m *Model) validateLogits(b *Batch, out *Outputs) error {
	if out.Logits == nil {
		return nil
	}
	rows, cols, err := m.LogitsShape(b)
	if err != nil {
		return err
	}
	if len(out.Logits) < rows*cols {
		return status.Errorf(status.BufferTooSmall, "logits output holds %d floats, needs %d ([%d, %d])", len(out.Logits), rows*cols, rows, cols)
	}
	return nil
}

// encodeLogits runs Encode with the hidden states kept, then the head.
func (m *Model) encodeLogits(ctx context.Context, b *Batch, out *Outputs) error {
	if m.head == nil || b == nil {
		return m.validateLogits(b, out)
	}
	if err := m.validateLogits(b, out); err != nil {
		return err
	}
	inner := *out
	inner.Logits = nil
	T, H := len(b.Tokens), m.cfg.Hidden
	if inner.Hidden == nil {
		inner.Hidden = make([]float32, T*H)
	}
	err := m.Encode(ctx, b, &inner)
	out.PaddedTokens = inner.PaddedTokens
	if err != nil {
		return err
	}
	m.head.apply(b, inner.Hidden[:T*H], out.Logits)
	return nil
}

// apply writes the logits of batch b with last hidden states hidden [T, H].
func (h *head) apply(b *Batch, hidden, logits []float32) {
	H, L := h.H, h.spec.NumLabels
	switch h.spec.Kind {
	case loader.HeadSequenceClassification:
		x := make([]float32, H)
		for s := 0; s < b.NumSeqs(); s++ {
			first := hidden[int(b.CuSeqlens[s])*H:][:H]
			linear(x, h.denseW, h.denseB, first)
			for j, v := range x {
				switch h.spec.Variant {
				case loader.HeadPooler, loader.HeadDenseTanh:
					x[j] = float32(math.Tanh(float64(v)))
				default:
					x[j] = activate(h.act, v)
				}
			}
			linear(logits[s*L:(s+1)*L], h.outW, h.outB, x)
		}
	case loader.HeadTokenClassification, loader.HeadQuestionAnswering:
		T := len(b.Tokens)
		parallelRows(T, func(lo, hi int) {
			var inter, y []float32
			if h.spec.Variant == loader.HeadBigBirdQA {
				inter, y = make([]float32, h.I), make([]float32, H)
			}
			for t := lo; t < hi; t++ {
				x := hidden[t*H : (t+1)*H]
				if h.spec.Variant == loader.HeadBigBirdQA {
					linear(inter, h.interW, h.interB, x)
					for j, v := range inter {
						inter[j] = activate(h.act, v)
					}
					linear(y, h.ffnW, h.ffnB, inter)
					for j := range y {
						y[j] += x[j]
					}
					layerNorm64(y, h.lnW, h.lnB, h.eps)
					x = y
				}
				linear(logits[t*L:(t+1)*L], h.outW, h.outB, x)
			}
		})
		if h.spec.Variant == loader.HeadBigBirdQA && h.spec.QuestionSepID >= 0 {
			h.maskQuestion(b, logits)
		}
	}
}

// maskQuestion subtracts 1e6 from the logits of each sequence's question
// tokens, as BigBirdForQuestionAnswering does: positions 1 .. q-1 where q-1
// is the first QuestionSepID of the sequence (position 0 when there is
// none, which masks nothing).
func (h *head) maskQuestion(b *Batch, logits []float32) {
	sep := int32(h.spec.QuestionSepID)
	for s := 0; s < b.NumSeqs(); s++ {
		start, end := int(b.CuSeqlens[s]), int(b.CuSeqlens[s+1])
		q := 1
		for t := start; t < end; t++ {
			if b.Tokens[t] == sep {
				q = t - start + 1
				break
			}
		}
		for t := start + 1; t < start+q; t++ {
			logits[2*t] -= 1e6
			logits[2*t+1] -= 1e6
		}
	}
}

// linear sets dst = W x + bias, W [len(dst), len(x)], in float64.
func linear(dst, w, bias, x []float32) {
	n := len(x)
	for o := range dst {
		row := w[o*n : (o+1)*n]
		var sum float64
		for j, v := range x {
			sum += float64(row[j]) * float64(v)
		}
		dst[o] = float32(sum + float64(bias[o]))
	}
}

// activate is the encoder's FFN activation, in float64.
func activate(a loader.Activation, v float32) float32 {
	x := float64(v)
	if a == loader.ActGELUTanh {
		return float32(0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x))))
	}
	return float32(0.5 * x * (1 + math.Erf(x/math.Sqrt2)))
}

// layerNorm64 normalises row in place (float64 statistics).
func layerNorm64(row, w, b []float32, eps float32) {
	var mean, v float64
	for _, x := range row {
		mean += float64(x)
	}
	mean /= float64(len(row))
	for _, x := range row {
		d := float64(x) - mean
		v += d * d
	}
	inv := 1 / math.Sqrt(v/float64(len(row))+float64(eps))
	for j, x := range row {
		row[j] = float32((float64(x)-mean)*inv*float64(w[j]) + float64(b[j]))
	}
}

// parallelRows runs f over [0, n) split across the CPUs.
func parallelRows(n int, f func(lo, hi int)) {
	p := runtime.GOMAXPROCS(0)
	if p > n/64 {
		p = max(1, n/64)
	}
	var wg sync.WaitGroup
	for i := 0; i < p; i++ {
		lo, hi := i*n/p, (i+1)*n/p
		wg.Add(1)
		go func() { defer wg.Done(); f(lo, hi) }()
	}
	wg.Wait()
}
