package opa

// UseEvalContext makes the instance evaluate through the eval context functions (the ABI
// before 1.2) instead of opa_eval, so that tests cover both paths with the same modules.
func (i *Instance) UseEvalContext() error {
	i.fn.eval = nil
	return i.lookup()
}
