package tokenizer

import (
	"strings"
	"testing"
)

func benchEncode(b *testing.B, text string, maxLen int) {
	tk := uncased(b)
	ids, _ := tk.Encode(text, maxLen)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := tk.Encode(text, maxLen); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(ids))*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkEncode measures throughput in tokens per second (and bytes per
// second) on English prose, on the whole multilingual golden corpus, on CJK,
// and on a long text truncated to 512 tokens.
func BenchmarkEncode(b *testing.B) {
	english := strings.Repeat("The quick brown fox jumps over the lazy dog, while transformers "+
		"tokenize unbelievably long sentences into word pieces. ", 20)
	rows := readJSONL[struct {
		Text string `json:"text"`
	}](b, "golden.jsonl")
	var corpus strings.Builder
	for _, r := range rows {
		corpus.WriteString(r.Text)
		corpus.WriteByte('\n')
	}
	cjk := strings.Repeat("自然语言处理是计算机科学领域与人工智能领域中的一个重要方向。日本語のテキスト、한국어 텍스트. ", 20)
	b.Run("english", func(b *testing.B) { benchEncode(b, english, -1) })
	b.Run("corpus", func(b *testing.B) { benchEncode(b, corpus.String(), -1) })
	b.Run("cjk", func(b *testing.B) { benchEncode(b, cjk, -1) })
	b.Run("truncate512", func(b *testing.B) { benchEncode(b, strings.Repeat(english, 50), 512) })
}
