package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// Limits bound what Read accepts. Zero fields take the defaults below.
type Limits struct {
	// ArchiveBytes bounds the compressed file (default 256 MiB).
	ArchiveBytes int64
	// TotalBytes bounds the sum of the entries' sizes, uncompressed (default 256 MiB).
	TotalBytes int64
	// EntryBytes bounds one module file (default 64 MiB, http.max_module_bytes' default).
	EntryBytes int64
	// Entries bounds the number of entries (default 1024).
	Entries int
}

// Bounds of the bundle's own files, whatever the Limits.
const (
	MaxManifestBytes   = 1 << 20
	MaxSignaturesBytes = 64 << 10
	MaxSignatures      = 16
)

func (l Limits) withDefaults() Limits {
	if l.ArchiveBytes <= 0 {
		l.ArchiveBytes = 256 << 20
	}
	if l.TotalBytes <= 0 {
		l.TotalBytes = 256 << 20
	}
	if l.EntryBytes <= 0 {
		l.EntryBytes = 64 << 20
	}
	if l.Entries <= 0 {
		l.Entries = 1024
	}
	return l
}

// Options are what Read and ReadFile need beyond the bytes.
type Options struct {
	// Keys are the trusted public keys by id. Without keys, the signature is not checked:
	// only `bundle sign` reads a bundle so (to add a signature); every loader passes keys.
	Keys map[string]ed25519.PublicKey
	// Limits bound the archive.
	Limits Limits
	// Builtin and Builtins resolve builtin:NAME plugins; nil allows none.
	Builtin  func(string) ([]byte, bool)
	Builtins []string
}

// AlgEd25519 is the one signature algorithm.
const AlgEd25519 = "ed25519"

// Signature is one entry of .signatures.json.
type Signature struct {
	KeyID     string `json:"keyid"`
	Algorithm string `json:"algorithm"`
	Signature []byte `json:"signature"` // base64 in JSON
}

type signaturesFile struct {
	Signatures []Signature `json:"signatures"`
}

// ReadFile reads the bundle at path, at most o.Limits.ArchiveBytes of it.
func ReadFile(path string, o Options) (*Bundle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f, o)
}

// Read reads a bundle and checks it: its bounds, its modules' digests against the manifest,
// the manifest's plugins, and, with o.Keys, that a trusted key signed the manifest. Every
// refusal wraps ErrArchive, ErrManifest, ErrDigest, ErrUnsigned or ErrSignature.
func Read(r io.Reader, o Options) (*Bundle, error) {
	l := o.Limits.withDefaults()
	raw, err := io.ReadAll(io.LimitReader(r, l.ArchiveBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) > l.ArchiveBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrArchive, l.ArchiveBytes)
	}
	manifest, sigs, files, err := readEntries(raw, l)
	if err != nil {
		return nil, err
	}
	if manifest == nil {
		return nil, fmt.Errorf("%w: no %s", ErrManifest, ManifestName)
	}
	var sf signaturesFile
	if sigs != nil {
		dec := json.NewDecoder(bytes.NewReader(sigs))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&sf); err != nil {
			return nil, fmt.Errorf("%w: %s: %s", ErrSignature, SignaturesName, err.Error())
		}
		if len(sf.Signatures) > MaxSignatures {
			return nil, fmt.Errorf("%w: %s: more than %d signatures", ErrSignature, SignaturesName, MaxSignatures)
		}
	}
	// The signature first: nothing of an untrusted manifest is parsed beyond its bytes.
	signedBy := ""
	if o.Keys != nil {
		if signedBy, err = verify(manifest, sf.Signatures, o.Keys); err != nil {
			return nil, err
		}
	}
	b, err := parseManifest(manifest, files, o.Builtin, o.Builtins)
	if err != nil {
		return nil, err
	}
	b.SignedBy, b.Signatures = signedBy, sf.Signatures
	return b, nil
}

// readEntries reads the archive's entries within l.
func readEntries(raw []byte, l Limits) (manifest, sigs []byte, files map[string][]byte, err error) {
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: not gzip: %s", ErrArchive, err.Error())
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var total int64
	files = map[string][]byte{}
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%w: entry %d: %s", ErrArchive, n, err.Error())
		}
		if n >= l.Entries {
			return nil, nil, nil, fmt.Errorf("%w: more than %d entries", ErrArchive, l.Entries)
		}
		name := h.Name
		if h.Typeflag == tar.TypeDir {
			continue // no content; a file under it is checked by its own name
		}
		if h.Typeflag != tar.TypeReg {
			return nil, nil, nil, fmt.Errorf("%w: entry %q: not a regular file (type %q)", ErrArchive, name, h.Typeflag)
		}
		limit := l.EntryBytes
		switch name {
		case ManifestName:
			limit = MaxManifestBytes
		case SignaturesName:
			limit = MaxSignaturesBytes
		default:
			if err := checkName(name); err != nil {
				return nil, nil, nil, fmt.Errorf("%w: %w", ErrArchive, err)
			}
		}
		if h.Size < 0 || h.Size > limit {
			return nil, nil, nil, fmt.Errorf("%w: entry %q: %d bytes, the bound is %d", ErrArchive, name, h.Size, limit)
		}
		if total += h.Size; total > l.TotalBytes {
			return nil, nil, nil, fmt.Errorf("%w: entries over %d bytes in all", ErrArchive, l.TotalBytes)
		}
		b := make([]byte, h.Size)
		if _, err := io.ReadFull(tr, b); err != nil {
			return nil, nil, nil, fmt.Errorf("%w: entry %q: %s", ErrArchive, name, err.Error())
		}
		dup := false
		switch name {
		case ManifestName:
			dup, manifest = manifest != nil, b
		case SignaturesName:
			dup, sigs = sigs != nil, b
		default:
			_, dup = files[name]
			files[name] = b
		}
		if dup {
			return nil, nil, nil, fmt.Errorf("%w: entry %q twice", ErrArchive, name)
		}
	}
	return manifest, sigs, files, nil
}

// EncodeKey is a key's file form: its standard base64 and a newline.
func EncodeKey(k []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(k) + "\n")
}

// ErrKey is returned for a key file that is not the base64 of a key of the right size.
var ErrKey = errors.New("bundle: bad key")

// DecodePublicKey reads a public key file (`bundle keygen`'s NAME.pub).
func DecodePublicKey(b []byte) (ed25519.PublicKey, error) {
	k, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: want the base64 of a %d-byte ed25519 public key", ErrKey, ed25519.PublicKeySize)
	}
	return k, nil
}

// DecodePrivateKey reads a private key file (`bundle keygen`'s NAME.key): the base64 of the
// 32-byte seed.
func DecodePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	k, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(k) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: want the base64 of a %d-byte ed25519 seed", ErrKey, ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(k), nil
}
