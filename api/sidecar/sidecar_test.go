package sidecar

import "testing"

func TestKeyNames(t *testing.T) {
	for _, tt := range []struct {
		key       Key
		env, flag string
	}{
		{KeyPodServiceAccount, "PODWALL_POD_SERVICE_ACCOUNT", "--pod-service-account"},
		{KeyConfig, "PODWALL_CONFIG", "--config"},
	} {
		if got := tt.key.Env(); got != tt.env {
			t.Errorf("%s: Env() = %q, want %q", tt.key, got, tt.env)
		}
		if got := tt.key.Flag(); got != tt.flag {
			t.Errorf("%s: Flag() = %q, want %q", tt.key, got, tt.flag)
		}
	}
}
