package raptor

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// These tests load the real library (build/libraptor.so or $RAPTOR_LIB) and the
// real default model (build/models/all-MiniLM-L6-v2.raptor or $RAPTOR_MODEL),
// both made by ./build.sh; without them they skip, saying so.

var (
	loadOnce sync.Once
	testLib  *Library
	libErr   error
)

func library(t testing.TB) *Library {
	t.Helper()
	path := os.Getenv("RAPTOR_LIB")
	if path == "" {
		path = filepath.Join(repoRoot(t), "build", "libraptor.so")
	}
	if _, err := os.Stat(path); err != nil {
		t.Skipf("libraptor.so not built (%v): run ./build.sh", err)
	}
	loadOnce.Do(func() { testLib, libErr = Open(path) })
	if libErr != nil {
		t.Fatal(libErr)
	}
	return testLib
}

func modelPath(t testing.TB) string {
	t.Helper()
	p := os.Getenv("RAPTOR_MODEL")
	if p == "" {
		p = filepath.Join(repoRoot(t), "build", "models", "all-MiniLM-L6-v2.raptor")
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("default model not converted (%v): run ./build.sh", err)
	}
	return p
}

// cpuModel is an engine on the CPU backend with the default model loaded.
func cpuModel(t testing.TB) (*Engine, *Model) {
	t.Helper()
	lib := library(t)
	mp := modelPath(t)
	opts := lib.DefaultEngineOptions()
	opts.Backend = BackendCPU
	eng, err := lib.NewEngine(&opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	m, err := eng.LoadModel(mp)
	if err != nil {
		t.Fatal(err)
	}
	return eng, m
}

// exampleIDs reads examples/ids.jsonl: one JSON array of ids, or {"ids": [...]}, per line.
func exampleIDs(t testing.TB) [][]int32 {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "examples", "ids.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var seqs [][]int32
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		line := sc.Bytes()
		var ids []int32
		if err := json.Unmarshal(line, &ids); err != nil {
			var obj struct{ IDs []int32 }
			if err := json.Unmarshal(line, &obj); err != nil {
				t.Fatalf("ids.jsonl: %v", err)
			}
			ids = obj.IDs
		}
		seqs = append(seqs, ids)
	}
	return seqs
}

func TestVersionAndStatusNames(t *testing.T) {
	lib := library(t)
	if v := lib.ABIVersion(); v < ABIVersion {
		t.Fatalf("ABI version %d", v)
	}
	if lib.Version() == "" {
		t.Fatal("empty version string")
	}
	for s := StatusOK; s <= StatusTimeout; s++ {
		if got := lib.StatusName(s); got != s.String() {
			t.Errorf("status %d: library says %q, binding %q", s, got, s.String())
		}
	}
}

func TestModelInfo(t *testing.T) {
	_, m := cpuModel(t)
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	// all-MiniLM-L6-v2's config.json.
	want := ModelInfo{Family: 0, VocabSize: 30522, HiddenSize: 384, NumLayers: 6, NumHeads: 12,
		IntermediateSize: 1536, MaxPositions: 512, MaxSequenceLength: 512, TypeVocabSize: 2,
		PadTokenID: 0, HasTokenizer: true}
	got := info
	got.Activation, got.Attention, got.BlockSize, got.RandomBlocks, got.PositionOffset = 0, 0, 0, 0, 0
	got.WeightDType, got.HasPooler, got.LayerNormEps = 0, false, 0
	if got != want {
		t.Fatalf("info %+v, want %+v", info, want)
	}
	if math.Abs(float64(info.LayerNormEps)-1e-12) > 1e-15 {
		t.Fatalf("layer_norm_eps %g", info.LayerNormEps)
	}
}

