package v1alpha1

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSidecarVersionList: the most common versions first, zero counts left out, and past the bound
// the rest summed as "other", a version spelled "other" among them, so that the list key stays unique.
func TestSidecarVersionList(t *testing.T) {
	if got := SidecarVersionList(map[string]int32{"v1": 0}); got != nil {
		t.Errorf("only zero counts: %v, want nil", got)
	}
	got := SidecarVersionList(map[string]int32{"v2": 1, "v1": 3, "unknown": 1, "v0": 0})
	want := []SidecarVersion{{"v1", 3}, {"unknown", 1}, {"v2", 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	counts := map[string]int32{OtherVersions: 100}
	want = nil
	for i := range MaxSidecarVersions + 2 {
		v := fmt.Sprintf("v%02d", i)
		counts[v] = int32(50 - i)
		if i < MaxSidecarVersions-1 {
			want = append(want, SidecarVersion{v, int32(50 - i)})
		}
	}
	rest := int32(100)
	for i := MaxSidecarVersions - 1; i < MaxSidecarVersions+2; i++ {
		rest += int32(50 - i)
	}
	want = append(want, SidecarVersion{OtherVersions, rest})
	if diff := cmp.Diff(want, SidecarVersionList(counts)); diff != "" {
		t.Errorf("over the bound (-want +got):\n%s", diff)
	}
}
