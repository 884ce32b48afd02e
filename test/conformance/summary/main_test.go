package main

import (
	"bytes"
	"strings"
	"testing"
)

const pattern = "[Testpattern: Dynamic PV (default fs)] "

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name   string
		report string
		ok     bool
		want   []string
		absent []string // specs the run's focus did not select are not counted
	}{
		{
			name: "passes, skips and a failure per suite",
			report: `[{"RunTime": 90000000000, "SpecReports": [
			  {"LeafNodeType": "SynchronizedBeforeSuite", "State": "passed"},
			  {"LeafNodeType": "It", "ContainerHierarchyTexts": ["External Storage [Driver: d]", "` + pattern + `provisioning"], "LeafNodeText": "should provision storage", "State": "passed"},
			  {"LeafNodeType": "It", "ContainerHierarchyTexts": ["External Storage [Driver: d]", "` + pattern + `provisioning"], "LeafNodeText": "should mount", "State": "skipped", "Failure": {"Message": "[SKIPPED] Driver d doesn't support X -- skipping\nmore"}},
			  {"LeafNodeType": "It", "ContainerHierarchyTexts": ["External Storage [Driver: d]", "` + pattern + `volumes"], "LeafNodeText": "should store data", "State": "failed", "RunTime": 3000000000, "Failure": {"Message": "timed out\nstack"}},
			  {"LeafNodeType": "It", "ContainerHierarchyTexts": ["External Storage [Driver: d]", "` + pattern + `volumes"], "LeafNodeText": "should allow exec", "State": "skipped", "Failure": {"Message": "[SKIPPED] Driver d doesn't support X -- skipping"}},
			  {"LeafNodeType": "It", "ContainerHierarchyTexts": ["External Storage [Driver: d]", "` + pattern + `volumes"], "LeafNodeText": "not focused", "State": "skipped"},
			  {"LeafNodeType": "It", "ContainerHierarchyTexts": ["` + pattern + `topology"], "LeafNodeText": "not focused either", "State": "skipped"}
			]}]`,
			ok: false,
			want: []string{
				"provisioning                       1       0       1",
				"volumes                            0       1       1",
				"total                              1       1       2   (wall 1m30s)",
				"FAILED  External Storage [Driver: d] " + pattern + "volumes should store data [failed, 3s]: timed out",
				"skipped    2× Driver d doesn't support X -- skipping",
			},
			absent: []string{"topology"},
		},
		{
			name:   "all passed",
			report: `[{"SpecReports": [{"LeafNodeType": "It", "ContainerHierarchyTexts": ["` + pattern + `volumeMode"], "State": "passed"}]}]`,
			ok:     true,
			want:   []string{"volumeMode                         1       0       0"},
		},
		{
			name:   "nothing ran",
			report: `[{"SpecReports": [{"LeafNodeType": "It", "ContainerHierarchyTexts": ["` + pattern + `volumeMode"], "State": "skipped", "Failure": {"Message": "no"}}]}]`,
			ok:     false,
		},
		{
			name:   "a failed setup node fails the run",
			report: `[{"SpecReports": [{"LeafNodeType": "SynchronizedBeforeSuite", "State": "failed", "Failure": {"Message": "no nodes"}}, {"LeafNodeType": "It", "ContainerHierarchyTexts": ["` + pattern + `volumes"], "State": "passed"}]}]`,
			ok:     false,
			want:   []string{"FAILED  SynchronizedBeforeSuite (failed): no nodes"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			ok, err := summarize(strings.NewReader(tc.report), &out)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.ok {
				t.Errorf("ok = %v, want %v\n%s", ok, tc.ok, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(out.String(), a) {
					t.Errorf("output has %q:\n%s", a, out.String())
				}
			}
		})
	}
	if _, err := summarize(strings.NewReader("not json"), &bytes.Buffer{}); err == nil {
		t.Error("a broken report was read")
	}
}
