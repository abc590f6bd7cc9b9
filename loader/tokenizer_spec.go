package loader

// TokenizerSpec is the optional WordPiece tokenizer section of a weight file.
// The converter fills it from a HuggingFace checkpoint's vocab.txt and
// tokenizer_config.json; internal/tokenizer builds a tokenizer from it.
//
// Special token ids are -1 when the checkpoint does not define that token.
type TokenizerSpec struct {
	// Vocab holds the WordPiece vocabulary in id order: Vocab[id] is the token.
	Vocab []string
	// Lowercase is BERT's do_lower_case: lowercase the text before splitting.
	Lowercase bool
	// StripAccents removes combining marks after NFD normalisation. HF's
	// default (strip_accents unset) follows Lowercase; the converter resolves
	// that default, so this field is always explicit.
	StripAccents bool
	// Special token ids ([CLS], [SEP], [PAD], [UNK], [MASK]); -1 if absent.
	CLS, SEP, PAD, UNK, MASK int32
	// MaxLength is the tokenizer's model_max_length (the longest input in
	// tokens, special tokens included); 0 if unknown.
	MaxLength int
}
