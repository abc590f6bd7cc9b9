package tokenizer

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func uncased(t testing.TB) *Tokenizer {
	t.Helper()
	return variants(t)["uncased"]
}

// A tiny vocabulary whose pieces are easy to reason about.
func tiny(t testing.TB, lower, strip bool) *Tokenizer {
	t.Helper()
	tk, err := New(Spec{
		Vocab: []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
			"un", "##aff", "##able", "aff", "able", "a", "##a", "!", "é", "e", "中", "##s", "E", "i\u0307"},
		Lowercase: lower, StripAccents: strip,
		PAD: 0, UNK: 1, CLS: 2, SEP: 3, MASK: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestTokens(t *testing.T) {
	tk := uncased(t)
	for _, c := range []struct {
		name, text string
		want       []string
	}{
		{"empty", "", nil},
		{"spaces", " \t\n\r\u3000 ", nil},
		{"simple", "Hello, World!", []string{"hello", ",", "world", "!"}},
		{"wordpiece", "unaffable", []string{"una", "##ffa", "##ble"}},
		{"accents", "Crème Brûlée", []string{"cr", "##eme", "br", "##ule", "##e"}},
		{"decomposed accent", "Cre\u0300me", []string{"cr", "##eme"}},
		{"cjk split", "我爱你", []string{"我", "[UNK]", "[UNK]"}},
		{"cjk next to latin", "abc中def", []string{"abc", "中", "def"}},
		{"ascii symbols are punctuation", "a$b^c`d", []string{"a", "$", "b", "^", "c", "`", "d"}},
		{"control dropped", "ab\x00c\x01d\u200be", []string{"abc", "##de"}},
		{"fffd dropped", "a\ufffdb", []string{"ab"}},
		{"special kept", "[CLS] x [MASK]y", []string{"[CLS]", "x", "[MASK]", "y"}},
		{"special inside word", "ab[SEP]cd", []string{"ab", "[SEP]", "cd"}},
		{"lowercase special is text", "[cls]", []string{"[", "cl", "##s", "]"}},
		{"100 chars", strings.Repeat("a", 100), append(append([]string{"aaa"}, slices.Repeat([]string{"##aa"}, 48)...), "##a")},
		{"101 chars", strings.Repeat("a", 101), []string{"[UNK]"}},
		{"unknown char in word", "ab\u2603cd", []string{"[UNK]"}},
		{"dotted capital I", "\u0130", []string{"i"}},
		{"final sigma", "ΣΑΣ", []string{"σ", "##α", "##σ"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := tk.Tokens(c.text)
			if !slices.Equal(got, c.want) {
				t.Fatalf("Tokens(%q) = %q, want %q", c.text, got, c.want)
			}
		})
	}
}

func TestWordPieceTiny(t *testing.T) {
	for _, c := range []struct {
		name         string
		lower, strip bool
		text         string
		want         []string
	}{
		{"greedy longest", false, false, "unaffable", []string{"un", "##aff", "##able"}},
		{"word start uses whole-word pieces", false, false, "affable", []string{"aff", "##able"}},
		{"continuation", false, false, "aaa", []string{"a", "##a", "##a"}},
		{"no cover is unk", false, false, "ab", []string{"[UNK]"}},
		{"cased keeps E", false, false, "E é", []string{"E", "é"}},
		{"strip only", false, true, "E é", []string{"E", "e"}},
		{"lower only", true, false, "E É", []string{"e", "é"}},
		{"lower keeps dot of İ", true, false, "\u0130", []string{"i\u0307"}},
		{"lower and strip", true, true, "É \u0130", []string{"e", "[UNK]"}},
		{"punctuation", false, false, "a!a", []string{"a", "!", "a"}},
		{"cjk", false, false, "a中a", []string{"a", "中", "a"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := tiny(t, c.lower, c.strip).Tokens(c.text)
			if !slices.Equal(got, c.want) {
				t.Fatalf("Tokens(%q) = %q, want %q", c.text, got, c.want)
			}
		})
	}
}

func TestEncodeTruncation(t *testing.T) {
	tk := uncased(t)
	full, err := tk.Encode("the quick brown fox jumps over the lazy dog", -1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		maxLen int
		want   []int32
	}{
		{"none", -1, full},
		{"default without MaxLength", 0, full},
		{"large", 1000, full},
		{"exact", len(full), full},
		{"two", 2, []int32{101, 102}},
		{"three", 3, []int32{101, full[1], 102}},
		{"five", 5, append(slices.Clone(full[:4]), 102)},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := tk.Encode("the quick brown fox jumps over the lazy dog", c.maxLen)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
	t.Run("too small", func(t *testing.T) {
		if _, err := tk.Encode("x", 1); err == nil {
			t.Fatal("Encode with maxLen 1: no error")
		}
		if _, _, err := tk.EncodePair("x", "y", 2); err == nil {
			t.Fatal("EncodePair with maxLen 2: no error")
		}
	})
	t.Run("spec MaxLength", func(t *testing.T) {
		vocab, _ := LoadVocabFile(filepath.Join("testdata", "vocab_minilm.txt"))
		tk5, err := New(Spec{Vocab: vocab, Lowercase: true, StripAccents: true, CLS: 101, SEP: 102, PAD: 0, UNK: 100, MASK: 103, MaxLength: 5})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := tk5.Encode("the quick brown fox jumps over the lazy dog", 0)
		if want := append(slices.Clone(full[:4]), 102); !slices.Equal(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
	})
}

func TestTruncatePair(t *testing.T) {
	for _, c := range []struct {
		name                  string
		n1, n2, total, w1, w2 int
	}{
		{"fits", 3, 4, 7, 3, 4},
		{"only longer cut", 2, 10, 7, 2, 5},
		{"only longer cut swapped", 10, 2, 7, 5, 2},
		{"both cut odd", 10, 12, 7, 3, 4},
		{"both cut odd swapped", 12, 10, 7, 4, 3},
		{"equal odd", 10, 10, 7, 3, 4},
		{"both cut even", 10, 12, 8, 4, 4},
		{"zero", 5, 5, 0, 0, 0},
		{"short exceeds total", 9, 20, 4, 2, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			g1, g2 := truncatePair(c.n1, c.n2, c.total)
			if g1 != c.w1 || g2 != c.w2 {
				t.Fatalf("truncatePair(%d, %d, %d) = %d, %d, want %d, %d", c.n1, c.n2, c.total, g1, g2, c.w1, c.w2)
			}
		})
	}
}

// Invalid UTF-8 bytes behave as U+FFFD, which clean text drops.
func TestInvalidUTF8(t *testing.T) {
	tk := uncased(t)
	for _, c := range []struct{ name, bad, good string }{
		{"lone continuation", "ab\x80cd", "abcd"},
		{"truncated sequence", "caf\xc3 ok", "caf ok"},
		{"overlong", "a\xc0\xafb", "ab"},
		{"surrogate", "a\xed\xa0\x80b", "ab"},
		{"beyond max", "a\xf4\x90\x80\x80b", "ab"},
		{"only garbage", "\xff\xfe\xfd", ""},
		{"in special", "[CL\xffS]", "[cls]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := tk.Encode(c.bad, -1)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := tk.Encode(strings.ToValidUTF8(c.bad, "\ufffd"), -1)
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v (as U+FFFD)", got, want)
			}
			want, _ = tk.Encode(c.good, -1)
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v (%q)", got, want, c.good)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	vocab := []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", ""}
	ok := Spec{Vocab: vocab, PAD: 0, UNK: 1, CLS: 2, SEP: 3, MASK: -1}
	if _, err := New(ok); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*Spec)
	}{
		{"empty vocab", func(s *Spec) { s.Vocab = nil }},
		{"no CLS", func(s *Spec) { s.CLS = -1 }},
		{"no SEP", func(s *Spec) { s.SEP = -1 }},
		{"no UNK", func(s *Spec) { s.UNK = -1 }},
		{"UNK out of range", func(s *Spec) { s.UNK = 6 }},
		{"MASK -2", func(s *Spec) { s.MASK = -2 }},
		{"PAD out of range", func(s *Spec) { s.PAD = 100 }},
		{"special is empty token", func(s *Spec) { s.MASK = 5 }},
		{"negative MaxLength", func(s *Spec) { s.MaxLength = -1 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := ok
			c.edit(&s)
			if _, err := New(s); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestLoadVocabFile(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, data string
		want       []string
		err        bool
	}{
		{"lf", "a\nb\n##c\n", []string{"a", "b", "##c"}, false},
		{"crlf", "a\r\nb\r\n", []string{"a", "b"}, false},
		{"no final newline", "a\nb", []string{"a", "b"}, false},
		{"bom", "\ufeffa\nb\n", []string{"a", "b"}, false},
		{"blank line keeps its id", "a\n\nb\n", []string{"a", "", "b"}, false},
		{"spaces kept", " a \n", []string{" a "}, false},
		{"empty", "", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
			if err := os.WriteFile(p, []byte(c.data), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := LoadVocabFile(p)
			if (err != nil) != c.err {
				t.Fatalf("err = %v", err)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		if _, err := LoadVocabFile(filepath.Join(dir, "nope")); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("minilm", func(t *testing.T) {
		v, err := LoadVocabFile(filepath.Join("testdata", "vocab_minilm.txt"))
		if err != nil {
			t.Fatal(err)
		}
		if len(v) != 30522 || v[101] != "[CLS]" || v[102] != "[SEP]" || v[30521] != "##～" {
			t.Fatalf("unexpected vocab: %d tokens", len(v))
		}
	})
}

// Duplicate tokens: the later id wins, as in HF's load_vocab.
func TestDuplicateToken(t *testing.T) {
	tk, err := New(Spec{Vocab: []string{"[UNK]", "[CLS]", "[SEP]", "x", "x"}, UNK: 0, CLS: 1, SEP: 2, PAD: -1, MASK: -1})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := tk.Encode("x", -1)
	if want := []int32{1, 4, 2}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// Chunked normalisation and early stopping give what one pass gives.
func TestChunkingAndEarlyStop(t *testing.T) {
	tks := variants(t)
	rows := readJSONL[struct {
		Text string             `json:"text"`
		IDs  map[string][]int32 `json:"ids"`
	}](t, "golden.jsonl")
	var all strings.Builder
	for _, r := range rows {
		all.WriteString(r.Text)
		all.WriteString("\n")
	}
	big := all.String()
	saved := chunkSize
	defer func() { chunkSize = saved }()
	for _, name := range sortedKeys(tks) {
		tk := tks[name]
		chunkSize = 1 << 30
		ref, _ := tk.Encode(big, -1)
		for _, cs := range []int{1, 7, 64, 4096} {
			chunkSize = cs
			if got, _ := tk.Encode(big, -1); !slices.Equal(got, ref) {
				t.Fatalf("%s: chunk size %d changes the result", name, cs)
			}
			for i, r := range rows {
				if got, _ := tk.Encode(r.Text, -1); !slices.Equal(got, r.IDs[name]) {
					t.Fatalf("%s: chunk size %d: line %d differs", name, cs, i)
				}
			}
		}
		chunkSize = saved
		rng := rand.New(rand.NewPCG(1, 2))
		for range 200 {
			n := 2 + rng.IntN(len(ref))
			got, _ := tk.Encode(big, n)
			want := append(slices.Clone(ref[:n-1]), ref[len(ref)-1])
			if !slices.Equal(got, want) {
				t.Fatalf("%s: truncation to %d is not the prefix", name, n)
			}
		}
	}
}

func TestEncodePairTypes(t *testing.T) {
	tk := uncased(t)
	ids, types, err := tk.EncodePair("hello world", "foo", -1)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int32{101, 7592, 2088, 102, 29379, 102}; !slices.Equal(ids, want) {
		t.Fatalf("ids %v, want %v", ids, want)
	}
	if want := []int32{0, 0, 0, 0, 1, 1}; !slices.Equal(types, want) {
		t.Fatalf("types %v, want %v", types, want)
	}
}

func TestConcurrent(t *testing.T) {
	tk := uncased(t)
	rows := readJSONL[struct {
		Text string             `json:"text"`
		IDs  map[string][]int32 `json:"ids"`
	}](t, "golden.jsonl")
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 3 * len(rows) {
				r := rows[(k*7+g)%len(rows)]
				if got, _ := tk.Encode(r.Text, -1); !slices.Equal(got, r.IDs["uncased"]) {
					errs <- r.Text
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("concurrent Encode differs on %q", e)
	}
}

func TestVocabSize(t *testing.T) {
	if n := uncased(t).VocabSize(); n != 30522 {
		t.Fatalf("VocabSize = %d", n)
	}
}
