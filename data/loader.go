package data

import (
	"errors"
	"fmt"
	"iter"
	"runtime"
	"sync"
)

// LoaderOptions configures a Loader.
type LoaderOptions struct {
	Batch    int        // samples per batch; positive
	Shuffle  bool       // shuffle the samples each epoch, from (Seed, epoch)
	Augment  Augment    // augmentation of every sample; empty means AugmentNone
	Seed     uint64     // seeds the order and the augmentation
	Workers  int        // goroutines decoding samples; 0 means GOMAXPROCS
	Prefetch int        // batches made ahead of the consumer; 0 means 2
	DropLast bool       // leave out a last batch smaller than Batch
	Pre      Preprocess // the conversion to the model's input
}

// Batch is one batch of model inputs.
type Batch struct {
	X       []float32 // Shape[0]*C*H*W values, sample-major, each sample CHW
	Shape   []int     // [n, C, H, W]
	Labels  []int     // the label of each sample
	Indices []int     // the index in the Set of each sample
}

// Loader makes batches of preprocessed, augmented samples of a Set in a
// seeded order, decoding in parallel ahead of its consumer. A Loader holds
// no state between epochs and is safe for concurrent use.
type Loader struct {
	set     Set
	opts    LoaderOptions
	classes int
}

// NewLoader returns a Loader of s, after checking opts.
func NewLoader(s Set, opts LoaderOptions) (*Loader, error) {
	var errs []error
	if opts.Batch <= 0 {
		errs = append(errs, fmt.Errorf("loader: batch size %d; it must be positive", opts.Batch))
	}
	if opts.Workers < 0 {
		errs = append(errs, fmt.Errorf("loader: %d workers; it must not be negative", opts.Workers))
	}
	if opts.Prefetch < 0 {
		errs = append(errs, fmt.Errorf("loader: prefetch %d; it must not be negative", opts.Prefetch))
	}
	if err := opts.Augment.Check(); err != nil {
		errs = append(errs, fmt.Errorf("loader: %w", err))
	}
	if err := opts.Pre.Check(); err != nil {
		errs = append(errs, fmt.Errorf("loader: %w", err))
	}
	if s == nil || s.Len() == 0 {
		errs = append(errs, errors.New("loader: the data set is empty"))
	} else if opts.DropLast && opts.Batch > s.Len() {
		errs = append(errs, fmt.Errorf("loader: %d samples make no whole batch of %d (DropLast)", s.Len(), opts.Batch))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Workers == 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Prefetch == 0 {
		opts.Prefetch = 2
	}
	if opts.Augment == "" {
		opts.Augment = AugmentNone
	}
	return &Loader{set: s, opts: opts, classes: len(s.Classes())}, nil
}

// BatchesPerEpoch returns the number of batches of an epoch.
func (l *Loader) BatchesPerEpoch() int {
	n := l.set.Len()
	if l.opts.DropLast {
		return n / l.opts.Batch
	}
	return (n + l.opts.Batch - 1) / l.opts.Batch
}

// Order returns the sample indices of an epoch in the order the batches
// hold them: 0, 1, ... without Shuffle, else a permutation drawn from
// (Seed, epoch).
func (l *Loader) Order(epoch int) []int {
	order := make([]int, l.set.Len())
	for i := range order {
		order[i] = i
	}
	if l.opts.Shuffle {
		newRNG(l.opts.Seed, streamShuffle, uint64(epoch)).shuffle(order)
	}
	return order
}

// Epoch returns the batches of an epoch, in order; see Batches.
func (l *Loader) Epoch(epoch int) iter.Seq2[Batch, error] {
	return l.Batches(epoch, 0)
}

// Batches returns the batches of an epoch from batch number from on (to
// resume an epoch part way). Each batch is newly allocated and belongs to
// the caller. Workers decode up to Prefetch batches ahead of the loop body.
// The batches are the same whatever the number of workers or the
// scheduling. On an error (a sample that cannot be read or converted; the
// one earliest in its batch is reported) the sequence yields a zero Batch
// with the error and ends. Leaving the loop early is fine: the workers are
// stopped and waited for before the loop statement completes, so no
// goroutine outlives it.
func (l *Loader) Batches(epoch, from int) iter.Seq2[Batch, error] {
	return func(yield func(Batch, error) bool) {
		nb := l.BatchesPerEpoch()
		if from < 0 || from > nb {
			yield(Batch{}, fmt.Errorf("loader: batch %d of an epoch of %d batches", from, nb))
			return
		}
		if from == nb {
			return
		}
		l.run(l.Order(epoch), epoch, from, nb, yield)
	}
}

// job is one batch being made.
type job struct {
	batch   Batch
	epoch   int
	mu      sync.Mutex
	pending int   // samples not yet done
	errAt   int   // position in the batch of err
	err     error // the error of the earliest failed sample
	done    chan struct{}
}

// task is a run of samples of a job for one worker.
type task struct {
	j      *job
	lo, hi int // positions in the batch
}

// run makes batches from to nb-1 of order and yields them.
func (l *Loader) run(order []int, epoch, from, nb int, yield func(Batch, error) bool) {
	stop := make(chan struct{})
	jobs := make(chan *job, l.opts.Prefetch)
	tasks := make(chan task, l.opts.Workers)
	var wg sync.WaitGroup
	defer func() {
		close(stop)
		wg.Wait()
	}()

	wg.Add(1)
	go func() { // the dispatcher: batches in order, each cut into tasks
		defer wg.Done()
		defer close(tasks)
		defer close(jobs)
		for b := from; b < nb; b++ {
			j := l.newJob(order, epoch, b)
			select {
			case jobs <- j:
			case <-stop:
				return
			}
			n := len(j.batch.Indices)
			chunk := max(1, n/(2*l.opts.Workers))
			for lo := 0; lo < n; lo += chunk {
				select {
				case tasks <- task{j: j, lo: lo, hi: min(lo+chunk, n)}:
				case <-stop:
					return
				}
			}
		}
	}()
	for range l.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case t, ok := <-tasks:
					if !ok {
						return
					}
					l.do(t)
				case <-stop:
					return
				}
			}
		}()
	}

	for j := range jobs {
		<-j.done // workers finish every task sent before stop is closed
		if j.err != nil {
			yield(Batch{}, j.err)
			return
		}
		if !yield(j.batch, nil) {
			return
		}
	}
}

