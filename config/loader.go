package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/internal/version"
)

// envPrefix starts every environment variable podwall reads: PODWALL_<KEY>, the key upper-cased with
// its dashes as underscores (queue-count is PODWALL_QUEUE_COUNT).
const envPrefix = "PODWALL"

// fileKey is the key (flag --config, env PODWALL_CONFIG) naming the config file. Every binary has it,
// and its struct carries it as `mapstructure:"config"` so that a watcher knows what to watch. The
// injector sets it for the sidecar, whose contract names it.
const fileKey = string(sidecar.KeyConfig)

// maxFileSize bounds a config file: a ConfigMap cannot hold more than 1 MiB.
const maxFileSize = 1 << 20

// ErrHelp is returned (wrapped) by a Load function when the arguments asked for help (-h, --help). The
// usage has been printed on stderr by then, and the binary should exit with status 0.
var ErrHelp = pflag.ErrHelp

// ErrVersion is returned (wrapped) by a Load function when the arguments asked for the version
// (--version). It has been printed on stdout by then (package internal/version), and the binary should
// exit with status 0.
var ErrVersion = errors.New("version printed")

// versionFlag is the flag --version: every binary has it, and it is no setting (no file key, no
// environment variable): load declares it beside the settings' flags, not among them.
const versionFlag = "version"

// loader reads one binary's settings from four sources (three when layered: the file is then read and
// judged apart); a later one overrides an earlier one:
//
//  1. the defaults, which are the defaults of the binary's flags (one place, shown by --help);
//  2. the YAML file named by the config key (a missing file counts as empty, since the ConfigMap
//     that provides it is optional);
//  3. the environment, PODWALL_<KEY>;
//  4. the flags given in args.
//
// A key is spelled the same in the flag (--queue-count), the file (queue-count:) and, in the env form
// above, the environment. Lists are YAML lists in the file and comma-separated elsewhere.
type loader struct {
	// name is the binary's name, used in the usage text.
	name string
	// defaultFile is the default of the config key; empty means no file unless one is named.
	defaultFile string
	// flags declares every key of the binary but the config key, each with its default and help.
	flags func(*pflag.FlagSet)
	// layered leaves the file out of load: it is a layer of its own that the caller reads and judges
	// (the sidecar's workload file, which may only tighten what flags and environment set).
	layered bool
}

// load merges the sources into dst, a pointer to the binary's struct, refusing unknown keys and values
// its fields cannot hold exactly. dst is not validated here: that is the caller's job.
func (l loader) load(args []string, dst any) error {
	settings := pflag.NewFlagSet(l.name, pflag.ContinueOnError)
	settings.String(fileKey, l.defaultFile, "configuration file (YAML); a missing file means defaults")
	l.flags(settings)
	flags := pflag.NewFlagSet(l.name, pflag.ContinueOnError)
	flags.SetOutput(io.Discard)
	flags.AddFlagSet(settings)
	printVersion := flags.Bool(versionFlag, false, "print the version and exit")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "Usage of %s:\n%s", l.name, flags.FlagUsages())
		}
		return fmt.Errorf("parse flags: %w", err)
	}
	if *printVersion {
		fmt.Println(version.String(l.name))
		return fmt.Errorf("--version: %w", ErrVersion)
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("parse flags: unexpected argument %q", flags.Arg(0))
	}

	v := viper.New()
	v.SetEnvPrefix(envPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	if err := v.BindPFlags(settings); err != nil {
		return fmt.Errorf("bind flags: %w", err)
	}
	path := v.GetString(fileKey)
	if !l.layered {
		if err := readFile(v, path); err != nil {
			return err
		}
	}
	if err := checkKeys(v, settings); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if err := v.UnmarshalExact(dst, strictDecoding); err != nil {
		return fmt.Errorf("decode settings: %w", keyedErrors(err))
	}
	return nil
}

// readFile merges the YAML file at path into v. A missing file (or an empty path) leaves v alone.
func readFile(v *viper.Viper, path string) error {
	data, err := readConfigFile(path)
	if data == nil || err != nil {
		return err
	}
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if v.InConfig(fileKey) {
		return fmt.Errorf("config file %s: key %q names the file itself and cannot be set in it", path, fileKey)
	}
	return nil
}

