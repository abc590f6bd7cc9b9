package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/tokenizer"
	"github.com/raptor-infer/raptor/loader"
)

func init() {
	register("encode", "encode text lines or token ids into embeddings (JSONL or .npy)", runEncode)
}

// defaultModelName is the model ./build.sh converts, next to the executable.
const defaultModelName = "models/all-MiniLM-L6-v2.raptor"

type encodeFlags struct {
	model, backend, pooling, format, out string
	normalize, ids, verbose              bool
	task                                 bool // print the task head's top label per input (task.go)
	threads, maxBatchTokens, maxTokens   int
}

func runEncode(args []string) int {
	fs := flag.NewFlagSet("raptor encode", flag.ContinueOnError)
	var f encodeFlags
	fs.StringVar(&f.model, "model", "", "model file (default: $RAPTOR_MODEL, else "+defaultModelName+" beside this executable)")
	fs.StringVar(&f.backend, "backend", "auto", "auto (GPU if usable, else CPU), cpu or cuda")
	fs.StringVar(&f.pooling, "pooling", "mean", "pooled output: mean (sentence-transformers) or cls")
	fs.BoolVar(&f.normalize, "normalize", false, "L2-normalise the embeddings")
	fs.StringVar(&f.format, "format", "", "jsonl or npy (default: npy if -o ends in .npy, else jsonl)")
	fs.BoolVar(&f.ids, "ids", false, "input lines are JSON token-id arrays ([101, 7592, 102] or {\"ids\": [...]}), not text")
	fs.StringVar(&f.out, "o", "-", "output file (- = stdout)")
	fs.IntVar(&f.threads, "threads", 0, "CPU threads (0 = all cores)")
	fs.IntVar(&f.maxBatchTokens, "max-batch-tokens", 16384, "token budget of one batch")
	fs.IntVar(&f.maxTokens, "max-tokens", 0, "truncate text to this many tokens (0 = the model's longest sequence)")
	fs.BoolVar(&f.verbose, "v", false, "also print the engine's informational log lines")
	fs.BoolVar(&f.task, "task", false, "run the model's task head (HF *For* checkpoints) and print JSONL: the top label per input (sequence classification), per token (token classification) or the best answer span (question answering)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: raptor encode [flags] [INPUT|-]\n\nReads one input per line from INPUT (default: stdin) and writes one embedding per input.\n\nflags:")
		fs.PrintDefaults()
	}
	// Flags may come before or after the input path.
	var inputs []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		inputs = append(inputs, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(inputs) > 1 {
		fmt.Fprintf(os.Stderr, "raptor encode: one input at a time, got %q\n", inputs)
		return 2
	}
	input := "-"
	if len(inputs) == 1 {
		input = inputs[0]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := encodeMain(ctx, &f, input); err != nil {
		fmt.Fprintf(os.Stderr, "raptor encode: %v\n", err)
		return 1
	}
	return 0
}

// resolveModel picks the model: the flag, then $RAPTOR_MODEL, then the
// default model beside the executable (build/raptor -> build/models/...).
func resolveModel(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if env := os.Getenv("RAPTOR_MODEL"); env != "" {
		return env, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("no --model given and the executable's directory is unknown: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	p := filepath.Join(filepath.Dir(exe), defaultModelName)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no --model given and the default model %s is missing (./build.sh converts it): %w", p, err)
	}
	return p, nil
}

func encodeMain(ctx context.Context, f *encodeFlags, input string) error {
	opts := engine.DefaultOptions()
	switch f.backend {
	case "auto":
		opts.Backend = engine.BackendAuto
	case "cpu":
		opts.Backend = engine.BackendCPU
	case "cuda":
		opts.Backend = engine.BackendCUDA
	default:
		return fmt.Errorf("--backend must be auto, cpu or cuda, not %q", f.backend)
	}
	var pooling engine.Pooling
	switch f.pooling {
	case "mean":
		pooling = engine.PoolMean
	case "cls":
		pooling = engine.PoolCLS
	default:
		return fmt.Errorf("--pooling must be mean or cls, not %q", f.pooling)
	}
	format := f.format
	if format == "" {
		format = "jsonl"
		if strings.HasSuffix(f.out, ".npy") {
			format = "npy"
		}
	}
	if format != "jsonl" && format != "npy" {
		return fmt.Errorf("--format must be jsonl or npy, not %q", format)
	}
	if f.maxBatchTokens < 1 {
		return fmt.Errorf("--max-batch-tokens must be positive")
	}
	opts.Threads = f.threads
	opts.MaxBatchTokens = f.maxBatchTokens
	opts.Log = func(level engine.LogLevel, msg string) {
		if level >= engine.LogWarn || f.verbose {
			fmt.Fprintf(os.Stderr, "raptor: %s\n", msg)
		}
	}

	modelPath, err := resolveModel(f.model)
	if err != nil {
		return err
	}
	wf, err := loader.Open(modelPath)
	if err != nil {
		return err
	}
	cfg := wf.Config()
	var tok *tokenizer.Tokenizer
	if spec, ok := wf.Tokenizer(); ok && !f.ids {
		if tok, err = tokenizer.New(tokenizer.Spec(*spec)); err != nil {
			wf.Close()
			return fmt.Errorf("the model's tokenizer: %w", err)
		}
	} else if !f.ids {
		wf.Close()
		return fmt.Errorf("%s carries no tokenizer vocabulary: give token ids with --ids", modelPath)
	}
	eng, err := engine.New(opts)
	if err != nil {
		wf.Close()
		return err
	}
	defer eng.Close()
	model, err := eng.Load(wf)
	wf.Close()
	if err != nil {
		return err
	}
	defer model.Close()
	why := ""
	if opts.Backend == engine.BackendAuto && strings.HasPrefix(eng.BackendName(), "cpu") {
		why = " (auto: no usable GPU backend)"
	}
	fmt.Fprintf(os.Stderr, "raptor encode: %s (%s, %d layers, hidden %d) on backend %s%s\n",
		modelPath, cfg.Family, cfg.Layers, cfg.Hidden, eng.BackendName(), why)

	maxSeq := cfg.MaxPositions - cfg.PositionOffset
	maxTokens := maxSeq
	if f.maxTokens > 0 && f.maxTokens < maxTokens {
		maxTokens = f.maxTokens
	}
	in := io.Reader(os.Stdin)
	if input != "-" {
		file, err := os.Open(input)
		if err != nil {
			return err
		}
		defer file.Close()
		in = file
	}
	seqs, err := readInputs(in, tok, f.ids, maxTokens, cfg.VocabSize, maxSeq)
	if err != nil {
		return err
	}
	if f.task {
		w := io.Writer(os.Stdout)
		if f.out != "-" {
			file, err := os.Create(f.out)
			if err != nil {
				return err
			}
			defer file.Close()
			w = file
		}
		return encodeTask(ctx, model, seqs, f.maxBatchTokens, w)
	}

	var w io.Writer = os.Stdout
	var outFile *os.File
	if f.out != "-" {
		if outFile, err = os.Create(f.out); err != nil {
			return err
		}
		defer outFile.Close()
		w = outFile
	} else if format == "npy" && isTerminal(os.Stdout) {
		return errors.New("refusing to write .npy to a terminal: give -o FILE")
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var sink func(first int, vecs []float32) error
	var all []float32
	h := cfg.Hidden
	if format == "jsonl" {
		var line []byte
		sink = func(first int, vecs []float32) error {
			for i := 0; i*h < len(vecs); i++ {
				line = appendJSONL(line[:0], first+i, len(seqs[first+i]), vecs[i*h:(i+1)*h])
				if _, err := bw.Write(line); err != nil {
					return err
				}
			}
			return nil
		}
	} else {
		all = make([]float32, 0, len(seqs)*h)
		sink = func(_ int, vecs []float32) error { all = append(all, vecs...); return nil }
	}

	start := time.Now()
	tokens, err := encodeBatches(ctx, model, seqs, h, f.maxBatchTokens, engine.Outputs{Pooling: pooling, Normalize: f.normalize}, sink)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	if format == "npy" {
		if err := writeNPY(bw, all, len(seqs), h); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if outFile != nil {
		if err := outFile.Close(); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "raptor encode: %d sequences, %d tokens in %.3f s: %.0f tokens/s on %s\n",
		len(seqs), tokens, elapsed.Seconds(), float64(tokens)/math.Max(elapsed.Seconds(), 1e-9), eng.BackendName())
	return nil
}

// readInputs reads one input per line: text (tokenized, truncated to
// maxTokens) or, with ids, a JSON array of token ids or {"ids": [...]}
// (blank lines skipped), each checked against the vocabulary and maxSeq.
func readInputs(r io.Reader, tok *tokenizer.Tokenizer, ids bool, maxTokens, vocab, maxSeq int) ([][]int32, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var seqs [][]int32
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadString('\n')
		if err != nil && err != io.EOF {
			return nil, err
		}
		if line == "" && err == io.EOF {
			break
		}
		line = strings.TrimRight(line, "\r\n")
		if ids {
			if strings.TrimSpace(line) != "" {
				s, perr := parseIDs(line, vocab, maxSeq)
				if perr != nil {
					return nil, fmt.Errorf("input line %d: %w", lineNo, perr)
				}
				seqs = append(seqs, s)
			}
		} else {
			s, terr := tok.Encode(line, maxTokens)
			if terr != nil {
				return nil, fmt.Errorf("input line %d: %w", lineNo, terr)
			}
			seqs = append(seqs, s)
		}
		if err == io.EOF {
			break
		}
	}
	if len(seqs) == 0 {
		return nil, errors.New("no input lines")
	}
	return seqs, nil
}

func parseIDs(line string, vocab, maxSeq int) ([]int32, error) {
	var raw []int64
	if err := json.Unmarshal([]byte(line), &raw); err != nil {
		var obj struct {
			IDs *[]int64 `json:"ids"`
		}
		if err2 := json.Unmarshal([]byte(line), &obj); err2 != nil || obj.IDs == nil {
			return nil, fmt.Errorf("not a JSON array of token ids nor an object with \"ids\": %v", err)
		}
		raw = *obj.IDs
	}
	if len(raw) == 0 {
		return nil, errors.New("empty token-id sequence")
	}
	if len(raw) > maxSeq {
		return nil, fmt.Errorf("%d tokens; the model accepts at most %d", len(raw), maxSeq)
	}
	s := make([]int32, len(raw))
	for i, v := range raw {
		if v < 0 || v >= int64(vocab) {
			return nil, fmt.Errorf("token id %d at position %d is outside [0, %d)", v, i, vocab)
		}
		s[i] = int32(v)
	}
	return s, nil
}

// encodeBatches packs consecutive sequences into batches of at most budget
// tokens (a longer sequence goes alone), encodes them in order and hands each
// batch's pooled vectors to sink. It returns the number of tokens encoded.
func encodeBatches(ctx context.Context, m *engine.Model, seqs [][]int32, h, budget int, out engine.Outputs, sink func(first int, vecs []float32) error) (int, error) {
	total := 0
	for _, s := range seqs {
		total += len(s)
	}
	bar := newProgress(len(seqs), total)
	done := 0
	var b engine.Batch
	var pooled []float32
	for first := 0; first < len(seqs); {
		b.Tokens, b.CuSeqlens = b.Tokens[:0], append(b.CuSeqlens[:0], 0)
		end := first
		for end < len(seqs) && (end == first || len(b.Tokens)+len(seqs[end]) <= budget) {
			b.Tokens = append(b.Tokens, seqs[end]...)
			b.CuSeqlens = append(b.CuSeqlens, int32(len(b.Tokens)))
			end++
		}
		n := end - first
		if cap(pooled) < n*h {
			pooled = make([]float32, n*h)
		}
		out.Pooled = pooled[:n*h]
		if err := m.Encode(ctx, &b, &out); err != nil {
			bar.finish()
			return done, fmt.Errorf("encoding inputs %d to %d: %w", first+1, end, err)
		}
		if err := sink(first, out.Pooled); err != nil {
			bar.finish()
			return done, err
		}
		done += len(b.Tokens)
		first = end
		bar.update(end, done)
	}
	bar.finish()
	return done, nil
}

func appendJSONL(dst []byte, index, tokens int, v []float32) []byte {
	dst = append(dst, `{"index":`...)
	dst = strconv.AppendInt(dst, int64(index), 10)
	dst = append(dst, `,"tokens":`...)
	dst = strconv.AppendInt(dst, int64(tokens), 10)
	dst = append(dst, `,"embedding":[`...)
	for i, x := range v {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendFloat(dst, float64(x), 'g', -1, 32) // shortest text that reads back bit for bit
	}
	return append(dst, "]}\n"...)
}

// writeNPY writes a float32 [n, h] array in NumPy's .npy format, version 1.0.
func writeNPY(w io.Writer, data []float32, n, h int) error {
	header := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", n, h)
	total := 10 + len(header) + 1
	header += strings.Repeat(" ", (64-total%64)%64) + "\n"
	buf := make([]byte, 0, 10+len(header)+4*len(data))
	buf = append(buf, "\x93NUMPY\x01\x00"...)
	buf = binary.LittleEndian.AppendUint16(buf, uint16(len(header)))
	buf = append(buf, header...)
	for _, x := range data {
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
	}
	_, err := w.Write(buf)
	return err
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress draws a bar on stderr, only when stderr is a terminal and the
// input needs more than one batch.
type progress struct {
	on           bool
	n, tokens    int
	start, drawn time.Time
}

func newProgress(n, tokens int) *progress {
	return &progress{on: isTerminal(os.Stderr), n: n, tokens: tokens, start: time.Now()}
}

func (p *progress) update(done, tokens int) {
	if !p.on || done == p.n && p.drawn.IsZero() || time.Since(p.drawn) < 100*time.Millisecond && done < p.n {
		return
	}
	p.drawn = time.Now()
	const width = 30
	fill := width * tokens / max(p.tokens, 1)
	rate := float64(tokens) / math.Max(time.Since(p.start).Seconds(), 1e-9)
	fmt.Fprintf(os.Stderr, "\r[%s%s] %d/%d sequences, %.0f tokens/s", strings.Repeat("#", fill), strings.Repeat(".", width-fill), done, p.n, rate)
}

func (p *progress) finish() {
	if p.on && !p.drawn.IsZero() {
		fmt.Fprintln(os.Stderr)
	}
}
