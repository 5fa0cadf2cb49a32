package host

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmvisor/wasmvisor/sandbox"
)

// The streams of wasmvisor_guest_output_dropped_*, in the order of outputDrops.
var outputStreams = [...]string{sandbox.StreamStdout, sandbox.StreamStderr, sandbox.StreamLog, sandbox.StreamPublish}

// outputDrops are a plugin's counts of what its instances dropped under Limits.Output and
// Limits.Publish, per stream: those of ended instances (the live ones are read at scrape time,
// as calls are).
type outputDrops struct {
	bytes, records [len(outputStreams)]atomic.Uint64
	hostPanics     atomic.Uint64 // host functions that panicked (sandbox.Stats.HostFuncPanics)
}

func streamsOf(s sandbox.Stats) [len(outputStreams)]sandbox.StreamStats {
	return [...]sandbox.StreamStats{s.Stdout, s.Stderr, s.Log, s.Publish}
}

// add counts an ended instance's drops.
func (d *outputDrops) add(s sandbox.Stats) {
	for k, st := range streamsOf(s) {
		d.bytes[k].Add(st.DroppedBytes)
		d.records[k].Add(st.DroppedRecords)
	}
	d.hostPanics.Add(s.HostFuncPanics)
}

// onDrop is the sandbox's report of what an instance dropped: one event, which the logger
// turns into one line.
func (p *plugin) onDrop(d sandbox.DropReport) {
	p.h.emit(Event{Kind: EventOutputDropped, Plugin: p.name, Stream: d.Stream, Count: d.Records, Bytes: d.Bytes})
}

var (
	descOutBytes = prometheus.NewDesc("wasmvisor_guest_output_dropped_bytes_total",
		"Bytes of guest output (stdout, stderr, log) and publishes dropped under the plugin's output and publish limits.",
		[]string{"plugin", "stream"}, nil)
	descOutRecords = prometheus.NewDesc("wasmvisor_guest_output_dropped_total",
		"Guest log messages and publishes refused, and stdout/stderr writes that lost bytes, under the plugin's limits.",
		[]string{"plugin", "stream"}, nil)
	descHostPanics = prometheus.NewDesc("wasmvisor_host_function_panics_total",
		"Host functions (host.WithHostFunctions) that panicked in a call of the plugin's: recovered, logged and answered to the guest as an error.",
		[]string{"plugin"}, nil)
)

// collectOutput sends a plugin's drop counters: the ended instances' plus the live ones'. A
// member ending between the two reads may be counted twice or not at all in one scrape, as
// with calls.
func collectOutput(ch chan<- prometheus.Metric, p *plugin) {
	var bytes, records [len(outputStreams)]uint64
	for k := range outputStreams {
		bytes[k], records[k] = p.drops.bytes[k].Load(), p.drops.records[k].Load()
	}
	panics := p.drops.hostPanics.Load()
	for i := range p.slots {
		if m := p.slots[i].m.Load(); m != nil {
			st := m.in().Stats()
			for k, ss := range streamsOf(st) {
				bytes[k] += ss.DroppedBytes
				records[k] += ss.DroppedRecords
			}
			panics += st.HostFuncPanics
		}
	}
	ch <- prometheus.MustNewConstMetric(descHostPanics, prometheus.CounterValue, float64(panics), p.name)
	for k, s := range outputStreams {
		ch <- prometheus.MustNewConstMetric(descOutBytes, prometheus.CounterValue, float64(bytes[k]), p.name, s)
		ch <- prometheus.MustNewConstMetric(descOutRecords, prometheus.CounterValue, float64(records[k]), p.name, s)
	}
}