// readConfigFile returns the content of the config file at path, nil for a missing file or an empty
// path, and an error for a file that cannot be read or is over maxFileSize.
func readConfigFile(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	data, err := readAtMost(path, maxFileSize+1)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("config file %s: larger than the %d-byte limit", path, maxFileSize)
	}
	return data, nil
}

// readAtMost reads up to limit bytes of a file, so that a config path naming a device or a runaway
// file cannot exhaust memory.
func readAtMost(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// checkKeys refuses keys in the file that no flag declares, naming all of them. Only the file can
// bring such keys: flags and environment variables are looked up by the declared keys alone.
func checkKeys(v *viper.Viper, flags *pflag.FlagSet) error {
	var unknown []string
	for _, key := range v.AllKeys() {
		if flags.Lookup(key) == nil {
			unknown = append(unknown, strconv.Quote(key))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return fmt.Errorf("unknown key %s", strings.Join(unknown, ", "))
}

// strictDecoding turns off viper's weak typing, under which `queue-count: true` would mean 1, and
// converts only what is unambiguous: strings (from the environment or flags) to numbers, durations,
// lists and text types such as netip.Addr; numbers only into types that hold them exactly.
func strictDecoding(c *mapstructure.DecoderConfig) {
	c.WeaklyTypedInput = false
	c.DecodeHook = mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		splitList,
		mapstructure.StringToBasicTypeHookFunc(),
		mapstructure.TextUnmarshallerHookFunc(),
		exactNumber,
	)
}

// keyedErrors rewrites mapstructure's report ("decoding failed due to the following error(s):" and a
// blank line, then "'key' problem" lines) as "key: problem" lines like the validation errors.
func keyedErrors(err error) error {
	var joined interface{ Unwrap() []error }
	if !errors.As(errors.Unwrap(err), &joined) {
		return err
	}
	var out []error
	for _, e := range joined.Unwrap() {
		var de *mapstructure.DecodeError
		if errors.As(e, &de) {
			e = fmt.Errorf("%s: %w", de.Name(), de.Unwrap())
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// splitList reads a comma-separated string, as the environment and flags give lists, into a list.
func splitList(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to.Kind() != reflect.Slice {
		return data, nil
	}
	items := []string{}
	for item := range strings.SplitSeq(data.(string), ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items, nil
}

// exactNumber refuses a number that the target integer type cannot hold exactly: mapstructure would
// wrap 70000 into a uint16 port and truncate 1.5 into an int without a word.
func exactNumber(_, to reflect.Type, data any) (any, error) {
	target := reflect.New(to).Elem()
	v := reflect.ValueOf(data)
	if !v.IsValid() || !(target.CanInt() || target.CanUint()) {
		return data, nil
	}
	fits := true
	switch {
	case v.CanInt():
		fits = fitsInt(target, v.Int())
	case v.CanUint() && target.CanUint():
		fits = !target.OverflowUint(v.Uint())
	case v.CanUint():
		fits = v.Uint() <= math.MaxInt64 && !target.OverflowInt(int64(v.Uint()))
	case v.CanFloat():
		f := v.Float()
		fits = f == math.Trunc(f) && math.Abs(f) < math.MaxInt64 && fitsInt(target, int64(f))
	}
	if !fits {
		return nil, fmt.Errorf("%v does not fit in %s", data, to)
	}
	return data, nil
}

// fitsInt reports whether the integer-kinded target can hold n.
func fitsInt(target reflect.Value, n int64) bool {
	if target.CanInt() {
		return !target.OverflowInt(n)
	}
	return n >= 0 && !target.OverflowUint(uint64(n))
}

// settingsByKey maps each key of a binary's struct (its `mapstructure` tags, through squashed groups)
// to the field's value. It lets a watcher name the keys that changed and tests write a struct back out
// as a file.
func settingsByKey(s any) map[string]any {
	out := map[string]any{}
	collectSettings(reflect.ValueOf(s), out)
	return out
}

func collectSettings(v reflect.Value, out map[string]any) {
	for i := range v.NumField() {
		name, opts, _ := strings.Cut(v.Type().Field(i).Tag.Get("mapstructure"), ",")
		switch {
		case opts == "squash":
			collectSettings(v.Field(i), out)
		case name != "" && name != "-":
			out[name] = v.Field(i).Interface()
		}
	}
}
