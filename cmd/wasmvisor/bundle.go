package main

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wasmvisor/wasmvisor/cmd/wasmvisor/internal/bundle"
	"github.com/wasmvisor/wasmvisor/plugins"
)

// newBundleCmd is `wasmvisor bundle keygen|build|sign|verify` (cmd/wasmvisor/internal/bundle,
// README.md).
func newBundleCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Make, sign and verify signed bundles of plugins",
		Long: `A bundle is a tar.gz of modules and a manifest (their sha256 digests and the plugins, in
the configuration file's syntax), signed with ed25519. serve loads bundles from the paths of
bundles.paths, verified against bundles.keys. Format: cmd/wasmvisor/internal/bundle/README.md.`,
	}
	opts := bundle.Options{Builtin: plugins.Builtin, Builtins: plugins.Builtins()}

	keygen := &cobra.Command{
		Use:   "keygen NAME",
		Short: "Write an ed25519 key pair: NAME.key (private, mode 0600) and NAME.pub",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(_ *cobra.Command, a []string) error {
			pub, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			if err := writeNew(a[0]+".key", bundle.EncodeKey(priv.Seed()), 0o600); err != nil {
				return err
			}
			if err := writeNew(a[0]+".pub", bundle.EncodeKey(pub), 0o644); err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "wrote %s.key and %s.pub; in the server configuration:\n"+
				"bundles:\n  keys:\n    %s: %s", a[0], a[0], filepath.Base(a[0]), bundle.EncodeKey(pub))
			return err
		},
	}

	var out string
	build := &cobra.Command{
		Use:   "build -o OUT.tar.gz MANIFEST.yaml",
		Short: "Build an unsigned bundle from a manifest and the module files it names",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(_ *cobra.Command, a []string) error {
			if out == "" {
				return usageError{errors.New("-o OUT.tar.gz is required")}
			}
			b, err := bundle.Build(a[0], opts)
			if err != nil {
				return err
			}
			return writeReplace(out, b)
		},
	}
	build.Flags().StringVarP(&out, "output", "o", "", "the bundle to write")

	var key, keyID, signOut string
	sign := &cobra.Command{
		Use:   "sign --key NAME.key [--key-id ID] [-o OUT] BUNDLE.tar.gz",
		Short: "Add an ed25519 signature to a bundle (in place unless -o)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(_ *cobra.Command, a []string) error {
			if key == "" {
				return usageError{errors.New("--key is required")}
			}
			kb, err := readSmall(key)
			if err != nil {
				return err
			}
			priv, err := bundle.DecodePrivateKey(kb)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			if keyID == "" {
				keyID = keyName(key)
			}
			ab, err := readBundleFile(a[0])
			if err != nil {
				return err
			}
			signed, err := bundle.Sign(ab, keyID, priv, opts)
			if err != nil {
				return err
			}
			return writeReplace(cmp.Or(signOut, a[0]), signed)
		},
	}
	sign.Flags().StringVar(&key, "key", "", "the private key file (bundle keygen's NAME.key)")
	sign.Flags().StringVar(&keyID, "key-id", "", "the key id servers know the key by (default: the key file's name without extension)")
	sign.Flags().StringVarP(&signOut, "output", "o", "", "write the signed bundle here instead of in place")

	var pubs []string
	verify := &cobra.Command{
		Use:   "verify --key NAME.pub [--key ID=FILE]... BUNDLE.tar.gz",
		Short: "Verify a bundle as serve does; print its plugins",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(_ *cobra.Command, a []string) error {
			if len(pubs) == 0 {
				return usageError{errors.New("--key is required")}
			}
			o := opts
			o.Keys = map[string]ed25519.PublicKey{}
			for _, k := range pubs {
				id, file, ok := strings.Cut(k, "=")
				if !ok {
					id, file = keyName(k), k
				}
				kb, err := readSmall(file)
				if err != nil {
					return err
				}
				pk, err := bundle.DecodePublicKey(kb)
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				o.Keys[id] = pk
			}
			b, err := bundle.ReadFile(a[0], o)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: ok, signed by %q, revision %q, manifest %s\n", a[0], b.SignedBy, b.Revision, b.Digest)
			for _, p := range b.Plugins {
				fmt.Fprintf(stdout, "  %s\t%s\n", p.Name, p.Wasm)
			}
			return nil
		},
	}
	verify.Flags().StringArrayVar(&pubs, "key", nil, "a trusted public key file: NAME.pub (key id NAME) or ID=FILE; repeatable")

	cmd.AddCommand(keygen, build, sign, verify)
	return cmd
}

// keyName is a key file's default key id: its base name without extension.
func keyName(path string) string {
	b := filepath.Base(path)
	return strings.TrimSuffix(b, filepath.Ext(b))
}

// readSmall reads a key file (at most 4 KiB).
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4<<10+1))
	if err == nil && len(b) > 4<<10 {
		err = fmt.Errorf("%s: over 4 KiB: not a key file", path)
	}
	return b, err
}

// readBundleFile reads a bundle within Read's default archive bound.
func readBundleFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > 256<<20 {
		return nil, fmt.Errorf("%s: %w: over 256 MiB", path, bundle.ErrArchive)
	}
	return os.ReadFile(path)
}

// writeNew creates path; an existing file is an error (a key is never overwritten).
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, bytes.NewReader(b)); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// writeReplace writes path through a temporary file renamed over it: a server watching the
// bundle never reads half of one.
func writeReplace(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".bundle-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}
