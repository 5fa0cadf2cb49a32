package server

// Group runs actors, oklog/run style: each actor is an execute function and an interrupt
// function. Run starts every execute in its own goroutine; when the first returns, every
// interrupt is called with its error, and Run waits for all the executes and returns that
// first error.
type Group struct{ actors []actor }

type actor struct {
	execute   func() error
	interrupt func(error)
}

// Add adds an actor. interrupt must make execute return.
func (g *Group) Add(execute func() error, interrupt func(error)) {
	g.actors = append(g.actors, actor{execute, interrupt})
}

// Run runs the actors until the first one returns.
func (g *Group) Run() error {
	if len(g.actors) == 0 {
		return nil
	}
	errs := make(chan error, len(g.actors))
	for _, a := range g.actors {
		go func(a actor) { errs <- a.execute() }(a)
	}
	err := <-errs
	for _, a := range g.actors {
		a.interrupt(err)
	}
	for i := 1; i < len(g.actors); i++ {
		if e := <-errs; err == nil {
			err = e // the first error is the group's; a nil first leaves the next
		}
	}
	return err
}
