package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/raptor-infer/raptor/loader"
)

// raptor convert then raptor inspect on the tiny checkpoints, with the flag
// combinations the converter offers.
func TestConvertInspect(t *testing.T) {
	hf := filepath.Join("..", "..", "loader", "testdata", "hf")
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		want func(loader.Config) bool
	}{
		{"bert f32 none", []string{filepath.Join(hf, "bert"), "-o", "OUT", "-dtype", "f32", "-compress", "none"},
			func(c loader.Config) bool { return c.DType == loader.F32 && c.Tokenizer != nil }},
		{"roberta as bigbird", []string{"-attention", "block_sparse", "--block-size", "32", "--random-blocks", "2", filepath.Join(hf, "roberta"), "-o", "OUT"},
			func(c loader.Config) bool {
				return c.DType == loader.F16 && c.Attention == loader.AttentionBlockSparse && c.BlockSize == 32 && c.RandomBlocks == 2 && c.PositionOffset == 2
			}},
		{"bigbird dense bf16", []string{filepath.Join(hf, "bigbird"), "-o", "OUT", "-dtype", "bf16", "-attention", "dense", "-shuffle=false", "-level", "1"},
			func(c loader.Config) bool { return c.DType == loader.BF16 && c.Attention == loader.AttentionDense }},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name+".raptor")
			args := append([]string(nil), tc.args...)
			for j := range args {
				if args[j] == "OUT" {
					args[j] = out
				}
			}
			if rc := runConvert(args); rc != 0 {
				t.Fatalf("convert exited %d", rc)
			}
			f, err := loader.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(f.Config()) {
				t.Errorf("config %+v", f.Config())
			}
			f.Close()
			if rc := runInspect([]string{out}); rc != 0 {
				t.Fatalf("inspect exited %d", rc)
			}
			if i == 0 {
				// A flipped data byte: inspect prints the tables and fails on the checksums.
				b, _ := os.ReadFile(out)
				b[len(b)-10] ^= 1
				os.WriteFile(out, b, 0o644)
				if rc := runInspect([]string{out}); rc != 1 {
					t.Fatalf("inspect of a corrupt file exited %d, want 1", rc)
				}
			}
		})
	}
	for _, args := range [][]string{
		{filepath.Join(hf, "bert")},                                    // no -o
		{filepath.Join(hf, "bert"), "-o", "x", "-dtype", "f8"},         // bad dtype
		{filepath.Join(hf, "bert"), "-o", "x", "-compress", "lz4"},     // bad codec
		{filepath.Join(hf, "bert"), "-o", "x", "-block-size", "32"},    // block size without block_sparse
		{filepath.Join(hf, "bert"), "-o", "x", "-attention", "sparse"}, // bad attention
	} {
		if rc := runConvert(args); rc != 2 {
			t.Errorf("convert %v exited %d, want 2", args, rc)
		}
	}
	if rc := runConvert([]string{dir, "-o", filepath.Join(dir, "x")}); rc != 1 {
		t.Errorf("convert of a directory without a checkpoint exited %d, want 1", rc)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("a failed conversion left an output file")
	}
}
