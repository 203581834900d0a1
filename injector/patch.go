package injector

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// patchOp is one operation of a JSON patch (RFC 6902): value is raw JSON, none for a remove.
type patchOp struct {
	op    string
	path  string
	value []byte
}

// diffJSON returns the JSON patch that turns the document a into b, as gomodules.xyz/jsonpatch's
// CreatePatch (which controller-runtime's defaulters use) computes it: objects member by member,
// arrays index by index (removed from the end, added at the end, the rest compared in place), a
// value whose JSON type changes replaced whole, equal values (decoded: 1 and 1.0, "\u0041" and "A")
// left alone. Each value is b's own bytes rather than decoded and encoded again, and a subtree whose
// bytes are equal in a and b is not looked into: that is what makes it cheap.
func diffJSON(a, b []byte) ([]patchOp, error) {
	d := differs.Get().(*differ)
	defer func() {
		// Nothing of a or b stays referred to from the pool.
		clear(d.members[:cap(d.members)])
		clear(d.elements[:cap(d.elements)])
		d.ops = nil
		if cap(d.members) <= maxStack && cap(d.elements) <= maxStack {
			differs.Put(d)
		}
	}()
	if err := d.values(trimSpace(a), trimSpace(b), ""); err != nil {
		return nil, err
	}
	return d.ops, nil
}

// differs lends diffJSON the stacks of finished diffs; stacks grown past maxStack (a pod with
// hundreds of labels, say) are left to the garbage collector.
var differs = sync.Pool{New: func() any {
	// Room for the members of the objects along the deepest path an injection changes in a pod.
	return &differ{members: make([]member, 0, 128), elements: make([][]byte, 0, 16)}
}}

const maxStack = 1024

// differ collects the operations of one diff. The members and elements of the objects and arrays
// being compared are on stacks that each comparison pops when it returns, so that a diff allocates
// them a few times rather than per object.
type differ struct {
	ops      []patchOp
	members  []member
	elements [][]byte
}

func (d *differ) values(a, b []byte, path string) error {
	if bytes.Equal(a, b) {
		return nil
	}
	if len(a) == 0 || len(b) == 0 {
		return errBadJSON
	}
	ka, kb := jsonKind(a[0]), jsonKind(b[0])
	if ka != kb {
		d.ops = append(d.ops, patchOp{op: "replace", path: path, value: b})
		return nil
	}
	switch ka {
	case '{':
		return d.objects(a, b, path)
	case '[':
		return d.arrays(a, b, path)
	}
	same, err := sameScalar(ka, a, b)
	if err != nil {
		return err
	}
	if !same {
		d.ops = append(d.ops, patchOp{op: "replace", path: path, value: b})
	}
	return nil
}

func (d *differ) objects(a, b []byte, path string) error {
	mark := len(d.members)
	defer func() { d.members = d.members[:mark] }()
	stack, err := appendMembers(d.members, a)
	if err != nil {
		return err
	}
	split := len(stack)
	if stack, err = appendMembers(stack, b); err != nil {
		return err
	}
	d.members = stack
	// Slices of the stack stay valid while deeper comparisons push and pop above them, even if it
	// moves: they keep the old array.
	am, bm := stack[mark:split], stack[split:]
	// A key given twice counts once, with its last value, as when decoded into a map.
	inA, inB := keyIndex(am), keyIndex(bm)
	for i, m := range bm {
		if inB(m.key) != i {
			continue
		}
		j := inA(m.key)
		if j < 0 {
			d.ops = append(d.ops, patchOp{op: "add", path: childPath(path, m.key), value: m.value})
			continue
		}
		if bytes.Equal(am[j].value, m.value) {
			continue
		}
		if err := d.values(am[j].value, m.value, childPath(path, m.key)); err != nil {
			return err
		}
	}
	for i, m := range am {
		if inB(m.key) < 0 && inA(m.key) == i {
			d.ops = append(d.ops, patchOp{op: "remove", path: childPath(path, m.key)})
		}
	}
	return nil
}

