// Package hf converts HuggingFace checkpoints (config.json plus
// model.safetensors, or a sharded model.safetensors.index.json) of
// BertModel, RobertaModel, BigBirdModel and sentence-transformers BERT models,
// and their sequence-classification, token-classification and
// question-answering task models (heads.go), into raptor weight files.
package hf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// AttentionOverride replaces the checkpoint's attention, e.g. to run a
// RoBERTa checkpoint with BigBird block-sparse attention.
type AttentionOverride struct {
	Kind         loader.AttentionKind
	BlockSize    int // block_sparse: 0 means 64
	RandomBlocks int // block_sparse: random blocks per query block; -1 means 3
}

// Options configure Convert.
type Options struct {
	DType     loader.DType       // the stored dtype
	Attention *AttentionOverride // nil keeps the checkpoint's attention
	// Writer configures compression (Codec, Level, ChunkSize, Parallelism)
	// and Producer.
	Writer loader.WriterOptions
}

// Result is a converted model, ready to be written.
type Result struct {
	Writer *loader.Writer
	Config loader.Config
	// Skipped lists checkpoint tensors deliberately left out (buffers such
	// as embeddings.position_ids), by their checkpoint names.
	Skipped []string
	// Notes are remarks for the user (no tokenizer found, capped lengths...).
	Notes []string
	// SourceDTypes counts the checkpoint's tensors by safetensors dtype.
	SourceDTypes map[string]int
	// Sources maps each canonical tensor name to its checkpoint name.
	Sources map[string]string
}

// prefixes are the model prefixes a checkpoint may put before canonical
// names: none (BertModel saved directly, sentence-transformers), or the
// base_model_prefix of a task model (BigBird's is "bert").
var prefixes = []string{"", "bert.", "roberta.", "model.", "bigbird."}

// skippable are buffers HF saves with some checkpoints that raptor does not
// need: they hold arange / zeros, which raptor computes.
var skippable = map[string]bool{
	"embeddings.position_ids":   true,
	"embeddings.token_type_ids": true,
}

// Convert reads the HuggingFace model directory dir and converts it. Every
// checkpoint tensor must be either a tensor the model needs or a known
// buffer: anything else (classification heads, decoder weights...) is an
// error listing the tensors by name, as is a missing tensor.
func Convert(dir string, opts Options) (*Result, error) {
	var hc hfConfig
	if err := readJSON(filepath.Join(dir, "config.json"), &hc); err != nil {
		return nil, err
	}
	cfg, err := configFrom(&hc)
	if err != nil {
		return nil, err
	}
	if !opts.DType.Valid() {
		return nil, status.Errorf(status.InvalidArgument, "unknown output dtype %d", uint8(opts.DType))
	}
	cfg.DType = opts.DType
	if o := opts.Attention; o != nil {
		switch o.Kind {
		case loader.AttentionDense:
			cfg.Attention, cfg.BlockSize, cfg.RandomBlocks = loader.AttentionDense, 0, 0
		case loader.AttentionBlockSparse:
			cfg.Attention, cfg.BlockSize, cfg.RandomBlocks = loader.AttentionBlockSparse, o.BlockSize, o.RandomBlocks
			if cfg.BlockSize == 0 {
				cfg.BlockSize = 64
			}
			if cfg.RandomBlocks < 0 {
				cfg.RandomBlocks = 3
			}
		default:
			return nil, status.Errorf(status.InvalidArgument, "unknown attention kind %d", uint8(o.Kind))
		}
	}

	files, err := openCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, f := range files {
			f.close()
		}
	}()
	all := map[string]*stTensor{}
	for _, f := range files {
		for name, t := range f.tensors {
			if prev, dup := all[name]; dup {
				return nil, status.Errorf(status.InvalidModel, "tensor %q is in both %s and %s", name, prev.File, t.File)
			}
			all[name] = t
		}
	}
	prefix, ok := "", false
	for _, p := range prefixes {
		if _, ok = all[p+loader.TensorWordEmb]; ok {
			prefix = p
			break
		}
	}
	if !ok {
		return nil, status.Errorf(status.InvalidModel, "checkpoint has no word embeddings (looked for %s with prefixes %q): not a BERT-family encoder?", loader.TensorWordEmb, prefixes)
	}
	// BigBirdModel's pooler is a bare nn.Linear ("pooler.weight"), not
	// BertPooler's "pooler.dense.weight"; both are dense + tanh on the
	// first token.
	aliases := map[string]string{}
	if cfg.Family == loader.FamilyBigBird {
		aliases[loader.TensorPoolerWeight] = "pooler.weight"
		aliases[loader.TensorPoolerBias] = "pooler.bias"
	}
	source := func(canon string) string {
		if headTensorNames[canon] {
			return canon // HF keeps task heads outside the model prefix
		}
		if a, ok := aliases[canon]; ok {
			return prefix + a
		}
		return prefix + canon
	}
	_, cfg.Pooler = all[source(loader.TensorPoolerWeight)]
	if cfg.Head, err = readHead(dir, cfg, all); err != nil {
		return nil, err
	}
	tok, notes, err := readTokenizer(dir, cfg)
	if err != nil {
		return nil, err
	}
	cfg.Tokenizer = tok
	if err := cfg.Validate(); err != nil {
		return nil, status.Errorf(status.Unsupported, "config.json: %v", err)
	}

	res := &Result{Config: cfg, Notes: notes, SourceDTypes: map[string]int{}, Sources: map[string]string{}}
	expected := loader.ExpectedTensors(cfg)
	known := make(map[string]bool, len(expected))
	var missing []string
	for _, e := range expected {
		src := source(e.Name)
		known[src] = true
		res.Sources[e.Name] = src
		if _, ok := all[src]; !ok {
			missing = append(missing, src)
		}
	}
	var unknown []string
	for name, t := range all {
		res.SourceDTypes[t.DType]++
		canon, has := strings.CutPrefix(name, prefix)
		switch {
		case known[name]:
		case has && skippable[canon]:
			res.Skipped = append(res.Skipped, name)
		default:
			unknown = append(unknown, name)
		}
	}
	sort.Strings(unknown)
	sort.Strings(res.Skipped)
	var problems []string
	if len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("missing %d tensor(s): %s", len(missing), strings.Join(missing, ", ")))
	}
	if len(unknown) > 0 {
		problems = append(problems, fmt.Sprintf("%d unknown tensor(s) (modules raptor does not run; task heads: see SupportedHeadArchitectures): %s", len(unknown), strings.Join(unknown, ", ")))
	}
	if len(problems) > 0 {
		return nil, status.Errorf(status.InvalidModel, "checkpoint %s (prefix %q): %s", dir, prefix, strings.Join(problems, "; "))
	}

	w := loader.NewWriter(cfg, opts.Writer)
	for _, e := range expected {
		t := all[res.Sources[e.Name]]
		if !equalInts(t.Shape, e.Shape) {
			return nil, status.Errorf(status.InvalidModel, "tensor %s has shape %v, config.json implies %v", t.Name, t.Shape, e.Shape)
		}
		if err := addTensor(w, e.Name, t, cfg.DType); err != nil {
			return nil, err
		}
	}
	res.Writer = w
	return res, nil
}

