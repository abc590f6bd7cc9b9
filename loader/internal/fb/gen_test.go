package fb

import (
	"bytes"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedUpToDate regenerates the Go code from the schema into a temp
// dir, formats it as gofmt does, and checks it is identical to the committed raptor_generated.go.
func TestGeneratedUpToDate(t *testing.T) {
	flatc, err := exec.LookPath("flatc")
	if err != nil {
		t.Skip("flatc not installed (Debian package flatbuffers-compiler); cannot check the generated code")
	}
	dir := t.TempDir()
	cmd := exec.Command(flatc, "--go", "--go-namespace", "fb", "--gen-onefile", "-o", dir, filepath.Join("..", "..", "schema", "raptor.fbs"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("flatc failed: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "raptor_generated.go"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err = format.Source(got); err != nil {
		t.Fatalf("gofmt of flatc output: %v", err)
	}
	want, err := os.ReadFile("raptor_generated.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("loader/internal/fb/raptor_generated.go is stale: run `go generate ./loader/internal/fb` and commit the result")
	}
}
