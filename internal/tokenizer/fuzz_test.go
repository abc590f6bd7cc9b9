package tokenizer

import (
	"slices"
	"testing"
	"unicode/utf8"
)

// FuzzEncode checks, on any bytes and any maxLen, that Encode does not
// panic, gives ids inside the vocabulary with [CLS] first and [SEP] last and
// at most maxLen of them, that truncation keeps a prefix, and that invalid
// UTF-8 reads as U+FFFD. The seed corpus is testdata/fuzz/FuzzEncode.
func FuzzEncode(f *testing.F) {
	for _, s := range []string{"", "Hello, world!", "[CLS]x[SEP]", "中文 テキスト 한국어", "e\u0301\u0323",
		"a\xffb", "\x00\u200b\ufffd", "\u0130stanbul ΣΑΣ", string(make([]byte, 300))} {
		f.Add(s, 8)
	}
	tks := variants(f)
	names := sortedKeys(tks)
	f.Fuzz(func(t *testing.T, text string, maxLen int) {
		maxLen = maxLen%600 + 2
		if maxLen < 2 {
			maxLen = -maxLen + 4
		}
		for _, name := range names {
			tk := tks[name]
			full, err := tk.Encode(text, -1)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			ids, err := tk.Encode(text, maxLen)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(ids) < 2 || len(ids) > maxLen {
				t.Fatalf("%s: %d ids for maxLen %d", name, len(ids), maxLen)
			}
			if ids[0] != tk.cls || ids[len(ids)-1] != tk.sep {
				t.Fatalf("%s: ids %v do not start with [CLS] and end with [SEP]", name, ids)
			}
			for _, id := range full {
				if id < 0 || int(id) >= tk.VocabSize() {
					t.Fatalf("%s: id %d outside the vocabulary", name, id)
				}
			}
			if !slices.Equal(ids[:len(ids)-1], full[:len(ids)-1]) {
				t.Fatalf("%s: truncated ids are not a prefix", name)
			}
			if len(full) <= maxLen && !slices.Equal(ids, full) {
				t.Fatalf("%s: truncation changed a short input", name)
			}
			if !utf8.ValidString(text) {
				v, _ := tk.Encode(toValidFFFD(text), -1)
				if !slices.Equal(v, full) {
					t.Fatalf("%s: invalid UTF-8 is not read as U+FFFD", name)
				}
			}
			pair, types, err := tk.EncodePair(text, text, maxLen+1)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(pair) > maxLen+1 || len(pair) != len(types) || pair[0] != tk.cls || pair[len(pair)-1] != tk.sep {
				t.Fatalf("%s: bad pair %v %v", name, pair, types)
			}
			_ = tk.Tokens(text)
		}
	})
}

// toValidFFFD replaces each invalid byte by U+FFFD, as Go's range loop
// decodes it (strings.ToValidUTF8 would merge runs of invalid bytes).
func toValidFFFD(s string) string {
	var b []byte
	for _, r := range s {
		b = utf8.AppendRune(b, r)
	}
	return string(b)
}
