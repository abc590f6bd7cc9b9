// Package fb holds the Go code flatc generates from loader/schema/raptor.fbs,
// the header of a raptor weight file.
//
// The generated accessors do no bounds checking (Go's flatbuffers runtime has
// no verifier): package loader verifies a header's structure before it reads
// it through this package. Regenerate with `go generate ./loader/internal/fb`
// (Debian's flatbuffers-compiler, flatc 2.0.8, then gofmt); TestGeneratedUpToDate checks
// the committed code matches the schema.
package fb

//go:generate flatc --go --go-namespace fb --gen-onefile -o . ../../schema/raptor.fbs
//go:generate gofmt -w raptor_generated.go
