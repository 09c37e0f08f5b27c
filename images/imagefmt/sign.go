package imagefmt

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// SignaturePath holds the Ed25519 signature, base64, of the exact bytes of ManifestPath. The
// manifest names every file of the image by digest (and the kernel it was built for), so
// signing it signs the image.
const SignaturePath = "/etc/baton/manifest.sig"

// keyPrefix marks a public key written inline in a config: "ed25519:BASE64".
const keyPrefix = "ed25519:"

// GenerateKey writes a new signing key to prefix.key (PKCS #8, PEM, mode 0600) and returns the
// public half in the form [update] trusted_keys takes.
func GenerateKey(prefix string) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(prefix+".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", err
	}
	return PublicKeyString(pub), nil
}

// PublicKeyString is how a config names a trusted key.
func PublicKeyString(pub ed25519.PublicKey) string {
	return keyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ReadSigningKey reads a key GenerateKey wrote.
func ReadSigningKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block (want a key made by mkimage -gen-key)", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an Ed25519 key", path)
	}
	return priv, nil
}

// ParsePublicKey reads "ed25519:BASE64".
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b64, ok := strings.CutPrefix(s, keyPrefix)
	if !ok {
		return nil, fmt.Errorf("want %sBASE64 (mkimage -gen-key prints it)", keyPrefix)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not a %d-byte Ed25519 public key in base64", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// Sign signs the manifest's bytes.
func Sign(priv ed25519.PrivateKey, manifest []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(priv, manifest)) + "\n")
}

// ErrUnsigned is an image without a signature where one is required.
var ErrUnsigned = errors.New("the image is not signed (mkimage -sign KEY)")

// VerifySignature checks that sig is a signature of manifest by one of the trusted keys.
func VerifySignature(manifest, sig []byte, trusted []string) error {
	if len(sig) == 0 {
		return ErrUnsigned
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
	if err != nil {
		return fmt.Errorf("%s: not base64: %w", SignaturePath, err)
	}
	for _, t := range trusted {
		if pub, err := ParsePublicKey(t); err == nil && ed25519.Verify(pub, manifest, raw) {
			return nil
		}
	}
	return fmt.Errorf("the image's signature is not by a trusted key ([update] trusted_keys holds %d)", len(trusted))
}
