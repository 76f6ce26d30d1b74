package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/crossns/external-provisioner/test/cluster"
)

// leaderMetric is the line a replica serves while it leads.
const leaderMetric = `leader_election_master_status{name=""} 1`

// leaders returns which of the two replicas say they lead (their
// leader_election_master_status), by component name.
func leaders(ctx context.Context) ([]string, string) {
	var out, state []string
	for comp, url := range map[string]string{
		cluster.Provisioner:        bed.ProvisionerMetricsURL(),
		cluster.ProvisionerReplica: bed.ProvisionerReplicaMetricsURL(),
	} {
		body, err := httpBody(ctx, url)
		switch {
		case err != nil:
			state = append(state, comp+": "+err.Error())
		case strings.Contains(body, leaderMetric):
			out = append(out, comp)
			state = append(state, comp+": leader")
		default:
			state = append(state, comp+": standby")
		}
	}
	return out, strings.Join(state, ", ")
}

func httpBody(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// TestTwoReplicasOnOneHostElectOneLeader runs the sidecar as a Deployment
// with two replicas and leader election whose pods share a host name (as
// with hostNetwork: true): exactly one leads, and when it is killed the
// other takes over and provisions. Leader election's default identity is the
// host name, under which both replicas led at once (upstream gives each
// process an identity of its own, external-provisioner#690).
func TestTwoReplicasOnOneHostElectOneLeader(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	args := []string{"--leader-election", "--leader-election-namespace=default"}
	restartSidecar(t, args...)
	if err := bed.StartProvisionerReplica(ctx, args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := bed.StopProvisionerReplica(context.Background()); err != nil {
			t.Errorf("stopping the second replica: %v", err)
		}
	})

	var leader string
	eventually(t, provisionWait, "one replica to lead", func(ctx context.Context) (bool, string, error) {
		l, state := leaders(ctx)
		if len(l) > 1 {
			return false, "", fmt.Errorf("both replicas lead: %s", state)
		}
		if len(l) == 1 {
			leader = l[0]
		}
		return len(l) == 1, state, nil
	})
	// Both are up and renew every few seconds: the standby must stay one.
	for range 8 {
		time.Sleep(time.Second)
		if l, state := leaders(ctx); len(l) != 1 {
			t.Fatalf("want exactly one leader, have %s", state)
		}
	}
	ns := createNamespace(t, c, "replicas")
	createClaim(t, c, newClaim(ns, "before", "1Mi"))
	waitBound(t, c, ns, "before")

	if err := bed.KillComponent(ctx, leader); err != nil {
		t.Fatal(err)
	}
	standby := cluster.ProvisionerReplica
	if leader == cluster.ProvisionerReplica {
		standby = cluster.Provisioner
	}
	createClaim(t, c, newClaim(ns, "after", "1Mi"))
	eventually(t, provisionWait, standby+" to take over", func(ctx context.Context) (bool, string, error) {
		l, state := leaders(ctx)
		return len(l) == 1 && l[0] == standby, state, nil
	})
	waitBound(t, c, ns, "after")
	// Back to two replicas; the one started again stands by.
	if err := bed.StartComponent(ctx, leader); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		time.Sleep(time.Second)
		if l, state := leaders(ctx); len(l) != 1 || l[0] != standby {
			t.Fatalf("want %s alone to lead after %s came back, have %s", standby, leader, state)
		}
	}
}
