package config

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// MaxErrors is how many problems of one kind (unknown keys, invalid values) an error lists;
// the rest are counted ("… and 15980 more"). A file of 16,000 misspelt keys is answered with
// the first few and a count, not with a 600 KB error on the serial console.
const MaxErrors = 20

// unknownKeys finds the keys of data that Config does not have, in one pass over the
// document. go-toml's strict decoder finds them too, but locates each one by rescanning the
// document from its start and builds a context window of the whole file split into lines per
// error: 16,000 unknown keys took 46 s. Decoding runs only once this pass found none, so the
// decoder's own strict mode never has anything to report. A syntax error stops this pass
// silently: the decoder reports it with its position.
func unknownKeys(name string, data []byte) error {
	lines := newLineIndex(data)
	var errs []error
	more := 0
	report := func(node *unstable.Node, key string) {
		if len(errs) < MaxErrors {
			errs = append(errs, &Error{File: name, Line: lines.line(int(node.Raw.Offset)), Key: key, Msg: "unknown key"})
		} else {
			more++
		}
	}
	root := reflect.TypeOf(Config{})
	table, tablePath := root, ""
	p := unstable.Parser{}
	p.Reset(data)
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			t, path, bad := walkKey(root, e.Key(), "")
			table, tablePath = t, path
			if bad != nil {
				report(bad, path)
				table = nil // its keys are unknown too, but the table is the one error
			}
		case unstable.KeyValue:
			if table == nil {
				continue
			}
			checkKeyValue(table, tablePath, e, report)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	if more > 0 {
		errs = append(errs, fmt.Errorf("%s: and %d more unknown keys", name, more))
	}
	return errors.Join(errs...)
}

// checkKeyValue checks the key of kv under a table of type t, and the keys of an inline table
// (or an array of them) it holds.
func checkKeyValue(t reflect.Type, path string, kv *unstable.Node, report func(*unstable.Node, string)) {
	ft, full, bad := walkKey(t, kv.Key(), path)
	if bad != nil {
		report(bad, full)
		return
	}
	if ft == nil {
		return
	}
	v := kv.Value()
	switch v.Kind {
	case unstable.InlineTable:
		for it := v.Children(); it.Next(); {
			checkKeyValue(ft, full, it.Node(), report)
		}
	case unstable.Array:
		for it := v.Children(); it.Next(); {
			if n := it.Node(); n.Kind == unstable.InlineTable {
				for c := n.Children(); c.Next(); {
					checkKeyValue(ft, full, c.Node(), report)
				}
			}
		}
	}
}

// walkKey follows the parts of a (dotted) key from the struct type t. It returns the struct
// type the key leads to (nil when it leads to a plain value, whose type the decoder checks),
// the dotted path walked, and the key part that t does not have, if any.
func walkKey(t reflect.Type, it unstable.Iterator, path string) (reflect.Type, string, *unstable.Node) {
	for it.Next() {
		part := string(it.Node().Data)
		if path != "" {
			path += "."
		}
		path += part
		if t == nil {
			continue // under a plain value: a type error, the decoder's to report
		}
		f, ok := fieldByTag(t, part)
		if !ok {
			return nil, path, it.Node()
		}
		t = tableType(f)
	}
	return t, path, nil
}

var textUnmarshaler = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()

// tableType is the struct a field holds keys of (through slices and pointers), or nil.
func tableType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(textUnmarshaler) {
		return nil
	}
	return t
}

// fieldByTag finds the field of struct t whose toml tag is name as the decoder does: go-toml
// matches names case-insensitively when there is no exact match.
func fieldByTag(t reflect.Type, name string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == "" {
			tag = f.Name
		}
		if strings.EqualFold(tag, name) {
			return f.Type, true
		}
	}
	return nil, false
}

// lineIndex answers "which line is this byte offset on" in O(log n): the parser's own
// Shape() counts newlines from the start of the document each time.
type lineIndex []int // offsets of each '\n'

func newLineIndex(data []byte) lineIndex {
	var l lineIndex
	for i, b := range data {
		if b == '\n' {
			l = append(l, i)
		}
	}
	return l
}

func (l lineIndex) line(offset int) int {
	return sort.SearchInts(l, offset) + 1
}
