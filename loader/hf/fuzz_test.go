package hf

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"unsafe"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// The converter reads untrusted input: a safetensors file (a JSON header and
// a data section) and config.json, vocab.txt and tokenizer_config.json.
// FuzzSafetensors fuzzes the safetensors parser alone (fast); FuzzConvert
// fuzzes a whole checkpoint directory through Convert and reads what it
// produces back through the weight-file reader. The committed corpora are in
// testdata/fuzz/Fuzz*; regenerate the seeds with
// RAPTOR_WRITE_FUZZ_CORPUS=1 go test -run TestWriteHFFuzzCorpus ./loader/hf.

// fuzzConfig is a tiny but complete BERT config (a few hundred parameters),
// so that mutations reach every stage of Convert quickly.
const fuzzConfig = `{"model_type":"bert","hidden_size":4,"num_hidden_layers":1,"num_attention_heads":2,` +
	`"intermediate_size":4,"max_position_embeddings":8,"vocab_size":6,"type_vocab_size":1,"pad_token_id":0}`

const fuzzVocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n##b\n"

const fuzzTokenizerConfig = `{"tokenizer_class":"BertTokenizer","do_lower_case":true,"model_max_length":8}`

// stBytes builds a safetensors file of the tensors cfg needs, in dtype
// ("F32", "F16" or "BF16"), with small distinct values.
func stBytes(t testing.TB, cfgJSON, dtype string, pooler bool) []byte {
	t.Helper()
	var hc hfConfig
	if err := json.Unmarshal([]byte(cfgJSON), &hc); err != nil {
		t.Fatal(err)
	}
	cfg, err := configFrom(&hc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pooler = pooler
	size := map[string]int{"F32": 4, "F16": 2, "BF16": 2}[dtype]
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var body []byte
	for i, e := range loader.ExpectedTensors(cfg) {
		n := 1
		for _, d := range e.Shape {
			n *= d
		}
		b := make([]byte, n*size)
		for j := 0; j < n; j++ {
			v := float32((i*7+j)%13-6) / 16
			switch dtype {
			case "F32":
				binary.LittleEndian.PutUint32(b[4*j:], mathFloat32bits(v))
			case "F16":
				binary.LittleEndian.PutUint16(b[2*j:], loader.F32ToF16(v))
			case "BF16":
				binary.LittleEndian.PutUint16(b[2*j:], uint16(mathFloat32bits(v)>>16))
			}
		}
		hdr[e.Name] = map[string]any{"dtype": dtype, "shape": e.Shape, "data_offsets": []int{len(body), len(body) + len(b)}}
		body = append(body, b...)
	}
	hb, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hb)))
	return append(append(out, hb...), body...)
}

type hfSeed struct {
	name               string
	cfg, st, vocab, tc []byte
}

func hfSeeds(t testing.TB) []hfSeed {
	cfgSparse := strings.Replace(fuzzConfig, `"model_type":"bert"`, `"model_type":"big_bird","attention_type":"block_sparse","block_size":2,"num_random_blocks":1`, 1)
	cfgRoberta := strings.Replace(strings.Replace(fuzzConfig, `"model_type":"bert"`, `"model_type":"roberta"`, 1), `"max_position_embeddings":8`, `"max_position_embeddings":10`, 1)
	seeds := []hfSeed{
		{"bert-f32", []byte(fuzzConfig), stBytes(t, fuzzConfig, "F32", false), []byte(fuzzVocab), []byte(fuzzTokenizerConfig)},
		{"bert-f16-pooler", []byte(fuzzConfig), stBytes(t, fuzzConfig, "F16", true), []byte(fuzzVocab), []byte(fuzzTokenizerConfig)},
		{"bigbird-bf16", []byte(cfgSparse), stBytes(t, cfgSparse, "BF16", false), nil, nil},
		{"roberta-f32-notok", []byte(cfgRoberta), stBytes(t, cfgRoberta, "F32", false), []byte(fuzzVocab), []byte(`{"tokenizer_class":"RobertaTokenizer"}`)},
	}
	// Broken variants: a header length past the end, overlapping tensors, a
	// bad shape, a truncated data section.
	b := seeds[0].st
	long := append([]byte(nil), b...)
	binary.LittleEndian.PutUint64(long, uint64(len(b)))
	seeds = append(seeds,
		hfSeed{"bad-header-len", seeds[0].cfg, long, nil, nil},
		hfSeed{"truncated", seeds[0].cfg, b[:len(b)-3], nil, nil},
		hfSeed{"overlap", seeds[0].cfg, []byte(stOverlap), nil, nil},
		hfSeed{"empty", []byte(`{}`), []byte{}, nil, nil},
	)
	return seeds
}

