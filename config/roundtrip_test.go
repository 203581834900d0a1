package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// TestKeysAreFlags guards the one-registry rule of every binary: each field of its struct is a flag
// (which gives it its default and its environment variable) and each flag is a field.
func TestKeysAreFlags(t *testing.T) {
	for _, tc := range []struct {
		loader loader
		config any
	}{{sidecarLoader, Sidecar{}}, {injectorLoader, Injector{}}, {policyGenServerLoader, PolicyGenServer{}}} {
		t.Run(tc.loader.name, func(t *testing.T) {
			var fields []string
			for key := range settingsByKey(tc.config) {
				fields = append(fields, key)
			}
			flags := pflag.NewFlagSet("test", pflag.ContinueOnError)
			flags.String(fileKey, "", "")
			tc.loader.flags(flags)
			var names []string
			flags.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
			slices.Sort(fields)
			slices.Sort(names)
			if diff := cmp.Diff(names, fields); diff != "" {
				t.Errorf("flags (-) and struct keys (+) differ:\n%s", diff)
			}
		})
	}
}

// fuzzFile feeds arbitrary config files to load. It must never panic; a file it accepts must pass
// check, and writing the accepted config back out as a file must load the same config, so that no
// value is silently changed on the way in. file returns a pointer to the config's File field.
func fuzzFile[T any](f *testing.F, seeds []string, load func([]string) (T, error), check func(T) error,
	file func(*T) *string, opts ...cmp.Option) {
	for _, seed := range seeds {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	path, again := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "again.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := load([]string{"--config", path})
		if err != nil {
			return
		}
		if err := check(got); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
		settings := settingsByKey(got)
		delete(settings, fileKey)
		out, err := yaml.Marshal(settings)
		if err != nil {
			t.Fatalf("write accepted config: %v", err)
		}
		if err := os.WriteFile(again, out, 0o600); err != nil {
			t.Fatal(err)
		}
		reloaded, err := load([]string{"--config", again})
		if err != nil {
			t.Fatalf("config written back does not load: %v\n%s", err, out)
		}
		*file(&reloaded) = path
		if diff := cmp.Diff(got, reloaded, opts...); diff != "" {
			t.Fatalf("config changed on the way back (-first +second):\n%s\nfile:\n%s", diff, out)
		}
	})
}
