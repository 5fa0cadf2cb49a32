// Package faults is wasmvisor's own catalog of hostile plugins and clients, run as tests in
// CI. It holds no code a program links: the catalog is the hostile WAT modules under
// testdata/ (sources and built .wasm side by side, rebuilt by `make plugins`) and one test
// file per category of the containment promise (see README.md).
//
// Every test builds a host with a healthy plugin next to the hostile one and checks, besides
// its category's typed error, that the healthy plugin keeps answering correctly, that the
// hostile plugin's successor starts clean, that host memory stays within the stated budget,
// and (in TestMain) that no goroutine is left.
package faults
