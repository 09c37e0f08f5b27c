package services

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/baton-init/baton/system"
)

// The persistent journal ([log] dir): every line a service writes also goes, as one JSON
// object a line, to DIR/boots/SEQ-BOOTID/NAME.log. A boot is the kernel's boot id, so a
// restart of baton (subreaper mode, a re-exec) goes on in the same directory and initctl logs
// --boot -1 is the previous kernel boot's, as journalctl's. Each service's file is rotated at
// half of max_size (NAME.log.1, one kept); the oldest boots beyond [log] boots are removed.
//
// Writing never blocks a service: the reader of its pipe hands the line to a bounded queue,
// and one goroutine writes; when the queue is full (a slow disk, or DIR not mounted yet)
// lines are dropped and counted, and the count is written into each file that missed some.

// journalQueue bounds the lines waiting to be written.
const journalQueue = 4096

// Journal writes services' lines under a directory.
type Journal struct {
	root    string
	maxSize int64
	boots   int
	log     *slog.Logger
	q       chan journalEntry
	dropped atomic.Int64
	stop    chan struct{}
	done    chan struct{}
}

type journalEntry struct {
	service string
	line    LogLine
}

// JournalLine is a line as the journal keeps it.
type JournalLine struct {
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"`
	Text   string    `json:"text"`
}

// OpenJournal starts the journal's writer; lines are written once root exists.
func OpenJournal(root string, maxSize int64, boots int, log *slog.Logger) *Journal {
	j := &Journal{root: root, maxSize: maxSize, boots: boots, log: log, q: make(chan journalEntry, journalQueue),
		stop: make(chan struct{}), done: make(chan struct{})}
	go j.write()
	return j
}

// Dir is the journal's root directory.
func (j *Journal) Dir() string { return j.root }

// add queues a line; never blocks.
func (j *Journal) add(service string, l LogLine) {
	select {
	case j.q <- journalEntry{service, l}:
	default:
		j.dropped.Add(1)
	}
}

// Close writes what is queued and stops the writer.
func (j *Journal) Close() {
	select {
	case <-j.stop:
	default:
		close(j.stop)
	}
	<-j.done
}

// journalFile is one service's open file in the writer.
type journalFile struct {
	f    *os.File
	w    *bufio.Writer
	size int64
}

func (j *Journal) write() {
	defer close(j.done)
	defer system.Recover(j.log, "journal writer")
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var dir string
	files := map[string]*journalFile{}
	defer func() {
		for _, f := range files {
			f.w.Flush()
			f.f.Close()
		}
	}()
	flush := func() {
		for _, f := range files {
			f.w.Flush()
		}
	}
	stopping := false
	for dir == "" && !stopping { // until root exists: the queue fills meanwhile, then drops
		select {
		case <-tick.C:
		case <-j.stop:
			stopping = true // one last look
		}
		dir, _ = j.bootDir()
	}
	if dir == "" {
		return
	}
	w := &journalWriter{j: j, dir: dir, files: files}
	for !stopping {
		select {
		case e := <-j.q:
			w.entry(e)
		case <-tick.C:
			flush()
		case <-j.stop:
			stopping = true
		}
	}
	for {
		select {
		case e := <-j.q:
			w.entry(e)
		default:
			return
		}
	}
}

// journalWriter is the writer goroutine's state once the boot's directory is there.
type journalWriter struct {
	j     *Journal
	dir   string
	files map[string]*journalFile
	lost  int64 // lines dropped, not said yet
}

func (w *journalWriter) entry(e journalEntry) {
	j := w.j
	w.lost += j.dropped.Swap(0)
	f := j.file(w.dir, e.service, w.files)
	if f == nil {
		return
	}
	if w.lost > 0 {
		j.put(f, JournalLine{Time: time.Now(), Stream: "baton", Text: fmt.Sprintf("(%d lines not written to the journal: its queue was full)", w.lost)})
		w.lost = 0
	}
	j.put(f, JournalLine{Time: e.line.Time, Stream: e.line.Stream, Text: e.line.Text})
	if f.size >= j.maxSize/2 {
		j.rotate(w.dir, e.service, w.files)
	}
}

