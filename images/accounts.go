package images

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/baton-init/baton/config"
)

// The image's account databases: root and nobody always, plus every user and group the
// config names (a service's user and group, a socket's owner and group). A name the build
// host knows keeps the host's ids, home and shell, so files made on the host and in the
// image agree; any other is given the lowest free id from 1000 up, in name order, which is
// the same from build to build.
type account struct {
	name       string
	id, group  int // group: the user's primary gid
	home, rest string
}

type accounts struct {
	users, groups map[string]account
	usedUID       map[int]bool
	usedGID       map[int]bool
}

const firstAllocatedID = 1000

func newAccounts() *accounts {
	a := &accounts{users: map[string]account{}, groups: map[string]account{}, usedUID: map[int]bool{}, usedGID: map[int]bool{}}
	a.addUser(account{name: "root", id: 0, group: 0, home: "/root", rest: "/bin/sh"})
	a.addUser(account{name: "nobody", id: 65534, group: 65534, home: "/nonexistent", rest: "/usr/sbin/nologin"})
	a.addGroup(account{name: "root", id: 0})
	a.addGroup(account{name: "nogroup", id: 65534})
	return a
}

func (a *accounts) addUser(u account)  { a.users[u.name] = u; a.usedUID[u.id] = true }
func (a *accounts) addGroup(g account) { a.groups[g.name] = g; a.usedGID[g.id] = true }

// fill adds the config's users and groups, looked up in the host's passwd and group files.
func (a *accounts) fill(cfg *config.Config, hostPasswd, hostGroup string) error {
	hostUsers, err := readDB(hostPasswd)
	if err != nil {
		return err
	}
	hostGroups, err := readDB(hostGroup)
	if err != nil {
		return err
	}
	users, groups := map[string]bool{}, map[string]bool{}
	named := func(m map[string]bool, n string) {
		if _, err := strconv.Atoi(n); n != "" && err != nil {
			m[n] = true
		}
	}
	for _, s := range cfg.Service {
		named(users, s.User)
		named(groups, s.Group)
		for _, so := range s.Socket {
			named(users, so.Owner)
			named(groups, so.Group)
		}
	}
	var newUsers, newGroups []string
	for _, n := range sorted(users) {
		if _, ok := a.users[n]; ok {
			continue
		}
		f, ok := hostUsers[n] // name:x:uid:gid:gecos:home:shell
		if !ok || len(f) < 7 {
			newUsers = append(newUsers, n)
			continue
		}
		uid, _ := strconv.Atoi(f[2])
		gid, _ := strconv.Atoi(f[3])
		a.addUser(account{name: n, id: uid, group: gid, home: f[5], rest: f[6]})
		if g := groupByID(hostGroups, gid); g != "" {
			groups[g] = true
		}
	}
	for _, n := range sorted(groups) {
		if _, ok := a.groups[n]; ok {
			continue
		}
		if f, ok := hostGroups[n]; ok && len(f) >= 3 {
			id, _ := strconv.Atoi(f[2])
			a.addGroup(account{name: n, id: id})
			continue
		}
		newGroups = append(newGroups, n)
	}
	for _, n := range newUsers {
		uid := a.free(a.usedUID)
		gid := uid
		if g, ok := a.groups[n]; ok {
			gid = g.id
		} else if g, ok := hostGroups[n]; ok && len(g) >= 3 {
			gid, _ = strconv.Atoi(g[2])
			a.addGroup(account{name: n, id: gid})
		} else {
			if a.usedGID[gid] {
				gid = a.free(a.usedGID)
			}
			a.addGroup(account{name: n, id: gid})
		}
		a.addUser(account{name: n, id: uid, group: gid, home: "/nonexistent", rest: "/usr/sbin/nologin"})
	}
	for _, n := range newGroups {
		if _, ok := a.groups[n]; !ok {
			a.addGroup(account{name: n, id: a.free(a.usedGID)})
		}
	}
	return nil
}

func (a *accounts) free(used map[int]bool) int {
	id := firstAllocatedID
	for used[id] {
		id++
	}
	return id
}

// passwd and group render the databases, ordered by id.
func (a *accounts) passwd() []byte {
	var b strings.Builder
	for _, u := range byID(a.users) {
		fmt.Fprintf(&b, "%s:x:%d:%d:%s:%s:%s\n", u.name, u.id, u.group, u.name, u.home, u.rest)
	}
	return []byte(b.String())
}

func (a *accounts) group() []byte {
	var b strings.Builder
	for _, g := range byID(a.groups) {
		fmt.Fprintf(&b, "%s:x:%d:\n", g.name, g.id)
	}
	return []byte(b.String())
}

func byID(m map[string]account) []account {
	out := make([]account, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].id != out[j].id {
			return out[i].id < out[j].id
		}
		return out[i].name < out[j].name
	})
	return out
}

// readDB reads a colon-separated database (passwd, group) by name. A missing file is empty:
// a build host need not have the names.
func readDB(file string) (map[string][]string, error) {
	m := map[string][]string{}
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 3 && fields[0] != "" && !strings.HasPrefix(fields[0], "#") {
			if _, dup := m[fields[0]]; !dup {
				m[fields[0]] = fields
			}
		}
	}
	return m, sc.Err()
}

func groupByID(groups map[string][]string, gid int) string {
	for _, n := range sorted(mapKeys(groups)) {
		if id, err := strconv.Atoi(groups[n][2]); err == nil && id == gid {
			return n
		}
	}
	return ""
}

func mapKeys(m map[string][]string) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func sorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
