package provisioner

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzSecretTemplate expands arbitrary secret name and namespace templates
// of a StorageClass, for a claim with one annotation (or, at deletion time,
// for no claim), and checks: nothing panics; a result is a valid secret name
// in a valid namespace name, with no "${" left in it; a template that uses a
// token the field does not allow is an error. The class's parameters are
// also parsed as a whole, with the templates under the prefixed and the
// deprecated keys.
func FuzzSecretTemplate(f *testing.F) {
	f.Add("${pvc.name}-creds", "${pvc.namespace}", "pvc-1234", "dev", "data", "example.com/secret", "creds", true)
	f.Fuzz(func(t *testing.T, nameTmpl, nsTmpl, pvName, claimNS, claimName, annKey, annValue string, withClaim bool) {
		tp := templateParams{pvName: pvName}
		if withClaim {
			tp.claim = &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{
				Namespace: claimNS, Name: claimName, Annotations: map[string]string{annKey: annValue}}}
		}
		var classes []map[string]string
		for _, sk := range append([]secretKind{defaultSecret}, secretKinds...) {
			classes = append(classes, map[string]string{sk.nameKey: nameTmpl, sk.namespaceKey: nsTmpl, "driver-key": nameTmpl})
			if sk.deprecatedNameKey != "" {
				classes = append(classes, map[string]string{sk.deprecatedNameKey: nameTmpl, sk.deprecatedNamespaceKey: nsTmpl})
			}
		}
		for _, params := range classes {
			cp, err := parseClassParams(params)
			if err != nil {
				if nameTmpl != "" && nsTmpl != "" {
					t.Fatalf("parseClassParams(%q) = %v; want the templates accepted for expansion", params, err)
				}
				continue
			}
			if len(cp.secrets) != len(secretKinds) && len(cp.secrets) != 1 {
				t.Fatalf("parseClassParams(%q) read %d secrets, want one, or all from the default", params, len(cp.secrets))
			}
			for sk := range cp.secrets {
				expandOne(t, cp, sk, tp, nameTmpl, nsTmpl)
			}
		}
	})
}

// expandOne resolves one secret reference and checks the result.
func expandOne(t *testing.T, cp *classParams, sk secretKind, tp templateParams, nameTmpl, nsTmpl string) {
	t.Helper()
	ref, err := resolveSecretRef(cp, sk, tp)
	if err != nil {
		if ref != nil {
			t.Fatalf("resolveSecretRef returned %v with error %v", ref, err)
		}
		return
	}
	for _, tmpl := range []struct{ what, tmpl string }{{"name", nameTmpl}, {"namespace", nsTmpl}} {
		if tok, ok := unknownToken(tmpl.tmpl, tmpl.what == "name", tp); ok {
			t.Fatalf("secret %s template %q has token %s, which is not allowed, but expanded to %v", tmpl.what, tmpl.tmpl, tok, ref)
		}
	}
	if strings.Contains(ref.Name, "${") || strings.Contains(ref.Namespace, "${") {
		t.Fatalf("templates %q / %q expanded to %v, with a template left", nameTmpl, nsTmpl, ref)
	}
	if errs := validation.IsDNS1123Subdomain(ref.Name); len(errs) > 0 {
		t.Fatalf("template %q expanded to secret name %q: %v", nameTmpl, ref.Name, errs)
	}
	if errs := validation.IsDNS1123Label(ref.Namespace); len(errs) > 0 {
		t.Fatalf("template %q expanded to namespace %q: %v", nsTmpl, ref.Namespace, errs)
	}
}

// unknownToken returns the first "${...}" token of tmpl that the field may
// not use, written out independently of the expander: a namespace may use
// ${pv.name} and, with a claim, ${pvc.namespace}; a name also ${pvc.name}
// and ${pvc.annotations['<key>']} for a key the claim has.
func unknownToken(tmpl string, isName bool, tp templateParams) (string, bool) {
	for {
		start := strings.Index(tmpl, "${")
		if start < 0 {
			return "", false
		}
		end := strings.Index(tmpl[start:], "}")
		if end < 0 {
			return "", false // unterminated: no token; validation refuses the "$"
		}
		tok := tmpl[start : start+end+1]
		tmpl = tmpl[start+end+1:]
		switch {
		case tok == "${pv.name}":
		case tok == "${pvc.namespace}" && tp.claim != nil:
		case tok == "${pvc.name}" && tp.claim != nil && isName:
		case isName && tp.claim != nil && strings.HasPrefix(tok, "${pvc.annotations['") && strings.HasSuffix(tok, "']}"):
			key := strings.TrimSuffix(strings.TrimPrefix(tok, "${pvc.annotations['"), "']}")
			if _, has := tp.claim.Annotations[key]; !has || key == "" || strings.Contains(key, "'") {
				return tok, true
			}
		default:
			return tok, true
		}
	}
}