func TestTokenize(t *testing.T) {
	_, m := cpuModel(t)
	ids, err := m.Tokenize("Hello, world!", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := exampleIDs(t)[0] // examples/make_ids.py: HF's tokenizer on the same line
	if !equalInt32(ids, want) {
		t.Fatalf("Tokenize = %v, want %v", ids, want)
	}
	ids, err = m.Tokenize("Hello, world!", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 3 || ids[0] != 101 || ids[2] != 102 {
		t.Fatalf("truncated to 3: %v", ids)
	}
}

// TestEncodeExamples checks the library's outputs against themselves in every
// way they must agree: a batch equals its sequences encoded alone (batch
// invariance, bit for bit), Submit equals Encode, mean pooling equals the mean
// of the hidden states, CLS pooling equals the first hidden state, and
// normalised vectors have unit norm.
func TestEncodeExamples(t *testing.T) {
	eng, m := cpuModel(t)
	ctx := context.Background()
	seqs := exampleIDs(t)
	full, err := m.EncodeFull(ctx, seqs, EncodeOptions{Hidden: true})
	if err != nil {
		t.Fatal(err)
	}
	h := full.HiddenSize
	if h != 384 || len(full.Pooled) != len(seqs) || len(full.Hidden) != len(seqs) {
		t.Fatalf("shapes: h=%d pooled=%d hidden=%d", h, len(full.Pooled), len(full.Hidden))
	}
	for i, s := range seqs {
		if len(full.Hidden[i]) != len(s)*h {
			t.Fatalf("seq %d: hidden has %d values for %d tokens", i, len(full.Hidden[i]), len(s))
		}
		for j := range h {
			var sum float64
			for k := range len(s) {
				sum += float64(full.Hidden[i][k*h+j])
			}
			mean := sum / float64(len(s))
			if d := math.Abs(mean - float64(full.Pooled[i][j])); d > 1e-5*(1+math.Abs(mean)) {
				t.Fatalf("seq %d dim %d: pooled %g, mean of hidden %g", i, j, full.Pooled[i][j], mean)
			}
		}
		alone, err := m.Encode(ctx, [][]int32{s}, EncodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !equalBits(alone[0], full.Pooled[i]) {
			t.Errorf("seq %d (len %d): encoded alone differs from encoded in the batch", i, len(s))
		}
	}

	cls, err := m.Encode(ctx, seqs, EncodeOptions{Pooling: PoolingCLS})
	if err != nil {
		t.Fatal(err)
	}
	for i := range seqs {
		if !equalBits(cls[i], full.Hidden[i][:h]) {
			t.Errorf("seq %d: CLS pooling differs from the first hidden state", i)
		}
	}

	norm, err := m.Encode(ctx, seqs, EncodeOptions{Normalize: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range norm {
		var ss float64
		for _, x := range v {
			ss += float64(x) * float64(x)
		}
		if math.Abs(math.Sqrt(ss)-1) > 1e-5 {
			t.Errorf("seq %d: normalised norm %g", i, math.Sqrt(ss))
		}
	}

	cctx, cancel := context.WithCancel(ctx) // a cancellable context goes through Submit
	defer cancel()
	async, err := m.EncodeFull(cctx, seqs, EncodeOptions{Hidden: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range seqs {
		if !equalBits(async.Pooled[i], full.Pooled[i]) || !equalBits(async.Hidden[i], full.Hidden[i]) {
			t.Errorf("seq %d: Submit differs from Encode", i)
		}
	}
	st, err := eng.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.RequestsSubmitted < 1 || st.RequestsCompleted < uint64(len(seqs)+4) || st.LiveModels != 1 {
		t.Errorf("stats after the encodes: %+v", st)
	}
}

// TestCrossHostDump writes the CPU outputs for examples/ids.jsonl to the
// file $RAPTOR_CROSSHOST_OUT (mean-pooled [n, h] then hidden [T, h], float32
// little-endian) for tests/python/test_cross_host.py, which compares the
// bytes with the C, C++ and Python hosts'. Without the variable it skips.
func TestCrossHostDump(t *testing.T) {
	out := os.Getenv("RAPTOR_CROSSHOST_OUT")
	if out == "" {
		t.Skip("RAPTOR_CROSSHOST_OUT not set: run by tests/python/test_cross_host.py")
	}
	_, m := cpuModel(t)
	r, err := m.EncodeFull(context.Background(), exampleIDs(t), EncodeOptions{Hidden: true})
	if err != nil {
		t.Fatal(err)
	}
	var buf []byte
	for _, rows := range [][][]float32{r.Pooled, r.Hidden} {
		for _, row := range rows {
			for _, x := range row {
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
			}
		}
	}
	if err := os.WriteFile(out, buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentSubmits(t *testing.T) {
	_, m := cpuModel(t)
	ctx := context.Background()
	seqs := exampleIDs(t)
	want, err := m.Encode(ctx, seqs, EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const workers, per = 8, 12
	var wg sync.WaitGroup
	errs := make(chan error, workers*per)
	for w := range workers {
		wg.Go(func() {
			for k := range per {
				i := (w*per + k) % len(seqs)
				j := (i + 5) % len(seqs)
				r, err := m.Submit(ctx, [][]int32{seqs[i], seqs[j]}, EncodeOptions{})
				if err != nil {
					errs <- err
					return
				}
				res, err := r.Wait(ctx)
				r.Close()
				if err != nil {
					errs <- err
					return
				}
				if !equalBits(res.Pooled[0], want[i]) || !equalBits(res.Pooled[1], want[j]) {
					errs <- errors.New("a concurrent request's output differs from the single-batch output")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestContextCancellation(t *testing.T) {
	eng, m := cpuModel(t)
	seqs := exampleIDs(t)
	var big [][]int32 // enough work that it cannot finish before the cancel lands
	for range 8 {
		big = append(big, seqs...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := m.Encode(ctx, big, EncodeOptions{})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrCancelled) {
		t.Fatalf("encode with a cancelled context: %v", err)
	}

	dctx, dcancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer dcancel()
	_, err = m.Encode(dctx, big, EncodeOptions{})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrCancelled) {
		t.Fatalf("encode past its deadline: %v", err)
	}

	r, err := m.Submit(context.Background(), big, EncodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Cancel(); err != nil {
		t.Fatal(err)
	}
	<-r.Done()
	if done, err := r.Poll(); err != nil || !done {
		t.Fatalf("poll after completion: %v %v", done, err)
	}
	if _, err := r.Wait(context.Background()); !errors.Is(err, ErrCancelled) {
		t.Fatalf("cancelled request: %v", err)
	}
	r.Close()
	r.Close()
	st, err := eng.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.RequestsCancelled < 3 {
		t.Fatalf("stats count %d cancelled requests, want >= 3", st.RequestsCancelled)
	}
}

func TestErrors(t *testing.T) {
	lib := library(t)
	eng, m := cpuModel(t)
	ctx := context.Background()

	_, err := m.Encode(ctx, [][]int32{{101, 30522, 102}}, EncodeOptions{})
	checkErr(t, "id == vocab size", err, ErrOutOfRange)
	_, err = m.Encode(ctx, [][]int32{{101, -1, 102}}, EncodeOptions{})
	checkErr(t, "negative id", err, ErrOutOfRange)
	_, err = m.Encode(ctx, [][]int32{{101, 102}, {}}, EncodeOptions{})
	checkErr(t, "empty sequence", err, ErrInvalidArgument)
	long := make([]int32, 513)
	_, err = m.Encode(ctx, [][]int32{long}, EncodeOptions{})
	checkErr(t, "sequence longer than max positions", err, ErrOutOfRange)

	_, err = eng.LoadModel(filepath.Join(t.TempDir(), "missing.raptor"))
	checkErr(t, "missing model file", err, ErrIO)
	img, err := os.ReadFile(modelPath(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = eng.LoadModelBytes(img[:len(img)/2])
	checkErr(t, "truncated model image", err, ErrInvalidModel)
	bad := append([]byte(nil), img...)
	bad[len(bad)/2] ^= 0x5a // inside tensor data (most of the file): the checksum must catch it
	_, err = eng.LoadModelBytes(bad)
	checkErr(t, "model image with a flipped byte", err, ErrInvalidModel)
	_, err = eng.LoadModelBytes([]byte("not a model"))
	checkErr(t, "garbage model image", err, ErrInvalidModel)
	m2, err := eng.LoadModelBytes(img)
	if err != nil {
		t.Fatalf("a good image: %v", err)
	}

	// A freed handle given to the library is detected, never dereferenced.
	m2.Close()
	var c cModelInfo
	c.StructSize = 88
	err = lib.call(func() int32 { return lib.modelGetInfo(m2.h, &c) })
	checkErr(t, "freed model handle (raw)", err, ErrInvalidHandle)
	_, err = m2.Encode(ctx, [][]int32{{101, 102}}, EncodeOptions{})
	checkErr(t, "closed model", err, ErrInvalidHandle)
	c.StructSize = 7
	err = lib.call(func() int32 { return lib.modelGetInfo(m.h, &c) })
	checkErr(t, "struct_size of no known version", err, ErrInvalidArgument)

	opts := lib.DefaultEngineOptions()
	opts.Backend = 9
	_, err = lib.NewEngine(&opts)
	checkErr(t, "unknown backend", err, ErrInvalidArgument)
	if _, err := os.Stat("/dev/nvidiactl"); err != nil {
		opts.Backend = BackendCUDA
		_, err = lib.NewEngine(&opts)
		checkErr(t, "cuda backend without a GPU", err, ErrBackendUnavailable)
	}
}

func checkErr(t *testing.T, what string, err, want error) {
	t.Helper()
	var re *Error
	switch {
	case !errors.Is(err, want):
		t.Errorf("%s: got %v, want %v", what, err, want)
	case !errors.As(err, &re) || re.Msg == "":
		t.Errorf("%s: no message from the library: %#v", what, err)
	}
}

func equalBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func equalInt32(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
