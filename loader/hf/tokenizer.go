package hf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// wordPieceClasses are the tokenizer classes whose vocab.txt is a BERT
// WordPiece vocabulary with BERT's normalisation.
var wordPieceClasses = map[string]bool{
	"": true, "BertTokenizer": true, "BertTokenizerFast": true,
	"DistilBertTokenizer": true, "DistilBertTokenizerFast": true,
}

// hugeMaxLength is transformers' VERY_LARGE_INTEGER, which tokenizers that
// set no model_max_length report.
const hugeMaxLength = 1e29

// readTokenizer reads a WordPiece tokenizer from vocab.txt,
// tokenizer_config.json, special_tokens_map.json and (sentence-transformers)
// sentence_bert_config.json. It returns nil and a note when the directory
// has no WordPiece tokenizer.
func readTokenizer(dir string, cfg loader.Config) (*loader.TokenizerSpec, []string, error) {
	var notes []string
	vb, err := os.ReadFile(filepath.Join(dir, "vocab.txt"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, []string{"no vocab.txt: the file carries no tokenizer"}, nil
	}
	if err != nil {
		return nil, nil, status.Wrap(status.IO, err, "read vocab.txt")
	}
	var tc struct {
		Class          string   `json:"tokenizer_class"`
		DoLowerCase    *bool    `json:"do_lower_case"`
		StripAccents   *bool    `json:"strip_accents"`
		ChineseChars   *bool    `json:"tokenize_chinese_chars"`
		ModelMaxLength *float64 `json:"model_max_length"`
		CLS            any      `json:"cls_token"`
		SEP            any      `json:"sep_token"`
		PAD            any      `json:"pad_token"`
		UNK            any      `json:"unk_token"`
		MASK           any      `json:"mask_token"`
	}
	if err := readOptionalJSON(filepath.Join(dir, "tokenizer_config.json"), &tc); err != nil {
		return nil, nil, err
	}
	if !wordPieceClasses[tc.Class] {
		return nil, []string{fmt.Sprintf("tokenizer_class %q is not a BERT WordPiece tokenizer: the file carries no tokenizer", tc.Class)}, nil
	}
	var stm map[string]any
	if err := readOptionalJSON(filepath.Join(dir, "special_tokens_map.json"), &stm); err != nil {
		return nil, nil, err
	}

	text := string(vb)
	text = strings.TrimSuffix(text, "\n")
	vocab := strings.Split(text, "\n") // HF's load_vocab strips only "\n"
	if len(vocab) > cfg.VocabSize {
		return nil, nil, status.Errorf(status.InvalidModel, "vocab.txt has %d tokens, more than the model's vocab_size %d", len(vocab), cfg.VocabSize)
	}
	ids := make(map[string]int32, len(vocab))
	for i, tok := range vocab {
		ids[tok] = int32(i) // the last occurrence wins, as in HF's vocab dict
	}
	spec := &loader.TokenizerSpec{Vocab: vocab, Lowercase: true}
	if tc.DoLowerCase != nil {
		spec.Lowercase = *tc.DoLowerCase
	}
	spec.StripAccents = spec.Lowercase // HF: strip_accents=None follows lowercase
	if tc.StripAccents != nil {
		spec.StripAccents = *tc.StripAccents
	}
	if tc.ChineseChars != nil && !*tc.ChineseChars {
		notes = append(notes, "tokenize_chinese_chars=false is not carried in the file (raptor always splits CJK characters)")
	}
	special := func(name string, fromConfig any, def string) int32 {
		tok := tokenContent(fromConfig)
		if tok == "" {
			tok = tokenContent(stm[name])
		}
		if tok == "" {
			tok = def
		}
		if id, ok := ids[tok]; ok {
			return id
		}
		notes = append(notes, fmt.Sprintf("special token %s %q is not in vocab.txt", name, tok))
		return -1
	}
	spec.CLS = special("cls_token", tc.CLS, "[CLS]")
	spec.SEP = special("sep_token", tc.SEP, "[SEP]")
	spec.PAD = special("pad_token", tc.PAD, "[PAD]")
	spec.UNK = special("unk_token", tc.UNK, "[UNK]")
	spec.MASK = special("mask_token", tc.MASK, "[MASK]")

	// sentence-transformers truncates at max_seq_length, not at the
	// tokenizer's model_max_length.
	var sb struct {
		MaxSeqLength *int `json:"max_seq_length"`
	}
	if err := readOptionalJSON(filepath.Join(dir, "sentence_bert_config.json"), &sb); err != nil {
		return nil, nil, err
	}
	switch {
	case sb.MaxSeqLength != nil:
		spec.MaxLength = *sb.MaxSeqLength
	case tc.ModelMaxLength != nil && *tc.ModelMaxLength < hugeMaxLength && *tc.ModelMaxLength > 0:
		spec.MaxLength = int(*tc.ModelMaxLength)
	}
	if limit := cfg.MaxPositions - cfg.PositionOffset; spec.MaxLength > limit || spec.MaxLength <= 0 {
		if spec.MaxLength > limit {
			notes = append(notes, fmt.Sprintf("tokenizer max length %d capped to the model's %d positions", spec.MaxLength, limit))
		}
		spec.MaxLength = limit
	}
	return spec, notes, nil
}

// tokenContent returns a special token's text: tokenizer configs hold either
// a string or an AddedToken object {"content": ...}.
func tokenContent(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case map[string]any:
		if s, ok := t["content"].(string); ok {
			return s
		}
	}
	return ""
}

// readOptionalJSON reads path into v, doing nothing if it does not exist.
func readOptionalJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return status.Wrap(status.IO, err, "read "+filepath.Base(path))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return status.Errorf(status.InvalidModel, "%s: bad JSON: %v", path, err)
	}
	return nil
}
