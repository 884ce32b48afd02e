// Command csictl asks a CSI driver's socket what it advertises, for the real-kubelet suite
// (test/kube/run.sh): the suite starts csi-resizer and csi-snapshotter only for capabilities
// the driver has, because those sidecars exit at once without them.
//
//	csictl --endpoint unix:///path/csi.sock caps
//
// prints one capability a line: "plugin CONTROLLER_SERVICE", "plugin ONLINE" (volume
// expansion), "controller CREATE_DELETE_SNAPSHOT", "node EXPAND_VOLUME", ...
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	endpoint := flag.String("endpoint", "", "the driver's gRPC address (unix:///path/csi.sock)")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline for all calls together")
	flag.Parse()
	if *endpoint == "" || flag.NArg() != 1 || flag.Arg(0) != "caps" {
		fmt.Fprintln(os.Stderr, "usage: csictl --endpoint unix:///path/csi.sock caps")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := printCaps(ctx, *endpoint, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "csictl:", err)
		os.Exit(1)
	}
}

func printCaps(ctx context.Context, endpoint string, w io.Writer) error {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", endpoint, err)
	}
	defer conn.Close()

	plugin, err := csi.NewIdentityClient(conn).GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		return fmt.Errorf("GetPluginCapabilities: %w", err)
	}
	controller := false
	for _, c := range plugin.GetCapabilities() {
		switch {
		case c.GetService() != nil:
			fmt.Fprintln(w, "plugin", c.GetService().GetType())
			controller = controller || c.GetService().GetType() == csi.PluginCapability_Service_CONTROLLER_SERVICE
		case c.GetVolumeExpansion() != nil:
			fmt.Fprintln(w, "plugin", c.GetVolumeExpansion().GetType())
		}
	}
	if controller {
		cc, err := csi.NewControllerClient(conn).ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
		if err != nil {
			return fmt.Errorf("ControllerGetCapabilities: %w", err)
		}
		for _, c := range cc.GetCapabilities() {
			fmt.Fprintln(w, "controller", c.GetRpc().GetType())
		}
	}
	nc, err := csi.NewNodeClient(conn).NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		return fmt.Errorf("NodeGetCapabilities: %w", err)
	}
	for _, c := range nc.GetCapabilities() {
		fmt.Fprintln(w, "node", c.GetRpc().GetType())
	}
	return nil
}
