package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/tokenizer"
	"github.com/raptor-infer/raptor/loader"
)

// tinyModel converts the tiny BERT checkpoint (random weights, a WordPiece
// vocabulary, 64 positions) with raptor convert, f32.
func tinyModel(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "tiny-bert.raptor")
	if rc := runConvert([]string{filepath.Join("..", "..", "loader", "testdata", "hf", "bert"), "-o", out, "-dtype", "f32"}); rc != 0 {
		t.Fatalf("convert exited %d", rc)
	}
	return out
}

// reference encodes each sequence alone with the engine package.
func reference(t *testing.T, model string, seqs [][]int32, out engine.Outputs) [][]float32 {
	t.Helper()
	wf, err := loader.Open(model)
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	opts := engine.DefaultOptions()
	opts.Backend, opts.Log = engine.BackendCPU, func(engine.LogLevel, string) {}
	e, err := engine.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	m, err := e.Load(wf)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h := wf.Config().Hidden
	var res [][]float32
	for _, s := range seqs {
		o := out
		o.Pooled = make([]float32, h)
		if err := m.Encode(context.Background(), &engine.Batch{Tokens: s, CuSeqlens: []int32{0, int32(len(s))}}, &o); err != nil {
			t.Fatal(err)
		}
		res = append(res, o.Pooled)
	}
	return res
}

func tokenize(t *testing.T, model string, lines []string) [][]int32 {
	t.Helper()
	wf, err := loader.Open(model)
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	spec, ok := wf.Tokenizer()
	if !ok {
		t.Fatal("the tiny model has no tokenizer")
	}
	tok, err := tokenizer.New(tokenizer.Spec(*spec))
	if err != nil {
		t.Fatal(err)
	}
	var seqs [][]int32
	for _, l := range lines {
		ids, err := tok.Encode(l, wf.Config().MaxPositions)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ids)
	}
	return seqs
}

// readNPY parses a float32 2-D .npy file, checking the header as NumPy writes it.
func readNPY(t *testing.T, path string) (rows, cols int, data []float32) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x93NUMPY\x01\x00")) {
		t.Fatalf("not a .npy v1.0 file: %q", b[:min(len(b), 10)])
	}
	hl := int(binary.LittleEndian.Uint16(b[8:]))
	if (10+hl)%64 != 0 || b[10+hl-1] != '\n' {
		t.Fatalf("header of %d bytes is not 64-byte aligned or not newline-terminated", hl)
	}
	header := string(b[10 : 10+hl])
	if !strings.Contains(header, "'descr': '<f4'") || !strings.Contains(header, "'fortran_order': False") {
		t.Fatalf("header %q", header)
	}
	i := strings.Index(header, "'shape': (")
	if _, err := fmt.Sscanf(header[i+len("'shape': ("):], "%d, %d)", &rows, &cols); err != nil {
		t.Fatalf("shape in %q: %v", header, err)
	}
	payload := b[10+hl:]
	if len(payload) != rows*cols*4 {
		t.Fatalf("%d payload bytes for shape (%d, %d)", len(payload), rows, cols)
	}
	data = make([]float32, rows*cols)
	for k := range data {
		data[k] = math.Float32frombits(binary.LittleEndian.Uint32(payload[4*k:]))
	}
	return rows, cols, data
}

