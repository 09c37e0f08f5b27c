package control

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLS material, by file name, in a tls directory. The appliance holds ca.pem, server.pem and
// server-key.pem; the operator holds ca.pem, client.pem and client-key.pem.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	ServerFile    = "server.pem"
	ServerKeyFile = "server-key.pem"
	ClientFile    = "client.pem"
	ClientKeyFile = "client-key.pem"
)

// ServerTLS is the remote API's TLS config: TLS 1.3, client certificates required and checked
// against the CA.
func ServerTLS(dir string) (*tls.Config, error) {
	cert, pool, err := loadPair(dir, ServerFile, ServerKeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// ClientTLS is initctl's TLS config for --remote.
func ClientTLS(dir string) (*tls.Config, error) {
	cert, pool, err := loadPair(dir, ClientFile, ClientKeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool}, nil
}

func loadPair(dir, certFile, keyFile string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tls material in %s: %w", dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tls material in %s: %w", dir, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return tls.Certificate{}, nil, fmt.Errorf("tls material in %s: %s holds no certificate", dir, CAFile)
	}
	return cert, pool, nil
}

// GenerateTLS makes a CA and a server and a client certificate signed by it in dir, unless
// they are there already (so images built again stay the same and old clients keep working).
// hosts are the server certificate's names and addresses.
func GenerateTLS(dir string, hosts []string) error {
	if _, err := os.Stat(filepath.Join(dir, ClientKeyFile)); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	caKey, caCert, err := newCert(nil, nil, "baton CA", nil, x509.ExtKeyUsage(0))
	if err != nil {
		return err
	}
	serverKey, serverCert, err := newCert(caKey, caCert, "baton appliance", hosts, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return err
	}
	clientKey, clientCert, err := newCert(caKey, caCert, "baton operator", nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	for name, der := range map[string][]byte{CAFile: caCert.Raw, ServerFile: serverCert.Raw, ClientFile: clientCert.Raw} {
		if err := writePEM(filepath.Join(dir, name), "CERTIFICATE", der); err != nil {
			return err
		}
	}
	for name, key := range map[string]*ecdsa.PrivateKey{CAKeyFile: caKey, ServerKeyFile: serverKey, ClientKeyFile: clientKey} {
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, name), "EC PRIVATE KEY", der); err != nil {
			return err
		}
	}
	return nil
}

// newCert makes a key and a certificate, self-signed when parent is nil (the CA).
func newCert(parentKey *ecdsa.PrivateKey, parent *x509.Certificate, cn string, hosts []string, usage x509.ExtKeyUsage) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"baton"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}

func writePEM(path, kind string, der []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	return errors.Join(pem.Encode(f, &pem.Block{Type: kind, Bytes: der}), f.Close())
}
