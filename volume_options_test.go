package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestVolumeOptionLimitsAgree: the controller's StorageClass check and the node's
// volume-context check accept and refuse exactly the same values of every option, so
// nothing the controller lets through fails only when a pod starts.
func TestVolumeOptionLimitsAgree(t *testing.T) {
	c := paramsController(t)
	for _, o := range volumeOptions {
		for _, v := range []int{o.min - 1, o.min, o.max, o.max + 1} {
			t.Run(fmt.Sprintf("%s=%d", o.key, v), func(t *testing.T) {
				raw := strconv.Itoa(v)
				_, ctrlErr := c.parseParams(map[string]string{o.key: raw})
				nodeErr := nodeContextError(t, o, raw)
				want := v >= o.min && v <= o.max
				if (ctrlErr == nil) != want || (nodeErr == nil) != want {
					t.Fatalf("controller %v, node %v; want accepted=%v", ctrlErr, nodeErr, want)
				}
			})
		}
	}
}

// nodeContextError is what the node makes of the option's value in a volume context.
func nodeContextError(t *testing.T, o volumeOption, raw string) error {
	vc := map[string]string{contextNQN: testPrefix + "1", paramNVMeAddress: "10.0.0.5", o.key: raw}
	if o.connect != nil || o.key == paramNVMePort {
		_, _, _, err := parseVolumeContext(vc, testGuard(t))
		return err
	}
	_, _, err := mustOption(o.key).contextValue(vc)
	return err
}

// readmeRow is the README's StorageClass-table row for a whole-number option.
func readmeRow(o volumeOption) string {
	def := "kernel's"
	if o.def != nil {
		def = strconv.Itoa(*o.def)
	}
	return fmt.Sprintf("| `%s` | %s | %s (%d to %d) |", o.key, def, o.meaning, o.min, o.max)
}

// TestREADMEListsEveryVolumeOption keeps the README's StorageClass table in step with
// volumeOptions: every option has its row, with the table's default, meaning and limits.
func TestREADMEListsEveryVolumeOption(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, line := range strings.Split(string(readme), "\n") {
		rows[line] = true
	}
	for _, o := range volumeOptions {
		if want := readmeRow(o); !rows[want] {
			t.Errorf("README.md lacks the row\n%s", want)
		}
	}
}
