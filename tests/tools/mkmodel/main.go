// Command mkmodel writes the tiny deterministic random-weight models the C
// and C++ host tests use:
//
//	tiny-bert.raptor     BERT, dense attention, pooler, a small WordPiece vocabulary
//	tiny-bigbird.raptor  BigBird (RoBERTa embeddings), block-sparse attention
//	                     (block 8, 1 random block: sequences over 56 tokens are
//	                     sparse), no tokenizer
//	tiny-bert-cls.raptor tiny-bert's shape with a sequence-classification head
//	                     (BERT pooler + classifier, labels negative/neutral/positive)
//
// Usage: go run ./tests/tools/mkmodel [-o DIR] [-gpu] (default build/testmodels).
// -gpu writes the same files in shapes the CUDA backend runs (one attention
// head of 32, head dimension 32; BigBird with the sparse kernel's block of 64
// and positions up to 1024), for the C hosts against a CUDA engine
// (tests/gpu/run.sh: fuzz_abi and soak with RAPTOR_TEST_BACKEND=cuda).
// The same command always writes the same bytes; files already up to date are
// left alone, so build systems can run it unconditionally.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/raptor-infer/raptor/loader"
)

// vocab is a small lower-case WordPiece vocabulary: the five BERT specials,
// punctuation, letters, a few words and continuation pieces.
var vocab = func() []string {
	v := []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
	for _, p := range ".,!?'-\"():;" {
		v = append(v, string(p))
	}
	for c := 'a'; c <= 'z'; c++ {
		v = append(v, string(c))
	}
	v = append(v,
		"the", "quick", "brown", "fox", "jump", "over", "lazy", "dog", "hello",
		"world", "raptor", "encode", "long", "short", "text", "model", "is", "a",
		"and", "of", "to", "in", "it", "cafe", "##s", "##ed", "##ing", "##er",
		"##ly", "##e", "##a", "##o", "##t", "##n", "##r", "##d", "##l",
	)
	return v
}()

func tokenizerSpec() *loader.TokenizerSpec {
	return &loader.TokenizerSpec{
		Vocab: vocab, Lowercase: true, StripAccents: true,
		PAD: 0, UNK: 1, CLS: 2, SEP: 3, MASK: 4, MaxLength: 128,
	}
}

type model struct {
	file string
	cfg  loader.Config
	seed uint64
}

func models() []model {
	return []model{
		{"tiny-bert.raptor", loader.Config{
			Family: loader.FamilyBERT, VocabSize: len(vocab), Hidden: 32, Layers: 2, Heads: 4,
			Intermediate: 64, MaxPositions: 128, TypeVocabSize: 2, LayerNormEps: 1e-12,
			Activation: loader.ActGELU, PadTokenID: 0, Attention: loader.AttentionDense,
			Pooler: true, DType: loader.F32, Tokenizer: tokenizerSpec(),
		}, 1},
		{"tiny-bigbird.raptor", loader.Config{
			Family: loader.FamilyBigBird, VocabSize: 100, Hidden: 32, Layers: 2, Heads: 2,
			Intermediate: 64, MaxPositions: 258, TypeVocabSize: 1, LayerNormEps: 1e-12,
			Activation: loader.ActGELUTanh, PositionOffset: 2, PadTokenID: 1,
			Attention: loader.AttentionBlockSparse, BlockSize: 8, RandomBlocks: 1,
			DType: loader.F16,
		}, 2},
		{"tiny-bert-cls.raptor", loader.Config{
			Family: loader.FamilyBERT, VocabSize: len(vocab), Hidden: 32, Layers: 2, Heads: 4,
			Intermediate: 64, MaxPositions: 128, TypeVocabSize: 2, LayerNormEps: 1e-12,
			Activation: loader.ActGELU, PadTokenID: 0, Attention: loader.AttentionDense,
			Pooler: true, DType: loader.F32, Tokenizer: tokenizerSpec(),
			Head: &loader.HeadSpec{Kind: loader.HeadSequenceClassification, Variant: loader.HeadPooler,
				NumLabels: 3, Labels: []string{"negative", "neutral", "positive"}, QuestionSepID: -1},
		}, 3},
	}
}

func main() {
	out := flag.String("o", "build/testmodels", "output directory")
	gpu := flag.Bool("gpu", false, "shapes the CUDA backend runs (head dimension 32, BigBird block 64)")
	flag.Parse()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "mkmodel:", err)
		os.Exit(1)
	}
	for _, m := range models() {
		if *gpu {
			m.cfg.Heads = 1
			if m.cfg.Attention == loader.AttentionBlockSparse {
				m.cfg.BlockSize, m.cfg.MaxPositions = 64, 1026
			}
		}
		if err := write(filepath.Join(*out, m.file), m); err != nil {
			fmt.Fprintf(os.Stderr, "mkmodel: %s: %v\n", m.file, err)
			os.Exit(1)
		}
	}
}

func write(path string, m model) error {
	w, err := loader.NewRandomWriter(m.cfg, m.seed, loader.WriterOptions{Codec: loader.CodecZstd, Producer: "raptor tests/tools/mkmodel"})
	if err != nil {
		return err
	}
	data, err := w.Bytes()
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