func TestEncodeTextToNPYAndJSONL(t *testing.T) {
	model := tinyModel(t)
	dir := t.TempDir()
	lines := []string{"tok1 tok2 tok3", "élan x y", "", "tok5" + strings.Repeat(" tok7", 80), "x ##a y tok89"}
	in := filepath.Join(dir, "in.txt")
	os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	seqs := tokenize(t, model, lines)
	if len(seqs[3]) != 64 {
		t.Fatalf("the long line tokenized to %d ids, want 64 (truncated to max positions)", len(seqs[3]))
	}

	for _, tc := range []struct {
		name string
		args []string
		out  engine.Outputs
	}{
		{"mean", nil, engine.Outputs{Pooling: engine.PoolMean}},
		{"cls normalized small batches", []string{"--pooling", "cls", "--normalize", "--max-batch-tokens", "7"}, engine.Outputs{Pooling: engine.PoolCLS, Normalize: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := reference(t, model, seqs, tc.out)
			npy := filepath.Join(dir, "out.npy")
			if rc := runEncode(append([]string{"--model", model, "--backend", "cpu", in, "-o", npy}, tc.args...)); rc != 0 {
				t.Fatalf("encode exited %d", rc)
			}
			rows, cols, data := readNPY(t, npy)
			if rows != len(lines) || cols != 32 {
				t.Fatalf("npy shape (%d, %d)", rows, cols)
			}
			for i := range rows {
				if !sameBits(data[i*cols:(i+1)*cols], want[i]) {
					t.Errorf("npy row %d differs from the engine's output for the sequence alone", i)
				}
			}
			jl := filepath.Join(dir, "out.jsonl")
			if rc := runEncode(append([]string{"--model", model, "--format", "jsonl", "-o", jl, in}, tc.args...)); rc != 0 {
				t.Fatalf("encode exited %d", rc)
			}
			b, _ := os.ReadFile(jl)
			got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if len(got) != len(lines) {
				t.Fatalf("%d JSONL lines for %d inputs", len(got), len(lines))
			}
			for i, l := range got {
				var r struct {
					Index, Tokens int
					Embedding     []float32
				}
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					t.Fatal(err)
				}
				if r.Index != i || r.Tokens != len(seqs[i]) || !sameBits(r.Embedding, want[i]) {
					t.Errorf("JSONL line %d: index %d, tokens %d (want %d), or its embedding differs", i, r.Index, r.Tokens, len(seqs[i]))
				}
			}
		})
	}
}

func TestEncodeIDs(t *testing.T) {
	model := tinyModel(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "ids.jsonl")
	os.WriteFile(in, []byte("[2, 5, 6, 3]\n\n{\"ids\": [2, 98, 3]}\n[2,3]"), 0o644)
	want := reference(t, model, [][]int32{{2, 5, 6, 3}, {2, 98, 3}, {2, 3}}, engine.Outputs{Pooling: engine.PoolMean})
	out := filepath.Join(dir, "out.npy")
	// Flags after the input work too, and stdin is read when the input is "-".
	stdin := os.Stdin
	f, _ := os.Open(in)
	os.Stdin = f
	rc := runEncode([]string{"--ids", "-", "--model", model, "-o", out})
	os.Stdin = stdin
	f.Close()
	if rc != 0 {
		t.Fatalf("encode exited %d", rc)
	}
	_, cols, data := readNPY(t, out)
	for i := range want {
		if !sameBits(data[i*cols:(i+1)*cols], want[i]) {
			t.Errorf("row %d differs", i)
		}
	}

	for _, bad := range []string{"[2, 99, 3]", "[2, -1]", "[]", "{\"id\": [1]}", "[1.5]", "not json", "[" + strings.Repeat("5,", 64) + "5]"} {
		os.WriteFile(in, []byte("[2, 3]\n"+bad+"\n"), 0o644)
		if rc := runEncode([]string{"--ids", "--model", model, "-o", out, in}); rc != 1 {
			t.Errorf("bad line %q: exit %d, want 1", bad, rc)
		}
	}
}

func TestEncodeFlagErrors(t *testing.T) {
	model := tinyModel(t)
	for _, args := range [][]string{
		{"--model", model, "--backend", "tpu", "x"},
		{"--model", model, "--pooling", "max", "x"},
		{"--model", model, "--format", "csv", "x"},
		{"--model", filepath.Join(t.TempDir(), "missing.raptor"), "x"},
		{"--model", model, "a", "b"},
		{"--nope"},
	} {
		if rc := runEncode(args); rc == 0 {
			t.Errorf("%q succeeded", args)
		}
	}
	if os.Getenv("RAPTOR_MODEL") == "" {
		t.Setenv("RAPTOR_MODEL", model)
		in := filepath.Join(t.TempDir(), "in.txt")
		os.WriteFile(in, []byte("tok1\n"), 0o644)
		if rc := runEncode([]string{in, "-o", filepath.Join(t.TempDir(), "o.npy")}); rc != 0 {
			t.Errorf("encode with $RAPTOR_MODEL exited %d", rc)
		}
	}
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
