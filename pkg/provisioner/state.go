package provisioner

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
)

// createState classifies a failed CreateVolume the way the provision loop
// needs it: may the driver still be working on it (retry the same call), or
// is it over (final error), or should the scheduler pick another node.
func createState(err error, nodeSelected bool) controller.ProvisioningState {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return controller.ProvisioningInBackground
	}
	st, ok := status.FromError(err)
	if !ok {
		// Not a gRPC status: the call may or may not have reached the
		// driver, so assume it is still in flight.
		return controller.ProvisioningInBackground
	}
	switch st.Code() {
	case codes.DeadlineExceeded, codes.Unavailable, codes.Canceled, codes.Aborted:
		return controller.ProvisioningInBackground
	case codes.ResourceExhausted:
		if nodeSelected {
			return controller.ProvisioningReschedule
		}
	}
	return controller.ProvisioningFinished
}
