package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/raptor-infer/raptor/loader"
)

func init() {
	register("inspect", "print a weight file's config, tensors, compression and checksum status", runInspect)
}

func runInspect(args []string) int {
	fs := flag.NewFlagSet("raptor inspect", flag.ContinueOnError)
	vocab := fs.Int("vocab", 0, "also print the first N tokenizer tokens")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: raptor inspect [flags] FILE\n\nPrints a weight file's config, tokenizer, tensors (name, dtype, shape, codec,\nstored and raw size), compression ratio and checksum status.\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fs.Usage()
		return 2
	}
	// Open without verifying so that a checksum mismatch is reported below,
	// after the tables, rather than instead of them.
	f, err := loader.Open(pos[0], loader.SkipVerify())
	if err != nil {
		fmt.Fprintf(os.Stderr, "raptor inspect: %v\n", err)
		return 1
	}
	defer f.Close()
	info, c := f.Info(), f.Config()
	fmt.Printf("file:       %s (%s), format version %d, header %s, data at %d, chunks of %s\n",
		pos[0], byteCount(info.Size), info.Version, byteCount(int64(info.HeaderSize)), info.DataOffset, byteCount(int64(info.ChunkSize)))
	if info.Producer != "" {
		fmt.Printf("producer:   %s\n", info.Producer)
	}
	fmt.Printf("model:      %s, %d layers, hidden %d, %d heads (head dim %d), intermediate %d\n",
		c.Family, c.Layers, c.Hidden, c.Heads, c.HeadDim(), c.Intermediate)
	fmt.Printf("embeddings: vocab %d, max positions %d (first position id %d), type vocab %d, pad id %d\n",
		c.VocabSize, c.MaxPositions, c.PositionOffset, c.TypeVocabSize, c.PadTokenID)
	att := c.Attention.String()
	if c.Attention == loader.AttentionBlockSparse {
		att += fmt.Sprintf(" (block size %d, %d random blocks)", c.BlockSize, c.RandomBlocks)
	}
	fmt.Printf("compute:    activation %s, layer norm eps %g, attention %s, pooler %v, weights %s\n",
		c.Activation, c.LayerNormEps, att, c.Pooler, c.DType)
	if t, ok := f.Tokenizer(); ok {
		var flags []string
		if t.Lowercase {
			flags = append(flags, "lowercase")
		}
		if t.StripAccents {
			flags = append(flags, "strip accents")
		}
		tok := func(id int32) string {
			if id < 0 {
				return "none"
			}
			return fmt.Sprintf("%d %q", id, t.Vocab[id])
		}
		fmt.Printf("tokenizer:  WordPiece, %d tokens, %s, max length %d\n", len(t.Vocab), strings.Join(append(flags, ""), ", ")+"special: cls "+tok(t.CLS)+", sep "+tok(t.SEP)+", pad "+tok(t.PAD)+", unk "+tok(t.UNK)+", mask "+tok(t.MASK), t.MaxLength)
		for i := 0; i < *vocab && i < len(t.Vocab); i++ {
			fmt.Printf("  %6d %q\n", i, t.Vocab[i])
		}
	} else {
		fmt.Printf("tokenizer:  none\n")
	}

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "name\tdtype\tshape\tcodec\tchunks\tstored\traw\tratio\t")
	var raw, stored int64
	byCodec := map[loader.Codec]int{}
	for _, name := range f.Names() {
		t, _ := f.Tensor(name)
		raw += t.RawSize
		stored += t.StoredSize
		byCodec[t.Codec]++
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%d\t%d\t%d\t%.3f\t\n", name, t.DType, t.Shape, t.Codec, t.Chunks, t.StoredSize, t.RawSize, float64(t.RawSize)/float64(t.StoredSize))
	}
	tw.Flush()
	var codecs []string
	for _, k := range []loader.Codec{loader.CodecNone, loader.CodecZstd, loader.CodecZstdShuffle} {
		if byCodec[k] > 0 {
			codecs = append(codecs, fmt.Sprintf("%d %s", byCodec[k], k))
		}
	}
	fmt.Printf("\n%d tensors (%s): %s stored, %s raw, compression ratio %.3f\n",
		len(f.Names()), strings.Join(codecs, ", "), byteCount(stored), byteCount(raw), float64(raw)/float64(stored))
	if err := f.Verify(); err != nil {
		fmt.Printf("checksums:  FAILED: %v\n", err)
		return 1
	}
	fmt.Printf("checksums:  OK (header and every chunk, CRC-32C)\n")
	return 0
}
