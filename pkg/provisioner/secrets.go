package provisioner

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"
)

// StorageClass parameter prefix reserved for the sidecar; such keys never
// reach the driver.
const prefix = "csi.storage.k8s.io/"

const (
	fsTypeKey = prefix + "fstype"
	// legacyFSTypeKey is upstream's deprecated un-prefixed fstype, matched in
	// any case ("fsType", "FSType"). Unlike the prefixed key it also stays in
	// the driver's parameters, as upstream leaves it there.
	legacyFSTypeKey = "fstype"

	// Keys the sidecar adds to CreateVolume parameters with --extra-create-metadata.
	pvcNameKey      = prefix + "pvc/name"
	pvcNamespaceKey = prefix + "pvc/namespace"
	pvNameKey       = prefix + "pv/name"

	// PV annotations that remember the deletion secret, so DeleteVolume gets
	// it even after the claim (and its templates) are gone. Names match the
	// upstream sidecar so PVs provisioned by it are deleted correctly.
	deletionSecretNameAnn      = "volume.kubernetes.io/provisioner-deletion-secret-name"
	deletionSecretNamespaceAnn = "volume.kubernetes.io/provisioner-deletion-secret-namespace"

	// PV annotations naming the secret for ControllerModifyVolume: the PV's
	// CSI source has no field for it, so external-resizer (v2.1+) reads these
	// (upstream v6.2, #1440). Written only when the class names such a
	// secret: without them the resizer falls back to the controller-expand
	// secret.
	modifySecretNameAnn      = "volume.kubernetes.io/controller-modify-secret-name"
	modifySecretNamespaceAnn = "volume.kubernetes.io/controller-modify-secret-namespace"
)

// secretKind is one of the secret references a StorageClass may carry.
type secretKind struct {
	// what the secret is for, in messages
	what string
	// nameKey and namespaceKey are the StorageClass parameters
	nameKey, namespaceKey string
	// deprecatedNameKey and deprecatedNamespaceKey are upstream's older
	// un-prefixed keys (csiProvisionerSecretName, ...), "" where the kind
	// has none. They are read like the prefixed keys but, as upstream, also
	// passed on to the driver.
	deprecatedNameKey, deprecatedNamespaceKey string
}

var (
	provisionerSecret       = secretKind{"provisioner", prefix + "provisioner-secret-name", prefix + "provisioner-secret-namespace", "csiProvisionerSecretName", "csiProvisionerSecretNamespace"}
	controllerPublishSecret = secretKind{"controller-publish", prefix + "controller-publish-secret-name", prefix + "controller-publish-secret-namespace", "csiControllerPublishSecretName", "csiControllerPublishSecretNamespace"}
	nodeStageSecret         = secretKind{"node-stage", prefix + "node-stage-secret-name", prefix + "node-stage-secret-namespace", "csiNodeStageSecretName", "csiNodeStageSecretNamespace"}
	nodePublishSecret       = secretKind{"node-publish", prefix + "node-publish-secret-name", prefix + "node-publish-secret-namespace", "csiNodePublishSecretName", "csiNodePublishSecretNamespace"}
	controllerExpandSecret  = secretKind{"controller-expand", prefix + "controller-expand-secret-name", prefix + "controller-expand-secret-namespace", "", ""}
	nodeExpandSecret        = secretKind{"node-expand", prefix + "node-expand-secret-name", prefix + "node-expand-secret-namespace", "", ""}
	controllerModifySecret  = secretKind{"controller-modify", prefix + "controller-modify-secret-name", prefix + "controller-modify-secret-namespace", "", ""}

	// defaultSecret is the fallback of every kind the class does not name
	// (upstream's csi.storage.k8s.io/secret-name and -namespace).
	defaultSecret = secretKind{"default", prefix + "secret-name", prefix + "secret-namespace", "", ""}

	secretKinds = []secretKind{provisionerSecret, controllerPublishSecret, nodeStageSecret, nodePublishSecret,
		controllerExpandSecret, nodeExpandSecret, controllerModifySecret}
)

// knownKeys are the reserved parameters the sidecar understands; any other
// key with the reserved prefix is a typo the admin must hear about.
var knownKeys = func() map[string]bool {
	m := map[string]bool{fsTypeKey: true}
	for _, k := range append([]secretKind{defaultSecret}, secretKinds...) {
		m[k.nameKey], m[k.namespaceKey] = true, true
	}
	return m
}()

// classParams is a StorageClass's parameters split into what the sidecar
// consumes and what the driver receives.
type classParams struct {
	driver map[string]string
	fsType string
	// secrets holds the raw (untemplated) name and namespace per kind, the
	// class's default secret already filled in for kinds it does not name.
	secrets map[secretKind][2]string
}

