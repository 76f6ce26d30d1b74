package referencegrant

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestFake(t *testing.T) {
	f := NewFake()
	var calls recorder
	f.AddListener(calls.listen)
	nightly := snapshotRef("dev", "prod", "nightly")

	if got, err := f.Check(nightly); err != nil || got.Allowed {
		t.Errorf("Check before Allow = %+v, %v; want denied", got, err)
	}
	f.Allow(nightly, "g")
	if got, err := f.Check(nightly); err != nil || got != (Decision{Allowed: true, Grant: "g"}) {
		t.Errorf("Check after Allow = %+v, %v; want allowed by g", got, err)
	}
	f.SetError(fmt.Errorf("%w: CRD missing", ErrUnavailable))
	if _, err := f.Check(nightly); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Check after SetError: err = %v, want ErrUnavailable", err)
	}
	f.SetError(nil)
	f.Revoke(nightly)
	if got, _ := f.Check(nightly); got.Allowed {
		t.Errorf("Check after Revoke = %+v, want denied", got)
	}
	change := claimsChange("prod", []string{"dev"}, snapshotTarget("nightly"))
	f.Notify(change)
	f.Notify(AllChanged)
	if got := calls.take(); !slices.EqualFunc(got, []Change{change, AllChanged}, equalChanges) {
		t.Errorf("listener calls = %v, want [%v all]", got, change)
	}
	if got := len(f.Checked()); got != 4 {
		t.Errorf("Checked() has %d references, want 4", got)
	}
}
