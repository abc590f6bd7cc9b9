package engine

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/raptor-infer/raptor/internal/gpu"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

// TestHeadsLongSparse runs a 4096-token sequence (and a short one) through a
// BigBird block-sparse encoder with each head and compares the logits with
// the float64 masked reference of the same plan (testmodel.Reference) topped
// by a float64 head written here from HF's definitions.
func TestHeadsLongSparse(t *testing.T) {
	base := tinyConfig(loader.FamilyBigBird, 32, 2, true)
	base.MaxPositions = 4096
	r := rand.New(rand.NewPCG(7, 8))
	bc := randomBatch(r, base, []int{4096, 37})
	bc.tokens[4096+5] = 3 // a question of 4 tokens in the short sequence
	w := testmodel.Random(base, 3, 0.2)
	ref := testmodel.Reference(w, bc.tokens, bc.cu, bc.types, bc.seeds, 1234)
	for _, head := range []*loader.HeadSpec{
		{Kind: loader.HeadSequenceClassification, Variant: loader.HeadDenseAct, NumLabels: 3, QuestionSepID: -1},
		{Kind: loader.HeadTokenClassification, Variant: loader.HeadLinear, NumLabels: 5, QuestionSepID: -1},
		{Kind: loader.HeadQuestionAnswering, Variant: loader.HeadBigBirdQA, NumLabels: 2, QuestionSepID: 3},
	} {
		t.Run(head.Kind.String(), func(t *testing.T) {
			cfg := base
			cfg.Head = head
			hw := &testmodel.Weights{Cfg: cfg, Tensors: map[string]testmodel.Tensor{}}
			for n, v := range w.Tensors {
				hw.Tensors[n] = v
			}
			for _, e := range loader.HeadTensors(cfg) {
				size := 1
				for _, d := range e.Shape {
					size *= d
				}
				d := make([]float32, size)
				for i := range d {
					d[i] = float32(0.2 * r.NormFloat64())
					if e.Name == loader.TensorQALNWeight {
						d[i] += 1
					}
				}
				hw.Tensors[e.Name] = testmodel.Tensor{Data: d, Shape: e.Shape}
			}
			e := newTestEngine(t, "auto", 2)
			m, err := e.Load(hw)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			b := &Batch{Tokens: bc.tokens, CuSeqlens: bc.cu, TokenTypes: bc.types, Seeds: bc.seeds}
			rows, cols, _ := m.LogitsShape(b)
			out := Outputs{Logits: make([]float32, rows*cols)}
			if err := m.Encode(context.Background(), b, &out); err != nil {
				t.Fatal(err)
			}
			want := headRef64(hw, head, ref, bc.tokens, bc.cu)
			re := headRelErr(out.Logits, want)
			t.Logf("4096+37 tokens, block_sparse b=%d r=%d, %s/%s: logits [%d, %d], relative error vs float64 %.3g", cfg.BlockSize, cfg.RandomBlocks, head.Kind, head.Variant, rows, cols, re)
			if re > 1e-4 || math.IsNaN(re) {
				t.Fatalf("relative error %.3g > 1e-4", re)
			}
		})
	}
}

