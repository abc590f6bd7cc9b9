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

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
	"github.com/raptor-infer/raptor/loader/hf"
)

// headFixtures are the checkpoints engine/testdata/heads/make_heads.py
// writes: every family × task.
var headFixtures = []string{
	"bert_seq", "bert_tok", "bert_qa",
	"roberta_seq", "roberta_tok", "roberta_qa",
	"bigbird_seq", "bigbird_tok", "bigbird_qa",
}

type headExpected struct {
	Architecture string    `json:"architecture"`
	Tokens       []int32   `json:"tokens"`
	CuSeqlens    []int32   `json:"cu_seqlens"`
	TokenTypes   []int32   `json:"token_types"`
	Logits       []float64 `json:"logits"`
}

// loadHeadFixture converts the HF checkpoint in dir with loader/hf and loads
// it on e.
func loadHeadFixture(t testing.TB, e *Engine, dir string) (*Model, headExpected) {
	t.Helper()
	res, err := hf.Convert(dir, hf.Options{DType: loader.F32})
	if err != nil {
		t.Fatal(err)
	}
	data, err := res.Writer.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	f, err := loader.Read(data)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := e.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	var exp headExpected
	b, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &exp); err != nil {
		t.Fatal(err)
	}
	return m, exp
}

// checkHeadParity encodes the fixture's batch and compares the logits with
// HF's: relative error (max abs difference / max abs HF logit) <= 1e-4.
func checkHeadParity(t *testing.T, e *Engine, dir string) {
	m, exp := loadHeadFixture(t, e, dir)
	b := &Batch{Tokens: exp.Tokens, CuSeqlens: exp.CuSeqlens, TokenTypes: exp.TokenTypes}
	rows, cols, err := m.LogitsShape(b)
	if err != nil {
		t.Fatal(err)
	}
	if rows*cols != len(exp.Logits) {
		t.Fatalf("logits shape [%d, %d], HF has %d logits", rows, cols, len(exp.Logits))
	}
	out := Outputs{Logits: make([]float32, rows*cols)}
	if err := m.Encode(context.Background(), b, &out); err != nil {
		t.Fatal(err)
	}
	re := headRelErr(out.Logits, exp.Logits)
	t.Logf("%s (%s, head %s/%s): logits [%d, %d], relative error %.3g", filepath.Base(dir), exp.Architecture, m.Head().Kind, m.Head().Variant, rows, cols, re)
	if re > 1e-4 || math.IsNaN(re) {
		t.Fatalf("relative error %.3g > 1e-4", re)
	}
}

// headRelErr is max |got - want| / max |want| over the logits, except
// BigBird QA's masked question logits (want about -1e6), each of which is
// compared relative to itself (float32 holds -1e6 to within 0.03).
func headRelErr(got []float32, want []float64) float64 {
	var e, m, masked float64
	for i, w := range want {
		d := math.Abs(float64(got[i]) - w)
		if math.Abs(w) >= 1e5 {
			masked = math.Max(masked, d/math.Abs(w))
			continue
		}
		e = math.Max(e, d)
		m = math.Max(m, math.Abs(w))
	}
	return math.Max(e/m, masked)
}

// TestHeadsHFParity: the committed tiny checkpoints (every family × task)
// against HF transformers' logits.
func TestHeadsHFParity(t *testing.T) {
	for _, name := range headFixtures {
		t.Run(name, func(t *testing.T) {
			checkHeadParity(t, newTestEngine(t, "auto", 2), filepath.Join("testdata", "heads", name))
		})
	}
}

// TestHeadsHFParityBase generates base-width checkpoints (hidden 768, 12
// heads, intermediate 3072, 12 layers) with make_heads.py at test time and
// compares the logits. It needs python3 with torch and transformers.
func TestHeadsHFParityBase(t *testing.T) {
	if testing.Short() {
		t.Skip("base-size HF parity skipped in -short mode")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("base-size HF parity skipped: python3 not found")
	}
	if out, err := exec.Command(py, "-c", "import torch, transformers").CombinedOutput(); err != nil {
		t.Skipf("base-size HF parity skipped: python3 cannot import torch and transformers: %s", strings.TrimSpace(string(out)))
	}
	only := headFixtures
	if raceEnabled {
		// Under the race detector (build.sh's go-race suite, the only run of this package
		// there) all nine take ~260 s of a ~400 s package: one fixture per family, which
		// covers each head kind once; TestHeadsHFParity checks all nine at tiny size.
		only = []string{"bert_seq", "roberta_tok", "bigbird_qa"}
	}
	if s := os.Getenv("RAPTOR_HEADS_BASE"); s != "" {
		only = strings.Split(s, ",")
	}
	for _, name := range only {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(py, filepath.Join("testdata", "heads", "make_heads.py"), "--size", "base", "--out", dir, "--only", name)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("make_heads.py: %v\n%s", err, out)
			}
			checkHeadParity(t, newTestEngine(t, "auto", 2), filepath.Join(dir, name))
		})
	}
}

// TestHeadsBadInput: logits from a model without a head, and a logits
// buffer too small, give clear statuses; so does a nil batch to LogitsShape.
func TestHeadsBadInput(t *testing.T) {
	e := newTestEngine(t, "auto", 2)
	bare, err := e.Load(testmodel.Random(tinyConfig(loader.FamilyBERT, 32, 2, false), 1, 0.2))
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	b := &Batch{Tokens: []int32{1, 2, 3}, CuSeqlens: []int32{0, 3}}
	err = bare.Encode(context.Background(), b, &Outputs{Logits: make([]float32, 100)})
	if status.CodeOf(err) != status.Unsupported || !strings.Contains(err.Error(), "no task head") {
		t.Fatalf("logits without a head: %v, want UNSUPPORTED naming the missing head", err)
	}
	if _, _, err := bare.LogitsShape(b); status.CodeOf(err) != status.Unsupported {
		t.Fatalf("LogitsShape without a head: %v", err)
	}
	m, _ := loadHeadFixture(t, e, filepath.Join("testdata", "heads", "bert_tok"))
	for _, tc := range []struct {
		name string
		n    int
		code status.Code
	}{{"one short", 3*5 - 1, status.BufferTooSmall}, {"empty", 0, status.BufferTooSmall}, {"exact", 15, status.OK}} {
		err := m.Encode(context.Background(), b, &Outputs{Logits: make([]float32, tc.n)})
		if status.CodeOf(err) != tc.code {
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
	if _, _, err := m.LogitsShape(nil); status.CodeOf(err) != status.InvalidArgument {
		t.Fatalf("LogitsShape(nil): %v", err)
	}
}
