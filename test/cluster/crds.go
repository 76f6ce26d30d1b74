package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/klog/v2"
)

// ReferenceGrantCRDName is the CRD of gateway-api's ReferenceGrant, the
// object KEP-3294 checks before a claim may use a source in another namespace.
const ReferenceGrantCRDName = "referencegrants.gateway.networking.k8s.io"

// crdWait bounds waiting for a CRD to become Established or to go away.
const crdWait = time.Minute

// referenceGrantCRDPath is the standard-channel ReferenceGrant CRD of the
// pinned gateway-api module.
func (t *Tools) referenceGrantCRDPath() string {
	return filepath.Join(t.Modules[gatewayAPIModule].Dir, "config", "crd", "standard",
		"gateway.networking.k8s.io_referencegrants.yaml")
}

// snapshotCRDPaths are all CRDs of the pinned external-snapshotter client
// module: VolumeSnapshot* and VolumeGroupSnapshot* (snapshot-controller
// waits for the group-snapshot ones too).
func (t *Tools) snapshotCRDPaths() ([]string, error) {
	dir := filepath.Join(t.Modules[snapshotClientMod].Dir, "config", "crd")
	paths, err := filepath.Glob(filepath.Join(dir, "*.storage.k8s.io_*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no CRDs in %s", dir)
	}
	sort.Strings(paths)
	return paths, nil
}

// readCRDs decodes every CustomResourceDefinition in a (multi-document) YAML file.
func readCRDs(path string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading CRD file: %w", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var crds []*apiextensionsv1.CustomResourceDefinition
	for {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := dec.Decode(crd); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", path, err)
		}
		if crd.Kind != "CustomResourceDefinition" {
			continue
		}
		crds = append(crds, crd)
	}
	if len(crds) == 0 {
		return nil, fmt.Errorf("no CustomResourceDefinition in %s", path)
	}
	return crds, nil
}

// applyCRDFiles creates or updates the CRDs in files and waits until every
// one of them is Established.
func (c *Cluster) applyCRDFiles(ctx context.Context, files ...string) error {
	var names []string
	for _, f := range files {
		crds, err := readCRDs(f)
		if err != nil {
			return err
		}
		for _, crd := range crds {
			if err := c.applyCRD(ctx, crd); err != nil {
				return err
			}
			names = append(names, crd.Name)
		}
	}
	for _, n := range names {
		if err := c.WaitCRDEstablished(ctx, n); err != nil {
			return err
		}
	}
	klog.FromContext(ctx).V(2).Info("CRDs established", "crds", names)
	return nil
}

func (c *Cluster) applyCRD(ctx context.Context, crd *apiextensionsv1.CustomResourceDefinition) error {
	client := c.apiextensions.ApiextensionsV1().CustomResourceDefinitions()
	_, err := client.Create(ctx, crd, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("creating CRD %s: %w", crd.Name, err)
		}
		return nil
	}
	existing, err := client.Get(ctx, crd.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading CRD %s: %w", crd.Name, err)
	}
	crd.ResourceVersion = existing.ResourceVersion
	if _, err := client.Update(ctx, crd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating CRD %s: %w", crd.Name, err)
	}
	return nil
}

// WaitCRDEstablished waits until the named CRD reports Established=True.
func (c *Cluster) WaitCRDEstablished(ctx context.Context, name string) error {
	client := c.apiextensions.ApiextensionsV1().CustomResourceDefinitions()
	var last string
	err := wait.PollUntilContextTimeout(ctx, pollInterval, crdWait, true, func(ctx context.Context) (bool, error) {
		crd, err := client.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
			if cond.Type == apiextensionsv1.NamesAccepted && cond.Status == apiextensionsv1.ConditionFalse {
				last = "names not accepted: " + cond.Message
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for CRD %s to be Established (%s): %w", name, last, err)
	}
	return nil
}

// ApplySnapshotCRDs installs the VolumeSnapshot and VolumeGroupSnapshot CRDs.
func (c *Cluster) ApplySnapshotCRDs(ctx context.Context) error {
	paths, err := c.tools.snapshotCRDPaths()
	if err != nil {
		return err
	}
	return c.applyCRDFiles(ctx, paths...)
}

// ApplyReferenceGrantCRD installs the ReferenceGrant CRD and waits until it
// is Established. cluster-up calls it; tests of "the CRD appears while the
// sidecar runs" call it after DeleteReferenceGrantCRD.
func (c *Cluster) ApplyReferenceGrantCRD(ctx context.Context) error {
	if c.tools == nil {
		return errors.New("the bed's tools are unknown: cannot locate the ReferenceGrant CRD")
	}
	return c.applyCRDFiles(ctx, c.tools.referenceGrantCRDPath())
}

// DeleteReferenceGrantCRD removes the ReferenceGrant CRD (and with it every
// ReferenceGrant) and waits until the API server no longer serves it.
func (c *Cluster) DeleteReferenceGrantCRD(ctx context.Context) error {
	return c.deleteCRDs(ctx, ReferenceGrantCRDName)
}

// SnapshotCRDNames are the CRDs of the VolumeSnapshot API
// (snapshot.storage.k8s.io/v1), without the group snapshot ones.
func SnapshotCRDNames() []string {
	var names []string
	for _, r := range []string{"volumesnapshots", "volumesnapshotcontents", "volumesnapshotclasses"} {
		names = append(names, r+".snapshot.storage.k8s.io")
	}
	return names
}

// DeleteSnapshotCRDs removes the CRDs of the VolumeSnapshot API (and with
// them every snapshot, content and class, the bed's VolumeSnapshotClass
// too) and waits until they are gone, so that snapshot.storage.k8s.io/v1 is
// no longer served. InstallSnapshotAPI puts them back.
func (c *Cluster) DeleteSnapshotCRDs(ctx context.Context) error {
	return c.deleteCRDs(ctx, SnapshotCRDNames()...)
}

// InstallSnapshotAPI installs the snapshot CRDs (again) and the bed's
// VolumeSnapshotClass, as cluster-up does.
func (c *Cluster) InstallSnapshotAPI(ctx context.Context) error {
	if c.tools == nil {
		return errors.New("the bed's tools are unknown: cannot locate the snapshot CRDs")
	}
	if err := c.ApplySnapshotCRDs(ctx); err != nil {
		return err
	}
	return c.createClasses(ctx)
}

// deleteCRDs deletes the named CRDs (missing ones are fine) and waits until
// each is gone.
func (c *Cluster) deleteCRDs(ctx context.Context, names ...string) error {
	client := c.apiextensions.ApiextensionsV1().CustomResourceDefinitions()
	for _, name := range names {
		if err := client.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting CRD %s: %w", name, err)
		}
	}
	for _, name := range names {
		err := wait.PollUntilContextTimeout(ctx, pollInterval, crdWait, true, func(ctx context.Context) (bool, error) {
			_, err := client.Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			return fmt.Errorf("waiting for CRD %s to go away: %w", name, err)
		}
	}
	return nil
}

// CRDNames lists the CRDs the bed installs, for checks that they are served.
func CRDNames() []string {
	names := append([]string{ReferenceGrantCRDName}, SnapshotCRDNames()...)
	for _, r := range []string{"volumegroupsnapshots", "volumegroupsnapshotcontents", "volumegroupsnapshotclasses"} {
		names = append(names, r+".groupsnapshot.storage.k8s.io")
	}
	return names
}
