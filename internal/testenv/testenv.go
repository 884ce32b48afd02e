// Package testenv decides what a test does when the machine lacks something it needs
// (root, loop devices, a tool): in CI it fails, because there every prerequisite is
// installed and a skipped test would hide a broken runner; elsewhere it skips, so a
// developer's machine without root still runs the rest. Only tests import it.
package testenv

import (
	"os"
	"strings"
	"testing"
)

// CI reports whether this runs in CI (CI=true), where a missing prerequisite must fail.
func CI() bool { return os.Getenv("CI") == "true" }

// Require ends the test when err, the reason a prerequisite is missing, is not nil; see
// Missing.
func Require(t testing.TB, err error, alsoRequiredBy ...string) {
	t.Helper()
	if err != nil {
		Missing(t, err.Error(), alsoRequiredBy...)
	}
}

// Missing ends the test for want of what: it fails when CI=true, or when one of the
// environment variables named in alsoRequiredBy is 1 (a runner of its own that has every
// prerequisite, like the test VM), and skips otherwise. Both say what is missing.
func Missing(t testing.TB, what string, alsoRequiredBy ...string) {
	t.Helper()
	// t.Fatal and t.Skip end the test; the returns are for a testing.TB that does not.
	settings := []string{"CI=true"}
	if CI() {
		t.Fatal(what + " (CI=true requires it)")
		return
	}
	for _, name := range alsoRequiredBy {
		if os.Getenv(name) == "1" {
			t.Fatal(what + " (" + name + "=1 requires it)")
			return
		}
		settings = append(settings, name+"=1")
	}
	t.Skip(what + " (skipped; " + strings.Join(settings, " or ") + " makes this fail)")
}
