package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certValidity is long enough for any bed and short enough not to matter.
const certValidity = 365 * 24 * time.Hour

// PKI file names under _output/cluster/pki.
const (
	caCertFile        = "ca.crt"
	caKeyFile         = "ca.key"
	apiServerCertFile = "apiserver.crt"
	apiServerKeyFile  = "apiserver.key"
	kcmServingCert    = "kube-controller-manager-serving.crt"
	kcmServingKey     = "kube-controller-manager-serving.key"
	adminCertFile     = "admin.crt"
	adminKeyFile      = "admin.key"
	kcmClientCert     = "kube-controller-manager.crt"
	kcmClientKey      = "kube-controller-manager.key"
	saKeyFile         = "sa.key"
	saPubFile         = "sa.pub"
)

// keyPair is a certificate with its key, kept parsed for signing and as PEM
// for the files and kubeconfigs.
type keyPair struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

// generatePKI writes a fresh CA, the serving certificates of kube-apiserver
// and kube-controller-manager (for 127.0.0.1 and localhost), the client
// certificates of the admin (O=system:masters) and of
// kube-controller-manager (CN=system:kube-controller-manager), and the
// service-account signing key. It returns the CA and the two client pairs,
// which the kubeconfigs embed.
func generatePKI(dir string) (ca, admin, kcm *keyPair, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	ca, err = newCA("csi-provisioner-testbed-ca")
	if err != nil {
		return nil, nil, nil, err
	}
	serving := pkix.Name{CommonName: "kube-apiserver"}
	apiserver, err := ca.issue(serving, x509.ExtKeyUsageServerAuth, true)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("issuing kube-apiserver serving certificate: %w", err)
	}
	kcmServing, err := ca.issue(pkix.Name{CommonName: "kube-controller-manager"}, x509.ExtKeyUsageServerAuth, true)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("issuing kube-controller-manager serving certificate: %w", err)
	}
	admin, err = ca.issue(pkix.Name{CommonName: "testbed-admin", Organization: []string{"system:masters"}}, x509.ExtKeyUsageClientAuth, false)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("issuing admin client certificate: %w", err)
	}
	kcm, err = ca.issue(pkix.Name{CommonName: "system:kube-controller-manager"}, x509.ExtKeyUsageClientAuth, false)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("issuing kube-controller-manager client certificate: %w", err)
	}
	saPriv, saPub, err := newServiceAccountKey()
	if err != nil {
		return nil, nil, nil, err
	}
	files := map[string][]byte{
		caCertFile: ca.certPEM, caKeyFile: ca.keyPEM,
		apiServerCertFile: apiserver.certPEM, apiServerKeyFile: apiserver.keyPEM,
		kcmServingCert: kcmServing.certPEM, kcmServingKey: kcmServing.keyPEM,
		adminCertFile: admin.certPEM, adminKeyFile: admin.keyPEM,
		kcmClientCert: kcm.certPEM, kcmClientKey: kcm.keyPEM,
		saKeyFile: saPriv, saPubFile: saPub,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, nil, nil, fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return ca, admin, kcm, nil
}

func newCA(name string) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-signing CA: %w", err)
	}
	return newKeyPair(der, key)
}

// issue signs a new ECDSA certificate; serving ones are valid for the
// loopback names the bed listens on.
func (ca *keyPair) issue(subject pkix.Name, usage x509.ExtKeyUsage, serving bool) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if serving {
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, err
	}
	return newKeyPair(der, key)
}

func newKeyPair(der []byte, key crypto.Signer) (*keyPair, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing new certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return &keyPair{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// newServiceAccountKey returns the PEM private and public halves of the key
// kube-apiserver signs service-account tokens with; kube-controller-manager
// gets its controllers' tokens through the TokenRequest API.
func newServiceAccountKey() (priv, pub []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("generating service-account key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("encoding service-account public key: %w", err)
	}
	priv = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pub = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	return priv, pub, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on Linux; a fixed serial still works.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
