package tokenizer

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The golden files come from testdata/make_golden.py (HF BertTokenizerFast).

type variant struct {
	Vocab        string `json:"vocab"`
	Lowercase    bool   `json:"lowercase"`
	StripAccents bool   `json:"strip_accents"`
	CLS          int32  `json:"cls"`
	SEP          int32  `json:"sep"`
	PAD          int32  `json:"pad"`
	UNK          int32  `json:"unk"`
	MASK         int32  `json:"mask"`
}

var loadVariants = sync.OnceValues(func() (map[string]*Tokenizer, error) {
	var f struct {
		Variants map[string]variant `json:"variants"`
	}
	data, err := os.ReadFile(filepath.Join("testdata", "variants.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	out := map[string]*Tokenizer{}
	for name, v := range f.Variants {
		vocab, err := LoadVocabFile(filepath.Join("testdata", v.Vocab))
		if err != nil {
			return nil, err
		}
		tk, err := New(Spec{Vocab: vocab, Lowercase: v.Lowercase, StripAccents: v.StripAccents,
			CLS: v.CLS, SEP: v.SEP, PAD: v.PAD, UNK: v.UNK, MASK: v.MASK})
		if err != nil {
			return nil, fmt.Errorf("variant %s: %w", name, err)
		}
		out[name] = tk
	}
	return out, nil
})

func variants(t testing.TB) map[string]*Tokenizer {
	t.Helper()
	v, err := loadVariants()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func readJSONL[T any](t testing.TB, name string) []T {
	t.Helper()
	if !filepath.IsAbs(name) {
		name = filepath.Join("testdata", name)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []T
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var r T
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func short(s string) string {
	if len(s) > 60 {
		s = s[:60] + "..."
	}
	return strconv.Quote(s)
}

// explain renders ids as tokens for failure messages.
func explain(tk *Tokenizer, ids []int32) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		if id >= 0 && int(id) < len(tk.vocab) {
			b.WriteString(tk.vocab[id])
		} else {
			fmt.Fprintf(&b, "<%d>", id)
		}
	}
	return b.String()
}

// TestGolden compares Encode with HF on the committed corpus, and on the
// file named by $RAPTOR_TOKENIZER_GOLDEN if set (make_golden.py --random).
func TestGolden(t *testing.T) {
	tks := variants(t)
	type row struct {
		Text string             `json:"text"`
		IDs  map[string][]int32 `json:"ids"`
	}
	rows := readJSONL[row](t, "golden.jsonl")
	if len(rows) < 300 {
		t.Fatalf("corpus has %d lines, want >= 300", len(rows))
	}
	if extra := os.Getenv("RAPTOR_TOKENIZER_GOLDEN"); extra != "" {
		abs, err := filepath.Abs(extra)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, readJSONL[row](t, abs)...)
	}
	for _, name := range sortedKeys(tks) {
		tk := tks[name]
		t.Run(name, func(t *testing.T) {
			match := 0
			for i, r := range rows {
				want, ok := r.IDs[name]
				if !ok {
					t.Fatalf("line %d: no ids for %s", i, name)
				}
				got, err := tk.Encode(r.Text, -1)
				if err != nil {
					t.Fatalf("line %d: %v", i, err)
				}
				if slices.Equal(got, want) {
					match++
					continue
				}
				t.Errorf("line %d %s:\n got  %v\n want %v\n got  %s\n want %s",
					i, short(r.Text), got, want, explain(tk, got), explain(tk, want))
			}
			t.Logf("%s: %d/%d lines match exactly", name, match, len(rows))
		})
	}
}

func TestGoldenTruncation(t *testing.T) {
	tks := variants(t)
	rows := readJSONL[struct {
		Text string                        `json:"text"`
		IDs  map[string]map[string][]int32 `json:"ids"`
	}](t, "golden_trunc.jsonl")
	for _, name := range sortedKeys(tks) {
		tk := tks[name]
		t.Run(name, func(t *testing.T) {
			n := 0
			for i, r := range rows {
				for _, ml := range sortedKeys(r.IDs[name]) {
					want := r.IDs[name][ml]
					maxLen, _ := strconv.Atoi(ml)
					got, err := tk.Encode(r.Text, maxLen)
					if err != nil {
						t.Fatalf("line %d max %d: %v", i, maxLen, err)
					}
					if !slices.Equal(got, want) {
						t.Errorf("line %d %s max %d:\n got  %v\n want %v", i, short(r.Text), maxLen, got, want)
					}
					n++
				}
			}
			if n == 0 {
				t.Fatal("no cases")
			}
		})
	}
}

func TestGoldenPairs(t *testing.T) {
	tks := variants(t)
	rows := readJSONL[struct {
		A     string                        `json:"a"`
		B     string                        `json:"b"`
		IDs   map[string]map[string][]int32 `json:"ids"`
		Type0 map[string]map[string]int     `json:"type0"`
	}](t, "golden_pairs.jsonl")
	for _, name := range sortedKeys(tks) {
		tk := tks[name]
		t.Run(name, func(t *testing.T) {
			n := 0
			for i, r := range rows {
				for _, ml := range sortedKeys(r.IDs[name]) {
					want := r.IDs[name][ml]
					maxLen, _ := strconv.Atoi(ml)
					if maxLen == 0 {
						maxLen = -1 // no truncation
					}
					ids, types, err := tk.EncodePair(r.A, r.B, maxLen)
					if err != nil {
						t.Fatalf("pair %d max %d: %v", i, maxLen, err)
					}
					if !slices.Equal(ids, want) {
						t.Errorf("pair %d (%s, %s) max %d:\n got  %v\n want %v", i, short(r.A), short(r.B), maxLen, ids, want)
					}
					k := r.Type0[name][ml]
					wantTypes := make([]int32, len(want))
					for j := k; j < len(wantTypes); j++ {
						wantTypes[j] = 1
					}
					if !slices.Equal(types, wantTypes) {
						t.Errorf("pair %d max %d: type ids\n got  %v\n want %v", i, maxLen, types, wantTypes)
					}
					n++
				}
			}
			if n == 0 {
				t.Fatal("no cases")
			}
		})
	}
}

// TestStripAccentsAllCodePoints checks NFD (golang.org/x/text) followed by
// the Mn filter against HF's strip_accents on every Unicode scalar value.
func TestStripAccentsAllCodePoints(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "nfd_strip.txt.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	want := map[rune]string{}
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		from, to, _ := strings.Cut(sc.Text(), "\t")
		c, err := strconv.ParseUint(from, 16, 32)
		if err != nil {
			t.Fatal(err)
		}
		var out []rune
		for _, h := range strings.Fields(to) {
			r, err := strconv.ParseUint(h, 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, rune(r))
		}
		want[rune(c)] = string(out)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(want) < 10000 {
		t.Fatalf("only %d entries", len(want))
	}
	bad := 0
	for r := rune(0); r <= 0x10FFFF; r++ {
		if 0xD800 <= r && r <= 0xDFFF {
			continue
		}
		w, ok := want[r]
		if !ok {
			w = string(r)
		}
		var got []rune
		for _, d := range string(appendNFD(nil, []byte(string(r)), slices.Contains(nfdKeep[:], r))) {
			if class(d)&cMn == 0 {
				got = append(got, d)
			}
		}
		if string(got) != w {
			if bad++; bad <= 20 {
				t.Errorf("U+%04X: got %+q, want %+q", r, string(got), w)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d code points differ", bad)
	}
}
