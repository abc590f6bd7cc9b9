package loader

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/raptor-infer/raptor/internal/status"
)

// tinyConfig is a small BERT whose word embeddings span several 64 KiB
// chunks in every dtype.
func tinyConfig(d DType) Config {
	return Config{
		Family: FamilyBERT, VocabSize: 1200, Hidden: 32, Layers: 2, Heads: 4, Intermediate: 64,
		MaxPositions: 64, TypeVocabSize: 2, LayerNormEps: 1e-12, Activation: ActGELU,
		PadTokenID: 0, Pooler: true, DType: d,
		Tokenizer: &TokenizerSpec{
			Vocab:     []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "##lo", "wörld"},
			Lowercase: true, StripAccents: true, CLS: 2, SEP: 3, PAD: 0, UNK: 1, MASK: 4, MaxLength: 64,
		},
	}
}

// writeModel builds a random model and returns its bytes and the float32
// values each tensor was built from.
func writeModel(t testing.TB, cfg Config, opts WriterOptions) ([]byte, map[string][]float32) {
	t.Helper()
	w := NewWriter(cfg, opts)
	want := map[string][]float32{}
	rng := splitmix64(7)
	for _, e := range ExpectedTensors(cfg) {
		data := make([]float32, elements(e.Shape))
		for i := range data {
			data[i] = float32(0.05 * rng.normal())
		}
		if err := w.Add(e.Name, cfg.DType, e.Shape, data); err != nil {
			t.Fatal(err)
		}
		want[e.Name] = data
	}
	b, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b, want
}

// cast returns x as stored in dtype d and read back.
func cast(x float32, d DType) float32 {
	switch d {
	case F16:
		return F16ToF32(F32ToF16(x))
	case BF16:
		return BF16ToF32(F32ToBF16(x))
	}
	return x
}

func TestRoundTrip(t *testing.T) {
	for _, d := range []DType{F32, F16, BF16} {
		for _, c := range []Codec{CodecNone, CodecZstd, CodecZstdShuffle} {
			t.Run(d.String()+"/"+c.String(), func(t *testing.T) {
				cfg := tinyConfig(d)
				b, want := writeModel(t, cfg, WriterOptions{Codec: c, ChunkSize: MinChunkSize, Producer: "test"})
				path := filepath.Join(t.TempDir(), "m.raptor")
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
				for _, how := range []string{"Read", "Open"} {
					var f *File
					var err error
					if how == "Read" {
						f, err = Read(b)
					} else {
						f, err = Open(path)
					}
					if err != nil {
						t.Fatalf("%s: %v", how, err)
					}
					checkModel(t, f, cfg, want, c)
					if err := f.Verify(); err != nil {
						t.Fatalf("%s: Verify: %v", how, err)
					}
					if info := f.Info(); info.Producer != "test" || info.Version != FormatVersion || info.Size != int64(len(b)) || info.Mapped != (how == "Open") {
						t.Fatalf("%s: Info = %+v", how, info)
					}
					if err := f.Close(); err != nil {
						t.Fatal(err)
					}
					if _, _, err := f.Float32(TensorWordEmb); status.CodeOf(err) != status.InvalidArgument {
						t.Fatalf("Float32 after Close: %v", err)
					}
				}
			})
		}
	}
}

