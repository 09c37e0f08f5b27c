package config

import (
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// keyLines maps key paths (service[1].restart, network[0], hostname) to the line they are on.
type keyLines map[string]int

// positions indexes where each table and key of a document is, so validation errors found
// after decoding can still point at a line. go-toml's decoder reports positions only for
// syntax and unknown-key errors; its parser exposes them for every node.
func positions(data []byte) keyLines {
	lines := keyLines{}
	arrayLen := map[string]int{} // resolved array-table path → entries seen so far
	var table string             // resolved path of the current table
	idx := newLineIndex(data)
	p := unstable.Parser{}
	p.Reset(data)
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			line := keyLine(idx, e)
			table = resolve(keyParts(e.Key()), arrayLen)
			if e.Kind == unstable.ArrayTable {
				idx := arrayLen[table]
				arrayLen[table] = idx + 1
				table = fmt.Sprintf("%s[%d]", table, idx)
			}
			lines.set(table, line)
		case unstable.KeyValue:
			line := keyLine(idx, e)
			k := strings.Join(keyParts(e.Key()), ".")
			if table != "" {
				k = table + "." + k
			}
			lines.set(k, line)
		}
	}
	return lines
}

func (l keyLines) set(k string, line int) {
	if _, ok := l[k]; !ok && line > 0 {
		l[k] = line
	}
}

// lineOf finds the line of key, or of the closest enclosing table that has one.
func (l keyLines) lineOf(key string) int {
	for key != "" {
		if n, ok := l[key]; ok {
			return n
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// keyLine is the line of an expression's key: table expressions carry no range of their own.
// (Not the parser's Shape: it counts lines from the start of the document on every call.)
func keyLine(idx lineIndex, e *unstable.Node) int {
	it := e.Key()
	if !it.Next() {
		return 0
	}
	return idx.line(int(it.Node().Raw.Offset))
}

func keyParts(it unstable.Iterator) []string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}

// resolve turns a header such as service.socket into service[2].socket when service is an
// array of tables, since a sub-table belongs to the array's latest entry.
func resolve(parts []string, arrayLen map[string]int) string {
	var path string
	for i, part := range parts {
		if i > 0 {
			path += "."
		}
		path += part
		if n, ok := arrayLen[path]; ok && i < len(parts)-1 {
			path = fmt.Sprintf("%s[%d]", path, n-1)
		}
	}
	return path
}
