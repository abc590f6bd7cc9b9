package main

// The one-stream GPU model (-device gpu): issue 8's p99 at 50% load on the
// CUDA backend, where every batch of a device runs in order on one stream.
//
// A batch passes two FIFO stages: the device worker's host work (pack,
// upload, graph launch: hostMs, serial) and the stream (a forward of fixed
// cost gpuFixedMs plus gpuBeta per unit of engine.SequenceCost, serial),
// then its results come back and are delivered (postMs, in parallel). Both
// stages are deterministic once a batch is formed, so a batch's completion
// time is known when it is formed; the policy, however, sees only predicted
// device times (the noise-free model), and every batch's real device time is
// the model times a log-normal factor.
//
// The constants are the H100 measurements of bench/RESULTS.md (issue 8,
// runs 9-12, CUDA graphs by token-count class, all-MiniLM-L6-v2 f16): a
// forward of 1 x 128 tokens took 0.185 ms of device time, a serving batch of
// 2,201 tokens 0.357 ms; the host enqueue of a graphed batch about 0.10 ms.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

const (
	gpuBudget = 131072 // tokens: the bench's -budget on the GPU
	postMs    = 0.03   // completion seen, download, delivery
)

// hostMs is the device worker's time per batch (pack, upload, graph
// launch): 0.10 ms measured, -host-ms sets it.
var hostMs = 0.10

var (
	gpuBeta    float64 // ms per unit of cost on the device
	gpuFixedMs float64 // ms per forward, whatever its size
)

// fitGPU sets the device-time model from two measured forwards: one of 128
// tokens and one of 2,201 (twenty requests of the length mix, mean 110).
func fitGPU(fixedScale float64) {
	per := cost(110) / 110 // cost per token at the mix's mean length
	gpuBeta = (0.357 - 0.185) / ((2201 - 128) * per)
	gpuFixedMs = (0.185 - gpuBeta*cost(128)) * fixedScale
}

func gpuDev(c float64) float64 { return gpuFixedMs + gpuBeta*c }

// hostSigma is the log-normal spread of a batch's host work.
const hostSigma = 0.3

// noise is a log-normal factor of mean 1 and spread sigma.
func noise(rng *rand.Rand, sigma float64) float64 {
	return math.Exp(sigma*rng.NormFloat64() - sigma*sigma/2)
}

// streamPolicy is how the former decides to close a batch on a one-stream
// device.
type streamPolicy struct {
	name  string
	lanes int // batches formed and not yet complete, at most
	// jit: hold a batch that is not full while the stream is predicted to
	// stay busy for longer than the host work of the next batch plus
	// marginMs (close it "just in time" for the stream to run it next).
	jit      bool
	marginMs float64
}

type sbat struct {
	reqs    []*req
	hostEnd float64 // when its host work ends (known: the worker reports it)
	pred    float64 // predicted device time
	devEnd  float64 // when the stream finishes it (hidden from the policy until then)
	done    float64 // when its members complete
}

// simulateStream serves rs on one device with policy p; sigma is the
// log-normal spread of the real device time around the model.
func simulateStream(rs []*req, p streamPolicy, sigma float64, seed uint64) (batches int, meanTokens float64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var q []*req
	var fly []*sbat // formed, not yet complete, in stream order
	now, next := 0.0, 0
	hostFree, devFree := 0.0, 0.0
	lastEnd := 0.0 // the last device completion the policy has seen
	qTokens := 0
	totalTok := 0
	wake := math.Inf(1)

	// predFree is the policy's estimate of when the stream runs dry: the
	// batches in flight in order, each from when its host work ended or the
	// one before it finished, whichever is later.
	predFree := func() float64 {
		f := lastEnd
		for _, b := range fly {
			if b.devEnd <= now {
				f = max(f, b.devEnd) // finished on the device, not yet delivered
				continue
			}
			f = max(f, b.hostEnd) + b.pred
		}
		return max(f, now)
	}
	form := func() {
		wake = math.Inf(1)
		for len(fly) < p.lanes && len(q) > 0 {
			if p.jit && qTokens < gpuBudget {
				ready := max(now, hostFree) + hostMs
				if pf := predFree(); pf > ready+p.marginMs+1e-6 { // 1 ns: no wake at now
					wake = pf - hostMs - p.marginMs
					return
				}
			}
			b := &sbat{}
			var tok int
			var c float64
			b.reqs, q, tok, c = takeFIFO(q, gpuBudget)
			qTokens -= tok
			totalTok += tok
			batches++
			hs := max(now, hostFree)
			b.hostEnd = hs + hostMs*noise(rng, hostSigma)
			hostFree = b.hostEnd
			b.pred = gpuDev(c)
			ds := max(b.hostEnd, devFree)
			b.devEnd = ds + b.pred*noise(rng, sigma)
			devFree = b.devEnd
			b.done = b.devEnd + postMs
			fly = append(fly, b)
		}
	}
	for next < len(rs) || len(q) > 0 || len(fly) > 0 {
		tArr := math.Inf(1)
		if next < len(rs) {
			tArr = rs[next].arr
		}
		tDone := math.Inf(1)
		for _, b := range fly {
			tDone = min(tDone, b.done)
		}
		t := min(tArr, tDone, wake)
		now = t
		switch t {
		case tArr:
			q = append(q, rs[next])
			qTokens += rs[next].n
			next++
		case tDone:
			keep := fly[:0]
			for _, b := range fly {
				if b.done <= now {
					for _, r := range b.reqs {
						r.done = now
					}
					lastEnd = max(lastEnd, b.devEnd)
				} else {
					keep = append(keep, b)
				}
			}
			fly = keep
		}
		form()
	}
	return batches, float64(totalTok) / float64(max(batches, 1))
}