// newJob allocates batch b of an epoch.
func (l *Loader) newJob(order []int, epoch, b int) *job {
	lo := b * l.opts.Batch
	hi := min(lo+l.opts.Batch, len(order))
	n := hi - lo
	p := l.opts.Pre
	return &job{
		batch: Batch{
			X:       make([]float32, n*p.C*p.H*p.W),
			Shape:   []int{n, p.C, p.H, p.W},
			Labels:  make([]int, n),
			Indices: append([]int(nil), order[lo:hi]...),
		},
		epoch:   epoch,
		pending: n,
		errAt:   n,
		done:    make(chan struct{}),
	}
}

// do makes the samples of a task.
func (l *Loader) do(t task) {
	j := t.j
	size := l.opts.Pre.C * l.opts.Pre.H * l.opts.Pre.W
	for pos := t.lo; pos < t.hi; pos++ {
		idx := j.batch.Indices[pos]
		err := l.sample(j.batch.X[pos*size:(pos+1)*size], &j.batch.Labels[pos], idx, j.epoch)
		if err != nil {
			j.mu.Lock()
			if pos < j.errAt {
				j.errAt, j.err = pos, fmt.Errorf("loader: sample %d: %w", idx, err)
			}
			j.mu.Unlock()
		}
	}
	j.mu.Lock()
	j.pending -= t.hi - t.lo
	last := j.pending == 0
	j.mu.Unlock()
	if last {
		close(j.done)
	}
}

// sample decodes, converts, augments and normalises sample idx into dst.
func (l *Loader) sample(dst []float32, label *int, idx, epoch int) error {
	img, y, err := l.set.Image(idx)
	if err != nil {
		return err
	}
	if y < 0 || y >= l.classes {
		return fmt.Errorf("label %d is out of range [0, %d)", y, l.classes)
	}
	conv, err := l.opts.Pre.Convert(img)
	if err != nil {
		return err
	}
	conv = l.opts.Augment.apply(conv, l.opts.Seed, epoch, idx)
	l.opts.Pre.normalize(dst, conv)
	*label = y
	return nil
}
