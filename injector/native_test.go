package injector

import "testing"

func TestNativeSupported(t *testing.T) {
	tests := []struct {
		version string
		want    bool
		err     bool
	}{
		{"v1.37.2", true, false},
		{"v1.29.0", true, false},
		{"v1.29.0-rc.1", true, false},
		{"v1.30.4-eks-a737599", true, false},
		{"v1.28.15", false, false},
		{"v1.27.3+k3s1", false, false},
		{"", false, true},
		{"latest", false, true},
	}
	for _, tt := range tests {
		got, err := nativeSupported(tt.version)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("nativeSupported(%q) = %v, %v; want %v, error %v", tt.version, got, err, tt.want, tt.err)
		}
	}
}
