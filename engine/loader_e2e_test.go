package engine

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
	"github.com/raptor-infer/raptor/loader/hf"
)

// TestMiniLMThroughLoader runs the whole pipeline on the real
// all-MiniLM-L6-v2: the HF checkpoint converted by loader/hf, written,
// opened with loader.Open (a *loader.File is the Weights), encoded, and
// compared with sentence-transformers (f32 and f16 storage).
func TestMiniLMThroughLoader(t *testing.T) {
	dir := miniLMDir(t)
	f32, ints, _, err := testmodel.ReadSafetensors("testdata/minilm/expected.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	want := f32["expected.embeddings"].Data
	var tokens, cu []int32
	for _, v := range ints["input.tokens"] {
		tokens = append(tokens, int32(v))
	}
	for _, v := range ints["input.cu_seqlens"] {
		cu = append(cu, int32(v))
	}
	for _, tc := range []struct {
		name      string
		dtype     loader.DType
		minCosine float64
	}{{"f32", loader.F32, 0.99999}, {"f16", loader.F16, 0.999}} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := hf.Convert(dir, hf.Options{DType: tc.dtype})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "minilm.raptor")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := res.Writer.WriteTo(f); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			file, err := loader.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			e := newTestEngine(t, "auto", 2)
			m, err := e.Load(file)
			if err != nil {
				t.Fatal(err)
			}
			file.Close() // Load copied what it needs
			defer m.Close()
			H := m.Config().Hidden
			nseq := len(cu) - 1
			out := Outputs{Pooled: make([]float32, nseq*H), Pooling: PoolMean, Normalize: true}
			if err := m.Encode(context.Background(), &Batch{Tokens: tokens, CuSeqlens: cu}, &out); err != nil {
				t.Fatal(err)
			}
			worst := 1.0
			for s := 0; s < nseq; s++ {
				var dot, na, nb float64
				for j := 0; j < H; j++ {
					a, b := float64(out.Pooled[s*H+j]), float64(want[s*H+j])
					dot += a * b
					na += a * a
					nb += b * b
				}
				worst = math.Min(worst, dot/math.Sqrt(na*nb))
			}
			t.Logf("%s weights: min cosine %.9f over %d sentences", tc.name, worst, nseq)
			if worst < tc.minCosine {
				t.Fatalf("min cosine %.9f < %g", worst, tc.minCosine)
			}
		})
	}
}