func checkModel(t *testing.T, f *File, cfg Config, want map[string][]float32, c Codec) {
	t.Helper()
	got := f.Config()
	if got.Tokenizer == nil || strings.Join(got.Tokenizer.Vocab, " ") != strings.Join(cfg.Tokenizer.Vocab, " ") {
		t.Fatalf("tokenizer vocab = %v", got.Tokenizer)
	}
	gt, wt := *got.Tokenizer, *cfg.Tokenizer
	gt.Vocab, wt.Vocab = nil, nil
	if !reflect.DeepEqual(gt, wt) {
		t.Fatalf("tokenizer = %+v, want %+v", gt, wt)
	}
	if spec, ok := f.Tokenizer(); !ok || spec != got.Tokenizer {
		t.Fatal("Tokenizer() does not return the config's tokenizer")
	}
	got.Tokenizer, cfg.Tokenizer = nil, nil
	if got != cfg {
		t.Fatalf("config = %+v, want %+v", got, cfg)
	}
	names := f.Names()
	exp := ExpectedTensors(cfg)
	if len(names) != len(exp) {
		t.Fatalf("%d tensors, want %d", len(names), len(exp))
	}
	multiChunk := false
	for i, e := range exp {
		if names[i] != e.Name {
			t.Fatalf("tensor %d is %q, want %q", i, names[i], e.Name)
		}
		info, ok := f.Tensor(e.Name)
		if !ok || !equalInts(info.Shape, e.Shape) || info.DType != cfg.DType {
			t.Fatalf("%s: info %+v", e.Name, info)
		}
		if info.Offset%DataAlign != 0 {
			t.Fatalf("%s: offset %d not aligned", e.Name, info.Offset)
		}
		if info.Chunks > 1 {
			multiChunk = true
		}
		// Small tensors may not compress; large ones must use the codec.
		if info.RawSize >= 4096 && info.Codec != c {
			t.Fatalf("%s: codec %s, want %s", e.Name, info.Codec, c)
		}
		if info.Codec == CodecNone && info.StoredSize != info.RawSize {
			t.Fatalf("%s: stored %d raw %d", e.Name, info.StoredSize, info.RawSize)
		}
		data, shape, err := f.Float32(e.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !equalInts(shape, e.Shape) || len(data) != len(want[e.Name]) {
			t.Fatalf("%s: shape %v len %d", e.Name, shape, len(data))
		}
		for j, x := range want[e.Name] {
			if w := cast(x, cfg.DType); math.Float32bits(data[j]) != math.Float32bits(w) {
				t.Fatalf("%s[%d] = %v, want %v", e.Name, j, data[j], w)
			}
		}
		raw, err := f.Raw(e.Name)
		if err != nil || int64(len(raw)) != info.RawSize {
			t.Fatalf("%s: Raw: %d bytes, %v", e.Name, len(raw), err)
		}
	}
	if !multiChunk {
		t.Fatal("no tensor spans several chunks: the test does not exercise chunking")
	}
	if _, _, err := f.Float32("nope"); status.CodeOf(err) != status.InvalidModel {
		t.Fatalf("Float32 of a missing tensor: %v", err)
	}
}

// An incompressible tensor falls back to CodecNone and still round-trips.
func TestIncompressibleFallsBackToNone(t *testing.T) {
	cfg := tinyConfig(F32)
	w := NewWriter(cfg, WriterOptions{Codec: CodecZstd})
	rng := splitmix64(1)
	var emb []byte
	for _, e := range ExpectedTensors(cfg) {
		raw := make([]byte, elements(e.Shape)*4)
		for i := range raw {
			raw[i] = byte(rng.next())
		}
		if e.Name == TensorWordEmb {
			emb = raw
		}
		if err := w.AddRaw(e.Name, F32, e.Shape, raw); err != nil {
			t.Fatal(err)
		}
	}
	copyEmb := append([]byte(nil), emb...)
	for i := range emb {
		emb[i] = 0 // the writer must have its own copy
	}
	b, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	f, err := Read(b)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.Tensor(TensorWordEmb)
	raw, _ := f.Raw(TensorWordEmb)
	if info.Codec != CodecNone || string(raw) != string(copyEmb) {
		t.Fatalf("codec %s, equal %v", info.Codec, string(raw) == string(copyEmb))
	}
}

func TestRandomWriter(t *testing.T) {
	cfg := tinyConfig(BF16)
	cfg.Tokenizer = nil
	w, err := NewRandomWriter(cfg, 42, WriterOptions{Codec: CodecZstdShuffle})
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	f, err := Read(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Tokenizer(); ok {
		t.Fatal("unexpected tokenizer")
	}
	ln, _, _ := f.Float32(LayerTensor(1, LayerOutLNWeight))
	q, _, _ := f.Float32(LayerTensor(0, LayerQueryWeight))
	mean := func(x []float32) (m float64) {
		for _, v := range x {
			m += float64(v)
		}
		return m / float64(len(x))
	}
	if m := mean(ln); math.Abs(m-1) > 0.05 {
		t.Fatalf("LayerNorm weight mean %v, want ~1", m)
	}
	var ss float64
	for _, v := range q {
		ss += float64(v) * float64(v)
	}
	if std := math.Sqrt(ss / float64(len(q))); math.Abs(std-0.02) > 0.002 {
		t.Fatalf("query weight std %v, want ~0.02", std)
	}
	// Same seed, same bytes.
	w2, _ := NewRandomWriter(cfg, 42, WriterOptions{Codec: CodecZstdShuffle})
	if b2, _ := w2.Bytes(); string(b2) != string(b) {
		t.Fatal("NewRandomWriter is not deterministic")
	}
}

func TestWriterRejects(t *testing.T) {
	cfg := tinyConfig(F32)
	cases := []struct {
		name string
		do   func() error
		code status.Code
		msg  string
	}{
		{"duplicate", func() error {
			w := NewWriter(cfg, WriterOptions{})
			w.Add("a", F32, []int{1}, []float32{1})
			return w.Add("a", F32, []int{1}, []float32{1})
		}, status.InvalidArgument, "added twice"},
		{"length", func() error {
			return NewWriter(cfg, WriterOptions{}).Add("a", F32, []int{2, 2}, []float32{1})
		}, status.InvalidArgument, "has 4 elements, got 1"},
		{"raw length", func() error {
			return NewWriter(cfg, WriterOptions{}).AddRaw("a", F16, []int{2}, []byte{1, 2, 3})
		}, status.InvalidArgument, "is 4 bytes, got 3"},
		{"zero dim", func() error {
			return NewWriter(cfg, WriterOptions{}).Add("a", F32, []int{0}, nil)
		}, status.InvalidArgument, "dimension < 1"},
		{"f16 overflow", func() error {
			return NewWriter(cfg, WriterOptions{}).Add("a", F16, []int{2}, []float32{1, 1e6})
		}, status.OutOfRange, "1 of 2 values overflow f16"},
		{"bad chunk size", func() error {
			return NewWriter(cfg, WriterOptions{ChunkSize: 1000}).Add("a", F32, []int{1}, []float32{1})
		}, status.InvalidArgument, "chunk size 1000"},
		{"missing tensors", func() error {
			_, err := NewWriter(cfg, WriterOptions{}).Bytes()
			return err
		}, status.InvalidArgument, "missing 39 tensor(s) a bert model with this config needs: embeddings.word_embeddings.weight"},
		{"bad config", func() error {
			c := cfg
			c.Heads = 5
			_, err := NewWriter(c, WriterOptions{}).Bytes()
			return err
		}, status.InvalidArgument, "head count 5 does not divide hidden size 32"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			var se *status.Error
			if !errors.As(err, &se) || se.Code != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v (code %v), want %v containing %q", err, status.CodeOf(err), tc.code, tc.msg)
			}
		})
	}
}
