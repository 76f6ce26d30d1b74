package provisioner

import (
	"fmt"
	"regexp"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// StorageClass parameter prefix reserved for the sidecar; such keys never
// reach the driver.
const prefix = "csi.storage.k8s.io/"

const (
	fsTypeKey = prefix + "fstype"

	// Keys the sidecar adds to CreateVolume parameters with --extra-create-metadata.
	pvcNameKey      = prefix + "pvc/name"
	pvcNamespaceKey = prefix + "pvc/namespace"
	pvNameKey       = prefix + "pv/name"

	// PV annotations that remember the deletion secret, so DeleteVolume gets
	// it even after the claim (and its templates) are gone. Names match the
	// upstream sidecar so PVs provisioned by it are deleted correctly.
	deletionSecretNameAnn      = "volume.kubernetes.io/provisioner-deletion-secret-name"
	deletionSecretNamespaceAnn = "volume.kubernetes.io/provisioner-deletion-secret-namespace"
)

// secretKind is one of the secret references a StorageClass may carry.
type secretKind struct {
	// what the secret is for, in messages
	what string
	// nameKey and namespaceKey are the StorageClass parameters
	nameKey, namespaceKey string
	// allowClaimAnnotations: ${pvc.annotations['k']} is allowed in the name.
	// Not for the provisioner secret: DeleteVolume must resolve it without
	// trusting what a claim author wrote.
	allowClaimAnnotations bool
}

var (
	provisionerSecret       = secretKind{"provisioner", prefix + "provisioner-secret-name", prefix + "provisioner-secret-namespace", false}
	controllerPublishSecret = secretKind{"controller-publish", prefix + "controller-publish-secret-name", prefix + "controller-publish-secret-namespace", true}
	nodeStageSecret         = secretKind{"node-stage", prefix + "node-stage-secret-name", prefix + "node-stage-secret-namespace", true}
	nodePublishSecret       = secretKind{"node-publish", prefix + "node-publish-secret-name", prefix + "node-publish-secret-namespace", true}
	controllerExpandSecret  = secretKind{"controller-expand", prefix + "controller-expand-secret-name", prefix + "controller-expand-secret-namespace", true}
	nodeExpandSecret        = secretKind{"node-expand", prefix + "node-expand-secret-name", prefix + "node-expand-secret-namespace", true}

	secretKinds = []secretKind{provisionerSecret, controllerPublishSecret, nodeStageSecret, nodePublishSecret, controllerExpandSecret, nodeExpandSecret}
)

// knownKeys are the reserved parameters the sidecar understands; any other
// key with the reserved prefix is a typo the admin must hear about.
var knownKeys = func() map[string]bool {
	m := map[string]bool{fsTypeKey: true}
	for _, k := range secretKinds {
		m[k.nameKey], m[k.namespaceKey] = true, true
	}
	return m
}()

// classParams is a StorageClass's parameters split into what the sidecar
// consumes and what the driver receives.
type classParams struct {
	driver map[string]string
	fsType string
	// secrets holds the raw (untemplated) name and namespace per kind.
	secrets map[secretKind][2]string
}

func parseClassParams(params map[string]string) (*classParams, error) {
	cp := &classParams{driver: make(map[string]string, len(params)), secrets: map[secretKind][2]string{}}
	for k, v := range params {
		if !strings.HasPrefix(k, prefix) {
			cp.driver[k] = v
			continue
		}
		if !knownKeys[k] {
			return nil, fmt.Errorf("StorageClass parameter %q is not known to csi-provisioner: keys with prefix %q are reserved; fix the StorageClass", k, prefix)
		}
	}
	cp.fsType = params[fsTypeKey]
	for _, sk := range secretKinds {
		name, hasName := params[sk.nameKey]
		ns, hasNS := params[sk.namespaceKey]
		if hasName != hasNS {
			return nil, fmt.Errorf("StorageClass sets only one of %q and %q: the %s secret needs both", sk.nameKey, sk.namespaceKey, sk.what)
		}
		if hasName {
			cp.secrets[sk] = [2]string{name, ns}
		}
	}
	return cp, nil
}

// secretRefs are a class's resolved secret references, by kind; a kind the
// class does not name is absent (nil).
type secretRefs map[secretKind]*v1.SecretReference

// resolveSecretRefs resolves every secret reference of the class.
func resolveSecretRefs(cp *classParams, tp templateParams) (secretRefs, error) {
	refs := secretRefs{}
	for _, sk := range secretKinds {
		ref, err := resolveSecretRef(cp, sk, tp)
		if err != nil {
			return nil, err
		}
		if ref != nil {
			refs[sk] = ref
		}
	}
	return refs, nil
}

// templateParams are the values a secret template may use.
type templateParams struct {
	pvName string
	claim  *v1.PersistentVolumeClaim // nil at deletion time
}

var templateToken = regexp.MustCompile(`\$\{[^}]*\}`)

// resolveSecretRef expands the templates of one secret reference and
// validates the result. It returns nil when the class names no such secret.
func resolveSecretRef(cp *classParams, sk secretKind, tp templateParams) (*v1.SecretReference, error) {
	raw, ok := cp.secrets[sk]
	if !ok {
		return nil, nil
	}
	ns, err := expand(raw[1], tp, false)
	if err != nil {
		return nil, fmt.Errorf("%s secret namespace %q: %w", sk.what, raw[1], err)
	}
	name, err := expand(raw[0], tp, true)
	if err != nil && !sk.allowClaimAnnotations {
		return nil, fmt.Errorf("%s secret name %q: %w", sk.what, raw[0], err)
	}
	if err != nil {
		name, err = expandWithAnnotations(raw[0], tp)
		if err != nil {
			return nil, fmt.Errorf("%s secret name %q: %w", sk.what, raw[0], err)
		}
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return nil, fmt.Errorf("%s secret namespace %q (from %q) is not a valid namespace name: %s", sk.what, ns, raw[1], strings.Join(errs, ", "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, fmt.Errorf("%s secret name %q (from %q) is not a valid secret name: %s", sk.what, name, raw[0], strings.Join(errs, ", "))
	}
	return &v1.SecretReference{Name: name, Namespace: ns}, nil
}

// expand replaces ${pv.name}, ${pvc.namespace} and (for names) ${pvc.name}.
// Claim templates fail when there is no claim (deletion of an old PV).
func expand(s string, tp templateParams, isName bool) (string, error) {
	var bad error
	out := templateToken.ReplaceAllStringFunc(s, func(tok string) string {
		switch tok {
		case "${pv.name}":
			return tp.pvName
		case "${pvc.namespace}":
			if tp.claim != nil {
				return tp.claim.Namespace
			}
		case "${pvc.name}":
			if isName && tp.claim != nil {
				return tp.claim.Name
			}
		}
		if bad == nil {
			bad = fmt.Errorf("template %s is not allowed here", tok)
		}
		return tok
	})
	return out, bad
}

var annotationToken = regexp.MustCompile(`^\$\{pvc\.annotations\['([^']+)'\]\}$`)

func expandWithAnnotations(s string, tp templateParams) (string, error) {
	var bad error
	out := templateToken.ReplaceAllStringFunc(s, func(tok string) string {
		if m := annotationToken.FindStringSubmatch(tok); m != nil && tp.claim != nil {
			v, ok := tp.claim.Annotations[m[1]]
			if !ok && bad == nil {
				bad = fmt.Errorf("claim has no annotation %q", m[1])
			}
			return v
		}
		if v, err := expand(tok, tp, true); err == nil {
			return v
		}
		if bad == nil {
			bad = fmt.Errorf("template %s is not allowed here", tok)
		}
		return tok
	})
	return out, bad
}
