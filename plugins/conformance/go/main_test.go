package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/wasmvisor/wasmvisor/abi"
	sdk "github.com/wasmvisor/wasmvisor/sdk/go"
)

func TestEncodedSize(t *testing.T) {
	for _, c := range []abi.Config{{}, {"a": "1"}, {"k": strings.Repeat("v", 5000), "x": ""}} {
		if got, want := encodedSize(sdk.NewConfigView(c)), len(abi.AppendConfig(nil, c)); got != want {
			t.Errorf("encodedSize(%d keys) = %d, want %d", len(c), got, want)
		}
	}
}

func TestNumbers(t *testing.T) {
	for _, tc := range []struct {
		fn  func([]byte) ([]byte, error)
		in  string
		bad bool
	}{
		{count, "", false}, {count, "0", false}, {count, "18446744073709551615", false},
		{count, "18446744073709551616", true}, {count, "-1", true}, {count, "+1", true}, {count, "1 ", true},
		{gauge, "-9223372036854775808", false}, {gauge, "9223372036854775807", false}, {gauge, "-0", false},
		{gauge, "9223372036854775808", true}, {gauge, "", true}, {gauge, "-", true}, {gauge, "1.5", true},
		{observe, "1000", false}, {observe, "", true}, {observe, "x", true},
	} {
		_, err := tc.fn([]byte(tc.in))
		if bad := err != nil; bad != tc.bad || bad && !errors.Is(err, errBadNumber) {
			t.Errorf("%q: err = %v, want bad=%v", tc.in, err, tc.bad)
		}
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct{ in, topic, data string }{
		{"t\np", "t", "p"}, {"t\np\nq", "t", "p\nq"}, {"t", "t", ""}, {"\np", "", "p"}, {"", "", ""},
	} {
		topic, data := split([]byte(tc.in))
		if topic != tc.topic || string(data) != tc.data {
			t.Errorf("split(%q) = %q %q", tc.in, topic, data)
		}
	}
}