// keyIndex returns a function that finds the last member of ms with a key, -1 for none. A small
// object is searched, a large one (a pod's labels, say) indexed in a map.
func keyIndex(ms []member) func(key []byte) int {
	if len(ms) <= 16 {
		return func(key []byte) int {
			for i := len(ms) - 1; i >= 0; i-- {
				if bytes.Equal(ms[i].key, key) {
					return i
				}
			}
			return -1
		}
	}
	index := make(map[string]int, len(ms))
	for i, m := range ms {
		index[string(m.key)] = i
	}
	return func(key []byte) int {
		if i, ok := index[string(key)]; ok {
			return i
		}
		return -1
	}
}

func (d *differ) arrays(a, b []byte, path string) error {
	mark := len(d.elements)
	defer func() { d.elements = d.elements[:mark] }()
	stack, err := appendElements(d.elements, a)
	if err != nil {
		return err
	}
	split := len(stack)
	if stack, err = appendElements(stack, b); err != nil {
		return err
	}
	d.elements = stack
	ae, be := stack[mark:split], stack[split:]
	n := min(len(ae), len(be))
	for i := len(ae) - 1; i >= n; i-- {
		d.ops = append(d.ops, patchOp{op: "remove", path: path + "/" + strconv.Itoa(i)})
	}
	for i := n; i < len(be); i++ {
		d.ops = append(d.ops, patchOp{op: "add", path: path + "/" + strconv.Itoa(i), value: be[i]})
	}
	for i := range n {
		if bytes.Equal(ae[i], be[i]) {
			continue
		}
		if err := d.values(ae[i], be[i], path+"/"+strconv.Itoa(i)); err != nil {
			return err
		}
	}
	return nil
}

// jsonKind is the JSON type of the value starting with c: '{', '[', '"', 'n' (null), 'b' (true or
// false) or '0' (a number).
func jsonKind(c byte) byte {
	switch c {
	case '{', '[', '"', 'n':
		return c
	case 't', 'f':
		return 'b'
	}
	return '0'
}

// sameScalar reports whether the strings, numbers or booleans a and b, of kind, have the same value.
func sameScalar(kind byte, a, b []byte) (bool, error) {
	switch kind {
	case '"':
		as, err := unquote(a)
		if err != nil {
			return false, err
		}
		bs, err := unquote(b)
		return bytes.Equal(as, bs), err
	case '0':
		af, err := strconv.ParseFloat(string(a), 64)
		if err != nil {
			return false, errBadJSON
		}
		bf, err := strconv.ParseFloat(string(b), 64)
		if err != nil {
			return false, errBadJSON
		}
		return af == bf, nil
	case 'b':
		return a[0] == b[0], nil
	}
	return true, nil // null
}

var errBadJSON = errors.New("invalid JSON document")

// member is one member of a JSON object: its key decoded, its value raw.
type member struct {
	key   []byte
	value []byte
}

// appendMembers appends the members of the JSON object d to out, in order.
func appendMembers(out []member, d []byte) ([]member, error) {
	i := skipSpace(d, 1)
	if i < len(d) && d[i] == '}' {
		return out, nil
	}
	for {
		if i >= len(d) || d[i] != '"' {
			return nil, errBadJSON
		}
		end, err := stringEnd(d, i)
		if err != nil {
			return nil, err
		}
		key, err := unquote(d[i:end])
		if err != nil {
			return nil, err
		}
		if i = skipSpace(d, end); i >= len(d) || d[i] != ':' {
			return nil, errBadJSON
		}
		i = skipSpace(d, i+1)
		if end, err = valueEnd(d, i); err != nil {
			return nil, err
		}
		out = append(out, member{key: key, value: d[i:end]})
		if i = skipSpace(d, end); i >= len(d) {
			return nil, errBadJSON
		}
		switch d[i] {
		case '}':
			return out, nil
		case ',':
			i = skipSpace(d, i+1)
		default:
			return nil, errBadJSON
		}
	}
}

