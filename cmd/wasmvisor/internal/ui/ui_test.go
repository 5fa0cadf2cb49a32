package ui

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, method, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, req)
	return w
}

// Every file is served with its type and the strict headers; revalidation answers 304.
func TestHandler(t *testing.T) {
	for path, ctype := range map[string]string{"/": "text/html; charset=utf-8", "/index.html": "text/html; charset=utf-8",
		"/app.js": "text/javascript; charset=utf-8", "/style.css": "text/css; charset=utf-8"} {
		w := get(t, "GET", path, nil)
		h := w.Header()
		if w.Code != http.StatusOK || h.Get("Content-Type") != ctype || w.Body.Len() == 0 {
			t.Fatalf("%s: %d %q", path, w.Code, h.Get("Content-Type"))
		}
		if h.Get("Content-Security-Policy") != ContentSecurityPolicy || h.Get("X-Content-Type-Options") != "nosniff" ||
			h.Get("Cache-Control") != "no-cache" || h.Get("ETag") == "" || h.Get("X-Frame-Options") != "DENY" {
			t.Fatalf("%s: headers %v", path, h)
		}
		if w2 := get(t, "GET", path, map[string]string{"If-None-Match": h.Get("ETag")}); w2.Code != http.StatusNotModified || w2.Body.Len() != 0 {
			t.Fatalf("%s revalidated: %d", path, w2.Code)
		}
		if w3 := get(t, "HEAD", path, nil); w3.Code != http.StatusOK || w3.Body.Len() != 0 {
			t.Fatalf("HEAD %s: %d, %d bytes", path, w3.Code, w3.Body.Len())
		}
	}
	for _, tc := range []struct {
		method, path string
		code         int
	}{{"GET", "/nothing.js", 404}, {"GET", "/../ui.go", 404}, {"GET", "/assets/app.js", 404}, {"POST", "/", 405}, {"DELETE", "/app.js", 405}} {
		if w := get(t, tc.method, tc.path, nil); w.Code != tc.code || w.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, w.Code, tc.code)
		}
	}
}

// The files need nothing the policy forbids, and nothing from another origin: no inline
// script or handler, no style attribute, no URL but the SVG namespace.
func TestAssetsFitThePolicy(t *testing.T) {
	page := files["/index.html"].body
	if m := regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]+</script>|\son[a-z]+=|\sstyle=`).Find(page); m != nil {
		t.Fatalf("index.html: %q is refused by the policy", m)
	}
	if !strings.Contains(string(page), `<script type="module" src="app.js"></script>`) {
		t.Fatal("index.html does not load app.js")
	}
	for name, f := range files {
		for _, u := range regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s"'<>)]*`).FindAll(f.body, -1) {
			if string(u) != "http://www.w3.org/2000/svg" {
				t.Errorf("%s names another origin: %s", name, u)
			}
		}
		if strings.Contains(string(f.body), "eval(") || strings.Contains(string(f.body), "innerHTML") {
			t.Errorf("%s uses eval or innerHTML", name)
		}
	}
}
