package supervisor_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/wasmvisor/wasmvisor/supervisor"
)

// worker is a child that prints its life and crashes on demand. started
// receives its ID each time it is ready.
func worker(id string, crash <-chan struct{}, started chan<- string) supervisor.Spec {
	return supervisor.Spec{ID: id, Start: supervisor.Func(func(ctx context.Context, ready func()) error {
		fmt.Println("start", id)
		ready()
		started <- id
		select {
		case <-ctx.Done():
			fmt.Println("stop", id)
			return ctx.Err()
		case <-crash:
			fmt.Println("crash", id)
			return errors.New("crashed")
		}
	})}
}

func runExample(strategy supervisor.Strategy, restarts int) {
	ctx := context.Background()
	crash := make(chan struct{})
	started := make(chan string, 16)
	s, err := supervisor.New(supervisor.Config{Strategy: strategy},
		worker("a", nil, started), worker("b", crash, started), worker("c", nil, started))
	if err != nil {
		panic(err)
	}
	if err := s.Start(ctx); err != nil {
		panic(err)
	}
	for range 3 {
		<-started
	}
	crash <- struct{}{}
	for range restarts {
		<-started
	}
	if err := s.Stop(ctx); err != nil {
		panic(err)
	}
}

// OneForOne restarts only the child that crashed.
func Example_oneForOne() {
	runExample(supervisor.OneForOne, 1)
	// Output:
	// start a
	// start b
	// start c
	// crash b
	// start b
	// stop c
	// stop b
	// stop a
}

// OneForAll stops the others in reverse start order and restarts all of
// them in start order.
func Example_oneForAll() {
	runExample(supervisor.OneForAll, 3)
	// Output:
	// start a
	// start b
	// start c
	// crash b
	// stop c
	// stop a
	// start a
	// start b
	// start c
	// stop c
	// stop b
	// stop a
}

// RestForOne restarts the crashed child and those started after it.
func Example_restForOne() {
	runExample(supervisor.RestForOne, 2)
	// Output:
	// start a
	// start b
	// start c
	// crash b
	// stop c
	// start b
	// start c
	// stop c
	// stop b
	// stop a
}

// A Dynamic supervisor holds children added at run time; here it is a task
// group whose tasks return results.
func Example_dynamic() {
	ctx := context.Background()
	g, err := supervisor.New(supervisor.Config{Strategy: supervisor.Dynamic, MaxChildren: 100})
	if err != nil {
		panic(err)
	}
	if err := g.Start(ctx); err != nil {
		panic(err)
	}
	defer g.Stop(ctx)

	var tasks []*supervisor.Task[int]
	for i := 1; i <= 3; i++ {
		t, err := supervisor.Go(ctx, g, supervisor.TaskOptions{}, func(context.Context) (int, error) { return i * i, nil })
		if err != nil {
			panic(err)
		}
		tasks = append(tasks, t)
	}
	for _, t := range tasks {
		v, err := t.Wait(ctx)
		fmt.Println(v, err)
	}
	// Output:
	// 1 <nil>
	// 4 <nil>
	// 9 <nil>
}