// gpuMain prints the one-stream model's table at the given loads.
func gpuMain(loads []float64, num int, seed uint64, sigma, fixedScale float64) {
	fitGPU(fixedScale)
	probe := trace(num, 1, seed)
	var alone []float64
	for _, r := range probe {
		alone = append(alone, hostMs+gpuDev(cost(r.n))+postMs)
	}
	// capacity: the trace sorted by length in full budget batches, back to
	// back on the stream (host work overlapped)
	lens := make([]int, len(probe))
	for i, r := range probe {
		lens[i] = r.n
	}
	slices.Sort(lens)
	capPerMs := float64(len(probe)) / backToBack(lens, gpuBudget, gpuDev)
	fmt.Printf("one-stream GPU model: forward %.3f ms + %.3g ms/unit (%.1f ns per token at 110 tokens), host %.2f ms/batch (serial), post %.2f ms, device noise sigma %.2f\n",
		gpuFixedMs, gpuBeta, gpuBeta*cost(110)/110*1e6, hostMs, postMs, sigma)
	fmt.Printf("alone p50 %.3f ms, p99 %.3f ms; best offline %.0f req/s\n\n", quant(alone, 0.5), quant(alone, 0.99), capPerMs*1000)
	fmt.Println("| load | policy | p50 ms | p99 ms | p99 / p99 alone | max ms | req/batch | tokens/batch | served / offered |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, load := range loads {
		for _, p := range []streamPolicy{
			{name: "eager, 3 lanes (the default)", lanes: 3},
			{name: "eager, 2 lanes", lanes: 2},
			{name: "eager, 1 lane", lanes: 1},
			{name: "just in time, 3 lanes, margin 0", lanes: 3, jit: true},
			{name: "just in time, 3 lanes, margin 0.05 ms", lanes: 3, jit: true, marginMs: 0.05},
			{name: "just in time, 3 lanes, margin 0.1 ms", lanes: 3, jit: true, marginMs: 0.1},
		} {
			rs := trace(num, capPerMs*load, seed)
			nb, mt := simulateStream(rs, p, sigma, seed)
			row(load, p.name, rs, alone, nb, mt)
		}
		for _, n := range []int{2, 3} {
			rs := trace(num, capPerMs*load, seed)
			nb, mt := simulateStreams(rs, n, sigma, seed)
			row(load, fmt.Sprintf("eager, %d lanes on %d streams (overlapping)", n, n), rs, alone, nb, mt)
		}
		for _, h := range []float64{0.02, 0.08} {
			rs := trace(num, capPerMs*load, seed)
			nb, mt := simulateLayerSteps(rs, 6, h, sigma, seed)
			row(load, fmt.Sprintf("layer steps (requests join at every layer boundary), host %.2f ms per step", h), rs, alone, nb, mt)
		}
	}
}

func row(load float64, name string, rs []*req, alone []float64, nb int, mt float64) {
	var lat []float64
	for _, r := range rs[len(rs)/20:] {
		lat = append(lat, r.done-r.arr)
	}
	span := rs[len(rs)-1].done - rs[0].arr
	fmt.Printf("| %.0f%% | %s | %.3f | %.3f | %.2fx | %.2f | %.1f | %.0f | %.2f |\n", load*100, name,
		quant(lat, 0.5), quant(lat, 0.99), quant(lat, 0.99)/quant(alone, 0.99), slices.Max(lat),
		float64(len(rs))/float64(nb), mt, (rs[len(rs)-1].arr-rs[0].arr)/span)
}

