package tokenizer_test

import (
	"testing"

	"github.com/raptor-infer/raptor/internal/tokenizer"
	"github.com/raptor-infer/raptor/loader"
)

// loader.TokenizerSpec and tokenizer.Spec have the same fields, so one
// converts to the other; this fails to compile if they drift apart.
func TestSpecFromLoader(t *testing.T) {
	ls := loader.TokenizerSpec{
		Vocab: []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hi"},
		CLS:   2, SEP: 3, PAD: 0, UNK: 1, MASK: -1, MaxLength: 8,
		Lowercase: true, StripAccents: true,
	}
	tk, err := tokenizer.New(tokenizer.Spec(ls))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := tk.Encode("Hi", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 3 || ids[0] != 2 || ids[1] != 4 || ids[2] != 3 {
		t.Fatalf("ids %v", ids)
	}
}
