package opa

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestSprintf(t *testing.T) {
	for _, c := range []struct{ format, values, want, err string }{
		{"%s owns %q", `["ann","d\u00e9j\u00e0 <vu>"]`, `ann owns "déjà <vu>"`, ""},
		{"%d and %d", `[3, 12345678901234567890123]`, "3 and 12345678901234567890123", ""},
		{"%v %.1f %d", `[1.5, 2.25, 2.0]`, "1.5 2.2 %!d(float64=2)", ""},
		{"%v/%v/%v", `[true, false, null]`, "true/false/null", ""},
		{"%q", `[true]`, `"true"`, ""},
		{"%d", `[[1]]`, "", "arrays, objects and sets"},
		{"%*d", `[9, 1]`, "", "'*'"},
		{"%999999999d", `[1]`, "", "width or precision above"},
		{"%.99999s", `["x"]`, "", "width or precision above"},
		{"%4096d", `[1]`, strings.Repeat(" ", 4095) + "1", ""},
	} {
		format, _ := json.Marshal(c.format)
		out, err := sprintf([]json.RawMessage{format, json.RawMessage(c.values)})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s %s: %v, want an error with %q", c.format, c.values, err, c.err)
			}
			continue
		}
		var got string
		if err != nil || json.Unmarshal(out, &got) != nil || got != c.want {
			t.Errorf("%s %s: %s %v, want %q", c.format, c.values, out, err, c.want)
		}
	}
	var undefined *undefinedError
	if _, err := sprintf([]json.RawMessage{json.RawMessage(`1`), json.RawMessage(`[]`)}); !errors.As(err, &undefined) {
		t.Errorf("a number as the format: %v, want undefined (as OPA's evaluator)", err)
	}
}
