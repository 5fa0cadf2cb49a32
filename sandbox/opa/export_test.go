package opa

// UseEvalContext makes the instance evaluate through the eval context functions (the ABI
// before 1.2) instead of opa_eval, so that tests cover both paths with the same modules.
func (i *Instance) UseEvalContext() error {
	i.fn.eval = nil
	return i.lookup()
}

// DecisionMetrics is decisionMetrics: the counters' names by entrypoint id.
func DecisionMetrics(eps map[string]int32) map[int32]string {
	names, slots := decisionMetrics(eps)
	out := map[int32]string{}
	for id, k := range slots {
		out[id] = names[k]
	}
	return out
}