// parseClassParams reads the class's parameters with upstream v6.3.0's keys
// and precedence: for each secret kind the prefixed or the deprecated
// un-prefixed keys (both is an error), else the default secret; name and
// namespace come in pairs and neither may be empty. fstype is the prefixed
// or the deprecated un-prefixed key (both is an error).
func parseClassParams(params map[string]string) (*classParams, error) {
	cp := &classParams{driver: make(map[string]string, len(params)), secrets: map[secretKind][2]string{}}
	var fsTypeKeys []string
	for k, v := range params {
		if k == fsTypeKey || strings.EqualFold(k, legacyFSTypeKey) {
			fsTypeKeys = append(fsTypeKeys, k)
			cp.fsType = v
		}
		if !strings.HasPrefix(k, prefix) {
			cp.driver[k] = v
			continue
		}
		if !knownKeys[k] {
			return nil, fmt.Errorf("StorageClass parameter %q is not known to csi-provisioner: keys with prefix %q are reserved; fix the StorageClass", k, prefix)
		}
	}
	if len(fsTypeKeys) > 1 {
		sort.Strings(fsTypeKeys)
		return nil, fmt.Errorf("StorageClass sets the file system type with several keys %q: keep only %q", fsTypeKeys, fsTypeKey)
	}
	if len(fsTypeKeys) == 1 && fsTypeKeys[0] != fsTypeKey {
		warnDeprecated(fsTypeKeys[0], fsTypeKey)
	}
	def, hasDefault, err := secretTemplates(defaultSecret, params)
	if err != nil {
		return nil, err
	}
	for _, sk := range secretKinds {
		raw, ok, err := secretTemplates(sk, params)
		if err != nil {
			return nil, err
		}
		if !ok && hasDefault {
			raw, ok = def, true
		}
		if ok {
			cp.secrets[sk] = raw
		}
	}
	return cp, nil
}

// secretTemplates reads the name and namespace templates of one kind. ok is
// false when the class names no such secret.
func secretTemplates(sk secretKind, params map[string]string) (raw [2]string, ok bool, err error) {
	var nameKeys, nsKeys []string
	for _, k := range []string{sk.nameKey, sk.deprecatedNameKey} {
		if v, found := params[k]; found && k != "" {
			raw[0], nameKeys = v, append(nameKeys, k)
		}
	}
	for _, k := range []string{sk.namespaceKey, sk.deprecatedNamespaceKey} {
		if v, found := params[k]; found && k != "" {
			raw[1], nsKeys = v, append(nsKeys, k)
		}
	}
	for _, keys := range [][]string{nameKeys, nsKeys} {
		if len(keys) > 1 {
			return raw, false, fmt.Errorf("StorageClass names the %s secret with both %q and the deprecated %q: keep only the first", sk.what, keys[0], keys[1])
		}
	}
	switch {
	case len(nameKeys) != len(nsKeys):
		return raw, false, fmt.Errorf("StorageClass sets only one of %q and %q: the %s secret needs both", sk.nameKey, sk.namespaceKey, sk.what)
	case len(nameKeys) == 0:
		return raw, false, nil
	case raw[0] == "" || raw[1] == "":
		return raw, false, fmt.Errorf("StorageClass parameters %q and %q of the %s secret must not be empty", nameKeys[0], nsKeys[0], sk.what)
	}
	if nameKeys[0] == sk.deprecatedNameKey {
		warnDeprecated(nameKeys[0], sk.nameKey)
	}
	if nsKeys[0] == sk.deprecatedNamespaceKey {
		warnDeprecated(nsKeys[0], sk.namespaceKey)
	}
	return raw, true, nil
}

// deprecationWarned holds the deprecated keys already logged: a class is
// parsed for every claim, the warning is worth once per process.
var deprecationWarned sync.Map

func warnDeprecated(key, use string) {
	if _, seen := deprecationWarned.LoadOrStore(key, true); !seen {
		klog.Background().Info("StorageClass parameter is deprecated (as in upstream external-provisioner); it still works", "parameter", key, "use", use)
	}
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
	name, err := expandWithAnnotations(raw[0], tp)
	if err != nil {
		return nil, fmt.Errorf("%s secret name %q: %w", sk.what, raw[0], err)
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
			bad = notAllowed(tok, isName, tp.claim != nil)
		}
		return tok
	})
	return out, bad
}

// notAllowed says which templates the field may use instead of tok.
func notAllowed(tok string, isName, withClaim bool) error {
	allowed := "${pv.name} and ${pvc.namespace}"
	switch {
	case !withClaim:
		allowed = "only ${pv.name} when the claim is gone"
	case isName:
		allowed = "${pv.name}, ${pvc.namespace}, ${pvc.name} and ${pvc.annotations['<key>']}"
	}
	field := "namespace"
	if isName {
		field = "name"
	}
	return fmt.Errorf("template %s is not allowed here: a secret %s may use %s", tok, field, allowed)
}

var annotationToken = regexp.MustCompile(`^\$\{pvc\.annotations\['([^']+)'\]\}$`)

// expandWithAnnotations is expand for secret names, which may also use
// ${pvc.annotations['key']}: in every kind's name, the provisioner secret's
// included (upstream allows that since v5.0, #1196; the resolved name is
// recorded on the PV, so deletion never reads the claim's annotations).
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
		v, err := expand(tok, tp, true)
		if err == nil {
			return v
		}
		if bad == nil {
			bad = err
		}
		return tok
	})
	return out, bad
}