// headRef64 is the head in float64 from HF's module definitions.
func headRef64(w *testmodel.Weights, h *loader.HeadSpec, hidden [][]float64, tokens, cu []int32) []float64 {
	lin := func(name string, x []float64) []float64 {
		wt, b := w.Tensors[name+".weight"], w.T(name+".bias")
		n := wt.Shape[1]
		y := make([]float64, wt.Shape[0])
		for o := range y {
			s := float64(b[o])
			for j := 0; j < n; j++ {
				s += float64(wt.Data[o*n+j]) * x[j]
			}
			y[o] = s
		}
		return y
	}
	act := func(x float64) float64 { // BigBird's gelu_new (tinyConfig sparse: GELUTanh)
		return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
	}
	var out []float64
	switch h.Kind {
	case loader.HeadSequenceClassification:
		for s := 0; s+1 < len(cu); s++ {
			x := lin("classifier.dense", hidden[cu[s]])
			for j := range x {
				x[j] = act(x[j])
			}
			out = append(out, lin("classifier.out_proj", x)...)
		}
	case loader.HeadTokenClassification:
		for _, x := range hidden {
			out = append(out, lin("classifier", x)...)
		}
	case loader.HeadQuestionAnswering:
		for s := 0; s+1 < len(cu); s++ {
			q := 1
			for t := cu[s]; t < cu[s+1]; t++ {
				if tokens[t] == int32(h.QuestionSepID) {
					q = int(t-cu[s]) + 1
					break
				}
			}
			for t := cu[s]; t < cu[s+1]; t++ {
				x := hidden[t]
				i := lin("qa_classifier.intermediate.dense", x)
				for j := range i {
					i[j] = act(i[j])
				}
				y := lin("qa_classifier.output.dense", i)
				var mean, v float64
				for j := range y {
					y[j] += x[j]
					mean += y[j]
				}
				mean /= float64(len(y))
				for j := range y {
					v += (y[j] - mean) * (y[j] - mean)
				}
				inv := 1 / math.Sqrt(v/float64(len(y))+float64(w.Cfg.LayerNormEps))
				g, bb := w.T(loader.TensorQALNWeight), w.T(loader.TensorQALNBias)
				for j := range y {
					y[j] = (y[j]-mean)*inv*float64(g[j]) + float64(bb[j])
				}
				l := lin("qa_classifier.qa_outputs", y)
				if p := int(t - cu[s]); p > 0 && p < q {
					l[0], l[1] = l[0]-1e6, l[1]-1e6
				}
				out = append(out, l...)
			}
		}
	}
	return out
}

// TestHeadsGPU: on the GPU (fp16) the logits must have the CPU's argmax and
// a relative error <= 1e-2. It needs the CUDA backend.
func TestHeadsGPU(t *testing.T) {
	if os.Getenv("RAPTOR_TEST_GPU") == "" {
		t.Skip("GPU head parity skipped: set RAPTOR_TEST_GPU=1 on a machine with a GPU (the heads run on the host from the backend's hidden states; the fp16 check compares CUDA against the CPU on engine/testdata/heads)")
	}
	opts := DefaultOptions()
	opts.Backend, opts.Compute, opts.Log = BackendCUDA, ComputeFP16, func(LogLevel, string) {}
	g, err := New(opts)
	if err != nil {
		t.Skipf("GPU head parity skipped: no usable CUDA backend: %v", err)
	}
	defer g.Close()
	cpu := newTestEngine(t, "auto", 2)
	for _, name := range headFixtures {
		t.Run(name, func(t *testing.T) {
			dir := "testdata/heads/" + name
			mc, exp := loadHeadFixture(t, cpu, dir)
			if err := gpu.Supported(mc.Config()); err != nil {
				t.Skipf("the CUDA backend does not run this fixture's shape (%v); TestGPUHeads checks every head on GPU shapes", err)
			}
			mg, _ := loadHeadFixture(t, g, dir)
			b := &Batch{Tokens: exp.Tokens, CuSeqlens: exp.CuSeqlens, TokenTypes: exp.TokenTypes}
			rows, cols, _ := mc.LogitsShape(b)
			lg, lc := make([]float32, rows*cols), make([]float32, rows*cols)
			if err := mg.Encode(context.Background(), b, &Outputs{Logits: lg}); err != nil {
				t.Fatal(err)
			}
			if err := mc.Encode(context.Background(), b, &Outputs{Logits: lc}); err != nil {
				t.Fatal(err)
			}
			want := make([]float64, len(lc))
			for i, v := range lc {
				want[i] = float64(v)
			}
			re := headRelErr(lg, want)
			for r := 0; r < rows; r++ {
				if argmax(lg[r*cols:(r+1)*cols]) != argmax(lc[r*cols:(r+1)*cols]) {
					t.Errorf("row %d: GPU argmax differs from the CPU's", r)
				}
			}
			t.Logf("%s: GPU fp16 vs CPU relative error %.3g", name, re)
			if re > 1e-2 {
				t.Fatalf("relative error %.3g > 1e-2", re)
			}
		})
	}
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
