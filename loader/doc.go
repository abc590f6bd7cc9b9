// Package loader reads and writes raptor weight files and defines the model
// configuration and tensor names the engine uses.
//
// A weight file is a small preamble, a flatbuffer header (schema in
// loader/schema/raptor.fbs: the model Config, an optional WordPiece
// TokenizerSpec and the tensor table) and a 64-byte aligned data section
// holding each tensor's bytes, addressed by offset and length so files may
// exceed the 2 GiB flatbuffer limit. Tensors are f32, f16 or bf16, stored
// raw (memory-mapped by the reader, never copied) or as zstd frames, one per
// chunk of ChunkSize raw bytes, optionally byte-plane shuffled first.
// Every chunk carries a CRC-32C of its raw bytes and the header carries a
// CRC-32C of itself.
//
// Weight files are untrusted input. Open and Read verify the flatbuffer
// structure (Go's flatbuffers runtime has no verifier), then every count,
// offset, length, shape, dtype and codec, the config, that the tensors an
// encoder with that config needs are all present with the right shapes, and
// the checksums; decompression is capped (MaxDecompressed) and bounded by
// each chunk's declared size. A bad file yields a *status.Error with code
// status.InvalidModel naming the problem, never a panic.
//
// Writer builds files; package loader/hf converts HuggingFace checkpoints.
package loader
