package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/raptor-infer/raptor/loader"
	"github.com/raptor-infer/raptor/loader/hf"
)

func init() {
	register("convert", "convert a HuggingFace checkpoint directory into a raptor weight file", runConvert)
}

// parseInterspersed parses flags that may come before or after the
// positional arguments, and returns the positionals.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

var dtypes = map[string]loader.DType{"f32": loader.F32, "f16": loader.F16, "bf16": loader.BF16}

func runConvert(args []string) int {
	fs := flag.NewFlagSet("raptor convert", flag.ContinueOnError)
	out := fs.String("o", "", "output weight file (required)")
	dtype := fs.String("dtype", "f16", "stored dtype: f32, f16 or bf16")
	compress := fs.String("compress", "zstd", "compression: zstd or none (none: raw tensors, memory-mapped when loaded)")
	shuffle := fs.Bool("shuffle", true, "byte-plane shuffle each chunk before zstd (better ratio on f16/bf16/f32 weights)")
	level := fs.Int("level", 1, "zstd level: 1 fastest, 2 default, 3 better, 4 best (on weights 1 compresses as well as the others)")
	attention := fs.String("attention", "", "override the checkpoint's attention: dense or block_sparse (default: keep it)")
	blockSize := fs.Int("block-size", 64, "block size of block_sparse attention (with -attention block_sparse)")
	randomBlocks := fs.Int("random-blocks", 3, "random key blocks per query block (with -attention block_sparse)")
	chunk := fs.Int("chunk-size", loader.DefaultChunkSize, "raw bytes per checksummed/compressed chunk (power of two)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, `usage: raptor convert [flags] HF_DIR -o FILE

Converts a HuggingFace model directory (config.json plus model.safetensors or
model.safetensors.index.json; BertModel, RobertaModel, BigBirdModel or a
sentence-transformers BERT) into a raptor weight file. A WordPiece tokenizer
(vocab.txt, tokenizer_config.json) is carried along when present.

flags:`)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if len(pos) != 1 || *out == "" {
		fs.Usage()
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "raptor convert: "+format+"\n", a...)
		return 2
	}
	opts := hf.Options{Writer: loader.WriterOptions{Level: *level, ChunkSize: *chunk, Producer: "raptor convert " + filepath.Base(filepath.Clean(pos[0]))}}
	d, ok := dtypes[*dtype]
	if !ok {
		return usageErr("-dtype %q: want f32, f16 or bf16", *dtype)
	}
	opts.DType = d
	switch *compress {
	case "zstd":
		opts.Writer.Codec = loader.CodecZstd
		if *shuffle {
			opts.Writer.Codec = loader.CodecZstdShuffle
		}
	case "none":
	default:
		return usageErr("-compress %q: want zstd or none", *compress)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch *attention {
	case "":
		if set["block-size"] || set["random-blocks"] {
			return usageErr("-block-size and -random-blocks need -attention block_sparse")
		}
	case "dense":
		opts.Attention = &hf.AttentionOverride{Kind: loader.AttentionDense}
	case "block_sparse":
		if *blockSize < 1 || *randomBlocks < 0 {
			return usageErr("-block-size must be >= 1 and -random-blocks >= 0")
		}
		opts.Attention = &hf.AttentionOverride{Kind: loader.AttentionBlockSparse, BlockSize: *blockSize, RandomBlocks: *randomBlocks}
	default:
		return usageErr("-attention %q: want dense or block_sparse", *attention)
	}

	start := time.Now()
	res, err := hf.Convert(pos[0], opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "raptor convert: %v\n", err)
		return 1
	}
	n, err := writeAtomic(*out, res.Writer)
	if err != nil {
		fmt.Fprintf(os.Stderr, "raptor convert: %v\n", err)
		return 1
	}
	// Read the file back: what was written must load.
	f, err := loader.Open(*out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "raptor convert: the written file does not load: %v\n", err)
		return 1
	}
	defer f.Close()
	var raw, stored int64
	for _, name := range f.Names() {
		t, _ := f.Tensor(name)
		raw += t.RawSize
		stored += t.StoredSize
	}
	c := res.Config
	fmt.Printf("wrote %s: %s, %d tensors, %s\n", *out, describeModel(c), len(f.Names()), byteCount(n))
	fmt.Printf("  weights %s raw, %s stored (ratio %.3f), %s, %.1fs\n", byteCount(raw), byteCount(stored), float64(raw)/float64(stored), codecName(opts.Writer.Codec), time.Since(start).Seconds())
	var src []string
	for k, v := range res.SourceDTypes {
		src = append(src, fmt.Sprintf("%d %s", v, k))
	}
	fmt.Printf("  source tensors: %s\n", strings.Join(src, ", "))
	if len(res.Skipped) > 0 {
		fmt.Printf("  skipped buffers: %s\n", strings.Join(res.Skipped, ", "))
	}
	for _, note := range res.Notes {
		fmt.Printf("  note: %s\n", note)
	}
	return 0
}

// writeAtomic writes w to path through a temporary file in the same
// directory, so a failed conversion never leaves a partial file.
func writeAtomic(path string, w *loader.Writer) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return 0, err
	}
	n, err := w.WriteTo(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = tmp.Chmod(0o644) // CreateTemp makes it 0600
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return 0, err
	}
	return n, nil
}

func codecName(c loader.Codec) string { return c.String() }

func describeModel(c loader.Config) string {
	s := fmt.Sprintf("%s L=%d H=%d A=%d I=%d vocab=%d, %s, %s attention", c.Family, c.Layers, c.Hidden, c.Heads, c.Intermediate, c.VocabSize, c.DType, c.Attention)
	if c.Attention == loader.AttentionBlockSparse {
		s += fmt.Sprintf(" (block %d, %d random)", c.BlockSize, c.RandomBlocks)
	}
	return s
}

// byteCount formats n bytes with a binary unit.
func byteCount(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
