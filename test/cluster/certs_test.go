package cluster

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

func TestGeneratePKIIssuesWhatTheComponentsCheck(t *testing.T) {
	dir := t.TempDir()
	if _, _, _, err := generatePKI(dir); err != nil {
		t.Fatalf("generatePKI: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, filepath.Join(dir, caCertFile)))

	for _, tc := range []struct {
		name   string
		file   string
		usage  x509.ExtKeyUsage
		host   string
		cn     string
		groups []string
	}{
		{name: "apiserver serving", file: apiServerCertFile, usage: x509.ExtKeyUsageServerAuth, host: "127.0.0.1"},
		{name: "apiserver serving by name", file: apiServerCertFile, usage: x509.ExtKeyUsageServerAuth, host: "localhost"},
		{name: "kcm serving", file: kcmServingCert, usage: x509.ExtKeyUsageServerAuth, host: "127.0.0.1"},
		{name: "admin client", file: adminCertFile, usage: x509.ExtKeyUsageClientAuth, groups: []string{"system:masters"}},
		{name: "kcm client", file: kcmClientCert, usage: x509.ExtKeyUsageClientAuth, cn: "system:kube-controller-manager"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert := readCert(t, filepath.Join(dir, tc.file))
			opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{tc.usage}, DNSName: tc.host}
			if _, err := cert.Verify(opts); err != nil {
				t.Errorf("verify: %v", err)
			}
			if tc.cn != "" && cert.Subject.CommonName != tc.cn {
				t.Errorf("CN = %q, want %q", cert.Subject.CommonName, tc.cn)
			}
			if tc.groups != nil && (len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != tc.groups[0]) {
				t.Errorf("O = %v, want %v", cert.Subject.Organization, tc.groups)
			}
		})
	}

	priv := readPEM(t, filepath.Join(dir, saKeyFile))
	key, err := x509.ParsePKCS1PrivateKey(priv)
	if err != nil {
		t.Fatalf("service-account key: %v", err)
	}
	pub, err := x509.ParsePKIXPublicKey(readPEM(t, filepath.Join(dir, saPubFile)))
	if err != nil {
		t.Fatalf("service-account public key: %v", err)
	}
	if !key.PublicKey.Equal(pub.(*rsa.PublicKey)) {
		t.Error("sa.pub is not the public half of sa.key")
	}
}

func readPEM(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	return block.Bytes
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	cert, err := x509.ParseCertificate(readPEM(t, path))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cert
}