// stOverlap is a safetensors file whose two tensors share bytes.
var stOverlap = func() string {
	h := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`
	return string(binary.LittleEndian.AppendUint64(nil, uint64(len(h)))) + h + strings.Repeat("\x00", 12)
}()

func mathFloat32bits(v float32) uint32 { return math.Float32bits(v) }

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// FuzzSafetensors: any bytes either parse into tensors that lie inside the
// data section, do not overlap and have exactly their shape's size, or give
// INVALID_MODEL. Never a panic.
func FuzzSafetensors(f *testing.F) {
	for _, s := range hfSeeds(f) {
		f.Add(s.st)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := parseSafetensors("fuzz.safetensors", data)
		if err != nil {
			if c := status.CodeOf(err); c != status.InvalidModel {
				t.Fatalf("error with status %v, want INVALID_MODEL: %v", c, err)
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if len(data) < 8 {
			t.Fatalf("parsed a %d-byte file", len(data))
		}
		n := binary.LittleEndian.Uint64(data)
		body := data[8+n:]
		type span struct{ b, e int }
		var spans []span
		for name, x := range sf.tensors {
			want := stDTypeSize[x.DType]
			for _, d := range x.Shape {
				if d < 0 {
					t.Fatalf("%s: negative dimension accepted: %v", name, x.Shape)
				}
				want *= d
			}
			if len(x.Data) != want {
				t.Fatalf("%s: %d bytes for shape %v of %s", name, len(x.Data), x.Shape, x.DType)
			}
			if len(x.Data) == 0 {
				continue
			}
			// The tensor's bytes alias the body: find where.
			off := int(uintptrOf(x.Data) - uintptrOf(body[:1]))
			if off < 0 || off+len(x.Data) > len(body) {
				t.Fatalf("%s: data at %d+%d outside the %d-byte body", name, off, len(x.Data), len(body))
			}
			spans = append(spans, span{off, off + len(x.Data)})
		}
		sort.Slice(spans, func(i, j int) bool { return spans[i].b < spans[j].b })
		for i := 1; i < len(spans); i++ {
			if spans[i].b < spans[i-1].e {
				t.Fatalf("overlapping tensors accepted: %v", spans)
			}
		}
	})
}

// FuzzConvert writes a checkpoint directory (config.json, model.safetensors,
// and vocab.txt / tokenizer_config.json when given) and converts it. Convert
// must succeed or fail with INVALID_MODEL, UNSUPPORTED or INVALID_ARGUMENT
// and a message, never panic; what it accepts must write, read back through
// loader.Read (which validates everything again) with the same config, and
// hold every tensor the config needs.
func FuzzConvert(f *testing.F) {
	for _, s := range hfSeeds(f) {
		f.Add(s.cfg, s.st, s.vocab, s.tc)
	}
	f.Fuzz(func(t *testing.T, cfg, st, vocab, tc []byte) {
		// Keep inputs small: the tiny seeds are a few KB, and a huge vocab
		// only slows the fuzzer down.
		if len(cfg) > 4<<10 || len(st) > 64<<10 || len(vocab) > 4<<10 || len(tc) > 4<<10 {
			return
		}
		dir := t.TempDir()
		write := func(name string, b []byte) {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("config.json", cfg)
		write("model.safetensors", st)
		if len(vocab) > 0 {
			write("vocab.txt", vocab)
		}
		if len(tc) > 0 {
			write("tokenizer_config.json", tc)
		}
		for _, d := range []loader.DType{loader.F32, loader.F16} {
			res, err := Convert(dir, Options{DType: d, Writer: loader.WriterOptions{Codec: loader.CodecZstd, Producer: "fuzz"}})
			if err != nil {
				switch c := status.CodeOf(err); c {
				case status.InvalidModel, status.Unsupported, status.InvalidArgument:
				case status.OutOfRange:
					// A weight that does not fit the requested dtype (e.g. a
					// bf16 value beyond f16's range) is refused, not saturated.
					if d == loader.F32 {
						t.Fatalf("Convert to f32: unexpected OUT_OF_RANGE: %v", err)
					}
				default:
					t.Fatalf("Convert: status %v, want INVALID_MODEL, UNSUPPORTED, INVALID_ARGUMENT or (f16 overflow) OUT_OF_RANGE: %v", c, err)
				}
				if err.Error() == "" {
					t.Fatal("Convert: empty error message")
				}
				return
			}
			b, err := res.Writer.Bytes()
			if err != nil {
				// The writer refuses what the converter let through: a
				// converter bug unless it is a documented limit.
				t.Fatalf("Convert accepted a checkpoint the writer refuses: %v", err)
			}
			file, err := loader.Read(b)
			if err != nil {
				t.Fatalf("Convert wrote a file loader.Read refuses: %v", err)
			}
			got := file.Config()
			if fmt.Sprint(got.Family, got.Hidden, got.Layers, got.Heads, got.VocabSize, got.DType) !=
				fmt.Sprint(res.Config.Family, res.Config.Hidden, res.Config.Layers, res.Config.Heads, res.Config.VocabSize, d) {
				t.Fatalf("config read back %+v, converted %+v", got, res.Config)
			}
			for _, e := range loader.ExpectedTensors(got) {
				if _, shape, err := file.Float32(e.Name); err != nil || fmt.Sprint(shape) != fmt.Sprint(e.Shape) {
					t.Fatalf("tensor %s: shape %v, want %v (%v)", e.Name, shape, e.Shape, err)
				}
			}
			file.Close()
		}
	})
}

// TestWriteHFFuzzCorpus writes the seeds into testdata/fuzz (run with
// RAPTOR_WRITE_FUZZ_CORPUS=1), in the go test fuzz v1 format.
func TestWriteHFFuzzCorpus(t *testing.T) {
	if os.Getenv("RAPTOR_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set RAPTOR_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz/FuzzSafetensors and FuzzConvert")
	}
	enc := func(vals ...[]byte) []byte {
		s := "go test fuzz v1\n"
		for _, v := range vals {
			s += fmt.Sprintf("[]byte(%q)\n", v)
		}
		return []byte(s)
	}
	for _, s := range hfSeeds(t) {
		for target, body := range map[string][]byte{
			"FuzzSafetensors": enc(s.st),
			"FuzzConvert":     enc(s.cfg, s.st, s.vocab, s.tc),
		} {
			dir := filepath.Join("testdata", "fuzz", target)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, s.name), body, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestHFFuzzSeeds: the valid seeds convert (so the fuzzer starts from inputs
// that reach the writer and the reader) and the broken ones are refused.
func TestHFFuzzSeeds(t *testing.T) {
	for _, s := range hfSeeds(t) {
		t.Run(s.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "config.json"), s.cfg, 0o644)
			os.WriteFile(filepath.Join(dir, "model.safetensors"), s.st, 0o644)
			if len(s.vocab) > 0 {
				os.WriteFile(filepath.Join(dir, "vocab.txt"), s.vocab, 0o644)
			}
			if len(s.tc) > 0 {
				os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), s.tc, 0o644)
			}
			res, err := Convert(dir, Options{DType: loader.F16})
			valid := !strings.Contains("bad-header-len truncated overlap empty", s.name)
			if valid != (err == nil) {
				t.Fatalf("valid=%v, Convert: %v", valid, err)
			}
			if valid && (res.Config.Tokenizer != nil) != strings.HasPrefix(s.name, "bert") {
				t.Fatalf("tokenizer %v", res.Config.Tokenizer)
			}
		})
	}
}
