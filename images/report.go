package images

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// Report says what an image holds and who needed it, with sizes before compression: the
// size of an appliance is what a kexec's purgatory hashes and the new kernel unpacks.
type Report struct {
	Groups []*Group
	owner  map[string]string // image path → the group that packed it first
}

// Group is what one part of the appliance brought: "baton", "service NAME", "modules".
type Group struct {
	Name  string
	Items []Item
}

// Item is one packed path, or one directory tree or module set packed as a whole.
type Item struct {
	Path  string // in the image
	From  string // on the build host, when different from Path
	Kind  string // init, config, binary, interpreter, library, link, files, modules, …
	Size  int64  // bytes of file data
	Files int    // for a tree: how many regular files it holds
	With  string // already packed for this group (counted there)
}

func newReport() *Report { return &Report{owner: map[string]string{}} }

func (r *Report) group(name string) *Group {
	for _, g := range r.Groups {
		if g.Name == name {
			return g
		}
	}
	g := &Group{Name: name}
	r.Groups = append(r.Groups, g)
	return g
}

// add records an item for group g unless that group already has that path.
func (r *Report) add(g *Group, it Item) {
	for _, have := range g.Items {
		if have.Path == it.Path {
			return
		}
	}
	if first, ok := r.owner[it.Path]; ok && first != g.Name {
		it.With, it.Size = first, 0
	} else {
		r.owner[it.Path] = g.Name
	}
	g.Items = append(g.Items, it)
}

// Size is the file data the group brought first.
func (g *Group) Size() int64 {
	var n int64
	for _, it := range g.Items {
		n += it.Size
	}
	return n
}

// Total is the file data of every group.
func (r *Report) Total() int64 {
	var n int64
	for _, g := range r.Groups {
		n += g.Size()
	}
	return n
}

// Print writes the report as an indented table.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, g := range r.Groups {
		fmt.Fprintf(tw, "  %s\t%s\t\n", g.Name, human(g.Size()))
		for _, it := range g.Items {
			size, what := human(it.Size), it.Kind
			switch {
			case it.Files == 1:
				what += " (1 file)"
			case it.Files > 1:
				what += fmt.Sprintf(" (%d files)", it.Files)
			}
			switch {
			case it.Kind == "link":
				what = "→ " + it.From
			case it.From != "" && it.From != it.Path:
				what += " from " + it.From
			}
			if it.With != "" {
				size, what = "", what+", with "+it.With
			}
			if it.Kind == "link" {
				size = ""
			}
			fmt.Fprintf(tw, "    %s\t%s\t%s\n", it.Path, size, what)
		}
	}
	tw.Flush()
}

func human(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
