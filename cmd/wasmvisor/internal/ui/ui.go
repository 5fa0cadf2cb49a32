// Package ui is the dashboard of `wasmvisor serve`: a page and its script and style sheet,
// embedded in the binary, served under /ui on the API's own listener. The page draws the
// supervision tree, each plugin's numbers with small time plots, and a feed of events, all
// from one server-sent event stream (GET /v1/dashboard/stream); it never polls. It shows
// admin controls only once the operator typed the admin token into it and GET /v1/auth
// accepted it. What it shows and where each number comes from: README.md beside this file.
//
// The files are plain HTML, CSS and a JavaScript module: no build step, no toolkit, nothing
// fetched from another origin. Handler serves them with a Content-Security-Policy that allows
// only this origin's script and style (no inline script, no eval), and no caching without
// revalidation.
package ui

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var assets embed.FS

// ContentSecurityPolicy is the policy of every response of Handler: this origin's script,
// style, images and connections only; no inline script, no plugins, no framing, no form posts.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// file is one embedded asset, ready to serve.
type file struct {
	body  []byte
	ctype string
	etag  string
}

var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// files maps a request path ("/", "/app.js") to its asset; read once.
var files = func() map[string]file {
	out := map[string]file{}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		name := strings.TrimPrefix(p, "assets")
		out[name] = file{body: b, ctype: types[path.Ext(p)], etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		panic("ui: embedded assets: " + err.Error()) // the build embedded them: cannot happen
	}
	out["/"] = out["/index.html"]
	return out
}()

// Handler serves the dashboard's files at the paths below its mount point ("/" is the page).
// Only GET and HEAD of the embedded files are answered; any other path is a 404. Every answer
// carries ContentSecurityPolicy, X-Content-Type-Options: nosniff, Referrer-Policy: no-referrer
// and Cache-Control: no-cache with an ETag, so that a new binary's files are never mixed with
// an old page's.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-cache")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		f, ok := files[r.URL.Path]
		if !ok || f.ctype == "" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		h.Set("ETag", f.etag)
		if r.Header.Get("If-None-Match") == f.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Type", f.ctype)
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(f.body)
	})
}