// simulateStreams serves rs on one device with `streams` compute streams:
// the eager former (a batch closes whenever fewer than `streams` are in
// flight), host work serial as on one stream, and batches on different
// streams overlapping on the device. A batch of fixed cost F and token work
// W that takes F + W alone takes F + k*W while k batches share the device
// (the fixed part is latency: tiny kernels that leave most SMs idle, so
// overlapping batches hide it; the token work is throughput, shared).
func simulateStreams(rs []*req, streams int, sigma float64, seed uint64) (batches int, meanTokens float64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	type pb struct {
		reqs       []*req
		hostEnd    float64
		fixed, tok float64 // the batch's device time alone: fixed + tok
		left       float64 // of fixed + tok, still to run
		devDone    float64 // when its device work ended (0: not yet)
	}
	var q []*req
	var fly []*pb
	now, next := 0.0, 0
	hostFree := 0.0
	totalTok := 0
	active := func(b *pb) bool { return b.hostEnd <= now && b.devDone == 0 }
	rate := func(b *pb, k int) float64 { return (b.fixed + b.tok) / (b.fixed + float64(k)*b.tok) }
	form := func() {
		for len(fly) < streams && len(q) > 0 {
			b := &pb{}
			var tok int
			var c float64
			b.reqs, q, tok, c = takeFIFO(q, gpuBudget)
			totalTok += tok
			batches++
			b.hostEnd = max(now, hostFree) + hostMs*noise(rng, hostSigma)
			hostFree = b.hostEnd
			f := noise(rng, sigma)
			b.fixed, b.tok = gpuFixedMs*f, gpuBeta*c*f
			b.left = b.fixed + b.tok
			fly = append(fly, b)
		}
	}
	for next < len(rs) || len(q) > 0 || len(fly) > 0 {
		k := 0
		for _, b := range fly {
			if active(b) {
				k++
			}
		}
		t := math.Inf(1)
		if next < len(rs) {
			t = rs[next].arr
		}
		for _, b := range fly {
			switch {
			case b.hostEnd > now:
				t = min(t, b.hostEnd)
			case b.devDone == 0:
				t = min(t, now+b.left/rate(b, k))
			default:
				t = min(t, b.devDone+postMs)
			}
		}
		for _, b := range fly {
			if active(b) {
				b.left -= (t - now) * rate(b, k)
				if b.left <= 1e-9 {
					b.devDone = t
				}
			}
		}
		now = t
		if next < len(rs) && rs[next].arr <= now {
			q = append(q, rs[next])
			next++
		}
		keep := fly[:0]
		for _, b := range fly {
			if b.devDone != 0 && b.devDone+postMs <= now+1e-12 {
				for _, r := range b.reqs {
					r.done = now
				}
			} else {
				keep = append(keep, b)
			}
		}
		fly = keep
		form()
	}
	return batches, float64(totalTok) / float64(max(batches, 1))
}

// takeFIFO takes the next batch off q in arrival order, up to budget tokens
// (at least one request), and returns it, the rest, its tokens and its cost.
func takeFIFO(q []*req, budget int) (batch, rest []*req, tokens int, c float64) {
	k := 0
	for k < len(q) && (k == 0 || tokens+q[k].n <= budget) {
		tokens += q[k].n
		c += cost(q[k].n)
		k++
	}
	return q[:k:k], q[k:], tokens, c
}

// simulateLayerSteps models iteration-level scheduling for an encoder (not
// built; what it would buy): the device runs one layer at a time for every
// request in flight, each at its own depth (a grouped GEMM per weight
// matrix across the depths, one attention launch over every sequence), so
// a request waits only for the layer step in progress before it joins,
// and completes after `layers` steps. A step lasts its fixed part (the
// forward's fixed cost over the layers: the same kernels per layer) plus
// the token work of every request in flight for one layer, and at least
// hostStepMs (its launches, overlapped with the previous step). A request
// pays the host work of a batch once (its upload; added at the end, which
// gives the same latency) and postMs. batches counts steps; meanTokens the tokens in flight per step.
func simulateLayerSteps(rs []*req, layers int, hostStepMs, sigma float64, seed uint64) (steps int, meanTokens float64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	type flying struct {
		r    *req
		left int
		c    float64
	}
	var q []*req
	var fly []*flying
	now, next := 0.0, 0
	totalTok := 0
	for next < len(rs) || len(q) > 0 || len(fly) > 0 {
		// arrivals up to now join the queue; an idle device waits for one
		for next < len(rs) && (rs[next].arr <= now || (len(q) == 0 && len(fly) == 0)) {
			if rs[next].arr > now {
				now = rs[next].arr
			}
			q = append(q, rs[next])
			next++
		}
		// the queue joins at this step boundary, up to the token budget
		tok := 0
		for _, f := range fly {
			tok += f.r.n
		}
		for len(q) > 0 && (tok == 0 || tok+q[0].n <= gpuBudget) {
			r := q[0]
			q = q[1:]
			fly = append(fly, &flying{r: r, left: layers, c: cost(r.n)})
			tok += r.n
			// its upload (pack, copy): the host work before its first step
		}
		c := 0.0
		for _, f := range fly {
			c += f.c
		}
		dev := (gpuFixedMs + gpuBeta*c) / float64(layers) * noise(rng, sigma)
		now += max(dev, hostStepMs)
		steps++
		totalTok += tok
		keep := fly[:0]
		for _, f := range fly {
			f.left--
			if f.left == 0 {
				f.r.done = now + postMs + hostMs
			} else {
				keep = append(keep, f)
			}
		}
		fly = keep
	}
	return steps, float64(totalTok) / float64(max(steps, 1))
}