func (j *Journal) put(f *journalFile, l JournalLine) {
	b, _ := json.Marshal(l)
	b = append(b, '\n')
	n, err := f.w.Write(b)
	f.size += int64(n)
	if err != nil {
		j.log.Warn("journal write", "file", f.f.Name(), "err", err)
	}
}

func (j *Journal) file(dir, service string, files map[string]*journalFile) *journalFile {
	if f := files[service]; f != nil {
		return f
	}
	path := filepath.Join(dir, service+".log")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		j.log.Warn("journal: open", "file", path, "err", err)
		return nil
	}
	st, _ := f.Stat()
	jf := &journalFile{f: f, w: bufio.NewWriterSize(f, 16<<10)}
	if st != nil {
		jf.size = st.Size()
	}
	files[service] = jf
	return jf
}

// rotate moves NAME.log to NAME.log.1 (replacing the older one): at most max_size in all.
func (j *Journal) rotate(dir, service string, files map[string]*journalFile) {
	f := files[service]
	f.w.Flush()
	f.f.Close()
	delete(files, service)
	path := filepath.Join(dir, service+".log")
	if err := os.Rename(path, path+".1"); err != nil {
		j.log.Warn("journal: rotate", "file", path, "err", err)
	}
}

// bootDir finds or makes this boot's directory and removes the oldest beyond boots.
func (j *Journal) bootDir() (string, error) {
	if _, err := os.Stat(j.root); err != nil {
		return "", err
	}
	id := bootID()
	list, err := journalBoots(j.root)
	if err != nil {
		return "", err
	}
	seq := 1
	if n := len(list); n > 0 {
		if list[n-1].id == id {
			return list[n-1].dir, nil
		}
		seq = list[n-1].seq + 1
	}
	dir := filepath.Join(j.root, "boots", fmt.Sprintf("%06d-%s", seq, id))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	for len(list) >= j.boots && len(list) > 0 {
		if err := os.RemoveAll(list[0].dir); err != nil {
			j.log.Warn("journal: remove an old boot", "dir", list[0].dir, "err", err)
		}
		list = list[1:]
	}
	return dir, nil
}

type journalBoot struct {
	seq int
	id  string
	dir string
}

// journalBoots lists the boots' directories, oldest first.
func journalBoots(root string) ([]journalBoot, error) {
	ents, err := os.ReadDir(filepath.Join(root, "boots"))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	var out []journalBoot
	for _, e := range ents {
		seq, id, ok := strings.Cut(e.Name(), "-")
		n, err := strconv.Atoi(seq)
		if !ok || err != nil || !e.IsDir() {
			continue
		}
		out = append(out, journalBoot{n, id, filepath.Join(root, "boots", e.Name())})
	}
	slices.SortFunc(out, func(a, b journalBoot) int { return a.seq - b.seq })
	return out, nil
}

// bootID is the kernel's id of this boot.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown"
	}
	return strings.ReplaceAll(strings.TrimSpace(string(b)), "-", "")
}

// ReadJournal returns the lines of a boot (0: this one, -1: the one before, …) of the
// services named (none: all), by service, each oldest first.
func ReadJournal(root string, boot int, names []string) (map[string][]JournalLine, error) {
	list, err := journalBoots(root)
	if err != nil {
		return nil, err
	}
	if len(list) > 0 && list[len(list)-1].id != bootID() {
		list = append(list, journalBoot{}) // this boot wrote nothing yet
	}
	i := len(list) - 1 + boot
	if boot > 0 || i < 0 || list[i].dir == "" {
		return nil, fmt.Errorf("no journal for boot %d in %s (%d boots kept)", boot, root, len(list))
	}
	dir := list[i].dir
	if len(names) == 0 {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if n, ok := strings.CutSuffix(e.Name(), ".log"); ok {
				names = append(names, n)
			}
		}
	}
	out := map[string][]JournalLine{}
	for _, name := range names {
		for _, f := range []string{name + ".log.1", name + ".log"} {
			lines, err := readJournalFile(filepath.Join(dir, f))
			if err != nil {
				return nil, err
			}
			out[name] = append(out[name], lines...)
		}
	}
	return out, nil
}

func readJournalFile(path string) ([]JournalLine, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []JournalLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l JournalLine
		if json.Unmarshal(sc.Bytes(), &l) == nil { // a line cut by a power loss is skipped
			out = append(out, l)
		}
	}
	return out, sc.Err()
}