// appendElements appends the elements of the JSON array d to out, in order.
func appendElements(out [][]byte, d []byte) ([][]byte, error) {
	i := skipSpace(d, 1)
	if i < len(d) && d[i] == ']' {
		return out, nil
	}
	for {
		end, err := valueEnd(d, i)
		if err != nil {
			return nil, err
		}
		out = append(out, d[i:end])
		if i = skipSpace(d, end); i >= len(d) {
			return nil, errBadJSON
		}
		switch d[i] {
		case ']':
			return out, nil
		case ',':
			i = skipSpace(d, i+1)
		default:
			return nil, errBadJSON
		}
	}
}

// valueEnd returns the index just past the JSON value that starts at d[i]. It finds the value's end
// and checks no more: the documents it reads have been decoded or encoded whole already.
func valueEnd(d []byte, i int) (int, error) {
	if i >= len(d) {
		return 0, errBadJSON
	}
	switch d[i] {
	case '"':
		return stringEnd(d, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(d); j++ {
			switch d[j] {
			case '"':
				end, err := stringEnd(d, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errBadJSON
	}
	j := i
	for j < len(d) && !isSpace(d[j]) && d[j] != ',' && d[j] != '}' && d[j] != ']' {
		j++
	}
	if j == i {
		return 0, errBadJSON
	}
	return j, nil
}

// stringEnd returns the index just past the JSON string whose opening quote is d[i].
func stringEnd(d []byte, i int) (int, error) {
	for j := i + 1; j < len(d); j++ {
		switch d[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errBadJSON
}

// unquote decodes the JSON string s, quotes included, as encoding/json does (invalid UTF-8 becomes
// U+FFFD). A string without escapes, the usual one, is its own bytes: no copy.
func unquote(s []byte) ([]byte, error) {
	inner := s[1 : len(s)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return inner, nil
	}
	var out string
	if err := json.Unmarshal(s, &out); err != nil {
		return nil, errBadJSON
	}
	return []byte(out), nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(d []byte, i int) int {
	for i < len(d) && isSpace(d[i]) {
		i++
	}
	return i
}

func trimSpace(d []byte) []byte {
	d = d[skipSpace(d, 0):]
	for len(d) > 0 && isSpace(d[len(d)-1]) {
		d = d[:len(d)-1]
	}
	return d
}

// pointerEscaper escapes a key as a JSON pointer's reference token (RFC 6901).
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// childPath is the JSON pointer to the member key of the value at path.
func childPath(path string, key []byte) string {
	if bytes.ContainsAny(key, "~/") {
		return path + "/" + pointerEscaper.Replace(string(key))
	}
	return path + "/" + string(key)
}

// appendString appends s as a JSON string, as encoding/json writes it: a string that needs no escape
// (printable ASCII but for the quote, backslash and what HTML escaping changes), the usual path, is
// copied as it is.
func appendString(out []byte, s string) ([]byte, error) {
	plain := true
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	if plain {
		out = append(out, '"')
		out = append(out, s...)
		return append(out, '"'), nil
	}
	quoted, err := json.Marshal(s)
	return append(out, quoted...), err
}

// encodePatch writes ops as a JSON patch.
func encodePatch(ops []patchOp) ([]byte, error) {
	size := 2
	for _, o := range ops {
		size += len(`{"op":"replace","path":"","value":},`) + len(o.path) + len(o.value)
	}
	out := make([]byte, 0, size)
	out = append(out, '[')
	for i, o := range ops {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, `{"op":"`...)
		out = append(out, o.op...)
		out = append(out, `","path":`...)
		var err error
		if out, err = appendString(out, o.path); err != nil {
			return nil, err
		}
		if o.op != "remove" {
			out = append(out, `,"value":`...)
			out = append(out, o.value...)
		}
		out = append(out, '}')
	}
	return append(out, ']'), nil
}