// addTensor adds t as name in dtype: the source bytes unchanged when the
// dtypes agree, converted through float32 (exact for f16/bf16 sources, then
// rounded to nearest even) otherwise.
func addTensor(w *loader.Writer, name string, t *stTensor, dtype loader.DType) error {
	src, ok := map[string]loader.DType{"F32": loader.F32, "F16": loader.F16, "BF16": loader.BF16}[t.DType]
	if !ok {
		return status.Errorf(status.Unsupported, "tensor %s has dtype %s (F32, F16 or BF16 only)", t.Name, t.DType)
	}
	if src == dtype {
		return w.AddRaw(name, dtype, t.Shape, t.Data)
	}
	f32 := make([]float32, len(t.Data)/src.Size())
	loader.DecodeFloat32(f32, t.Data, src)
	if err := w.Add(name, dtype, t.Shape, f32); err != nil {
		return fmt.Errorf("converting %s from %s: %w", t.Name, t.DType, err)
	}
	return nil
}

// openCheckpoint opens model.safetensors, or every shard listed in
// model.safetensors.index.json.
func openCheckpoint(dir string) ([]*stFile, error) {
	single := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(single); err == nil {
		f, err := openSafetensors(single)
		if err != nil {
			return nil, err
		}
		return []*stFile{f}, nil
	}
	index := filepath.Join(dir, "model.safetensors.index.json")
	if _, err := os.Stat(index); errors.Is(err, fs.ErrNotExist) {
		hint := ""
		if _, err := os.Stat(filepath.Join(dir, "pytorch_model.bin")); err == nil {
			hint = " (pytorch_model.bin is not read: pickle files can run code; re-save with safe_serialization=True)"
		}
		return nil, status.Errorf(status.IO, "%s has neither model.safetensors nor model.safetensors.index.json%s", dir, hint)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := readJSON(index, &idx); err != nil {
		return nil, err
	}
	shardOf := map[string][]string{}
	for tensor, shard := range idx.WeightMap {
		if shard != filepath.Base(shard) || shard == "" || shard == "." || shard == ".." {
			return nil, status.Errorf(status.InvalidModel, "%s: shard name %q is not a file name in the directory", index, shard)
		}
		shardOf[shard] = append(shardOf[shard], tensor)
	}
	shards := make([]string, 0, len(shardOf))
	for s := range shardOf {
		shards = append(shards, s)
	}
	sort.Strings(shards)
	var files []*stFile
	for _, s := range shards {
		f, err := openSafetensors(filepath.Join(dir, s))
		if err != nil {
			for _, g := range files {
				g.close()
			}
			return nil, err
		}
		files = append(files, f)
		// The index and the shard must agree.
		for _, name := range shardOf[s] {
			if _, ok := f.tensors[name]; !ok {
				for _, g := range files {
					g.close()
				}
				return nil, status.Errorf(status.InvalidModel, "%s lists tensor %q in %s, which does not hold it", index, name, s)
			}
		}
	}
	return files, nil
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
